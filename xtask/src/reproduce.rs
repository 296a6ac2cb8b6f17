//! `cargo xtask reproduce`: set libtorch up, build the release binary and run the whole
//! pipeline (`slimseg reproduce`) with a report at the end.
//!
//! Defaults: `configs/tiny.toml` on the synthetic cohort, on CPU (or CUDA when present).
//! `--data PATH` runs on a real ACDC tree; without it, the tree that `cargo xtask
//! download` put in `data/acdc` is used when present, and so are the ImageNet-21k
//! R50+ViT-B/16 weights in `data/pretrained` when the configuration's model has their
//! widths (the paper preset; tiny trains from scratch).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
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
    let pretrained = crate::download::vit_weights(&data_root);
    let pretrained = if !pretrained.is_file() {
        None
    } else if has_vit_b16_widths(&options.config)? {
        eprintln!(
            "using the downloaded ViT weights at {}",
            pretrained.display()
        );
        Some(pretrained)
    } else {
        eprintln!(
            "not using {}: the model of {} does not have the R50+ViT-B/16 widths",
            pretrained.display(),
            options.config.display()
        );
        None
    };
    let binary = crate::target_dir().join("release").join("slimseg");
    let mut command = Command::new(&binary);
    command
        .arg("reproduce")
        .arg("--config")
        .arg(&options.config);
    if let Some(data) = &data {
        command.arg("--data").arg(data);
    }
    if let Some(pretrained) = &pretrained {
        command.arg("--pretrained").arg(pretrained);
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

/// Whether the `[model]` table of the run configuration `config` has the widths of the
/// R50+ViT-B/16 checkpoint (ResNet units and width, transformer width, depth and MLP).
fn has_vit_b16_widths(config: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let doc: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not valid TOML", config.display()))?;
    let model = doc.get("model").and_then(|m| m.as_table());
    let int = |key: &str| model.and_then(|m| m.get(key)).and_then(|v| v.as_integer());
    let units: Option<Vec<i64>> = model
        .and_then(|m| m.get("resnet_layers"))
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_integer()).collect());
    Ok(units.as_deref() == Some(&[3, 4, 9])
        && int("resnet_width") == Some(64)
        && int("hidden") == Some(768)
        && int("layers") == Some(12)
        && int("mlp_dim") == Some(3072))
}

#[cfg(test)]
mod tests {
    use super::has_vit_b16_widths;

    #[test]
    fn only_the_paper_preset_has_the_checkpoint_widths() {
        let configs = crate::workspace_root().join("configs");
        assert!(has_vit_b16_widths(&configs.join("paper.toml")).unwrap());
        assert!(!has_vit_b16_widths(&configs.join("tiny.toml")).unwrap());
        let err = has_vit_b16_widths(&configs.join("missing.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("missing.toml"), "{err:#}");
    }
}
