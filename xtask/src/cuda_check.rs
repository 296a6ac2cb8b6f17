//! `cargo xtask cuda-check`: pack the release binary, the configs and a run script for a
//! CUDA machine that has Python torch 2.11 but no Rust toolchain.
//!
//! The binary loads libtorch's CUDA backend at start (see slimseg-model's `runtime`), so
//! the same build that runs here on CPU uses the GPU there; `run.sh` only points the
//! loader at that machine's torch libraries.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// The script that runs on the CUDA machine.
const RUN_SCRIPT: &str = include_str!("cuda_check.sh");

/// Builds and packs into `.cuda-check/` in the workspace root.
pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`cargo xtask cuda-check` takes no arguments, got `{arg}`");
    }
    crate::setup::run(&crate::setup::Options::default())?;
    crate::cargo(&["build", "--release", "-p", "slimseg"])?;
    let root = crate::workspace_root();
    let pack = root.join(".cuda-check");
    // Rebuild the folder from scratch so nothing stale travels with it.
    let staging = root.join(format!(".cuda-check.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(staging.join("configs"))?;
    copy(
        &crate::target_dir().join("release").join("slimseg"),
        &staging.join("slimseg"),
    )?;
    // Debug info makes the binary too large to ship comfortably; strip it when we can.
    match std::process::Command::new("strip")
        .arg(staging.join("slimseg"))
        .status()
    {
        Ok(status) if status.success() => {}
        _ => eprintln!("note: could not strip the binary; packing it with debug info"),
    }
    for config in ["tiny.toml", "paper.toml"] {
        copy(
            &root.join("configs").join(config),
            &staging.join("configs").join(config),
        )?;
    }
    std::fs::write(staging.join("run.sh"), RUN_SCRIPT)?;
    let _ = std::fs::remove_dir_all(&pack);
    std::fs::rename(&staging, &pack)
        .with_context(|| format!("cannot move {} into place", staging.display()))?;
    eprintln!(
        "packed {}; on a CUDA machine with torch 2.11 run: bash .cuda-check/run.sh OUT_DIR",
        pack.display()
    );
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}
