//! End-to-end tests of the stage graph through the `slimseg` binary: stale stages are
//! redone with what is below them, single-stage commands refuse stale upstreams, side
//! results never replace a run's results, failed or killed redos leave the previous
//! stage intact, resumes with another thread count are refused, and moved runs resume
//! bit-identically.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Killed, fails, finished_run, json, ok, scratch, text, tiny_train_args, tree};

fn status(run: &str) -> String {
    text(&ok(&["status", "--run", run]))
}

/// The status line of a stage.
fn stage_line<'a>(status: &'a str, stage: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.starts_with(&format!("{stage} ")))
        .unwrap_or_else(|| panic!("no line for {stage}:\n{status}"))
}

#[test]
fn a_changed_stage_makes_everything_below_it_stale_and_reproduce_redoes_it() {
    let dir = scratch("graph-redo");
    let run = finished_run(&dir);
    let r = run.to_str().unwrap();

    // A second call does nothing.
    let t = text(&ok(&["reproduce", "--run", r]));
    assert!(!t.contains("redone") && !t.contains("training into"), "{t}");
    assert_eq!(t.matches("] done (fingerprint").count(), 8, "{t}");

    // Another budget for the compressed stage: the fine-tuned model, the benchmark and
    // the report are now stale, and say why.
    ok(&["compress", "--run", r, "--force", "--target-macs", "0.5"]);
    let s = status(r);
    assert!(stage_line(&s, "compressed").contains(" done "), "{s}");
    for stage in ["finetuned", "uniform", "bench", "report"] {
        assert!(stage_line(&s, stage).contains(" stale "), "{stage}:\n{s}");
    }
    assert!(stage_line(&s, "transunet").contains(" done "), "{s}");
    assert!(s.contains("why: compressed changed"), "{s}");
    // A single-stage command on a stale upstream refuses, naming it and why.
    fails(
        &["bench", "--run", r, "--force"],
        &["finetuned stage is stale", "compressed changed"],
    );

    // reproduce redoes them; the report's fine-tuned row is the new subnet.
    let t = text(&ok(&["reproduce", "--run", r]));
    assert!(
        t.contains("[finetuned] stale, redone: compressed changed"),
        "{t}"
    );
    assert!(t.contains("[compressed] done"), "{t}");
    assert!(
        t.contains("[uniform] stale, redone: compressed changed"),
        "{t}"
    );
    let rep = json(&run.join("report/report.json"));
    let model = |name: &str| {
        rep["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {rep}"))
            .clone()
    };
    let (c, f, b, u) = (
        model("compressed"),
        model("finetuned"),
        model("dftransunet"),
        model("uniform"),
    );
    assert_eq!(c["macs"], f["macs"], "{rep}");
    assert_eq!(c["params"], f["params"], "{rep}");
    let budget = &json(&run.join("compressed/compress.json"))["budget"];
    assert_eq!(budget["keep"], 0.5, "{budget}");
    let macs = |m: &serde_json::Value| m["macs"].as_f64().unwrap();
    assert!(macs(&f) <= 0.5 * macs(&b) + 1.0, "{rep}");
    assert!(
        macs(&u) <= macs(&c),
        "the control follows the new subnet: {rep}"
    );
    // The run's configuration now holds the budget its stages were made with.
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("keep = 0.5"), "{cfg}");

    // Another fine-tuning schedule: only the fine-tuning (and what is below) is redone.
    let t = text(&ok(&["reproduce", "--run", r, "--finetune-epochs", "2"]));
    assert!(
        t.contains("[finetuned] stale, redone: finetune.epochs: 1 -> 2"),
        "{t}"
    );
    assert!(t.contains("[search] done"), "{t}");
    assert_eq!(json(&run.join("finetuned/metrics.json"))["epochs"], 2);

    // A redo is built beside the complete stage: it cannot stop and resume.
    fails(
        &["finetune", "--run", r, "--force", "--stop-after", "1"],
        &["--stop-after", "redo"],
    );
    // `--force STAGE` redoes one stage that is up to date.
    let t = text(&ok(&["reproduce", "--run", r, "--force", "bench"]));
    assert!(t.contains("[bench] redo (--force)"), "{t}");
    fails(
        &["reproduce", "--run", r, "--force", "benchh"],
        &["no such stage"],
    );

    // A key the TransUNet control leaves out (the pixel module's loss weight) redoes the
    // baseline and what is below it, not the control.
    let t = text(&ok(&[
        "reproduce",
        "--run",
        r,
        "--set",
        "train.lambda_df=0.5",
    ]));
    assert!(
        t.contains("[baseline] stale, redone: train.lambda_df: 1.0 -> 0.5"),
        "{t}"
    );
    assert!(t.contains("[transunet] done (fingerprint"), "{t}");

    // A control turned off: skipped, and the benchmark and report are redone without it.
    let t = text(&ok(&[
        "reproduce",
        "--run",
        r,
        "--set",
        "controls.uniform=false",
    ]));
    assert!(
        t.contains("[uniform] not part of this run: controls.uniform = false"),
        "{t}"
    );
    assert!(t.contains("[bench] stale, redone"), "{t}");
    let rep = json(&run.join("report/report.json"));
    assert!(
        rep["models"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["name"] != "uniform"),
        "{rep}"
    );
    let s = status(r);
    assert!(stage_line(&s, "uniform").contains(" off "), "{s}");
    fails(&["uniform", "--run", r], &["not part of this run"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn side_results_never_replace_the_run_results() {
    let dir = scratch("graph-side");
    let run = finished_run(&dir);
    let r = run.to_str().unwrap();
    let other = dir.join("other");
    common::synth_cohort(&other, 99);
    let own_eval = std::fs::read(run.join("finetuned/eval.json")).unwrap();
    let own_latency = std::fs::read(run.join("bench/latency.json")).unwrap();
    let report = std::fs::read(run.join("report/report.md")).unwrap();

    ok(&[
        "eval",
        "--run",
        r,
        "--data",
        other.to_str().unwrap(),
        "--stage",
        "finetuned",
    ]);
    let side = json(&run.join("evals/other/finetuned.json"));
    assert_eq!(side["run_test_set"], false);
    assert_eq!(side["data"]["patients"], serde_json::json!([101]));
    assert_eq!(
        std::fs::read(run.join("finetuned/eval.json")).unwrap(),
        own_eval
    );
    // Not twice under one name.
    fails(
        &["eval", "--run", r, "--data", other.to_str().unwrap()],
        &["evals/other", "--overwrite"],
    );

    ok(&["bench", "--run", r, "--repeats", "3", "--warmup", "0"]);
    assert_eq!(
        std::fs::read(run.join("bench/latency.json")).unwrap(),
        own_latency
    );
    let measurements: Vec<_> = std::fs::read_dir(run.join("measurements"))
        .unwrap()
        .collect();
    assert_eq!(measurements.len(), 1);
    let m = json(&measurements[0].as_ref().unwrap().path());
    assert_eq!(m["options"]["repeats"], 3);

    // The report is still up to date, and shows the stage's own latency of each model.
    let t = text(&ok(&["reproduce", "--run", r]));
    assert_eq!(t.matches("] done (fingerprint").count(), 8, "{t}");
    assert_eq!(std::fs::read(run.join("report/report.md")).unwrap(), report);
    let bench = json(&run.join("bench/latency.json"));
    let rep = json(&run.join("report/report.json"));
    for m in rep["models"].as_array().unwrap() {
        let own = bench["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["stage"] == m["stage"])
            .unwrap_or_else(|| panic!("no latency of {m}"));
        assert_eq!(m["latency_ms"]["1"], own["stats"][0]["median_ms"], "{m}");
    }
    // A new report names the side results as such.
    ok(&["report", r]);
    let md = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    assert!(
        md.contains("Side results kept in the run, not part of the tables"),
        "{md}"
    );
    assert!(
        md.contains("`evals/other`") && md.contains("`measurements/bench-"),
        "{md}"
    );
    assert!(md.contains("Test volumes: 2."), "{md}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_or_killed_redo_leaves_the_previous_stage_intact() {
    let dir = scratch("graph-safe");
    let run = finished_run(&dir);
    let r = run.to_str().unwrap();
    let finetuned = tree(&run.join("finetuned"));
    let search = tree(&run.join("search"));

    // Truncated compressed weights: the fine-tuning refuses before touching anything.
    let w = run.join("compressed/weights.safetensors");
    let good = std::fs::read(&w).unwrap();
    std::fs::write(&w, &good[..1000]).unwrap();
    fails(
        &["finetune", "--run", r, "--force"],
        &["compressed/weights.safetensors changed", "slimseg compress"],
    );
    std::fs::write(&w, &good).unwrap();
    assert_eq!(tree(&run.join("finetuned")), finetuned);

    // Baseline weights of another preset.
    let b = run.join("baseline/best.safetensors");
    let base = std::fs::read(&b).unwrap();
    std::fs::write(&b, b"\x08\0\0\0\0\0\0\0{}      ").unwrap();
    fails(
        &["search", "--run", r, "--force"],
        &["baseline/best.safetensors changed"],
    );
    std::fs::write(&b, &base).unwrap();
    assert_eq!(tree(&run.join("search")), search);

    // A budget no subnet meets fails inside the redo: the stage stays.
    let compressed = tree(&run.join("compressed"));
    fails(
        &["compress", "--run", r, "--force", "--target-params", "1%"],
        &["unreachable budget"],
    );
    assert_eq!(tree(&run.join("compressed")), compressed);

    // A redo killed while it trains: the previous stage stays, and is still done.
    let mut child = Killed(
        Command::new(BIN)
            .args(["finetune", "--run", r, "--force", "--epochs", "400"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let staging = || {
        std::fs::read_dir(&run)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(".finetuned.partial-"))
    };
    while staging().is_none_or(|s| !run.join(&s).join("checkpoints/last.json").exists()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no staging folder"
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the redo ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child);
    assert_eq!(tree(&run.join("finetuned")), finetuned);
    assert!(stage_line(&status(r), "finetuned").contains(" done "));
    // The next writing command removes the staging folder.
    ok(&["reproduce", "--run", r]);
    assert!(staging().is_none());
    assert_eq!(tree(&run.join("finetuned")), finetuned);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn train_args(run: &Path, epochs: usize, extra: &[&str]) -> Vec<String> {
    let mut a = tiny_train_args(run, epochs);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run_ok(args: &[String]) -> String {
    text(&ok(&common::strs(args)))
}

#[test]
fn a_resume_with_another_thread_count_is_refused() {
    let dir = scratch("graph-threads");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    run_ok(&train_args(
        &run,
        3,
        &["--set", "train.threads=2", "--stop-after", "1"],
    ));
    fails(
        &["train", "--run", r, "--set", "train.threads=1"],
        &["written with 2 CPU threads", "--set train.threads=2"],
    );
    let t = run_ok(&["train".into(), "--run".into(), r.into()]);
    assert!(t.contains("[baseline] done"), "{t}");
    assert_eq!(
        json(&run.join("baseline/metrics.json"))["resumed_from_epoch"],
        1
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_moved_run_resumes_bit_identically_and_its_data_is_known_by_content() {
    let dir = scratch("graph-move");
    let whole = dir.join("whole");
    run_ok(&train_args(&whole, 3, &[]));
    let parts = dir.join("parts");
    run_ok(&train_args(&parts, 3, &["--stop-after", "1"]));
    let moved = dir.join("moved");
    std::fs::rename(&parts, &moved).unwrap();
    let m = moved.to_str().unwrap();
    let t = run_ok(&["train".into(), "--run".into(), m.into()]);
    assert!(t.contains("[baseline] done"), "{t}");
    assert_eq!(
        json(&moved.join("baseline/metrics.json"))["resumed_from_epoch"],
        1
    );
    for f in ["best.safetensors", "weights.safetensors"] {
        assert!(
            std::fs::read(whole.join("baseline").join(f)).unwrap()
                == std::fs::read(moved.join("baseline").join(f)).unwrap(),
            "{f} differs from the uninterrupted run's"
        );
    }

    // The data moves too: given its new place, it is the same data.
    let data = dir.join("data-elsewhere");
    std::fs::rename(moved.join("data"), &data).unwrap();
    fails(
        &["search", "--run", m],
        &["data root is not there", "--data"],
    );
    let d = data.to_str().unwrap();
    let t = text(&ok(&["search", "--run", m, "--data", d]));
    assert!(!t.contains("baseline is stale"), "{t}");
    assert!(stage_line(&status(m), "baseline").contains(" done "));
    // Changed content is not the same data.
    let gt = data.join("training/patient001/patient001_frame01_gt.nii.gz");
    let mut bytes = std::fs::read(&gt).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&gt, bytes).unwrap();
    let s = status(m);
    assert!(stage_line(&s, "baseline").contains(" stale "), "{s}");
    assert!(s.contains("the data's content changed"), "{s}");
    std::fs::remove_dir_all(&dir).unwrap();
}
