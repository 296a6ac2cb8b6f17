//! Helpers shared by the end-to-end tests of the `slimseg` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_slimseg");

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tiny_config() -> PathBuf {
    workspace().join("configs/tiny.toml")
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slimseg-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn slimseg(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the slimseg binary runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Owned arguments as the `&str` slice the helpers take.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

pub fn ok(args: &[&str]) -> Output {
    let o = slimseg(args);
    assert!(o.status.success(), "slimseg {args:?} failed:\n{}", text(&o));
    o
}

pub fn fails(args: &[&str], needles: &[&str]) -> String {
    let o = slimseg(args);
    let t = text(&o);
    assert!(!o.status.success(), "slimseg {args:?} should fail:\n{t}");
    for n in needles {
        assert!(
            t.contains(n),
            "error of slimseg {args:?} should mention `{n}`:\n{t}"
        );
    }
    t
}

pub fn json(path: &Path) -> serde_json::Value {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&s).unwrap()
}

pub fn json_stdout(args: &[&str]) -> serde_json::Value {
    let o = ok(args);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", text(&o)))
}

/// The synthetic cohort of the tests: 2 training, 1 validation and 1 test patients.
pub const SMALL_COHORT: [&str; 6] = [
    "--synth-train",
    "2",
    "--synth-val",
    "1",
    "--synth-test",
    "1",
];

/// Arguments of `command` (train or reproduce) of the tiny preset into `run` on CPU, on
/// a synthetic cohort of 2 training, 1 validation and 1 test patients, without a progress
/// bar, with `sets` as `--set` overrides.
fn tiny_args(command: &str, run: &Path, sets: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        command,
        "--config",
        tiny_config().to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
    ]
    .into_iter()
    .chain(SMALL_COHORT)
    .chain(["--set", "train.progress=false", "--device", "cpu"])
    .map(String::from)
    .collect();
    for s in sets {
        args.extend(["--set".to_string(), s.clone()]);
    }
    args
}

/// Arguments of a `train` of the tiny preset into `run` for `epochs` epochs (see
/// [`tiny_args`]).
pub fn tiny_train_args(run: &Path, epochs: usize) -> Vec<String> {
    tiny_args("train", run, &[format!("train.epochs={epochs}")])
}

/// Scaled-down reproduce arguments: one epoch per stage, 2 timed runs of the benchmark,
/// no budget sweep (see [`tiny_args`]).
pub fn tiny_reproduce_args(run: &str) -> Vec<String> {
    let sets = [
        "train.epochs=1",
        "search.epochs=1",
        "finetune.epochs=1",
        "bench.repeats=2",
        "sweep.keep=[]",
    ];
    tiny_args("reproduce", Path::new(run), &sets.map(String::from))
}

/// A child process killed when dropped, so a failing assertion leaves none behind.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file under `dir` with its length and a hash of its bytes, by relative path (to
/// compare trees with short messages).
pub fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, (usize, u64)> {
    fn walk(root: &Path, d: &Path, out: &mut std::collections::BTreeMap<PathBuf, (usize, u64)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                use std::hash::{Hash, Hasher};
                let bytes = std::fs::read(&p).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    (bytes.len(), h.finish()),
                );
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A finished scaled-down run (see [`tiny_reproduce_args`]) in `dir/run`.
pub fn finished_run(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    let args = tiny_reproduce_args(run.to_str().unwrap());
    ok(&strs(&args));
    run
}

/// A synthetic cohort of one training and one test patient (with 4D cine files) in
/// `out`, from `seed`.
pub fn synth_cohort(out: &Path, seed: u64) {
    let seed = seed.to_string();
    ok(&[
        "data",
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--training",
        "1",
        "--testing",
        "1",
        "--seed",
        &seed,
    ]);
}
