//! The baseline and search stages as whole steps: build the network, load the previous
//! stage's weights and train. The CLI runs these from run
//! directories (`runs/<name>/{baseline,search}`).

use std::path::Path;

use slimseg_model::weights::{import_vit_npz, load_safetensors};
use slimseg_model::{GateMode, ModelConfig, TransUnet};
use tch::{Device, nn};

use crate::config::RunConfig;
use crate::data::Cohort;
use crate::engine::{TrainData, TrainMetrics, TrainOptions, train};
use crate::error::Result;

/// File name of the selected subnet in a search stage directory.
pub const SUBNET_FILE: &str = "subnet.toml";

/// A model together with the variable store holding its weights.
#[derive(Debug)]
pub struct Network {
    /// The variables (official names; gates under `gates.*`).
    pub vs: nn::VarStore,
    /// The model.
    pub model: TransUnet,
}

impl Network {
    /// A full-width model initialised under libtorch seed `seed`, gates off.
    pub fn new(cfg: &ModelConfig, device: Device, seed: u64) -> Result<Self> {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let model = TransUnet::new(&vs.root(), cfg)?;
        Ok(Network { vs, model })
    }

    /// Loads weights saved from a model of the same structure (strict).
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        load_safetensors(&self.vs, path)?;
        Ok(())
    }

    /// Attaches soft gates at their initial values under `gates.*` and switches to
    /// `Soft` mode (after loading gate-free weights, as the search starts).
    pub fn attach_soft_gates(&mut self) -> Result<()> {
        self.model.attach_soft_gates(&(self.vs.root() / "gates"))?;
        self.model.set_gate_mode(GateMode::Soft)?;
        Ok(())
    }
}

/// Trains the baseline (gates off) into `dir`, from the `train.pretrained` checkpoint
/// when one is set (a resumed run continues from its checkpoint instead).
pub fn run_baseline(
    cfg: &RunConfig,
    cohort: &Cohort,
    dir: impl AsRef<Path>,
    opts: &TrainOptions,
) -> Result<(Network, TrainMetrics)> {
    let device = cfg.train.device.device()?;
    let net = Network::new(&cfg.model, device, cfg.train.seed)?;
    if let Some(path) = &cfg.train.pretrained {
        let report = import_vit_npz(&net.vs, &cfg.model, path)?;
        if cfg.train.progress {
            eprintln!(
                "  pretrained: {} tensors from {} ({} model tensors not in the file keep \
                 their initialisation)",
                report.loaded.len(),
                path.display(),
                report.not_in_file.len()
            );
        }
    }
    let data = TrainData {
        train: &cohort.train,
        val: &cohort.val,
    };
    let m = train(&net.vs, &net.model, data, cfg, dir, opts)?;
    Ok((net, m))
}

/// Searches (with [`RunConfig::for_search`] of `cfg`) from the baseline weights at
/// `baseline_weights` in one round of soft-gate training into `dir`. The subnet is chosen
/// afterwards from the final gates (`gates_end.json`) with [`select`], so that one search
/// serves any budget.
pub fn run_search(
    cfg: &RunConfig,
    cohort: &Cohort,
    baseline_weights: impl AsRef<Path>,
    dir: impl AsRef<Path>,
    opts: &TrainOptions,
) -> Result<(Network, TrainMetrics)> {
    let cfg = &cfg.for_search();
    let device = cfg.train.device.device()?;
    let mut net = Network::new(&cfg.model, device, cfg.train.seed)?;
    net.load(baseline_weights)?;
    net.attach_soft_gates()?;
    let data = TrainData {
        train: &cohort.train,
        val: &cohort.val,
    };
    let m = train(&net.vs, &net.model, data, cfg, dir.as_ref(), opts)?;
    Ok((net, m))
}
