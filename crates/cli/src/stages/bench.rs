//! `bench`: each model's own forward latency (the TransUNet control and the baseline; the
//! searched model with its soft gates; the compressed, the fine-tuned and the uniform
//! control's sliced models) at every batch size and precision of `[bench]`, prepared for
//! inference as `predict` runs them (fast paths unless `bench.fast = false`), their runs
//! interleaved, into `RUN/bench/latency.json`. Models with gates (the searched one) run
//! in fp32 only. At each precision, and for the fast paths themselves, the stage also
//! evaluates the baseline and the fine-tuned model on the test set, so that the report
//! can show what the precision costs in Dice against the stage's own (exact fp32)
//! evaluation.
//!
//! The bench stage is made with the configuration's options; a call with other options
//! (`--batch`, `--repeats`, `--warmup`, `--precision`, `--exact`), or on a complete
//! stage, is a side measurement of latency only, kept in `RUN/measurements/`, which never
//! replaces the stage's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use slimseg_compress::latency::{bench_full_vs_compressed, describe_device, time_models};
use slimseg_compress::{LatencyOptions, LatencyStats};
use slimseg_model::{InferenceOptions, Precision};
use slimseg_search::EvalReport;
use slimseg_search::config::BenchConfig;
use slimseg_search::data::EvalVolume;

use super::{ModelStage, describe_inference, eval_test, load_for_inference, make_one};
use crate::graph::{self, Ctx, State};
use crate::run::{Open, Run, RunArgs, write_json};

/// File of the bench stage.
pub const LATENCY_FILE: &str = "latency.json";
/// Folder of side measurements inside the run.
pub const MEASUREMENTS_DIR: &str = "measurements";

/// Options of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Batch sizes (comma-separated or repeated). Default: `bench.batches`.
    #[arg(long, value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Untimed runs before timing. Default: `bench.warmup`.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Timed runs (median, min and max reported). Default: `bench.repeats`.
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Precisions to time (comma-separated: fp32, bf16, fp16). Default:
    /// `bench.precisions`.
    #[arg(long, value_delimiter = ',', value_name = "fp32|bf16|fp16")]
    pub precision: Vec<Precision>,
    /// Time the models exactly as training computes, without the inference fast paths.
    #[arg(long)]
    pub exact: bool,
    /// Redo the bench stage although it is complete and up to date.
    #[arg(long)]
    pub force: bool,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Instead of the run's models, time the full model against a structured
    /// architecture (same share of dims per head, MLP units and tokens in every block)
    /// with at least this whole-model MAC reduction, e.g. 0.3: no trained run needed, only
    /// `--config`.
    #[arg(long, value_name = "FRACTION")]
    pub structured_mac_reduction: Option<f64>,
    /// With `--structured-mac-reduction`: blocks before this one keep every token.
    #[arg(long, default_value_t = 0)]
    pub token_from_layer: usize,
}

/// One model's latency at each batch size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelLatency {
    /// Its stage.
    pub stage: ModelStage,
    /// Fingerprint id of the stage measured.
    pub fingerprint: String,
    /// Precision it ran in.
    #[serde(default)]
    pub precision: Precision,
    /// Per batch size (in the order of `batches`).
    pub stats: Vec<LatencyStats>,
}

/// A test-set evaluation of one model as the bench stage ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrecisionEval {
    /// Its stage.
    pub stage: ModelStage,
    /// Precision it ran in.
    pub precision: Precision,
    /// Whether the fast paths were on.
    pub fast_paths: bool,
    /// The scores.
    pub report: EvalReport,
}

/// A latency measurement of a run's models.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// Device, in words (with the CPU threads).
    pub device: String,
    /// Warm-up and timed runs.
    pub options: LatencyOptions,
    /// Batch sizes timed.
    pub batches: Vec<usize>,
    /// Whether the models ran with the inference fast paths.
    #[serde(default)]
    pub fast_paths: bool,
    /// Each model measured, at each precision.
    pub models: Vec<ModelLatency>,
    /// The test-set evaluations at each precision (the bench stage only).
    #[serde(default)]
    pub accuracy: Vec<PrecisionEval>,
    /// When, seconds since the Unix epoch.
    pub measured_unix: u64,
}

