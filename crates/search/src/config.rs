//! Training configuration: one TOML file nests the model's `[model]` table unchanged and
//! adds `[data]`, `[train]`, `[search]` and `[select]`. Unknown keys are rejected with the
//! key named; [`RunConfig::validate`] checks every value once, when the file is read.
//!
//! ```toml
//! [model]            # slimseg-model's ModelConfig (configs/tiny.toml)
//! [train]            # optimiser, schedule, batch, epochs, seed, device, AMP
//! optimizer = "sgd"  # "sgd" | "adamw"
//! lr = 0.01
//! [search]           # sparsity of the soft gates (only for the search stage)
//! sparsity = "vit-slim"
//! [select]           # threshold selection -> SubnetSpec
//! budget = { kind = "model", metric = "macs", keep = 0.7 }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use slimseg_data::orient::OrientationPolicy;
use slimseg_data::pipeline::Normalization;
use slimseg_data::split::Split;
use slimseg_model::ModelConfig;
use slimseg_model::amp::AmpPrecision;

use crate::error::{Error, Result};
use crate::select::SelectConfig;

/// Optimiser of the weights (gates always get their own group, see [`SearchConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum and L2 weight decay added to the gradient (TransUNet's recipe).
    #[default]
    Sgd,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// Where to train and run: `auto`, `cpu`, `cuda` (device 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// CUDA device 0 when available, else CPU.
    #[default]
    Auto,
    /// CPU.
    Cpu,
    /// CUDA device N (an error when CUDA is unavailable or there is no device N), so
    /// that independent stages can run one process per GPU.
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    /// `auto`, `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("unknown device `{s}` (auto, cpu, cuda or cuda:N)")),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(0) => f.write_str("cuda"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl DeviceChoice {
    /// Resolves the choice to a device.
    pub fn device(self) -> Result<tch::Device> {
        match self {
            DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Cuda(n) => {
                if !tch::Cuda::is_available() {
                    return Err(Error::config(
                        "train.device",
                        format!("`{self}` requested but CUDA is not available"),
                    ));
                }
                let count = tch::Cuda::device_count().max(0) as usize;
                if n >= count {
                    return Err(Error::config(
                        "train.device",
                        format!(
                            "`{self}` requested but this machine has {count} CUDA device(s) \
                             (cuda:0 to cuda:{})",
                            count.saturating_sub(1)
                        ),
                    ));
                }
                Ok(tch::Device::Cuda(n))
            }
        }
    }
}

/// Mixed precision: autocast to float16 with dynamic loss scaling (CUDA), or to
/// bfloat16 without (CPU and CUDA). The weights, their gradients and the optimiser stay
/// in float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AmpChoice {
    /// float16 on CUDA, off on CPU.
    #[default]
    Auto,
    /// float16 on CUDA (ignored on CPU, which has no float16 autocast here).
    On,
    /// The same as `on`.
    Fp16,
    /// bfloat16 on CPU and CUDA: float32's range, so no loss scaling.
    Bf16,
    /// Off.
    Off,
}

