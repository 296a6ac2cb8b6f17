//! The pipeline stages as commands: `train` (baseline), `search`, `compress`,
//! `finetune`, `eval`, `predict`, `info` and `bench`. Each reads the previous stage's
//! folder of a run directory (see [`crate::run`]) and writes its own.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use slimseg_compress::{
    CompressedModel, Folding, LatencyOptions, Manifest, check_equivalence, compress_checkpoint,
    latency::bench_full_vs_compressed,
};
use slimseg_data::metrics::Convention;
use slimseg_data::nii::{NonFinite, read_volume_with};
use slimseg_data::pipeline::{normalize_volume, resize_cubic};
use slimseg_model::count::{ModelCount, count};
use slimseg_model::infer::predict_volume_with;
use slimseg_model::{ModelConfig, SubnetArch, TransUnet};
use slimseg_search::data::{Cohort, EvalVolume};
use slimseg_search::engine::read_gate_values;
use slimseg_search::select::{Budget, CostMetric, CostScope, SelectConfig};
use slimseg_search::stages::{Network, SUBNET_FILE, run_baseline, run_search};
use slimseg_search::{
    EvalOptions, EvalReport, RunConfig, SubnetSpec, TrainOptions, evaluate, train,
};
use tch::{Device, Kind, Tensor, nn};

use crate::guard::check_output;
use crate::run::{Run, RunArgs, read_json, write_json};

/// File of the test-set evaluation in each stage folder.
pub const EVAL_FILE: &str = "eval.json";
/// File of the latency benchmark in the compressed folder.
pub const LATENCY_FILE: &str = "latency.json";
/// Folder (inside `finetuned/`) holding the fine-tuned model in the compressed format.
pub const FINETUNED_MODEL_DIR: &str = "model";

/// Options of the stage commands that train or transform.
#[derive(Debug, Clone, Args)]
pub struct StageArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Redo the stage even if its folder holds a completed result (restarts training).
    #[arg(long)]
    pub force: bool,
}

/// The subnet budget on the command line (overrides `[select]` of the configuration).
#[derive(Debug, Clone, Default, Args)]
pub struct BudgetArgs {
    /// Keep at most this share of the MACs: a fraction (0.7) or a percentage (70%).
    #[arg(long, value_name = "KEEP")]
    pub target_macs: Option<String>,
    /// Keep at most this share of the parameters: a fraction or a percentage.
    #[arg(long, value_name = "KEEP")]
    pub target_params: Option<String>,
    /// Per-dimension budgets (ViT-Slim): kept fractions, e.g. `attn=0.6,mlp=0.5,patch=0.8`.
    #[arg(long, value_name = "attn=..,mlp=..,patch=..")]
    pub budget: Option<String>,
    /// What `--target-macs` / `--target-params` measure: the whole model or the
    /// transformer blocks. Default: the configuration's scope, else the whole model.
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
}

/// Cost scope on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// The whole network.
    Model,
    /// The transformer blocks only.
    Transformer,
}

/// Options of `compress`.
#[derive(Debug, Clone, Args)]
pub struct CompressArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    #[command(flatten)]
    pub budget: BudgetArgs,
}

/// Options of `finetune`.
#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Fine-tuning epochs. Default: `finetune.epochs`, else `search.epochs`, else
    /// `train.epochs`.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Learning rate of the fine-tuning. Default: `finetune.lr`, else `search.lr`, else
    /// `train.lr`.
    #[arg(long)]
    pub lr: Option<f64>,
}

/// A model stage that can be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStage {
    /// The trained full model (`baseline/best.safetensors`).
    Baseline,
    /// The searched full model with its soft gates (`search/weights.safetensors`).
    Search,
    /// The sliced model (`compressed/`).
    Compressed,
    /// The fine-tuned sliced model (`finetuned/model/`).
    Finetuned,
}

impl ModelStage {
    /// All stages in pipeline order.
    pub const ALL: [ModelStage; 4] = [
        ModelStage::Baseline,
        ModelStage::Search,
        ModelStage::Compressed,
        ModelStage::Finetuned,
    ];

