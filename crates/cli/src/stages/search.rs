//! `search`: soft gates trained from the baseline weights, into `RUN/search`. The subnet
//! is chosen from its final gates by the compressed stage, so one search serves every
//! budget.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use slimseg_search::stages::run_search;

use super::{EVAL_FILE, StageArgs, StopArgs, eval_test, incomplete, make_one, train_options};
use crate::graph::Ctx;
use crate::run::write_json;

/// Options of `search`.
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    #[command(flatten)]
    pub stop: StopArgs,
}

/// `search`.
pub fn cmd(a: SearchArgs) -> Result<()> {
    let run = a.stage.open()?;
    make_one(&run, "search", a.stage.force, a.stop.stop_after)
}

/// Trains the soft gates into `dir` and evaluates the searched model on the test set.
pub fn make(ctx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let run = ctx.run;
    let opts = train_options(ctx);
    let stop = ctx.stop_after;
    let base = run.stage("baseline").join("best.safetensors");
    let cohort = ctx.cohort()?;
    eprintln!("[search] soft-gate search into {}", dir.display());
    let (net, m) = run_search(&run.cfg, cohort, &base, dir, &opts)
        .with_context(|| format!("search from {}", base.display()))?;
    if !m.completed {
        return Err(incomplete(stop, dir, "the search", m.epochs));
    }
    let gates = slimseg_search::engine::read_gate_values(dir.join("gates_end.json"))?;
    for w in slimseg_search::stats::health(&gates, None) {
        eprintln!("  warning: {w}");
    }
    let rep = eval_test(run, &net.model, &cohort.test)?;
    write_json(&dir.join(EVAL_FILE), &rep)
}