/// The `[train]` table: one training loop for baseline, search and fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser of the weights. Default `sgd`.
    pub optimizer: OptimizerKind,
    /// Base learning rate of the weights. Default 0.01 (TransUNet).
    pub lr: f64,
    /// SGD momentum. Default 0.9.
    pub momentum: f64,
    /// Weight decay of the weights (L2 for SGD, decoupled for AdamW). Default 1e-4.
    pub weight_decay: f64,
    /// AdamW `(beta1, beta2)`. Default `[0.9, 0.999]`.
    pub betas: [f64; 2],
    /// AdamW epsilon. Default 1e-8.
    pub eps: f64,
    /// Exponent of the poly decay `lr (1 - it / max_it)^power`. Default 0.9.
    pub poly_power: f64,
    /// Slices per batch. Default 8.
    pub batch_size: usize,
    /// Epochs (passes over the training slices, last incomplete batch dropped). Default 10.
    pub epochs: usize,
    /// Seed of initialisation-independent randomness: shuffling, augmentation, dropout.
    /// Default 1234 (TransUNet).
    pub seed: u64,
    /// Validate (3D Dice on the validation split) every this many epochs, and after the
    /// last one; 0 disables validation. Default 1.
    pub val_every: usize,
    /// Slices per forward pass during evaluation. Default 16.
    pub eval_batch: usize,
    /// Device: `auto`, `cpu`, `cuda` (device 0) or `cuda:N`. Default `auto`.
    pub device: DeviceChoice,
    /// Mixed precision. Default `auto` (on for CUDA).
    pub amp: AmpChoice,
    /// TransUNet augmentation of the training slices. Default true.
    pub augment: bool,
    /// Weight of the direction-field loss when the pixel module is on. Default 1.0.
    pub lambda_df: f64,
    /// Intra-op CPU threads for libtorch (0: libtorch's default). Default 0.
    pub threads: usize,
    /// Draw a progress line on stderr. Default true.
    pub progress: bool,
    /// ImageNet-21k `R50+ViT-B_16.npz` (or an npz with its key scheme) imported into the
    /// ResNet and transformer before the baseline is trained (TransUNet's initialisation);
    /// the `[model]` widths must match the file. Baseline only: the search and the
    /// fine-tuning start from trained weights. Default none (random initialisation).
    pub pretrained: Option<PathBuf>,
    /// A trained TransUNet checkpoint (`.pth` as `torch.save` writes the official
    /// trainer's `state_dict`, or safetensors with the official names) that *is* the
    /// baseline: it is imported instead of trained. Default none.
    pub import: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            optimizer: OptimizerKind::Sgd,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            poly_power: 0.9,
            batch_size: 8,
            epochs: 10,
            seed: 1234,
            val_every: 1,
            eval_batch: 16,
            device: DeviceChoice::Auto,
            amp: AmpChoice::Auto,
            augment: true,
            lambda_df: 1.0,
            threads: 0,
            progress: true,
            pretrained: None,
            import: None,
        }
    }
}

fn finite_nonneg(key: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be finite and >= 0, found {v}"),
        ))
    }
}

fn positive(key: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be finite and > 0, found {v}"),
        ))
    }
}

impl TrainConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        positive("train.lr", self.lr)?;
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::config(
                "train.momentum",
                format!("must be in [0, 1), found {}", self.momentum),
            ));
        }
        finite_nonneg("train.weight_decay", self.weight_decay)?;
        for (i, b) in self.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(Error::config(
                    "train.betas",
                    format!("beta{} must be in [0, 1), found {b}", i + 1),
                ));
            }
        }
        positive("train.eps", self.eps)?;
        finite_nonneg("train.poly_power", self.poly_power)?;
        finite_nonneg("train.lambda_df", self.lambda_df)?;
        for (key, v) in [
            ("train.batch_size", self.batch_size),
            ("train.epochs", self.epochs),
            ("train.eval_batch", self.eval_batch),
        ] {
            if v == 0 {
                return Err(Error::config(key, "must be positive, found 0"));
            }
        }
        Ok(())
    }

    /// The autocast precision used on `device`, if any.
    pub fn amp_precision(&self, device: tch::Device) -> Option<AmpPrecision> {
        match self.amp {
            AmpChoice::Auto | AmpChoice::On | AmpChoice::Fp16 if device.is_cuda() => {
                Some(AmpPrecision::Fp16)
            }
            AmpChoice::Bf16 => Some(AmpPrecision::Bf16),
            _ => None,
        }
    }
}

/// How the L1 sparsity of the gates is weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SparsityKind {
    /// ViT-Slim: `w_attn sum|z_attn| + w_mlp sum|z_mlp| + w_patch sum|tanh s|`.
    #[default]
    VitSlim,
    /// Each gate weighted by the MACs it controls at full width, normalised so that the
    /// mean factor over all gates is `cost_weight`.
    CostAware,
}

