//! `cargo xtask reproduce`: set libtorch up, build the release binary and run the whole
//! pipeline (`slimseg reproduce`) with a report at the end.
//!
//! Defaults: `configs/tiny.toml` on the synthetic cohort, on CPU (or CUDA when present).
//! `--data PATH` runs on a real ACDC tree; without it, the tree that `cargo xtask
//! download` put in `data/acdc` is used when present.

use anyhow::{Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// What `reproduce` was asked for.
#[derive(Debug)]
pub struct Options {
    config: PathBuf,
    data: Option<PathBuf>,
    run: Option<PathBuf>,
    /// Extra arguments passed to `slimseg reproduce` unchanged (after `--`).
    extra: Vec<String>,
}

impl Options {
    /// Parses `reproduce [--config FILE] [--data PATH] [--run DIR] [-- ARGS...]`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let root = crate::workspace_root();
        let mut options = Options {
            config: root.join("configs").join("tiny.toml"),
            data: None,
            run: None,
            extra: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))
            };
            match arg.as_str() {
                "--config" => options.config = value("--config")?,
                "--data" => options.data = Some(value("--data")?),
                "--run" => options.run = Some(value("--run")?),
                "--" => {
                    options.extra = args.cloned().collect();
                    break;
                }
                other => bail!("unknown option `{other}` for `cargo xtask reproduce`"),
            }
        }
        Ok(options)
    }
}

/// Builds the release binary and runs `slimseg reproduce`.
pub fn run(options: &Options) -> Result<()> {
    crate::setup::run(&crate::setup::Options::default())?;
    crate::cargo(&["build", "--release", "-p", "slimseg"])?;
    let root = crate::workspace_root();
    let data_root = root.join("data");
    let data = options.data.clone().or_else(|| {
        let downloaded = crate::download::acdc_dir(&data_root);
        downloaded.is_dir().then(|| {
            eprintln!("using the downloaded ACDC at {}", downloaded.display());
            downloaded
        })
    });
    let binary = crate::target_dir().join("release").join("slimseg");
    let mut command = Command::new(&binary);
    command
        .arg("reproduce")
        .arg("--config")
        .arg(&options.config);
    if let Some(data) = &data {
        command.arg("--data").arg(data);
    }
    if let Some(run) = &options.run {
        command.arg("--run").arg(run);
    }
    command.args(&options.extra).current_dir(&root);
    eprintln!("$ {command:?}");
    let status = command.status()?;
    if !status.success() {
        bail!(
            "`slimseg reproduce` failed ({status}); run it again to continue from the finished stages"
        );
    }
    Ok(())
}