    /// Folder name.
    pub fn dir(self) -> &'static str {
        match self {
            ModelStage::Baseline => "baseline",
            ModelStage::Search => "search",
            ModelStage::Compressed => "compressed",
            ModelStage::Finetuned => "finetuned",
        }
    }

    /// Name in tables.
    pub fn label(self) -> &'static str {
        match self {
            ModelStage::Baseline => "baseline",
            ModelStage::Search => "searched (soft gates)",
            ModelStage::Compressed => "compressed",
            ModelStage::Finetuned => "fine-tuned",
        }
    }

    fn command(self) -> &'static str {
        match self {
            ModelStage::Baseline => "train",
            ModelStage::Search => "search",
            ModelStage::Compressed => "compress",
            ModelStage::Finetuned => "finetune",
        }
    }
}

/// Options of `eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Stage(s) to evaluate; default all that exist.
    #[arg(long, value_enum)]
    pub stage: Vec<ModelStage>,
}

/// Options of `predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Input image volume (NIfTI, 3D).
    pub input: PathBuf,
    /// Output label volume (NIfTI, same header and affine as the input).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Model of this stage of the run.
    #[arg(long, value_enum, default_value = "finetuned")]
    pub stage: ModelStage,
    /// Slices per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Replace an existing output file (never the input, nor a file of the run).
    #[arg(long)]
    pub overwrite: bool,
    /// Replace NaN and infinite input voxels by the smallest finite intensity and say
    /// how many, instead of refusing the file.
    #[arg(long)]
    pub replace_non_finite: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of `info`.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// Model of this stage of the run.
    #[arg(long, value_enum, default_value = "compressed")]
    pub stage: ModelStage,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Batch sizes (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Instead of the run's compressed model, time a structured architecture (same share
    /// of dims per head, MLP units and tokens in every block) with at least this
    /// whole-model MAC reduction, e.g. 0.3: no trained run needed, only `--config`.
    #[arg(long, value_name = "FRACTION")]
    pub structured_mac_reduction: Option<f64>,
    /// With `--structured-mac-reduction`: blocks before this one keep every token.
    #[arg(long, default_value_t = 0)]
    pub token_from_layer: usize,
}

/// A loaded model with the variables it lives in.
pub struct LoadedModel {
    /// Variables (held so the weights live as long as the model).
    #[allow(dead_code)]
    pub vs: nn::VarStore,
    /// The network.
    pub model: TransUnet,
}

fn has_weights(path: &Path, what: &str) -> Result<()> {
    if !path.exists() {
        bail!("{}: missing ({what})", path.display());
    }
    Ok(())
}

/// Loads the model of `stage` from the run directory onto `device`.
pub fn load_stage_model(run: &Run, stage: ModelStage, device: Device) -> Result<LoadedModel> {
    let cfg = &run.cfg.model;
    let dir = run.stage(stage.dir());
    let hint = format!(
        "run `slimseg {} --run {}` first",
        stage.command(),
        run.root.display()
    );
    match stage {
        ModelStage::Baseline => {
            let path = dir.join("best.safetensors");
            has_weights(&path, &hint)?;
            let mut net = Network::new(cfg, device, run.cfg.train.seed)?;
            net.load(&path)
                .with_context(|| format!("{} does not fit the configured model", path.display()))?;
            Ok(LoadedModel {
                vs: net.vs,
                model: net.model,
            })
        }
        ModelStage::Search => {
            let path = dir.join("weights.safetensors");
            has_weights(&path, &hint)?;
            let mut net = Network::new(cfg, device, run.cfg.train.seed)?;
            net.attach_soft_gates()?;
            net.load(&path).with_context(|| {
                format!(
                    "{} does not fit the configured model with gates",
                    path.display()
                )
            })?;
            Ok(LoadedModel {
                vs: net.vs,
                model: net.model,
            })
        }
        ModelStage::Compressed | ModelStage::Finetuned => {
            let dir = if stage == ModelStage::Finetuned {
                dir.join(FINETUNED_MODEL_DIR)
            } else {
                dir
            };
            has_weights(&dir.join(slimseg_compress::MANIFEST_FILE), &hint)?;
            let cm = CompressedModel::load(&dir, device).with_context(|| {
                format!("cannot load the compressed model in {}", dir.display())
            })?;
            if cm.config() != cfg {
                bail!(
                    "{}: the model configuration differs from the run's [model]",
                    dir.join(slimseg_compress::MANIFEST_FILE).display()
                );
            }
            Ok(LoadedModel {
                vs: cm.vs,
                model: cm.model,
            })
        }
    }
}

