//! `train`: the baseline, the full model trained without gates, into `RUN/baseline`
//! (`train --transunet`: the TransUNet control, the same model without the pixel module
//! trained the same way, into `RUN/transunet`); or `import`: the baseline taken from an
//! official TransUNet checkpoint (`train.import`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use slimseg_model::weights::{load_official_pth, load_official_state_dict, save_safetensors};
use slimseg_search::stages::{Network, run_baseline};

use super::{
    EVAL_FILE, ModelStage, StageArgs, StopArgs, eval_test, incomplete, make_one, train_options,
};
use crate::graph::Ctx;
use crate::run::{Open, Run, SynthSize, write_json};

/// Options of `train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    #[command(flatten)]
    pub stop: StopArgs,
    /// ImageNet-21k `R50+ViT-B_16.npz` that initialises the baseline's ResNet and
    /// transformer (sets `train.pretrained`; the `[model]` widths must match the file).
    #[arg(long, value_name = "NPZ")]
    pub pretrained: Option<PathBuf>,
    #[command(flatten)]
    pub synth: SynthSize,
    /// Train the TransUNet control instead: the configured model without the pixel
    /// module, with the same schedule and seed, into `RUN/transunet` (when
    /// `model.pixel_head` is on).
    #[arg(long)]
    pub transunet: bool,
}

/// `train`.
pub fn cmd(a: TrainArgs) -> Result<()> {
    let run = Run::open(
        &a.stage.run,
        Open {
            data: Some(&a.stage.data),
            synth: Some(&a.synth),
            pretrained: a.pretrained.as_deref(),
            reads_data: true,
            ..Open::write()
        },
    )?;
    let mut run = run;
    if a.transunet {
        return make_one(&run, "transunet", a.stage.force, a.stop.stop_after);
    }
    // `train` trains: a checkpoint imported earlier no longer makes the baseline.
    run.cfg.train.import = None;
    make_one(&run, "baseline", a.stage.force, a.stop.stop_after)
}

/// Options of `import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// An official TransUNet checkpoint: `.pth` as `torch.save(model.state_dict())`
    /// writes it (read without Python; a `module.` prefix and a dict holding the
    /// state_dict under `state_dict`, `model`, `model_state_dict` or `net` are accepted),
    /// or safetensors with the official names. It becomes the run's baseline
    /// (`train.import`).
    #[arg(long, value_name = "CKPT")]
    pub transunet: PathBuf,
    #[command(flatten)]
    pub synth: SynthSize,
}

/// `import`.
pub fn import_cmd(a: ImportArgs) -> Result<()> {
    if !a.transunet.is_file() {
        bail!("{}: no such file", a.transunet.display());
    }
    let mut run = Run::open(
        &a.stage.run,
        Open {
            data: Some(&a.stage.data),
            synth: Some(&a.synth),
            reads_data: true,
            ..Open::write()
        },
    )?;
    run.cfg.train.import = Some(crate::run::absolute(&a.transunet)?);
    make_one(&run, "baseline", a.stage.force, None)
}

/// Imports the checkpoint of `train.import` into `dir` (names and shapes checked before
/// anything is written) and evaluates it on the test set.
fn import(ctx: &mut Ctx<'_>, dir: &Path, ckpt: &Path) -> Result<()> {
    let run = ctx.run;
    let net = Network::new(&run.cfg.model, run.device()?, run.cfg.train.seed)?;
    let safetensors = ckpt.extension().is_some_and(|e| e == "safetensors");
    let report = if safetensors {
        load_official_state_dict(&net.vs, ckpt)
    } else {
        load_official_pth(&net.vs, ckpt)
    }
    .with_context(|| {
        format!(
            "{} does not fit the run's [model] (or is not a TransUNet checkpoint)",
            ckpt.display()
        )
    })?;
    let untrained: Vec<&String> = report
        .not_in_file
        .iter()
        .filter(|n| n.starts_with("pixel_head."))
        .collect();
    if !untrained.is_empty() {
        bail!(
            "{} has no pixel module ({} of its tensors, e.g. {}, are missing), but the run's \
             model is DFTransUnet (model.pixel_head = \"direction-field\"): an imported \
             TransUNet would make a baseline with an untrained module. Import it into a \
             TransUNet run (--set model.pixel_head=none)",
            ckpt.display(),
            untrained.len(),
            untrained[0]
        );
    }
    eprintln!(
        "[baseline] imported {} tensors from {}{}",
        report.loaded.len(),
        ckpt.display(),
        if report.not_in_file.is_empty() {
            String::new()
        } else {
            format!(
                " ({} model tensors not in the file keep their initialisation)",
                report.not_in_file.len()
            )
        }
    );
    for f in ["best.safetensors", "weights.safetensors"] {
        save_safetensors(&net.vs, dir.join(f))?;
    }
    let cohort = ctx.cohort()?;
    let rep = eval_test(run, &net.model, &cohort.test)?;
    write_json(&dir.join(EVAL_FILE), &rep)?;
    write_json(
        &dir.join("import.json"),
        &serde_json::json!({
            "checkpoint": ckpt,
            "loaded": report.loaded.len(),
            "not_in_file": report.not_in_file,
            "ignored": report.ignored,
        }),
    )
}

/// Trains the baseline into `dir` (resuming its checkpoints), or imports it when
/// `train.import` is set, and evaluates its best weights on the test set.
pub fn make(ctx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let run = ctx.run;
    if let Some(ckpt) = run.cfg.train.import.clone() {
        return import(ctx, dir, &ckpt);
    }
    let opts = train_options(ctx);
    let stop = ctx.stop_after;
    let cohort = ctx.cohort()?;
    eprintln!("[baseline] training into {}", dir.display());
    let (mut net, m) = run_baseline(&run.cfg, cohort, dir, &opts)?;
    if !m.completed {
        return Err(incomplete(stop, dir, "training", m.epochs));
    }
    net.load(dir.join("best.safetensors"))?;
    let rep = eval_test(run, &net.model, &cohort.test)?;
    write_json(&dir.join(EVAL_FILE), &rep)
}

/// Trains the TransUNet control into `dir`: the run's model without the pixel module,
/// with the baseline's schedule, seed and data (never from `train.import`), and
/// evaluates its best weights on the test set.
pub fn make_transunet(ctx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let run = ctx.run;
    let mut cfg = run.cfg.clone();
    cfg.model = ModelStage::Transunet.model_config(&cfg.model);
    cfg.train.import = None;
    let opts = train_options(ctx);
    let stop = ctx.stop_after;
    let cohort = ctx.cohort()?;
    eprintln!(
        "[transunet] training TransUNet (no pixel module) into {}",
        dir.display()
    );
    let (mut net, m) = run_baseline(&cfg, cohort, dir, &opts)?;
    if !m.completed {
        return Err(incomplete(stop, dir, "training", m.epochs));
    }
    net.load(dir.join("best.safetensors"))?;
    let rep = eval_test(run, &net.model, &cohort.test)?;
    write_json(&dir.join(EVAL_FILE), &rep)
}