impl BenchReport {
    /// A model's fp32 stats at a batch size.
    pub fn get(&self, stage: ModelStage, batch: usize) -> Option<&LatencyStats> {
        self.get_at(stage, Precision::Fp32, batch)
    }

    /// A model's stats in a precision at a batch size.
    pub fn get_at(
        &self,
        stage: ModelStage,
        precision: Precision,
        batch: usize,
    ) -> Option<&LatencyStats> {
        let i = self.batches.iter().position(|&b| b == batch)?;
        self.models
            .iter()
            .find(|m| m.stage == stage && m.precision == precision)
            .and_then(|m| m.stats.get(i))
    }

    /// A Markdown table: one row per model, median (min-max) ms per batch size.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "Latency on {}: eval, no grad, {}, warm-up {}, median (min-max) of {} runs, ms \
             per forward pass\n\n| model | precision |",
            self.device,
            if self.fast_paths {
                "fast paths"
            } else {
                "exact (as in training)"
            },
            self.options.warmup,
            self.options.repeats
        );
        for b in &self.batches {
            s += &format!(" batch {b} |");
        }
        s += "\n|---|---|";
        s += &"---:|".repeat(self.batches.len());
        s.push('\n');
        for m in &self.models {
            s += &format!("| {} | {} |", m.stage.label(), m.precision);
            for st in &m.stats {
                s += &format!(" {:.2} ({:.2}-{:.2}) |", st.median_ms, st.min_ms, st.max_ms);
            }
            s.push('\n');
        }
        s
    }
}

/// The stages whose models the bench stage evaluates at each precision: the baseline
/// (the full model) and the fine-tuned subnet (what a user deploys).
const EVALUATED: [ModelStage; 2] = [ModelStage::Baseline, ModelStage::Finetuned];

