//! `uniform`: the uniform-width control of the compressed model, into `RUN/uniform`.
//!
//! It answers whether the search's learned, non-uniform allocation beats plain uniform
//! pruning of the same cost. Every block keeps the same number of attention dims (spread
//! over the heads as evenly as they go), the same number of MLP units and the same
//! tokens: the compressed subnet's kept fraction of each dimension over all blocks
//! (rounded down; the token count lowered further until the MACs are at most the
//! compressed model's, so it never costs more). Dims and units
//! are chosen by the baseline's weight norms (no gates, no search), tokens nearest the
//! image centre. It is sliced from the baseline's weights, the weights the search
//! started from, and fine-tuned with the fine-tuning schedule of the compressed model;
//! unlike the compressed model it does not get the search's epochs.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use slimseg_compress::{Folding, Summary, WeightRanking, compress, uniform_control};
use slimseg_model::SubnetArch;
use slimseg_search::SubnetSpec;
use slimseg_search::stages::{Network, SUBNET_FILE};

use super::make_one;
use crate::graph::Ctx;
use crate::run::write_json;
use crate::stages::finetune::{FinetuneArgs, set_schedule, train_and_save};

/// File of the control's sizes in `RUN/uniform`.
pub const UNIFORM_FILE: &str = "uniform.json";

/// `uniform`.
pub fn cmd(a: FinetuneArgs) -> Result<()> {
    let mut run = a.stage.open()?;
    set_schedule(&mut run.cfg, a.epochs, a.lr);
    make_one(&run, "uniform", a.stage.force, a.stop.stop_after)
}

/// What `uniform/uniform.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UniformRecord {
    /// Attention dims kept in every block.
    pub attn_dims: usize,
    /// Dims kept in each head (the same in every block).
    pub head_widths: Vec<usize>,
    /// MLP units kept in every block.
    pub mlp_units: usize,
    /// Tokens kept in every block.
    pub tokens: usize,
    /// Kept fractions of attention dims, MLP units and tokens of the compressed subnet.
    pub learned_fractions: [f64; 3],
    /// Kept fractions of the control.
    pub fractions: [f64; 3],
    /// Counts of the compressed subnet.
    pub learned: Summary,
    /// Counts of the control.
    pub summary: Summary,
}

/// The uniform control of the learned architecture `learned`, from the full-width
/// `baseline` weights: its architecture and record.
pub fn control_of(
    cfg: &slimseg_model::ModelConfig,
    baseline: &Network,
    learned: &SubnetArch,
) -> Result<(SubnetArch, UniformRecord)> {
    let rank = WeightRanking::of(cfg, &baseline.vs.variables())?;
    let (arch, summary) = uniform_control(cfg, learned, &rank)?;
    let first = &arch.layers[0];
    let (la, lm, lt) = learned.kept_fractions();
    let (ua, um, ut) = arch.kept_fractions();
    let record = UniformRecord {
        attn_dims: first.attn_width(),
        head_widths: first.head_widths(),
        mlp_units: first.mlp_units.len(),
        tokens: first.tokens.len(),
        learned_fractions: [la, lm, lt],
        fractions: [ua, um, ut],
        learned: Summary::new(cfg, learned)?,
        summary,
    };
    Ok((arch, record))
}

/// Builds the uniform control of the compressed subnet from the baseline's weights into
/// `dir`, fine-tunes it (resuming its checkpoints), saves the best weights in the
/// compressed format under `dir/model` and evaluates them on the test set.
pub fn make(ctx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let run = ctx.run;
    let device = run.device()?;
    let subnet = run.stage("compressed").join(SUBNET_FILE);
    let learned = SubnetSpec::load_toml(&subnet)
        .with_context(|| format!("cannot read the compressed subnet {}", subnet.display()))?;
    let weights = run.stage("baseline").join("best.safetensors");
    let mut base = Network::new(&run.cfg.model, tch::Device::Cpu, run.cfg.train.seed)?;
    base.load(&weights)
        .with_context(|| format!("{} does not fit the run's [model]", weights.display()))?;
    let (arch, record) = control_of(&run.cfg.model, &base, &learned.arch)?;
    eprintln!(
        "[uniform] every block keeps {} attention dims (per head {}), {} MLP units, {} \
         tokens: {:.1}% fewer MACs, {:.1}% fewer parameters (compressed: {:.1}%, {:.1}%)",
        record.attn_dims,
        record
            .head_widths
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        record.mlp_units,
        record.tokens,
        100.0 * record.summary.mac_reduction(),
        100.0 * record.summary.param_reduction(),
        100.0 * record.learned.mac_reduction(),
        100.0 * record.learned.param_reduction()
    );
    let cm = compress(&base.model, &base.vs, &arch, Folding::None, device)
        .with_context(|| format!("cannot slice {}", weights.display()))?;
    drop(base);
    write_json(&dir.join(UNIFORM_FILE), &record)?;
    train_and_save(ctx, dir, &cm, "uniform")
}