/// The `[search]` table: the sparsity term and the gates' own parameter group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Per-dimension factors or cost-aware weighting. Default `vit-slim`.
    pub sparsity: SparsityKind,
    /// Factor of the attention gates (ViT-Slim default 2e-4).
    pub w_attn: f64,
    /// Factor of the MLP gates (ViT-Slim default 5e-5).
    pub w_mlp: f64,
    /// Factor of the token (patch) gates (ViT-Slim default 1e-4).
    pub w_patch: f64,
    /// Mean per-gate factor of the cost-aware weighting. Default 1e-4.
    pub cost_weight: f64,
    /// Learning rate of the gates (own group, no weight decay, same poly schedule).
    /// Default 0.01.
    pub gate_lr: f64,
    /// Epochs of the search; `None`: `train.epochs`. Default `None`.
    pub epochs: Option<usize>,
    /// Learning rate of the weights during the search; `None`: `train.lr`. Default `None`.
    pub lr: Option<f64>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            sparsity: SparsityKind::VitSlim,
            w_attn: 2e-4,
            w_mlp: 5e-5,
            w_patch: 1e-4,
            cost_weight: 1e-4,
            gate_lr: 0.01,
            epochs: None,
            lr: None,
        }
    }
}

impl SearchConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        finite_nonneg("search.w_attn", self.w_attn)?;
        finite_nonneg("search.w_mlp", self.w_mlp)?;
        finite_nonneg("search.w_patch", self.w_patch)?;
        finite_nonneg("search.cost_weight", self.cost_weight)?;
        if self.epochs == Some(0) {
            return Err(Error::config("search.epochs", "must be positive, found 0"));
        }
        if let Some(lr) = self.lr {
            positive("search.lr", lr)?;
        }
        positive("search.gate_lr", self.gate_lr)
    }
}

/// The `[finetune]` table: the schedule of the fine-tuning of the compressed model, which
/// otherwise trains like the search (`[search]` epochs and learning rate, else `[train]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// Epochs; `None`: `search.epochs`, else `train.epochs`. Default `None`.
    pub epochs: Option<usize>,
    /// Learning rate of the weights; `None`: `search.lr`, else `train.lr`. Default `None`.
    pub lr: Option<f64>,
}

impl FinetuneConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == Some(0) {
            return Err(Error::config(
                "finetune.epochs",
                "must be positive, found 0",
            ));
        }
        if let Some(lr) = self.lr {
            positive("finetune.lr", lr)?;
        }
        Ok(())
    }
}

/// Which patients form the training, validation and test sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SplitConfig {
    /// TransUNet/Swin-Unet split of ACDC patients 1-100 (70 / 10 / 20).
    #[default]
    Transunet,
    /// Fold `fold` of a `k`-fold split of all available patients; the next fold validates.
    Kfold {
        /// Number of folds.
        k: usize,
        /// Test fold.
        fold: usize,
        /// Shuffle seed.
        seed: u64,
    },
    /// Explicit lists.
    Explicit {
        /// Training patient ids.
        train: Vec<u32>,
        /// Validation patient ids.
        val: Vec<u32>,
        /// Test patient ids.
        test: Vec<u32>,
    },
}

impl SplitConfig {
    /// The split over the `available` patient ids.
    pub fn resolve(&self, available: &[u32]) -> Result<Split> {
        let split = match self {
            SplitConfig::Transunet => Split::transunet(),
            SplitConfig::Kfold { k, fold, seed } => {
                Split::kfold(available, *k, *fold, *seed, true)?
            }
            SplitConfig::Explicit { train, val, test } => Split {
                train: train.clone(),
                val: val.clone(),
                test: test.clone(),
            },
        };
        if split.train.is_empty() {
            return Err(Error::config("data.split", "the training set is empty"));
        }
        Ok(split)
    }
}

