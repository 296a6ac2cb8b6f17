//! The pipeline stages, one file each (`baseline`, `search`, `profile`, `compress`,
//! `finetune`, `uniform`, `bench`, `sweep`), and what they share: the models of a run's stages, their evaluation on the
//! test set and their sizes. Each stage's `make` builds it into a folder; the graph
//! ([`crate::graph`]) decides when, and records it.

pub mod baseline;
pub mod bench;
pub mod compress;
pub mod finetune;
pub mod profile;
pub mod search;
pub mod sweep;
pub mod uniform;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use slimseg_compress::{CompressedModel, Manifest};
use slimseg_data::metrics::Convention;
use slimseg_model::count::{ModelCount, count};
use slimseg_model::{InferenceOptions, ModelConfig, PixelHead, Precision, SubnetArch, TransUnet};
use slimseg_search::data::EvalVolume;
use slimseg_search::stages::Network;
use slimseg_search::{EvalOptions, EvalReport, RunConfig, evaluate};
use tch::{Device, nn};

use crate::graph::{self, Ctx, Made};
use crate::run::{DataArgs, Open, Run, RunArgs, read_json};

/// File of the test-set evaluation in each model stage's folder.
pub const EVAL_FILE: &str = "eval.json";
/// Folder (inside `finetuned/` and `uniform/`) holding the fine-tuned model in the
/// compressed format.
pub const FINETUNED_MODEL_DIR: &str = "model";

/// Options of every command that makes one stage.
#[derive(Debug, Clone, Args)]
pub struct StageArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Redo the stage even if it is complete and up to date. The new stage is built beside
    /// the old one, which stays as it was unless the redo succeeds.
    #[arg(long)]
    pub force: bool,
}

/// Options of the stage commands that train.
#[derive(Debug, Clone, Default, Args)]
pub struct StopArgs {
    /// Train at most this many epochs in this call, then stop with the checkpoint saved;
    /// the next call resumes from it.
    #[arg(long, value_name = "EPOCHS")]
    pub stop_after: Option<usize>,
}

impl StageArgs {
    /// Opens the run for writing with `--data`.
    pub fn open(&self) -> Result<Run> {
        Run::open(
            &self.run,
            Open {
                data: Some(&self.data),
                reads_data: true,
                ..Open::write()
            },
        )
    }
}

/// Makes one stage of `run` from the command line and says what happened.
pub fn make_one(run: &Run, name: &str, force: bool, stop_after: Option<usize>) -> Result<()> {
    let mut ctx = Ctx::new(run);
    ctx.stop_after = stop_after;
    match graph::make(&mut ctx, name, force)? {
        Made::Ran(s) => eprintln!("[{name}] done in {s:.1} s ({})", run.stage(name).display()),
        Made::Stopped(why) => eprintln!("[{name}] {why}"),
    }
    Ok(())
}

/// Training options of a stage make: resume, stop after `--stop-after` epochs, and what
/// the rest of the run trains.
pub fn train_options(ctx: &Ctx<'_>) -> slimseg_search::TrainOptions {
    slimseg_search::TrainOptions {
        stop_after_epochs: ctx.stop_after,
        slices_after: ctx.slices_after,
        ..Default::default()
    }
}

/// The error of a training that ended before its last epoch: [`graph::Stopped`] when
/// it stopped as asked.
pub fn incomplete(
    stop_after: Option<usize>,
    dir: &Path,
    what: &str,
    epochs_done: usize,
) -> anyhow::Error {
    match stop_after {
        Some(n) => anyhow::Error::new(graph::Stopped(format!(
            "stopped after {n} epoch(s) as asked (--stop-after), {epochs_done} done; run \
             the command again to resume from {}",
            dir.join("checkpoints").display()
        ))),
        None => anyhow::anyhow!("{}: {what} stopped before the last epoch", dir.display()),
    }
}

