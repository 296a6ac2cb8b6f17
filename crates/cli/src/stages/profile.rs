//! `profile`: the latency table a latency budget selects by
//! (`budget = { kind = "model", latency = 0.7 }` or `compress --target-latency 0.7`):
//! one transformer block timed over a grid of kept widths and the rest of the model, on
//! the run's device, at the batch size and in the precision of `[profile]`, prepared as
//! `[profile] fast` says (see `slimseg_model::profile`), into
//! `RUN/profile/latency_table.json`. The stage is part of a run only with a latency budget;
//! `compress` and `sweep` then rank and count the gates by it, and the report sets the
//! latency it predicts beside the bench stage's measurement.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use slimseg_compress::latency::describe_device;
use slimseg_model::InferenceOptions;
use slimseg_model::profile::{LatencyTable, profile};
use slimseg_search::{CostMetric, RunConfig};

use super::{StageArgs, make_one};
use crate::graph::Ctx;
use crate::run::{Run, read_json, write_json};

/// The table's file in the stage folder.
pub const TABLE_FILE: &str = "latency_table.json";

/// Options of `profile`.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Batch size the table is measured at: the same as `--set profile.batch=B`, so the
    /// run keeps it (a latency budget is then met at that batch).
    #[arg(long, value_name = "B")]
    pub batch: Option<usize>,
    /// Intra-op CPU threads: the same as `--set train.threads=T`, the run's threads.
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
}

/// Why the stage is not part of a run with `cfg`: no latency budget.
pub fn off(cfg: &RunConfig) -> Option<String> {
    (!cfg.select.budget.metrics().contains(&CostMetric::Latency))
        .then(|| "the budget does not limit latency".into())
}

/// The run's latency table when its budget limits latency (the profile stage is then
/// upstream of whatever selects).
pub fn table(run: &Run) -> Result<Option<LatencyTable>> {
    if off(&run.cfg).is_some() {
        return Ok(None);
    }
    let path = run.stage("profile").join(TABLE_FILE);
    let t: LatencyTable = read_json(&path)
        .with_context(|| format!("cannot read the latency table {}", path.display()))?;
    Ok(Some(t))
}

/// Measures the table into `dir`.
pub fn make(ctx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let run = ctx.run;
    let device = run.device()?;
    let p = &run.cfg.profile;
    let opts = InferenceOptions {
        precision: p.precision,
        fast: p.fast,
    };
    let name = describe_device(device);
    eprintln!(
        "[profile] block latency over a grid of widths on {name}, batch {}, {}",
        p.batch,
        super::describe_inference(opts)
    );
    let t = profile(
        &run.cfg.model,
        device,
        &name,
        p.batch,
        opts,
        p.warmup,
        p.repeats,
    )?;
    let cfg = &run.cfg.model;
    let scale = if t.in_place {
        format!("in place, {:.2}x their time alone", t.block_scale)
    } else {
        "timed alone: the model without blocks did not time believably apart from the \
         whole model, so the rest is the whole model less the blocks timed alone"
            .into()
    };
    eprintln!(
        "  full model {:.2} ms: {} blocks of {:.2} ms ({scale}) and {:.2} ms for the rest",
        t.full_ms,
        cfg.layers,
        t.block(cfg.hidden, cfg.mlp_dim, cfg.num_tokens()),
        t.fixed_ms
    );
    write_json(&dir.join(TABLE_FILE), &t)
}

/// `profile`.
pub fn cmd(mut a: ProfileArgs) -> Result<()> {
    let set = &mut a.stage.run.set;
    set.extend(a.batch.map(|b| format!("profile.batch={b}")));
    set.extend(a.threads.map(|t| format!("train.threads={t}")));
    let run = a.stage.open()?;
    make_one(&run, "profile", a.stage.force, None)
}
