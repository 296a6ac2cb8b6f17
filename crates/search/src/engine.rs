//! The training engine: one loop for baseline training (gates off), search (soft gates
//! with L1 sparsity, gates in their own parameter group) and fine-tuning (a reduced
//! model), with poly learning-rate decay, validation by 3D Dice, atomic per-epoch
//! checkpoints, exact resumption and per-epoch CSV logs.
//!
//! Stage directory layout (written by [`train`]):
//! ```text
//! config.toml          the run configuration
//! log.csv              one row per epoch (losses, lr, val Dice, gate statistics)
//! weights.safetensors  the last weights
//! best.safetensors     the weights of the best validation Dice
//! metrics.json         TrainMetrics
//! gates_start.json     soft gate values before search (search only)
//! gates_end.json       soft gate values after search (search only)
//! checkpoints/last.json           -> the last complete checkpoint directory
//! checkpoints/epoch-NNNN/{model,optim}.safetensors, state.json
//! ```
//!
//! Determinism: batches depend only on `(seed, epoch)` (slimseg-data), and libtorch's
//! generator is reseeded from `(seed, epoch)` before every epoch, so a run resumed from
//! the checkpoint of epoch `e` replays epochs `e+1..` exactly as an uninterrupted run.
//! A checkpoint is written into a temporary directory, renamed into place, and only
//! then published by atomically replacing `last.json`; a kill at any moment leaves the
//! previous checkpoint intact.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use slimseg_data::pipeline::{PipelineConfig, SliceDataset};
use slimseg_model::amp::{AmpPrecision, autocast};
use slimseg_model::weights::{load_safetensors, save_safetensors};
use slimseg_model::{GateMode, GateValues, PixelHead, TransUnet};
use tch::{Device, Tensor, nn};

use crate::config::{AmpChoice, RunConfig};
use crate::data::EvalVolume;
use crate::error::{Error, Result, write_atomic};
use crate::eval::{EvalOptions, evaluate};
use crate::loss::{direction_loss, segmentation_loss, sparsity_factors, sparsity_loss};
use crate::optim::{GroupSettings, Optimizer, OptimizerSettings, grads_finite};
use crate::stats::GateStats;

/// The data a training run uses.
#[derive(Debug, Clone, Copy)]
pub struct TrainData<'a> {
    /// Training slices.
    pub train: &'a SliceDataset,
    /// Validation volumes (may be empty: no validation, "best" = last).
    pub val: &'a [EvalVolume],
}

/// Controls of one call of [`train`] that are not part of the run's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainOptions {
    /// Continue from the last complete checkpoint of the stage directory, if there is
    /// one. Default true.
    pub resume: bool,
    /// Return after this many epochs of this call (as if the process had been stopped
    /// there), leaving the run resumable. Default `None`.
    pub stop_after_epochs: Option<usize>,
    /// Training slices the rest of the run processes after this stage, for the whole
    /// run's time estimate. Default `None`: the stage is not part of a longer run.
    pub slices_after: Option<u64>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            resume: true,
            stop_after_epochs: None,
            slices_after: None,
        }
    }
}

/// One row of `log.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Optimiser steps so far.
    pub iterations: usize,
    /// Learning rate of the weights at the epoch's last step.
    pub lr: f64,
    /// Mean total loss over the epoch.
    pub loss: f64,
    /// Mean segmentation loss (0.5 CE + 0.5 Dice).
    pub seg_loss: f64,
    /// Mean direction-field loss (weighted), 0 without the pixel module.
    pub df_loss: f64,
    /// Mean sparsity loss (weighted), 0 outside search.
    pub sparsity_loss: f64,
    /// Mean 3D Dice on the validation split, when validated this epoch.
    pub val_dice: Option<f64>,
    /// Wall seconds of the epoch (training and validation).
    pub seconds: f64,
    /// Training throughput of the epoch.
    pub slices_per_s: f64,
    /// Soft gate statistics after the epoch (search only).
    pub gates: Option<GateStats>,
}

const CSV_HEADER: &str = "epoch,iterations,lr,loss,seg_loss,df_loss,sparsity_loss,val_dice,\
seconds,slices_per_s,attn_mean,mlp_mean,token_mean,attn_below_0.05,mlp_below_0.05,token_below_0.05";