/// Times the models of the `stages` (all done) of `run` at each precision of `cfg`
/// (models with gates in fp32 only); with `test`, also evaluates the [`EVALUATED`]
/// stages among them at each precision.
fn measure(
    run: &Run,
    stages: &[(ModelStage, String)],
    cfg: &BenchConfig,
    test: Option<&[EvalVolume]>,
) -> Result<BenchReport> {
    let device = run.device()?;
    let mut loaded = Vec::new();
    for &precision in &cfg.precisions {
        for (stage, fingerprint) in stages {
            if precision != Precision::Fp32 && *stage == ModelStage::Search {
                continue;
            }
            let opts = InferenceOptions {
                precision,
                fast: cfg.fast,
            };
            let m = load_for_inference(run, *stage, device, opts)?;
            loaded.push((*stage, fingerprint.clone(), opts, m));
        }
    }
    let mut accuracy = Vec::new();
    if let Some(test) = test {
        for (stage, _, opts, m) in &loaded {
            if EVALUATED.contains(stage) {
                eprintln!("[bench] {} ({})", stage.label(), describe_inference(*opts));
                accuracy.push(PrecisionEval {
                    stage: *stage,
                    precision: opts.precision,
                    fast_paths: opts.fast,
                    report: eval_test(run, &m.model, test)?,
                });
            }
        }
    }
    let models: Vec<&slimseg_model::TransUnet> = loaded.iter().map(|l| &l.3.model).collect();
    let opts = LatencyOptions {
        warmup: cfg.warmup,
        repeats: cfg.repeats,
    };
    let per_batch = time_models(&models, &cfg.batches, &opts)?;
    let models = loaded
        .iter()
        .enumerate()
        .map(|(i, (stage, fingerprint, o, _))| ModelLatency {
            stage: *stage,
            fingerprint: fingerprint.clone(),
            precision: o.precision,
            stats: per_batch.iter().map(|row| row[i].clone()).collect(),
        })
        .collect();
    Ok(BenchReport {
        device: describe_device(device),
        options: opts,
        batches: cfg.batches.clone(),
        fast_paths: cfg.fast,
        models,
        accuracy,
        measured_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

/// Measures every model stage into `dir/latency.json` with the `[bench]` options.
pub fn make(ctx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let run = ctx.run;
    let states = graph::states(run)?;
    let stages: Vec<(ModelStage, String)> = ModelStage::in_run(&run.cfg)
        .iter()
        .map(|s| {
            let id = states[s.dir()]
                .done()
                .map(|r| r.id.clone())
                .unwrap_or_default();
            (*s, id)
        })
        .collect();
    eprintln!("[bench] latency of every model");
    let test = &ctx.cohort()?.test;
    let rep = measure(run, &stages, &run.cfg.bench, Some(test))?;
    eprint!("{}", rep.to_markdown());
    write_json(&dir.join(LATENCY_FILE), &rep)
}

/// `bench`.
pub fn cmd(args: BenchArgs) -> Result<()> {
    let mut run = Run::open(&args.run, Open::write())?;
    if let Some(p) = &args.json {
        crate::guard::check_output(p, &[], &run.root, true)?;
    }
    if let Some(target) = args.structured_mac_reduction {
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
        let batches = if args.batch.is_empty() {
            run.cfg.bench.batches.clone()
        } else {
            args.batch.clone()
        };
        let opts = LatencyOptions {
            warmup: args.warmup.unwrap_or(run.cfg.bench.warmup),
            repeats: args.repeats.unwrap_or(run.cfg.bench.repeats),
        };
        let infer = InferenceOptions {
            precision: args
                .precision
                .first()
                .copied()
                .unwrap_or(run.cfg.bench.precisions[0]),
            fast: run.cfg.bench.fast && !args.exact,
        };
        let rep =
            bench_full_vs_compressed(&run.cfg.model, &arch, run.device()?, &batches, &opts, infer)?;
        if let Some(p) = &args.json {
            write_json(p, &rep)?;
        }
        print!("{}", rep.to_markdown());
        return Ok(());
    }
    let mut cfg = run.cfg.bench.clone();
    let side = !args.batch.is_empty()
        || args.warmup.is_some()
        || args.repeats.is_some()
        || !args.precision.is_empty()
        || args.exact;
    if !args.batch.is_empty() {
        cfg.batches = args.batch.clone();
    }
    if !args.precision.is_empty() {
        cfg.precisions = args.precision.clone();
    }
    cfg.fast &= !args.exact;
    cfg.warmup = args.warmup.unwrap_or(cfg.warmup);
    cfg.repeats = args.repeats.unwrap_or(cfg.repeats);
    cfg.validate()?;
    let states = graph::states(&run)?;
    let stage_done = matches!(states["bench"], State::Done(_));
    if !side && (!stage_done || args.force) {
        run.cfg.bench = cfg;
        make_one(&run, "bench", args.force, None)?;
        let rep: BenchReport = crate::run::read_json(&run.stage("bench").join(LATENCY_FILE))?;
        if let Some(p) = &args.json {
            write_json(p, &rep)?;
        }
        print!("{}", rep.to_markdown());
        return Ok(());
    }
    // A side measurement of the models that are done.
    let stages: Vec<(ModelStage, String)> = ModelStage::ALL
        .iter()
        .filter_map(|s| states[s.dir()].done().map(|r| (*s, r.id.clone())))
        .collect();
    if stages.is_empty() {
        bail!(
            "{}: no model stage is complete and up to date (see `slimseg status --run {}`)",
            run.root.display(),
            run.root.display()
        );
    }
    let rep = measure(&run, &stages, &cfg, None)?;
    let path = side_path(&run, rep.measured_unix);
    write_json(&path, &rep)?;
    if let Some(p) = &args.json {
        write_json(p, &rep)?;
    }
    print!("{}", rep.to_markdown());
    eprintln!(
        "side measurement kept in {} (the bench stage, {}, is made with [bench] and stays \
         as it is)",
        path.display(),
        run.stage("bench").join(LATENCY_FILE).display()
    );
    Ok(())
}

/// A new file name for a side measurement.
fn side_path(run: &Run, unix: u64) -> PathBuf {
    let dir = run.root.join(MEASUREMENTS_DIR);
    (0u32..)
        .map(|n| dir.join(format!("bench-{unix}-{n}.json")))
        .find(|p| !p.exists())
        .expect("a free name")
}

/// The side measurements of a run, by file name.
pub fn side_measurements(run: &Run) -> Result<BTreeMap<String, BenchReport>> {
    let dir = run.root.join(MEASUREMENTS_DIR);
    let mut out = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for e in std::fs::read_dir(&dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.insert(name, crate::run::read_json(&p)?);
        }
    }
    Ok(out)
}