/// A model stage that can be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStage {
    /// The TransUNet control: the full model without the pixel module, trained like the
    /// baseline (`transunet/best.safetensors`; only when the baseline has the module).
    Transunet,
    /// The trained full model (`baseline/best.safetensors`): DFTransUnet when
    /// `model.pixel_head` is on, TransUNet otherwise.
    Baseline,
    /// The searched full model with its soft gates (`search/weights.safetensors`).
    Search,
    /// The sliced model (`compressed/`).
    Compressed,
    /// The fine-tuned sliced model (`finetuned/model/`).
    Finetuned,
    /// The uniform-width control of the compressed model's cost, sliced from the
    /// baseline and fine-tuned the same way (`uniform/model/`).
    Uniform,
}

impl ModelStage {
    /// All stages in pipeline order.
    pub const ALL: [ModelStage; 6] = [
        ModelStage::Transunet,
        ModelStage::Baseline,
        ModelStage::Search,
        ModelStage::Compressed,
        ModelStage::Finetuned,
        ModelStage::Uniform,
    ];

    /// The model stages that are part of `cfg`'s experiment, in pipeline order.
    pub fn in_run(cfg: &RunConfig) -> Vec<ModelStage> {
        Self::ALL
            .into_iter()
            .filter(|s| graph::def(s.dir()).off_because(cfg).is_none())
            .collect()
    }

