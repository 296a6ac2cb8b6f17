//! `cargo xtask cuda-check [--transunet PATH]`: pack the release binary, the configs and a
//! run script for a CUDA machine that has Python torch 2.11 but no Rust toolchain. With
//! `--transunet`, the official TransUNet model code (`networks/*.py` of a checkout of
//! github.com/Beckschen/TransUNet, which that machine cannot download) and
//! `scripts/train_peer.py` travel too, and the run times the official training step
//! beside slimseg's on the same GPU. The official code is never committed here.
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
    let transunet = match args {
        [] => None,
        [flag, path] if flag == "--transunet" => Some(Path::new(path)),
        _ => bail!("usage: cargo xtask cuda-check [--transunet PATH], got {args:?}"),
    };
    if let Some(t) = transunet {
        if !t.join("networks/vit_seg_modeling.py").is_file() {
            bail!(
                "{}: not a TransUNet checkout (no networks/vit_seg_modeling.py)",
                t.display()
            );
        }
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
    if let Some(t) = transunet {
        let dst = staging.join("TransUNet/networks");
        std::fs::create_dir_all(&dst)?;
        for e in std::fs::read_dir(t.join("networks"))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "py") {
                copy(&p, &dst.join(p.file_name().expect("a file")))?;
            }
        }
        copy(
            &root.join("scripts/train_peer.py"),
            &staging.join("train_peer.py"),
        )?;
    }
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