/// Test-set evaluation with HD95 (TransUNet's empty-mask convention).
pub fn eval_test(run: &Run, model: &TransUnet, test: &[EvalVolume]) -> Result<EvalReport> {
    let opts = EvalOptions {
        batch: run.cfg.train.eval_batch,
        hd95: true,
        convention: Convention::TransUnet,
    };
    let t = Instant::now();
    let rep = evaluate(model, test, &opts)?;
    eprintln!(
        "  test: mean Dice {} over {} volumes ({:.1} s)",
        rep.mean_dice.map_or("-".into(), |d| format!("{:.4}", d)),
        test.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(rep)
}

/// `train`: the baseline (gates off) into `RUN/baseline`.
pub fn train_stage(run: &Run, cohort: &Cohort, force: bool) -> Result<()> {
    let t = Instant::now();
    let dir = run.begin("baseline", force)?;
    eprintln!("[baseline] training into {}", dir.display());
    let (mut net, m) = run_baseline(&run.cfg, cohort, &dir, &TrainOptions::default())?;
    if !m.completed {
        bail!("{}: training stopped before the last epoch", dir.display());
    }
    net.load(dir.join("best.safetensors"))?;
    let rep = eval_test(run, &net.model, &cohort.test)?;
    write_json(&dir.join(EVAL_FILE), &rep)?;
    run.finish("baseline", t.elapsed().as_secs_f64())
}

/// `search`: soft gates from the baseline weights into `RUN/search`, then the subnet of
/// `[select]` (`subnet.toml`).
pub fn search_stage(run: &Run, cohort: &Cohort, force: bool) -> Result<()> {
    let t = Instant::now();
    let base = run.require("baseline", "best.safetensors", "train")?;
    if run.completed("baseline")?.is_none() {
        bail!(
            "{}: the baseline stage is not complete; run `slimseg train --run {}`",
            run.stage("baseline").display(),
            run.root.display()
        );
    }
    let dir = run.begin("search", force)?;
    eprintln!("[search] soft-gate search into {}", dir.display());
    let (net, m, spec) = run_search(&run.cfg, cohort, &base, &dir, &TrainOptions::default())
        .with_context(|| format!("search from {}", base.display()))?;
    let Some(spec) = spec.filter(|_| m.completed) else {
        bail!(
            "{}: the search stopped before the last epoch",
            dir.display()
        );
    };
    eprintln!(
        "  subnet: params {:.1}% MACs {:.1}% of the full model",
        100.0 * spec.params_fraction(),
        100.0 * spec.macs_fraction()
    );
    let rep = eval_test(run, &net.model, &cohort.test)?;
    write_json(&dir.join(EVAL_FILE), &rep)?;
    run.finish("search", t.elapsed().as_secs_f64())
}

/// Parses a kept share: `0.7` or `70%`.
pub fn parse_share(s: &str) -> Result<f64> {
    let t = s.trim();
    let v = if let Some(p) = t.strip_suffix('%') {
        p.trim().parse::<f64>().map(|v| v / 100.0)
    } else {
        t.parse::<f64>()
    }
    .map_err(|_| anyhow!("`{s}` is not a share (expected e.g. 0.7 or 70%)"))?;
    if !(v > 0.0 && v <= 1.0) {
        bail!("`{s}`: the kept share must be in (0, 1]");
    }
    Ok(v)
}

/// Parses `attn=0.6,mlp=0.5,patch=0.8` (`token` is accepted for `patch`).
pub fn parse_dimension_budget(s: &str) -> Result<Budget> {
    let (mut attn, mut mlp, mut token) = (None, None, None);
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--budget {s}: `{part}` is not NAME=FRACTION"))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| anyhow!("--budget {s}: `{v}` is not a number"))?;
        if !(0.0..=1.0).contains(&v) {
            bail!("--budget {s}: `{k}` must be in [0, 1], found {v}");
        }
        match k.trim() {
            "attn" => attn = Some(v),
            "mlp" => mlp = Some(v),
            "patch" | "token" => token = Some(v),
            other => bail!("--budget {s}: unknown dimension `{other}` (attn, mlp, patch)"),
        }
    }
    Ok(Budget::PerDimension {
        attn: attn.ok_or_else(|| anyhow!("--budget {s}: attn=.. is missing"))?,
        mlp: mlp.ok_or_else(|| anyhow!("--budget {s}: mlp=.. is missing"))?,
        token: token.ok_or_else(|| anyhow!("--budget {s}: patch=.. is missing"))?,
    })
}