/// The `[data]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Root of an ACDC-format tree (`training/`, `testing/`); `None`: given by the caller.
    pub root: Option<PathBuf>,
    /// Patient split. Default `transunet`.
    pub split: SplitConfig,
    /// Per-volume intensity normalisation. Default min-max.
    pub normalization: Normalization,
    /// In-plane axis order of every volume: `stored` (default: as in the file, the slice
    /// axis moved last) or `world` (by the world axes, so any permuted or reversed copy
    /// of a file gets the same labels). Training, evaluation and prediction use the same.
    pub orientation: OrientationPolicy,
}

/// A whole run configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The model (slimseg-model's `[model]` table, unchanged).
    pub model: ModelConfig,
    /// Data selection.
    #[serde(default)]
    pub data: DataConfig,
    /// Training loop settings.
    #[serde(default)]
    pub train: TrainConfig,
    /// Search settings (sparsity, gate learning rate); used by the search stage.
    #[serde(default)]
    pub search: SearchConfig,
    /// Threshold selection; used after the search stage.
    #[serde(default)]
    pub select: SelectConfig,
    /// Fine-tuning schedule; used by the fine-tuning stage.
    #[serde(default)]
    pub finetune: FinetuneConfig,
    /// The latency benchmark of a run's models.
    #[serde(default)]
    pub bench: BenchConfig,
    /// The latency table of a latency budget.
    #[serde(default)]
    pub profile: ProfileConfig,
    /// The control models trained beside the searched one.
    #[serde(default)]
    pub controls: ControlsConfig,
    /// The budget sweep: more subnets from the one search.
    #[serde(default)]
    pub sweep: SweepConfig,
}

/// The `[profile]` table: how the `profile` stage measures the latency table a latency
/// budget selects by (`slimseg_model::profile`). Its own table, so that changing how the
/// bench stage times never changes which subnet a latency budget selects.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Images per forward pass. Default 1.
    pub batch: usize,
    /// Precision the model is profiled in. Default fp32.
    pub precision: slimseg_model::Precision,
    /// With the inference fast paths, as `predict` runs the model. Default true.
    pub fast: bool,
    /// Untimed passes before each timing. Default 3.
    pub warmup: usize,
    /// Timed passes per grid point (median). Default 10.
    pub repeats: usize,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            batch: 1,
            precision: slimseg_model::Precision::Fp32,
            fast: true,
            warmup: 3,
            repeats: 10,
        }
    }
}

impl ProfileConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::config("profile.batch", "must be at least 1"));
        }
        if self.repeats == 0 {
            return Err(Error::config("profile.repeats", "must be at least 1"));
        }
        Ok(())
    }
}

/// The `[sweep]` table: from the one search, one subnet per budget, each sliced and
/// fine-tuned with its uniform control of the same cost (the `sweep` stage).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepConfig {
    /// The kept fractions: each replaces the fraction(s) of `[select]`'s budget (both
    /// limits of a joint budget, every dimension of a per-dimension one). Empty (the
    /// default): no sweep.
    pub keep: Vec<f64>,
}

impl SweepConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        for (i, &k) in self.keep.iter().enumerate() {
            if !(k > 0.0 && k <= 1.0) {
                return Err(Error::config(
                    "sweep.keep",
                    format!("{k} is not a kept fraction in (0, 1]"),
                ));
            }
            if self.keep[..i].contains(&k) {
                return Err(Error::config("sweep.keep", format!("{k} is listed twice")));
            }
        }
        Ok(())
    }
}

/// The `[controls]` table: the models the report compares the compressed one with,
/// besides the baseline it was searched from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlsConfig {
    /// Train TransUNet, the baseline without the pixel module, next to the DFTransUnet
    /// baseline (when `model.pixel_head` is on; otherwise the baseline is TransUNet).
    /// Default true.
    pub transunet: bool,
    /// Build the uniform-width control: the subnet that keeps the compressed model's
    /// fraction of head dims, MLP units and tokens in every block, at no more parameters
    /// or MACs, sliced from the baseline and fine-tuned like the compressed model.
    /// Default true.
    pub uniform: bool,
}

