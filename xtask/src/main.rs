//! `cargo xtask`: developer tasks for slimseg.
//!
//! A plain binary with few dependencies, built in its own target dir (see the alias in
//! `.cargo/config.toml`) so it never waits on the libtorch build. It shells out to cargo
//! rather than linking the heavy crates. One module per task.

mod cuda_check;
mod download;
mod reproduce;
mod setup;
mod test;

use anyhow::{Result, bail};
use std::path::PathBuf;
use std::process::Command;

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  setup [--libtorch DIR] [--cuda]
        Make libtorch 2.11 available to cargo: use DIR (or $SLIMSEG_LIBTORCH), else an
        importable Python torch 2.11.x, else pip-install torch==2.11.0 into the user cache
        ($SLIMSEG_CACHE_DIR, $XDG_CACHE_HOME/slimseg or ~/.cache/slimseg). --cuda installs
        the CUDA libraries too (several GB; only useful on a GPU machine).
  test  Setup if needed, then cargo fmt --check, clippy (warnings denied) and
        cargo test --workspace.
  download [--acdc] [--weights] [--dir DIR]
        ACDC from its official server into DIR/acdc and the ImageNet-21k
        R50+ViT-B_16.npz into DIR/pretrained (DIR defaults to data/). Resumable; an
        interrupted or failed download never leaves a tree that looks complete.
  reproduce [--config FILE] [--data PATH] [--run DIR] [-- SLIMSEG-ARGS...]
        Setup, release build, then the whole pipeline (`slimseg reproduce`) with a
        report: configs/tiny.toml on the synthetic cohort by default; --data (or a
        downloaded data/acdc) for real ACDC; CUDA when present.
  cuda-check [--transunet PATH]
        Build the release binary and pack what a CUDA machine with torch 2.11 needs into
        .cuda-check/ (binary, configs, run.sh; with --transunet PATH also the official
        model code and scripts/train_peer.py); there, `bash .cuda-check/run.sh OUT`
        runs doctor, a bounded paper-preset training, compress and latency, as JSON.";

fn main() {
    if let Err(err) = run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("setup") => setup::run(&setup::Options::parse(&rest)?).map(|_| ()),
        Some("test") => test::run(&rest),
        Some("download") => download::run(&download::Options::parse(&rest)?),
        Some("reproduce") => reproduce::run(&reproduce::Options::parse(&rest)?),
        Some("cuda-check") => cuda_check::run(&rest),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory (`$CARGO_TARGET_DIR` or `target/` in the workspace).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Runs `cargo` with `args` in the workspace root, failing with the command line on error.
fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