impl EpochRecord {
    fn csv_row(&self) -> String {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
        let g = self.gates.as_ref();
        format!(
            "{},{},{:.6e},{:.6},{:.6},{:.6},{:.6},{},{:.2},{:.2},{},{},{},{},{},{}",
            self.epoch,
            self.iterations,
            self.lr,
            self.loss,
            self.seg_loss,
            self.df_loss,
            self.sparsity_loss,
            opt(self.val_dice),
            self.seconds,
            self.slices_per_s,
            opt(g.map(|g| g.attn.mean)),
            opt(g.map(|g| g.mlp.mean)),
            opt(g.map(|g| g.token.mean)),
            opt(g.map(|g| g.attn.below_005)),
            opt(g.map(|g| g.mlp.below_005)),
            opt(g.map(|g| g.token.below_005)),
        )
    }
}

/// What [`train`] returns and writes to `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainMetrics {
    /// Epochs completed (all calls together).
    pub epochs: usize,
    /// Whether all configured epochs are done.
    pub completed: bool,
    /// Optimiser steps taken.
    pub iterations: usize,
    /// Epoch of the checkpoint this call resumed from, if any.
    pub resumed_from_epoch: Option<usize>,
    /// Wall seconds of training and validation, all calls together.
    pub seconds: f64,
    /// Mean training throughput, slices per second.
    pub slices_per_s: f64,
    /// Mean loss of the last epoch.
    pub final_loss: f64,
    /// Best validation Dice and its epoch.
    pub best_val_dice: Option<f64>,
    /// Epoch of `best_val_dice`.
    pub best_epoch: Option<usize>,
    /// Validation Dice of the last validated epoch.
    pub last_val_dice: Option<f64>,
    /// Device used (`Cpu`, `Cuda(0)`).
    pub device: String,
    /// Whether mixed precision was used.
    pub amp: bool,
    /// Its precision (`fp16`, `bf16`) when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amp_precision: Option<String>,
    /// Gate mode during training (`off`, `soft`, `hard`).
    pub gate_mode: String,
}

/// Trainer state stored with each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    config: String,
    epochs_done: usize,
    iterations: usize,
    optimizer_steps: u64,
    amp_scale: f64,
    amp_good_steps: u64,
    /// Device of the run that wrote the state (`Cpu`, `Cuda(0)`).
    device: String,
    /// Whether that run used mixed precision.
    amp: bool,
    /// In which precision (`None` with `amp`: fp16, from before bf16 existed).
    #[serde(default)]
    amp_precision: Option<String>,
    /// libtorch's intra-op CPU threads of the run that wrote the state (CPU runs only):
    /// CPU reductions are split by thread, so another count gives other rounding.
    #[serde(default)]
    threads: Option<usize>,
    best_val_dice: Option<f64>,
    best_epoch: Option<usize>,
    seconds: f64,
    history: Vec<EpochRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastPointer {
    epoch: usize,
    dir: String,
}

fn json_err(path: &Path, e: serde_json::Error) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value).map_err(|e| json_err(path, e))?;
    write_atomic(path, s.as_bytes())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&s).map_err(|e| json_err(path, e))
}

/// Named trainable variables of `vs`, sorted by name.
fn trainable(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn epoch_seed(seed: u64, epoch: usize) -> i64 {
    let x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 1) as i64
}

/// Paths of a stage directory.
#[derive(Debug, Clone)]
pub struct StageDir {
    /// The stage directory.
    pub root: PathBuf,
}

impl StageDir {
    /// Wraps a stage directory path.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StageDir { root: root.into() }
    }
    /// `config.toml`
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `log.csv`
    pub fn log(&self) -> PathBuf {
        self.root.join("log.csv")
    }
    /// `weights.safetensors` (last weights).
    pub fn weights(&self) -> PathBuf {
        self.root.join("weights.safetensors")
    }
    /// `best.safetensors`
    pub fn best(&self) -> PathBuf {
        self.root.join("best.safetensors")
    }
    /// `metrics.json`
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.json")
    }
    /// `gates_start.json`
    pub fn gates_start(&self) -> PathBuf {
        self.root.join("gates_start.json")
    }
    /// `gates_end.json`
    pub fn gates_end(&self) -> PathBuf {
        self.root.join("gates_end.json")
    }
    /// `checkpoints/`
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
}