    /// Folder name.
    pub fn dir(self) -> &'static str {
        match self {
            ModelStage::Transunet => "transunet",
            ModelStage::Baseline => "baseline",
            ModelStage::Search => "search",
            ModelStage::Compressed => "compressed",
            ModelStage::Finetuned => "finetuned",
            ModelStage::Uniform => "uniform",
        }
    }

    /// Name in tables.
    pub fn label(self) -> &'static str {
        match self {
            ModelStage::Transunet => "TransUNet",
            ModelStage::Baseline => "baseline",
            ModelStage::Search => "searched (soft gates)",
            ModelStage::Compressed => "compressed",
            ModelStage::Finetuned => "fine-tuned",
            ModelStage::Uniform => "uniform control",
        }
    }

    /// The model's name in the paper's terms under `cfg` (`report.json`'s `name`):
    /// `transunet`, `dftransunet` (the baseline with the pixel module; `transunet`
    /// without), `searched`, `compressed`, `finetuned` (DFTransUnet-slim) or `uniform`.
    pub fn name(self, cfg: &ModelConfig) -> &'static str {
        match self {
            ModelStage::Transunet => "transunet",
            ModelStage::Baseline if cfg.pixel_head == PixelHead::None => "transunet",
            ModelStage::Baseline => "dftransunet",
            ModelStage::Search => "searched",
            ModelStage::Compressed => "compressed",
            ModelStage::Finetuned => "finetuned",
            ModelStage::Uniform => "uniform",
        }
    }

    /// Name in the report's tables under `cfg`: the paper's model names where they apply.
    pub fn title(self, cfg: &ModelConfig) -> &'static str {
        let df = cfg.pixel_head != PixelHead::None;
        match self {
            ModelStage::Baseline if df => "DFTransUnet (baseline)",
            ModelStage::Baseline => "TransUNet (baseline)",
            ModelStage::Finetuned if df => "DFTransUnet-slim (fine-tuned)",
            other => other.label(),
        }
    }

    /// The command that makes it.
    pub fn command(self) -> &'static str {
        graph::def(self.dir()).command
    }

    /// The model configuration of the stage's network: the run's `[model]`, without the
    /// pixel module for the TransUNet control.
    pub fn model_config(self, cfg: &ModelConfig) -> ModelConfig {
        let mut c = cfg.clone();
        if self == ModelStage::Transunet {
            c.pixel_head = PixelHead::None;
        }
        c
    }
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
    if let Some(why) = graph::def(stage.dir()).off_because(&run.cfg) {
        bail!(
            "the {} stage is not part of this run ({why}); {} holds no model of it",
            stage.dir(),
            run.root.display()
        );
    }
    let cfg = &run.cfg.model;
    let dir = run.stage(stage.dir());
    let hint = format!(
        "run `slimseg {} --run {}` first",
        stage.command(),
        run.root.display()
    );
    match stage {
        ModelStage::Transunet | ModelStage::Baseline => {
            let path = dir.join("best.safetensors");
            has_weights(&path, &hint)?;
            let mut net = Network::new(&stage.model_config(cfg), device, run.cfg.train.seed)?;
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
        ModelStage::Compressed | ModelStage::Finetuned | ModelStage::Uniform => {
            let dir = model_dir(run, stage);
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

/// How a side command (`predict`, `eval`, `bench`, `export`) runs its model.
#[derive(Debug, Clone, Copy, Args)]
pub struct InferenceArgs {
    /// Precision of weights and activations: fp32; bf16 (CUDA, and CPUs with AVX-512
    /// BF16 or AMX, elsewhere slow); fp16 (CUDA only).
    #[arg(long, default_value = "fp32", value_name = "fp32|bf16|fp16")]
    pub precision: Precision,
    /// Compute exactly as training does: no fused q/k/v, no
    /// `scaled_dot_product_attention`, no oneDNN linears. At fp32 the results then equal
    /// the stage's own evaluation bit for bit.
    #[arg(long)]
    pub exact: bool,
}

impl InferenceArgs {
    /// The model options these flags ask for.
    pub fn options(&self) -> InferenceOptions {
        InferenceOptions {
            precision: self.precision,
            fast: !self.exact,
        }
    }
}

/// How a model ran, as side results record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferenceRecord {
    /// Precision of weights and activations.
    pub precision: Precision,
    /// Whether the inference fast paths were on.
    pub fast_paths: bool,
}

impl From<InferenceOptions> for InferenceRecord {
    fn from(o: InferenceOptions) -> Self {
        InferenceRecord {
            precision: o.precision,
            fast_paths: o.fast,
        }
    }
}

/// `fp32, fast paths` / `bf16, exact`: how a model ran, in words.
pub fn describe_inference(o: InferenceOptions) -> String {
    format!(
        "{}, {}",
        o.precision,
        if o.fast { "fast paths" } else { "exact" }
    )
}

/// Loads the model of `stage` as [`load_stage_model`] does and prepares it for
/// inference only (`TransUnet::prepare_inference`).
pub fn load_for_inference(
    run: &Run,
    stage: ModelStage,
    device: Device,
    opts: InferenceOptions,
) -> Result<LoadedModel> {
    let mut m = load_stage_model(run, stage, device)?;
    m.model
        .prepare_inference(&mut m.vs, opts)
        .with_context(|| format!("cannot run the {} model in {}", stage.dir(), opts.precision))?;
    Ok(m)
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

/// The folder of a sliced stage's model in the compressed format.
fn model_dir(run: &Run, stage: ModelStage) -> std::path::PathBuf {
    match stage {
        ModelStage::Finetuned | ModelStage::Uniform => {
            run.stage(stage.dir()).join(FINETUNED_MODEL_DIR)
        }
        _ => run.stage(stage.dir()),
    }
}

/// The architecture of a stage (`None`: full width).
pub fn stage_arch(run: &Run, stage: ModelStage) -> Result<Option<SubnetArch>> {
    Ok(match stage {
        ModelStage::Transunet | ModelStage::Baseline | ModelStage::Search => None,
        ModelStage::Compressed | ModelStage::Finetuned | ModelStage::Uniform => {
            let dir = model_dir(run, stage);
            has_weights(
                &dir.join(slimseg_compress::MANIFEST_FILE),
                &format!("run `slimseg {}` first", stage.command()),
            )?;
            Some(Manifest::load(&dir)?.arch)
        }
    })
}

/// Counts and kept widths of the model of `stage` under the run's `[model]` `cfg`, with
/// `arch`.
pub fn model_info(
    cfg: &ModelConfig,
    stage: ModelStage,
    arch: Option<&SubnetArch>,
) -> Result<ModelInfo> {
    let cfg = &stage.model_config(cfg);
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

/// Reads a stage's `eval.json`, if present.
pub fn read_eval(run: &Run, stage: ModelStage) -> Result<Option<EvalReport>> {
    let p = run.stage(stage.dir()).join(EVAL_FILE);
    if !p.exists() {
        return Ok(None);
    }
    read_json(&p).map(Some)
}