impl Default for ControlsConfig {
    fn default() -> Self {
        ControlsConfig {
            transunet: true,
            uniform: true,
        }
    }
}

/// The `[bench]` table: how the run's latency benchmark times each model's forward pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchConfig {
    /// Batch sizes timed. Default `[1]`.
    pub batches: Vec<usize>,
    /// Untimed passes before timing, per model and batch size. Default 3.
    pub warmup: usize,
    /// Timed passes (median, min and max reported). Default 10.
    pub repeats: usize,
    /// Precisions each model is timed in, fp32 among them (the report's reference); in
    /// each, the baseline and the fine-tuned model are also evaluated on the test set as
    /// they run there (with the fast paths if `fast`), for the Dice change against their
    /// stages' exact fp32 evaluation. Default `["fp32"]`.
    pub precisions: Vec<slimseg_model::Precision>,
    /// Time models with the inference fast paths (fused q/k/v, SDPA, oneDNN linears on
    /// CPU), as `predict` runs them. Default true.
    pub fast: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            batches: vec![1],
            warmup: 3,
            repeats: 10,
            precisions: vec![slimseg_model::Precision::Fp32],
            fast: true,
        }
    }
}

impl BenchConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        if self.batches.is_empty() || self.batches.contains(&0) {
            return Err(Error::config(
                "bench.batches",
                "must be a non-empty list of positive batch sizes",
            ));
        }
        if self.repeats == 0 {
            return Err(Error::config("bench.repeats", "must be at least 1"));
        }
        if !self.precisions.contains(&slimseg_model::Precision::Fp32) {
            return Err(Error::config(
                "bench.precisions",
                "must include fp32 (the reference of the report's latencies)",
            ));
        }
        for (i, p) in self.precisions.iter().enumerate() {
            if self.precisions[..i].contains(p) {
                return Err(Error::config(
                    "bench.precisions",
                    format!("lists {p} twice"),
                ));
            }
        }
        Ok(())
    }
}

impl RunConfig {
    /// A configuration with the given model and defaults elsewhere.
    pub fn with_model(model: ModelConfig) -> Self {
        RunConfig {
            model,
            data: DataConfig::default(),
            train: TrainConfig::default(),
            search: SearchConfig::default(),
            select: SelectConfig::default(),
            finetune: FinetuneConfig::default(),
            bench: BenchConfig::default(),
            profile: ProfileConfig::default(),
            controls: ControlsConfig::default(),
            sweep: SweepConfig::default(),
        }
    }

    /// The configuration the search stage trains with: `[train]` with the epochs and the
    /// weights' learning rate of `[search]` where given.
    pub fn for_search(&self) -> RunConfig {
        let mut c = self.clone();
        if let Some(e) = self.search.epochs {
            c.train.epochs = e;
        }
        if let Some(lr) = self.search.lr {
            c.train.lr = lr;
        }
        c
    }

    /// The configuration the fine-tuning trains with: `[train]` with the epochs and
    /// learning rate of `[finetune]`, else of `[search]`, where given.
    pub fn for_finetune(&self) -> RunConfig {
        let mut c = self.for_search();
        if let Some(e) = self.finetune.epochs {
            c.train.epochs = e;
        }
        if let Some(lr) = self.finetune.lr {
            c.train.lr = lr;
        }
        c
    }