fn write_log(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in history {
        s.push_str(&r.csv_row());
        s.push('\n');
    }
    write_atomic(path, s.as_bytes())
}

fn save_checkpoint(
    dir: &StageDir,
    vs: &nn::VarStore,
    opt: &Optimizer,
    state: &TrainerState,
) -> Result<()> {
    let ck = dir.checkpoints();
    std::fs::create_dir_all(&ck).map_err(|e| Error::io(&ck, e))?;
    let name = format!("epoch-{:04}", state.epochs_done);
    let tmp = ck.join(format!(".{name}.tmp"));
    let fin = ck.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    save_safetensors(vs, tmp.join("model.safetensors"))?;
    let named = opt.state_tensors();
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let optim_path = tmp.join("optim.safetensors");
    Tensor::write_safetensors(&refs, &optim_path)?;
    write_json(&tmp.join("state.json"), state)?;
    if fin.exists() {
        std::fs::remove_dir_all(&fin).map_err(|e| Error::io(&fin, e))?;
    }
    std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
    write_json(
        &ck.join("last.json"),
        &LastPointer {
            epoch: state.epochs_done,
            dir: name.clone(),
        },
    )?;
    // Older checkpoints are no longer needed once the pointer moved.
    if let Ok(rd) = std::fs::read_dir(&ck) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("epoch-") && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

fn load_checkpoint(
    dir: &StageDir,
    vs: &nn::VarStore,
    opt: &mut Optimizer,
) -> Result<Option<TrainerState>> {
    let ck = dir.checkpoints();
    let ptr_path = ck.join("last.json");
    if !ptr_path.exists() {
        return Ok(None);
    }
    let ptr: LastPointer = read_json(&ptr_path)?;
    let cdir = ck.join(&ptr.dir);
    let bad = |reason: String| Error::Checkpoint {
        path: cdir.clone(),
        reason,
    };
    let state: TrainerState = read_json(&cdir.join("state.json"))?;
    if state.epochs_done != ptr.epoch {
        return Err(bad(format!(
            "last.json says epoch {}, state.json {}",
            ptr.epoch, state.epochs_done
        )));
    }
    load_safetensors(vs, cdir.join("model.safetensors"))?;
    let optim_path = cdir.join("optim.safetensors");
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&optim_path)
        .map_err(|e| bad(format!("optim.safetensors: {e}")))?
        .into_iter()
        .collect();
    opt.load_state(tensors, state.optimizer_steps)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Some(state))
}

/// A training's progress on stderr: on a terminal (with `train.progress`), an indicatif
/// bar over the iterations with the running loss, throughput and ETA, and the finished
/// epochs' lines printed above it; otherwise only one plain line per finished epoch (no
/// control characters, so a log file reads cleanly).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    label: String,
}

