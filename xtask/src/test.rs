//! `cargo xtask test`: the whole check suite that CI runs.

use anyhow::{Result, bail};

/// Sets libtorch up if needed, then runs formatting, lints and every test of the workspace.
pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`cargo xtask test` takes no arguments, got `{arg}`");
    }
    crate::setup::run(&crate::setup::Options::default())?;
    crate::cargo(&["fmt", "--all", "--check"])?;
    // Tests first: they build the artefacts clippy's check mode partly reuses.
    crate::cargo(&["test", "--workspace"])?;
    crate::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    eprintln!("all checks passed");
    Ok(())
}