    /// Checks every table.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.train.validate()?;
        self.search.validate()?;
        self.select.validate()?;
        self.finetune.validate()?;
        self.bench.validate()?;
        self.profile.validate()?;
        self.sweep.validate()
    }

    /// Parses and validates a TOML document.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        Self::parse(s, Path::new(""))
    }

    fn parse(s: &str, path: &Path) -> Result<Self> {
        let cfg: RunConfig = toml::from_str(s).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        cfg.validate().map_err(|e| match e {
            Error::Config { key, reason } if !path.as_os_str().is_empty() => Error::Parse {
                path: path.to_path_buf(),
                reason: format!("key `{key}`: {reason}"),
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Reads and validates a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&s, path)
    }

    /// The configuration as far as it decides a training's results, as TOML: the
    /// run-time keys (device, CPU threads, progress line) are normalised, so a run
    /// continued on another device counts as the same run (the trainer checks the thread
    /// count itself), and so are the paths of the data root and of the pretrained
    /// checkpoint, which a caller identifies by content (a moved run is the same run), as
    /// are `[bench]`, `[controls]` and `[sweep]`, which no training reads.
    pub fn result_identity(&self) -> Result<String> {
        let mut c = self.clone();
        c.data.root = None;
        c.train.pretrained = None;
        c.train.import = None;
        c.bench = BenchConfig::default();
        c.controls = ControlsConfig::default();
        c.sweep = SweepConfig::default();
        c.train.device = DeviceChoice::Auto;
        c.train.threads = 0;
        c.train.progress = true;
        c.to_toml_string()
    }

    /// Serialises as TOML.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Parse {
            path: PathBuf::new(),
            reason: e.to_string(),
        })
    }

    /// Writes the configuration as TOML, atomically.
    pub fn save_toml(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::error::write_atomic(path.as_ref(), self.to_toml_string()?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_budgets_are_distinct_fractions() {
        let mut cfg = RunConfig::with_model(ModelConfig::tiny());
        cfg.sweep.keep = vec![0.9, 0.5, 1.0];
        cfg.validate().unwrap();
        for (bad, why) in [
            (vec![0.9, 0.0], "not a kept fraction"),
            (vec![1.5], "not a kept fraction"),
            (vec![f64::NAN], "not a kept fraction"),
            (vec![0.7, 0.7], "listed twice"),
        ] {
            cfg.sweep.keep = bad;
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("sweep.keep") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn devices_parse_print_and_round_trip_through_toml() {
        for (s, d) in [
            ("auto", DeviceChoice::Auto),
            ("cpu", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:0", DeviceChoice::Cuda(0)),
            ("CUDA:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceChoice>(), Ok(d), "{s}");
        }
        assert_eq!(DeviceChoice::Cuda(0).to_string(), "cuda");
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "cuda1"] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains(bad) && e.contains("cuda:N"), "{e}");
        }
        let mut cfg = RunConfig::with_model(ModelConfig::tiny());
        cfg.train.device = DeviceChoice::Cuda(1);
        let text = cfg.to_toml_string().unwrap();
        assert!(text.contains("device = \"cuda:1\""), "{text}");
        assert_eq!(RunConfig::from_toml_str(&text).unwrap(), cfg);
        let typo = text.replace("device = \"cuda:1\"", "device = \"cuda:one\"");
        let err = RunConfig::from_toml_str(&typo).unwrap_err().to_string();
        assert!(err.contains("cuda:one"), "{err}");
    }

    #[test]
    fn a_cuda_device_that_is_not_there_is_an_error_naming_it() {
        let count = if tch::Cuda::is_available() {
            tch::Cuda::device_count() as usize
        } else {
            0
        };
        let missing = DeviceChoice::Cuda(count);
        let err = missing.device().unwrap_err().to_string();
        assert!(err.contains(&format!("`{missing}` requested")), "{err}");
        if count == 0 {
            assert!(err.contains("CUDA is not available"), "{err}");
        } else {
            assert!(err.contains(&format!("{count} CUDA device(s)")), "{err}");
            assert_eq!(
                DeviceChoice::Cuda(0).device().unwrap(),
                tch::Device::Cuda(0)
            );
        }
    }
}