/// The selection the command line asks for, if any.
pub fn budget_override(b: &BudgetArgs, cfg: &SelectConfig) -> Result<Option<SelectConfig>> {
    let given = [
        b.target_macs.is_some(),
        b.target_params.is_some(),
        b.budget.is_some(),
    ];
    if given.iter().filter(|&&g| g).count() > 1 {
        bail!("give only one of --target-macs, --target-params and --budget");
    }
    let scope = match (b.scope, cfg.budget) {
        (Some(ScopeArg::Model), _) => CostScope::Model,
        (Some(ScopeArg::Transformer), _) => CostScope::Transformer,
        (None, Budget::Model { scope, .. }) => scope,
        (None, _) => CostScope::Model,
    };
    let budget = if let Some(s) = &b.target_macs {
        Budget::Model {
            metric: CostMetric::Macs,
            keep: parse_share(s).context("--target-macs")?,
            scope,
        }
    } else if let Some(s) = &b.target_params {
        Budget::Model {
            metric: CostMetric::Params,
            keep: parse_share(s).context("--target-params")?,
            scope,
        }
    } else if let Some(s) = &b.budget {
        parse_dimension_budget(s)?
    } else {
        return Ok(None);
    };
    Ok(Some(SelectConfig {
        budget,
        floors: cfg.floors,
    }))
}

/// What `compressed/compress.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompressRecord {
    /// Budget used.
    pub budget: Budget,
    /// Parameters and MACs of the compressed and the full model.
    pub summary: slimseg_compress::Summary,
    /// Whether the subnet was re-selected from the final gates with a command-line budget.
    pub reselected: bool,
}

/// `compress`: slices the searched weights to the subnet into `RUN/compressed`.
pub fn compress_stage(run: &Run, cohort: Option<&Cohort>, args: &CompressArgs) -> Result<()> {
    let t = Instant::now();
    let weights = run.require("search", "weights.safetensors", "search")?;
    let sel = budget_override(&args.budget, &run.cfg.select)?;
    let spec = match &sel {
        Some(sel) => {
            let gates_path = run.require("search", "gates_end.json", "search")?;
            let gates = read_gate_values(&gates_path)
                .with_context(|| format!("cannot read the gates {}", gates_path.display()))?;
            slimseg_search::select(&run.cfg.model, &gates, sel)
                .with_context(|| format!("selecting from {}", gates_path.display()))?
        }
        None => {
            let path = run.require("search", SUBNET_FILE, "search")?;
            let spec = SubnetSpec::load_toml(&path)?;
            spec.check(&run.cfg.model)
                .with_context(|| format!("{} does not fit the configured model", path.display()))?;
            spec
        }
    };
    let dir = run.begin("compressed", args.stage.force)?;
    eprintln!(
        "[compress] slicing {} into {}",
        weights.display(),
        dir.display()
    );
    let device = run.device()?;
    let cm = compress_checkpoint(
        &run.cfg.model,
        &weights,
        &spec.arch,
        Folding::SoftGates,
        device,
    )
    .with_context(|| format!("cannot compress {}", weights.display()))?;
    spec.save_toml(dir.join(SUBNET_FILE))?;
    let manifest = cm.save(&dir)?;
    run.cfg.save_toml(dir.join("config.toml"))?;

    // Equivalence: the searched model under hard masks (scaled by its gates) vs the slices.
    let mut searched = load_stage_model(run, ModelStage::Search, device)?;
    let s = run.cfg.model.img_size as i64;
    tch::manual_seed(7);
    let inputs = match cohort.and_then(|c| c.test.first()) {
        Some(v) => volume_batch(v, run.cfg.model.img_size, 4, device),
        None => Tensor::randn([2, 1, s, s], (Kind::Float, device)),
    };
    let eq = check_equivalence(&mut searched.model, &cm.model, &inputs, Folding::SoftGates)?;
    let tol = 1e-3 * eq.logits_max_abs.max(1.0);
    eprintln!(
        "  params {} -> {} (-{:.1}%), MACs {} -> {} (-{:.1}%); equivalence max |diff| {:.2e} \
         (pruning changes logits by {:.2e})",
        manifest.summary.full_params,
        manifest.summary.params,
        100.0 * manifest.summary.param_reduction(),
        manifest.summary.full_macs,
        manifest.summary.macs,
        100.0 * manifest.summary.mac_reduction(),
        eq.max_abs_diff,
        eq.pruning_effect
    );
    if !eq.within(tol) {
        eprintln!(
            "  warning: the compressed model differs from the masked searched model by {:.3e} \
             (tolerance {tol:.1e})",
            eq.max_abs_diff
        );
    }
    write_json(&dir.join("equivalence.json"), &eq)?;
    write_json(
        &dir.join("compress.json"),
        &CompressRecord {
            budget: spec.budget,
            summary: manifest.summary,
            reselected: sel.is_some(),
        },
    )?;
    if let Some(c) = cohort {
        let rep = eval_test(run, &cm.model, &c.test)?;
        write_json(&dir.join(EVAL_FILE), &rep)?;
    }
    run.finish("compressed", t.elapsed().as_secs_f64())
}

