//! `finetune`: the compressed model trained further into `RUN/finetuned`, saved in the
//! compressed format under `RUN/finetuned/model`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use slimseg_compress::CompressedModel;
use slimseg_search::{RunConfig, train};

use super::{
    EVAL_FILE, FINETUNED_MODEL_DIR, StageArgs, StopArgs, eval_test, incomplete, make_one,
    train_options,
};
use crate::graph::Ctx;
use crate::run::write_json;

/// Options of `finetune` and `uniform` (whose epochs and learning rate are the
/// fine-tuning's, so that the compressed model and its control train alike).
#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    #[command(flatten)]
    pub stop: StopArgs,
    /// Fine-tuning epochs (sets `finetune.epochs`). Default: `finetune.epochs`, else
    /// `search.epochs`, else `train.epochs`.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Learning rate of the fine-tuning (sets `finetune.lr`). Default: `finetune.lr`,
    /// else `search.lr`, else `train.lr`.
    #[arg(long)]
    pub lr: Option<f64>,
}

/// `finetune`.
pub fn cmd(a: FinetuneArgs) -> Result<()> {
    let mut run = a.stage.open()?;
    set_schedule(&mut run.cfg, a.epochs, a.lr);
    make_one(&run, "finetuned", a.stage.force, a.stop.stop_after)
}

/// Puts command-line epochs and learning rate of the fine-tuning into `[finetune]`, so
/// that the stage's record, and the run's configuration, hold them.
pub fn set_schedule(cfg: &mut RunConfig, epochs: Option<usize>, lr: Option<f64>) {
    if let Some(e) = epochs {
        cfg.finetune.epochs = Some(e);
    }
    if let Some(lr) = lr {
        cfg.finetune.lr = Some(lr);
    }
}

/// Fine-tunes the compressed model into `dir` (resuming its checkpoints), saves the best
/// weights in the compressed format and evaluates them on the test set.
pub fn make(ctx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let src = ctx.run.stage("compressed");
    let cm = CompressedModel::load(&src, ctx.run.device()?)
        .with_context(|| format!("cannot load the compressed model in {}", src.display()))?;
    train_and_save(ctx, dir, &cm, "finetune")
}

/// Trains the sliced model `cm` into `dir` with the fine-tuning schedule (resuming its
/// checkpoints), saves its best weights in the compressed format under `dir/model` and
/// evaluates them on the test set; `tag` names the stage in what it prints.
pub fn train_and_save(
    ctx: &mut Ctx<'_>,
    dir: &Path,
    cm: &CompressedModel,
    tag: &str,
) -> Result<()> {
    let run = ctx.run;
    let opts = train_options(ctx);
    let stop = ctx.stop_after;
    let cfg = run.cfg.for_finetune();
    let cohort = ctx.cohort()?;
    eprintln!(
        "[{tag}] {} epochs at lr {} into {}",
        cfg.train.epochs,
        cfg.train.lr,
        dir.display()
    );
    let data = slimseg_search::TrainData {
        train: &cohort.train,
        val: &cohort.val,
    };
    let m = train(&cm.vs, &cm.model, data, &cfg, dir, &opts)?;
    if !m.completed {
        return Err(incomplete(stop, dir, "fine-tuning", m.epochs));
    }
    slimseg_model::weights::load_safetensors(&cm.vs, dir.join("best.safetensors"))?;
    cm.save(dir.join(FINETUNED_MODEL_DIR))?;
    let rep = eval_test(run, &cm.model, &cohort.test)?;
    write_json(&dir.join(EVAL_FILE), &rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slimseg_model::ModelConfig;

    #[test]
    fn finetune_schedule_from_flags_then_finetune_then_search_table() {
        let mut cfg = RunConfig::with_model(ModelConfig::tiny());
        cfg.train.epochs = 12;
        cfg.search.epochs = Some(6);
        cfg.search.lr = Some(5e-4);
        let f = cfg.for_finetune();
        assert_eq!((f.train.epochs, f.train.lr), (6, 5e-4));
        cfg.finetune.epochs = Some(3);
        let f = cfg.for_finetune();
        assert_eq!((f.train.epochs, f.train.lr), (3, 5e-4));
        cfg.finetune.lr = Some(2e-4);
        let f = cfg.for_finetune();
        assert_eq!((f.train.epochs, f.train.lr), (3, 2e-4));
        set_schedule(&mut cfg, Some(2), Some(1e-3));
        let f = cfg.for_finetune();
        assert_eq!((f.train.epochs, f.train.lr), (2, 1e-3));
    }
}