impl Progress {
    fn new(live: bool, label: String, iterations: u64, done: u64) -> Self {
        let bar = live.then(|| {
            let bar = indicatif::ProgressBar::new(iterations);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "[{prefix}] {bar:28} it {pos}/{len} {msg} [{elapsed} < {eta}]",
                )
                .expect("a valid template"),
            );
            bar.set_prefix(label.clone());
            bar.set_position(done);
            bar
        });
        Progress { bar, label }
    }

    /// Moves the bar to `iteration` with `text` beside it.
    fn draw(&self, iteration: u64, text: impl FnOnce() -> String) {
        if let Some(bar) = &self.bar {
            bar.set_position(iteration);
            bar.set_message(text());
        }
    }

    /// The line of a finished epoch (above the bar on a terminal).
    fn epoch_line(&self, text: &str) {
        let line = format!("[{}] {text}", self.label);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{line}");
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A training longer than this on its device is called impractical.
const IMPRACTICAL_S: f64 = 6.0 * 3600.0;

/// The training's and the run's remaining time, said once: measured over a few iterations
/// after the first (which pays for allocation and kernel selection).
struct Estimate {
    start: Option<(Instant, usize)>,
    slices: usize,
    iterations: usize,
    said: bool,
}

impl Estimate {
    const WARMUP: usize = 1;
    const MEASURED: usize = 3;

    fn new() -> Self {
        Estimate {
            start: None,
            slices: 0,
            iterations: 0,
            said: false,
        }
    }

    /// Counts one iteration of `batch` slices; after the measured ones, the estimate of
    /// `left` more slices of this training and `after` of the rest of the run on `device`.
    fn step(
        &mut self,
        batch: usize,
        left: u64,
        after: Option<u64>,
        device: Device,
    ) -> Option<String> {
        self.iterations += 1;
        self.slices += batch;
        if self.iterations == Self::WARMUP {
            self.start = Some((Instant::now(), self.slices));
        }
        let (t0, s0) = self.start?;
        if self.said || self.iterations < Self::WARMUP + Self::MEASURED {
            return None;
        }
        self.said = true;
        let rate = (self.slices - s0) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        let stage = left as f64 / rate;
        let place = match device {
            Device::Cpu => format!("the CPU ({} threads)", tch::get_num_threads()),
            Device::Cuda(i) => format!("CUDA device {i}"),
            other => format!("{other:?}"),
        };
        let mut line = format!(
            "{rate:.1} slices/s on {place}: this training needs about {} more",
            fmt_eta(stage)
        );
        if let Some(a) = after.filter(|&a| a > 0) {
            line += &format!(
                ", the whole run about {} (training only, at this rate)",
                fmt_eta(stage + a as f64 / rate)
            );
        }
        if stage > IMPRACTICAL_S {
            line += &format!(
                "\nwarning: at {rate:.2} slices/s this training alone takes {:.1} days on {place}; \
                 the run is impractical on this device: use a CUDA GPU (--device cuda) or a \
                 smaller preset (configs/tiny.toml)",
                stage / 86400.0
            );
        }
        Some(line)
    }
}

fn fmt_eta(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Trains `model` (whose variables live in `vs`) on `data` as configured by `cfg`,
/// writing checkpoints, logs, weights and metrics to the stage directory `dir`.
///
/// The model's gate mode selects the stage: `Soft` is the search (segmentation loss plus
/// the sparsity term of `cfg.search`, gates in their own group with `gate_lr` and no
/// weight decay), anything else trains the weights with the segmentation loss (plus the
/// direction-field loss when the pixel module is on). The learning rate follows
/// `lr (1 - it / max_it)^poly_power` over all iterations of all epochs.
pub fn train(
    vs: &nn::VarStore,
    model: &TransUnet,
    data: TrainData<'_>,
    cfg: &RunConfig,
    dir: impl AsRef<Path>,
    opts: &TrainOptions,
) -> Result<TrainMetrics> {
    cfg.validate()?;
    if model.config() != &cfg.model {
        return Err(Error::Input(
            "the model's configuration differs from the run configuration's [model] table".into(),
        ));
    }
    let tc = &cfg.train;
    let dir = StageDir::new(dir.as_ref());
    std::fs::create_dir_all(&dir.root).map_err(|e| Error::io(&dir.root, e))?;
    if tc.threads > 0 {
        tch::set_num_threads(tc.threads as i32);
    }
    let device = vs.device();
    let amp_precision = tc.amp_precision(device);
    let amp = amp_precision.is_some();
    // Loss scaling keeps float16 gradients from underflowing; bfloat16 has float32's range.
    let scaled = amp_precision == Some(AmpPrecision::Fp16);
    let amp_name = amp_precision.map(|p| p.to_string());
    if !device.is_cuda() && matches!(tc.amp, AmpChoice::On | AmpChoice::Fp16) {
        eprintln!(
            "  train.amp = {:?} is float16 autocast, which runs on CUDA only: training in \
             fp32 on the CPU (train.amp = \"bf16\" autocasts here)",
            tc.amp
        );
    }
    let search = matches!(model.gate_mode(), GateMode::Soft);
    let gates = if search { model.soft_gates() } else { None };
    let factors = sparsity_factors(&cfg.model, &cfg.search);
    let pixel = cfg.model.pixel_head == PixelHead::DirectionField;

    // Parameter groups: 0 weights, 1 gates (no weight decay, own learning rate).
    let gate_ptrs: HashSet<usize> = model
        .soft_gates()
        .map(|g| {
            g.variables()
                .iter()
                .map(|t| t.data_ptr() as usize)
                .collect()
        })
        .unwrap_or_default();
    let params: Vec<(String, Tensor, usize)> = trainable(vs)
        .into_iter()
        .map(|(n, t)| {
            let group = usize::from(gate_ptrs.contains(&(t.data_ptr() as usize)));
            (n, t, group)
        })
        .collect();
    let mut opt = Optimizer::new(
        OptimizerSettings {
            kind: tc.optimizer,
            momentum: tc.momentum,
            betas: tc.betas,
            eps: tc.eps,
        },
        vec![
            GroupSettings {
                lr: tc.lr,
                weight_decay: tc.weight_decay,
            },
            GroupSettings {
                lr: cfg.search.gate_lr,
                weight_decay: 0.0,
            },
        ],
        params,
    )?;

    let pipe = PipelineConfig {
        size: cfg.model.img_size,
        batch_size: tc.batch_size,
        augment: tc.augment,
        shuffle: true,
        drop_last: true,
        direction_fields: pixel,
        normalization: cfg.data.normalization,
        seed: tc.seed,
    };
    pipe.check()?;
    let per_epoch = data.train.batches_per_epoch(&pipe);
    if per_epoch == 0 {
        return Err(Error::Input(format!(
            "{} training slices make no full batch of {}",
            data.train.len(),
            tc.batch_size
        )));
    }
    let max_it = per_epoch * tc.epochs;
    let config_text = cfg.result_identity()?;

    let mut state = TrainerState {
        config: config_text.clone(),
        epochs_done: 0,
        iterations: 0,
        optimizer_steps: 0,
        amp_scale: if scaled { 65536.0 } else { 1.0 },
        amp_good_steps: 0,
        device: format!("{device:?}"),
        amp,
        amp_precision: amp_name.clone(),
        threads: (device == Device::Cpu).then(|| tch::get_num_threads().max(1) as usize),
        best_val_dice: None,
        best_epoch: None,
        seconds: 0.0,
        history: Vec::new(),
    };
    let mut resumed_from = None;
    if opts.resume {
        if let Some(s) = load_checkpoint(&dir, vs, &mut opt)? {
            if s.config != config_text {
                return Err(Error::Checkpoint {
                    path: dir.checkpoints(),
                    reason: "was written with a different configuration; use a new stage \
                             directory or remove the checkpoints"
                        .into(),
                });
            }
            if let (Some(then), Some(now)) = (s.threads, state.threads) {
                if then != now {
                    return Err(Error::Checkpoint {
                        path: dir.checkpoints(),
                        reason: format!(
                            "was written with {then} CPU threads and this run has {now}; results \
                         depend on the thread count, so resume with --set \
                         train.threads={then} (or restart the stage with --force)"
                        ),
                    });
                }
            }
            resumed_from = Some(s.epochs_done);
            let then = s.amp.then(|| s.amp_precision.as_deref().unwrap_or("fp16"));
            if s.device != state.device || then != amp_name.as_deref() {
                // The weights and optimiser moments carry over; the loss scale belongs to
                // the precision of this run.
                eprintln!(
                    "  resuming a checkpoint of {} (amp {}) on {} (amp {}): the run \
                     continues, with rounding that differs from an uninterrupted run",
                    s.device,
                    then.unwrap_or("off"),
                    state.device,
                    amp_name.as_deref().unwrap_or("off")
                );
                state = TrainerState {
                    amp_scale: state.amp_scale,
                    amp_good_steps: 0,
                    device: state.device,
                    amp,
                    amp_precision: amp_name.clone(),
                    threads: state.threads,
                    ..s
                };
            } else {
                // Checkpoints from before bf16 autocast recorded no precision.
                state = TrainerState {
                    amp_precision: amp_name.clone(),
                    ..s
                };
            }
        }
    }
    cfg.save_toml(dir.config())?;
    if let (Some(g), None) = (gates, resumed_from) {
        write_json(&dir.gates_start(), &g.values())?;
    }

    let label = match model.gate_mode() {
        GateMode::Soft => "search",
        _ if model.arch().is_some() => "finetune",
        _ => "train",
    };
    let progress = Progress::new(
        tc.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        label.into(),
        max_it as u64,
        state.iterations as u64,
    );
    let eval_opts = EvalOptions {
        batch: tc.eval_batch,
        ..EvalOptions::default()
    };
    let s = cfg.model.img_size as i64;
    let mut epochs_this_call = 0;
    let mut estimate = Estimate::new();
    while state.epochs_done < tc.epochs {
        if opts
            .stop_after_epochs
            .is_some_and(|n| epochs_this_call >= n)
        {
            break;
        }
        let epoch = state.epochs_done; // 0-based index of this epoch
        tch::manual_seed(epoch_seed(tc.seed, epoch));
        let t0 = Instant::now();
        let (mut sum, mut sum_seg, mut sum_df, mut sum_sp, mut n) = (0.0, 0.0, 0.0, 0.0, 0usize);
        let mut lr = tc.lr;
        let mut slices = 0usize;
        for batch in data.train.epoch(&pipe, epoch as u64) {
            let batch = batch?;
            let b = batch.len() as i64;
            let x = Tensor::from_slice(&batch.images)
                .view([b, 1, s, s])
                .to_device(device);
            let y = Tensor::from_slice(&batch.labels)
                .view([b, s, s])
                .to_device(device);
            let scale = (1.0 - state.iterations as f64 / max_it as f64)
                .max(0.0)
                .powf(tc.poly_power);
            lr = tc.lr * scale;
            // Only enter autocast when it is on: toggling it off still touches (deprecated)
            // CUDA autocast state in libtorch and warns on every call.
            let out = match amp_precision {
                Some(p) => autocast(device, p, || model.forward_t(&x, true))??,
                None => model.forward_t(&x, true)?,
            };
            let seg = segmentation_loss(&out.logits, &y);
            let df = match (&out.direction_field, &batch.directions) {
                (Some(field), Some(target)) if tc.lambda_df > 0.0 => {
                    let t = Tensor::from_slice(target)
                        .view([b, 2, s, s])
                        .to_device(device);
                    Some(direction_loss(field, &t) * tc.lambda_df)
                }
                _ => None,
            };
            let sp = gates.map(|g| sparsity_loss(g, factors));
            // A new tensor: `+=` below adds in place and must not change `seg`.
            let mut loss = &seg + 0.0;
            if let Some(d) = &df {
                loss += d;
            }
            if let Some(p) = &sp {
                loss += p;
            }
            let lv = loss.double_value(&[]);
            if !lv.is_finite() && !scaled {
                return Err(Error::Diverged {
                    epoch,
                    iteration: state.iterations,
                    loss: lv,
                });
            }
            opt.zero_grad();
            if scaled {
                (&loss * state.amp_scale).backward();
                let grads = opt.grads();
                let inv = 1.0 / state.amp_scale;
                tch::no_grad(|| {
                    for g in &grads {
                        let mut g = g.shallow_clone();
                        let _ = g.g_mul_scalar_(inv);
                    }
                });
                if grads_finite(&grads) {
                    opt.step(scale);
                    state.amp_good_steps += 1;
                    if state.amp_good_steps % 2000 == 0 {
                        state.amp_scale *= 2.0;
                    }
                } else {
                    state.amp_scale = (state.amp_scale / 2.0).max(1.0);
                    state.amp_good_steps = 0;
                }
            } else {
                loss.backward();
                opt.step(scale);
            }
            state.iterations += 1;
            sum += lv;
            sum_seg += seg.double_value(&[]);
            sum_df += df.as_ref().map_or(0.0, |d| d.double_value(&[]));
            sum_sp += sp.as_ref().map_or(0.0, |p| p.double_value(&[]));
            n += 1;
            slices += batch.len();
            let left = ((max_it - state.iterations) * tc.batch_size) as u64;
            if let Some(line) = estimate.step(batch.len(), left, opts.slices_after, device) {
                progress.epoch_line(&line);
            }
            let el = t0.elapsed().as_secs_f64();
            let rate = slices as f64 / el.max(1e-9);
            progress.draw(state.iterations as u64, || {
                format!(
                    "epoch {}/{} loss {:.4} lr {:.2e} {:.1} slices/s",
                    epoch + 1,
                    tc.epochs,
                    sum / n as f64,
                    lr,
                    rate,
                )
            });
        }
        let train_secs = t0.elapsed().as_secs_f64();
        let epoch1 = epoch + 1;
        let validate = tc.val_every > 0
            && !data.val.is_empty()
            && (epoch1 % tc.val_every == 0 || epoch1 == tc.epochs);
        let val_dice = if validate {
            evaluate(model, data.val, &eval_opts)?.mean_dice
        } else {
            None
        };
        if let Some(d) = val_dice {
            if state.best_val_dice.is_none_or(|b| d > b) {
                state.best_val_dice = Some(d);
                state.best_epoch = Some(epoch1);
                save_safetensors(vs, dir.best())?;
            }
        } else if data.val.is_empty() || tc.val_every == 0 {
            // Without validation the best weights are the last ones.
            save_safetensors(vs, dir.best())?;
        }
        let seconds = t0.elapsed().as_secs_f64();
        state.seconds += seconds;
        state.epochs_done = epoch1;
        state.optimizer_steps = opt.steps();
        let nf = n.max(1) as f64;
        state.history.push(EpochRecord {
            epoch: epoch1,
            iterations: state.iterations,
            lr,
            loss: sum / nf,
            seg_loss: sum_seg / nf,
            df_loss: sum_df / nf,
            sparsity_loss: sum_sp / nf,
            val_dice,
            seconds,
            slices_per_s: slices as f64 / train_secs.max(1e-9),
            gates: gates.map(|g| GateStats::of(&g.values())),
        });
        save_checkpoint(&dir, vs, &opt, &state)?;
        write_log(&dir.log(), &state.history)?;
        let left_epochs = tc.epochs.saturating_sub(epoch1) as f64;
        progress.epoch_line(&format!(
            "epoch {epoch1}/{} loss {:.4} val dice {}, {:.1} slices/s, {:.0} s, ETA {}",
            tc.epochs,
            sum / nf,
            val_dice.map_or("-".into(), |d| format!("{d:.4}")),
            slices as f64 / train_secs.max(1e-9),
            seconds,
            fmt_eta(left_epochs * seconds)
        ));
        epochs_this_call += 1;
    }
    progress.finish();
    write_log(&dir.log(), &state.history)?;
    let completed = state.epochs_done >= tc.epochs;
    let metrics = TrainMetrics {
        epochs: state.epochs_done,
        completed,
        iterations: state.iterations,
        resumed_from_epoch: resumed_from,
        seconds: state.seconds,
        slices_per_s: (per_epoch * tc.batch_size * state.epochs_done) as f64
            / state.seconds.max(1e-9),
        final_loss: state.history.last().map_or(f64::NAN, |r| r.loss),
        best_val_dice: state.best_val_dice,
        best_epoch: state.best_epoch,
        last_val_dice: state.history.iter().rev().find_map(|r| r.val_dice),
        device: format!("{device:?}"),
        amp,
        amp_precision: amp_name,
        gate_mode: match model.gate_mode() {
            GateMode::Off => "off",
            GateMode::Soft => "soft",
            GateMode::Hard { .. } => "hard",
        }
        .into(),
    };
    if completed {
        save_safetensors(vs, dir.weights())?;
        if let Some(g) = gates {
            write_json(&dir.gates_end(), &g.values())?;
        }
        write_json(&dir.metrics(), &metrics)?;
    }
    Ok(metrics)
}

/// Reads soft gate values written by [`train`] (`gates_start.json`, `gates_end.json`).
pub fn read_gate_values(path: impl AsRef<Path>) -> Result<GateValues> {
    read_json(path.as_ref())
}