/// A batch `[n, 1, S, S]` of the middle slices of a volume, resized as in training.
fn volume_batch(v: &EvalVolume, size: usize, n: usize, device: Device) -> Tensor {
    let depth = v.image.dim().0;
    let n = n.min(depth).max(1);
    let start = (depth - n) / 2;
    let mut data = Vec::with_capacity(n * size * size);
    for k in start..start + n {
        let r = resize_cubic(v.image.index_axis(ndarray::Axis(0), k), size, size);
        data.extend(r.iter().copied());
    }
    Tensor::from_slice(&data)
        .view([n as i64, 1, size as i64, size as i64])
        .to_device(device)
}

/// The configuration the fine-tuning trains with: [`RunConfig::for_finetune`] with the
/// command line's epochs and learning rate where given.
pub fn finetune_config(cfg: &RunConfig, epochs: Option<usize>, lr: Option<f64>) -> RunConfig {
    let mut c = cfg.for_finetune();
    if let Some(e) = epochs {
        c.train.epochs = e;
    }
    if let Some(lr) = lr {
        c.train.lr = lr;
    }
    c
}

/// `finetune`: trains the compressed model into `RUN/finetuned` and saves it in the
/// compressed format under `RUN/finetuned/model`.
pub fn finetune_stage(run: &Run, cohort: &Cohort, args: &FinetuneArgs) -> Result<()> {
    let t = Instant::now();
    if run.completed("compressed")?.is_none() {
        bail!(
            "{}: the compressed stage is not complete; run `slimseg compress --run {}`",
            run.stage("compressed").display(),
            run.root.display()
        );
    }
    let dir = run.begin("finetuned", args.stage.force)?;
    let cfg = finetune_config(&run.cfg, args.epochs, args.lr);
    let device = run.device()?;
    let src = run.stage("compressed");
    let cm = CompressedModel::load(&src, device)
        .with_context(|| format!("cannot load the compressed model in {}", src.display()))?;
    eprintln!(
        "[finetune] {} epochs at lr {} into {}",
        cfg.train.epochs,
        cfg.train.lr,
        dir.display()
    );
    let data = slimseg_search::TrainData {
        train: &cohort.train,
        val: &cohort.val,
    };
    let m = train(
        &cm.vs,
        &cm.model,
        data,
        &cfg,
        &dir,
        &TrainOptions::default(),
    )?;
    if !m.completed {
        bail!(
            "{}: fine-tuning stopped before the last epoch",
            dir.display()
        );
    }
    slimseg_model::weights::load_safetensors(&cm.vs, dir.join("best.safetensors"))?;
    cm.save(dir.join(FINETUNED_MODEL_DIR))?;
    let rep = eval_test(run, &cm.model, &cohort.test)?;
    write_json(&dir.join(EVAL_FILE), &rep)?;
    run.finish("finetuned", t.elapsed().as_secs_f64())
}

