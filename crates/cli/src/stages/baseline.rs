//! `train`: the baseline, the full model trained without gates, into `RUN/baseline`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use slimseg_search::stages::run_baseline;

use super::{EVAL_FILE, StageArgs, StopArgs, eval_test, incomplete, make_one, train_options};
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
    make_one(&run, "baseline", a.stage.force, a.stop.stop_after)
}

/// Trains the baseline into `dir` (resuming its checkpoints) and evaluates its best
/// weights on the test set.
pub fn make(ctx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let run = ctx.run;
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
