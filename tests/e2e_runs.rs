//! End-to-end tests of run directories through the `slimseg` binary: one writing
//! command per run at a time (reading commands share it; `e2e_inputs` runs several
//! `predict`s on one run at once).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Killed, fails, ok, scratch, tiny_config, tiny_train_args};

/// A quick writing command on `run`: a latency benchmark of a structured subnet, which
/// needs only a configuration (given with `--config`, or the run's own).
fn quick_write(run: &str, config: Option<&std::path::Path>) -> std::process::Output {
    let mut args = vec!["bench"];
    if let Some(c) = config {
        args.extend(["--config", c.to_str().unwrap()]);
    }
    args.extend([
        "--run", run, "--device", "cpu", "--batch", "1", "--warmup", "0",
    ]);
    args.extend(["--repeats", "1", "--structured-mac-reduction", "0.3"]);
    ok(&args)
}

/// A reading command on `run` that needs only a configuration: `info` of the baseline.
fn read_args<'a>(run: &'a str, config: &'a std::path::Path) -> [&'a str; 7] {
    let config = config.to_str().unwrap();
    [
        "info", "--config", config, "--run", run, "--stage", "baseline",
    ]
}

#[test]
fn a_second_command_on_a_busy_run_is_refused_naming_the_holder() {
    let dir = scratch("lock");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    // A baseline training long enough to be caught in the act.
    let mut first = Killed(
        Command::new(BIN)
            .args(tiny_train_args(&run, 400))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let holder = format!("pid {}", first.0.id());
    let started = Instant::now();
    // Wait until it holds the lock and has written the run's configuration.
    while !(std::fs::read_to_string(run.join(".lock")).is_ok_and(|s| s.contains(&holder))
        && run.join("config.toml").is_file())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the lock never appeared"
        );
        assert!(
            first.0.try_wait().unwrap().is_none(),
            "the first training ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let config_before = std::fs::read(run.join("config.toml")).unwrap();
    // A second training with other settings is refused at once and changes nothing.
    fails(
        &[
            "train",
            "--run",
            r,
            "--set",
            "train.epochs=4",
            "--device",
            "cpu",
        ],
        &["in use by", &holder, "train", r],
    );
    // A reading command waits for no writer either.
    fails(
        &["info", "--run", r, "--stage", "baseline"],
        &["in use by", &holder],
    );
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first training goes on"
    );
    assert_eq!(
        std::fs::read(run.join("config.toml")).unwrap(),
        config_before,
        "the refused command wrote nothing"
    );
    // Once the holder is gone (killed, not cleaned up), the lock is free again.
    drop(first);
    quick_write(r, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reading_commands_share_a_run_and_keep_writers_out() {
    use std::os::fd::AsRawFd;
    let dir = scratch("shared");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let (r, cfg) = (run.to_str().unwrap(), tiny_config());
    let info = read_args(r, &cfg);
    let train = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--run",
        r,
        "--device",
        "cpu",
    ];
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(run.join(".lock"))
        .unwrap();
    let flock = |op| {
        // SAFETY: flock on the descriptor of `lock`, which outlives the call.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), op) }, 0);
    };
    // This test holds the lock as a reader would: another reader gets in, a writer not.
    flock(libc::LOCK_SH);
    ok(&info);
    fails(&train, &["in use by a reading command"]);
    assert!(
        !run.join("config.toml").exists(),
        "the refused writer wrote nothing"
    );
    // Held as a writer: readers are kept out too.
    flock(libc::LOCK_UN);
    flock(libc::LOCK_EX);
    fails(&info, &["in use by"]);
    flock(libc::LOCK_UN);
    ok(&info);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn leftovers_of_interrupted_writes_are_removed_by_the_next_writer() {
    let dir = scratch("leftovers");
    let run = dir.join("run");
    let (r, cfg) = (run.to_str().unwrap(), tiny_config());
    let leftovers = [
        "baseline/.weights.safetensors.tmp-999-0",
        "compressed/.model.toml.tmp4242",
        "baseline/checkpoints/.epoch-0003.tmp/model.safetensors",
        ".data.partial-5-0/training/patient001/Info.cfg",
    ];
    let kept = [
        "notes.tmp",
        "baseline/weights.safetensors",
        "baseline/.hidden",
    ];
    for f in leftovers.iter().chain(&kept) {
        let path = run.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![7u8; 1000]).unwrap();
    }
    // A reading command leaves them (a writer may be the one that made them).
    ok(&read_args(r, &cfg));
    assert!(run.join(leftovers[0]).exists());
    let o = quick_write(r, Some(&cfg));
    let t = common::text(&o);
    assert!(
        t.contains("removed 4 temporary file(s) of interrupted writes"),
        "{t}"
    );
    for f in leftovers {
        assert!(!run.join(f).exists(), "{f} is left");
    }
    assert!(run.join("baseline/checkpoints").is_dir() && run.join("compressed").is_dir());
    assert!(!run.join(".data.partial-5-0").exists());
    assert!(!run.join("baseline/checkpoints/.epoch-0003.tmp").exists());
    for f in kept {
        assert!(run.join(f).exists(), "{f} was removed");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