/// `eval`: evaluates stage models on the test set (Dice and HD95), rewriting `eval.json`.
pub fn eval_cmd(args: EvalArgs) -> Result<()> {
    let run = Run::open(&args.run, true)?;
    let stages: Vec<ModelStage> = if args.stage.is_empty() {
        ModelStage::ALL
            .into_iter()
            .filter(|s| run.stage(s.dir()).join(crate::run::STAGE_RECORD).exists())
            .collect()
    } else {
        args.stage.clone()
    };
    if stages.is_empty() {
        bail!("{}: no completed stage to evaluate", run.root.display());
    }
    let cohort = run.cohort()?;
    let device = run.device()?;
    for s in stages {
        eprintln!("[eval] {}", s.label());
        let m = load_stage_model(&run, s, device)?;
        let rep = eval_test(&run, &m.model, &cohort.test)?;
        write_json(&run.stage(s.dir()).join(EVAL_FILE), &rep)?;
        println!(
            "{:<22} mean Dice {}  RV/MYO/LV {}",
            s.label(),
            fmt_opt(rep.mean_dice, 4),
            rep.mean_dice_per_class
                .iter()
                .map(|d| fmt_opt(*d, 4))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// `predict IN -o OUT`: segments a 3D volume along its through-plane axis (found from
/// the affine and spacing); the labels are on the input's grid and keep its header.
pub fn predict_cmd(args: PredictArgs) -> Result<()> {
    let run = Run::open_read_only(&args.run)?;
    std::fs::metadata(&args.input)
        .with_context(|| format!("cannot read the input volume {}", args.input.display()))?;
    check_output(&args.out, &[&args.input], &run.root, args.overwrite)?;
    let policy = if args.replace_non_finite {
        NonFinite::ReplaceWithMin
    } else {
        NonFinite::Reject
    };
    let (vol, replaced) = read_volume_with(&args.input, policy)
        .with_context(|| format!("cannot read the input volume {}", args.input.display()))?;
    let file_header = vol.header.clone();
    let (vol, orientation) = vol.into_slice_order(run.cfg.data.orientation)?;
    let slices = vol.data.dim().0;
    let device = run.device()?;
    let m = load_stage_model(&run, args.stage, device)?;
    let mut image = vol.data;
    normalize_volume(&mut image, run.cfg.data.normalization);
    let labels = predict_volume_with(&m.model, image.view(), args.batch.max(1), |s, size| {
        resize_cubic(s, size, size)
    })?;
    drop(image);
    let counts = slimseg_data::acdc::label_counts(&labels);
    let labels = if orientation.is_identity() {
        labels
    } else {
        orientation.from_canonical(labels.view())
    };
    slimseg_data::nii::write_labels_like(&args.out, labels.view(), &file_header)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if replaced > 0 {
        println!(
            "replaced {replaced} non-finite voxels of {} by the smallest finite intensity",
            args.input.display()
        );
    }
    if !orientation.is_identity() {
        println!("segmented in slice order: {}", orientation.describe());
    }
    println!(
        "wrote {} ({} x {} x {} voxels, {} slices; RV {} MYO {} LV {}) with the {} model",
        args.out.display(),
        file_header.shape_xyz()[0],
        file_header.shape_xyz()[1],
        file_header.shape_xyz()[2],
        slices,
        counts[1],
        counts[2],
        counts[3],
        args.stage.dir()
    );
    Ok(())
}

/// Per-layer description of a model for `info` and the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Stage.
    pub stage: ModelStage,
    /// Total parameters.
    pub params: u64,
    /// Total MACs per image.
    pub macs: u64,
    /// FLOPs per image (2 x MACs).
    pub flops: u64,
    /// Parameters and MACs part by part.
    pub count: ModelCount,
    /// Kept widths per transformer block.
    pub blocks: Vec<BlockInfo>,
}

/// Kept widths of one transformer block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockInfo {
    /// Block index.
    pub layer: usize,
    /// Kept dims of every head.
    pub head_widths: Vec<usize>,
    /// Kept attention dims in all.
    pub attn_dims: usize,
    /// Kept MLP units.
    pub mlp_units: usize,
    /// Kept tokens.
    pub tokens: usize,
    /// Parameters of the block.
    pub params: u64,
    /// MACs of the block.
    pub macs: u64,
}

/// The architecture of a stage (`None`: full width).
pub fn stage_arch(run: &Run, stage: ModelStage) -> Result<Option<SubnetArch>> {
    Ok(match stage {
        ModelStage::Baseline | ModelStage::Search => None,
        ModelStage::Compressed => {
            let dir = run.stage("compressed");
            has_weights(
                &dir.join(slimseg_compress::MANIFEST_FILE),
                "run `slimseg compress` first",
            )?;
            Some(Manifest::load(&dir)?.arch)
        }
        ModelStage::Finetuned => {
            let dir = run.stage("finetuned").join(FINETUNED_MODEL_DIR);
            has_weights(
                &dir.join(slimseg_compress::MANIFEST_FILE),
                "run `slimseg finetune` first",
            )?;
            Some(Manifest::load(&dir)?.arch)
        }
    })
}

/// Counts and kept widths of a model of `cfg` with `arch`.
pub fn model_info(
    cfg: &ModelConfig,
    stage: ModelStage,
    arch: Option<&SubnetArch>,
) -> Result<ModelInfo> {
    let c = count(cfg, arch)?;
    let full = SubnetArch::full(cfg);
    let a = arch.unwrap_or(&full);
    let blocks = a
        .layers
        .iter()
        .enumerate()
        .map(|(l, la)| {
            let name = format!("transformer.encoder.layer.{l}");
            let part = c.layers.iter().find(|p| p.name == name);
            BlockInfo {
                layer: l,
                head_widths: la.head_widths(),
                attn_dims: la.attn_width(),
                mlp_units: la.mlp_units.len(),
                tokens: la.tokens.len(),
                params: part.map_or(0, |p| p.params),
                macs: part.map_or(0, |p| p.macs),
            }
        })
        .collect();
    Ok(ModelInfo {
        stage,
        params: c.params(),
        macs: c.macs(),
        flops: c.flops(),
        blocks,
        count: c,
    })
}

/// `info`: per-layer kept widths, parameters and MACs of a stage's model.
pub fn info_cmd(args: InfoArgs) -> Result<()> {
    let run = Run::open_read_only(&args.run)?;
    let arch = stage_arch(&run, args.stage)?;
    let info = model_info(&run.cfg.model, args.stage, arch.as_ref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let full = count(&run.cfg.model, None)?;
    println!(
        "{} model: {} parameters ({:.1}% of full), {} MACs/image ({:.1}% of full), {} FLOPs \
         (FLOPs = 2 MACs, attention matmuls included)",
        args.stage.label(),
        info.params,
        100.0 * info.params as f64 / full.params() as f64,
        info.macs,
        100.0 * info.macs as f64 / full.macs() as f64,
        info.flops
    );
    println!();
    println!("{:<48} {:>12} {:>14}", "part", "params", "MACs");
    for p in &info.count.layers {
        println!("{:<48} {:>12} {:>14}", p.name, p.params, p.macs);
    }
    println!();
    println!(
        "{:>5} {:<28} {:>6} {:>6} {:>7} {:>10} {:>12}",
        "block", "kept dims per head", "attn", "mlp", "tokens", "params", "MACs"
    );
    for b in &info.blocks {
        println!(
            "{:>5} {:<28} {:>6} {:>6} {:>7} {:>10} {:>12}",
            b.layer,
            format!("{:?}", b.head_widths),
            b.attn_dims,
            b.mlp_units,
            b.tokens,
            b.params,
            b.macs
        );
    }
    Ok(())
}

/// Runs the full vs compressed latency benchmark of a run and writes
/// `RUN/compressed/latency.json` (and `json` when given).
pub fn bench(
    run: &Run,
    batches: &[usize],
    opts: LatencyOptions,
    json: Option<&Path>,
) -> Result<slimseg_compress::LatencyReport> {
    let dir = run.stage("compressed");
    has_weights(
        &dir.join(slimseg_compress::MANIFEST_FILE),
        &format!("run `slimseg compress --run {}` first", run.root.display()),
    )?;
    let manifest = Manifest::load(&dir)?;
    if manifest.model != run.cfg.model {
        bail!(
            "{}: the compressed model's [model] differs from the configuration given",
            dir.join(slimseg_compress::MANIFEST_FILE).display()
        );
    }
    let device = run.device()?;
    let rep = bench_full_vs_compressed(&manifest.model, &manifest.arch, device, batches, &opts)?;
    write_json(&dir.join(LATENCY_FILE), &rep)?;
    if let Some(p) = json {
        write_json(p, &rep)?;
    }
    Ok(rep)
}

/// `bench`: full vs compressed latency.
pub fn bench_cmd(args: BenchArgs) -> Result<()> {
    let run = Run::open(&args.run, false)?;
    let opts = LatencyOptions {
        warmup: args.warmup,
        repeats: args.repeats,
    };
    let rep = match args.structured_mac_reduction {
        Some(target) => {
            let (arch, summary) = slimseg_compress::arch_for_mac_reduction(
                &run.cfg.model,
                target,
                args.token_from_layer,
            )?;
            eprintln!(
                "structured architecture: MACs -{:.1}%, params -{:.1}%",
                100.0 * summary.mac_reduction(),
                100.0 * summary.param_reduction()
            );
            let rep =
                bench_full_vs_compressed(&run.cfg.model, &arch, run.device()?, &args.batch, &opts)?;
            if let Some(p) = &args.json {
                write_json(p, &rep)?;
            }
            rep
        }
        None => bench(&run, &args.batch, opts, args.json.as_deref())?,
    };
    print!("{}", rep.to_markdown());
    Ok(())
}

/// Reads a stage's `eval.json`, if present.
pub fn read_eval(run: &Run, stage: ModelStage) -> Result<Option<EvalReport>> {
    let p = run.stage(stage.dir()).join(EVAL_FILE);
    if !p.exists() {
        return Ok(None);
    }
    read_json(&p).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_as_fractions_or_percentages() {
        assert_eq!(parse_share("0.7").unwrap(), 0.7);
        assert!((parse_share("70%").unwrap() - 0.7).abs() < 1e-12);
        assert!(parse_share("0").is_err());
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("x").is_err());
    }

    #[test]
    fn dimension_budget_needs_all_three_dimensions() {
        match parse_dimension_budget("attn=0.5,mlp=0.25,patch=0.75").unwrap() {
            Budget::PerDimension { attn, mlp, token } => {
                assert_eq!((attn, mlp, token), (0.5, 0.25, 0.75))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_dimension_budget("attn=0.5,mlp=0.5").is_err());
        assert!(parse_dimension_budget("attn=0.5,mlp=0.5,heads=0.5").is_err());
        assert!(parse_dimension_budget("attn=2,mlp=0.5,patch=0.5").is_err());
    }

    #[test]
    fn one_budget_flag_at_a_time_and_scope_from_config() {
        let cfg = SelectConfig {
            budget: Budget::Model {
                metric: CostMetric::Macs,
                keep: 0.7,
                scope: CostScope::Transformer,
            },
            floors: Default::default(),
        };
        let b = BudgetArgs {
            target_macs: Some("60%".into()),
            ..Default::default()
        };
        match budget_override(&b, &cfg).unwrap().unwrap().budget {
            Budget::Model {
                metric,
                keep,
                scope,
            } => {
                assert_eq!(metric, CostMetric::Macs);
                assert!((keep - 0.6).abs() < 1e-12);
                assert_eq!(scope, CostScope::Transformer);
            }
            other => panic!("unexpected {other:?}"),
        }
        let both = BudgetArgs {
            target_macs: Some("0.6".into()),
            target_params: Some("0.6".into()),
            ..Default::default()
        };
        assert!(budget_override(&both, &cfg).is_err());
        assert!(
            budget_override(&BudgetArgs::default(), &cfg)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn finetune_schedule_from_flags_then_finetune_then_search_table() {
        let mut cfg = RunConfig::with_model(ModelConfig::tiny());
        cfg.train.epochs = 12;
        cfg.search.epochs = Some(6);
        cfg.search.lr = Some(5e-4);
        let f = finetune_config(&cfg, None, None);
        assert_eq!((f.train.epochs, f.train.lr), (6, 5e-4));
        cfg.finetune.epochs = Some(3);
        let f = finetune_config(&cfg, None, None);
        assert_eq!((f.train.epochs, f.train.lr), (3, 5e-4));
        cfg.finetune.lr = Some(2e-4);
        let f = finetune_config(&cfg, None, None);
        assert_eq!((f.train.epochs, f.train.lr), (3, 2e-4));
        let f = finetune_config(&cfg, Some(2), Some(1e-3));
        assert_eq!((f.train.epochs, f.train.lr), (2, 1e-3));
    }
}
