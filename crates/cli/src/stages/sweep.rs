//! `sweep`: from the one search, one subnet per budget of `[sweep] keep`, into
//! `RUN/sweep/keep-K/`. Each budget's subnet is chosen from the search's final gates
//! with `[select]`'s budget at that fraction, sliced from the searched weights and
//! fine-tuned (`learned/`); its uniform control of the same cost is sliced from the
//! baseline and fine-tuned the same way (`uniform/`, when `controls.uniform` is on).
//! Each is evaluated on the test set. At the end every model, with the full baseline, is
//! timed side by side in one measurement (`latency.json`) and the sizes and latencies
//! are summarised in `sweep.json`.
//!
//! A budget is a stage of its own inside the sweep: `keep-K/budget.json` records what it
//! was made from (the sweep's inputs without the budget list and the timing options, and
//! its fraction), so an interrupted sweep resumes at the budget it was in (its
//! fine-tuning from its checkpoints) and a finished budget is never made again while its
//! inputs stay the same (`--force` aside): when the list changes, an interrupted sweep
//! keeps its budget folders (the graph's `own_records`), and a complete one is rebuilt
//! beside the old one with its finished budgets linked over (it holds the listed budgets
//! only; an interrupted one keeps unlisted budget folders too, outside `sweep.json`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use slimseg_compress::latency::{describe_device, time_models};
use slimseg_compress::{
    CompressedModel, Folding, LatencyOptions, Summary, compress, compress_checkpoint,
};
use slimseg_model::{InferenceOptions, Precision};
use slimseg_search::engine::read_gate_values;
use slimseg_search::stages::{Network, SUBNET_FILE};
use slimseg_search::{Budget, EvalReport, SelectConfig};

use super::finetune::{FinetuneArgs, set_schedule, train_and_save};
use super::uniform::{UNIFORM_FILE, control_of};
use super::{EVAL_FILE, FINETUNED_MODEL_DIR, ModelStage, load_for_inference, make_one};
use crate::graph::{Ctx, Fingerprint, INPUTS_FILE};
use crate::run::{read_json, write_json};

/// The sweep's summary in `RUN/sweep`.
pub const SWEEP_FILE: &str = "sweep.json";
/// The side-by-side latency measurement in `RUN/sweep`.
pub const SWEEP_LATENCY_FILE: &str = "latency.json";
/// A finished budget's record in `RUN/sweep/keep-K`.
const BUDGET_RECORD: &str = "budget.json";

/// Options of `sweep`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub finetune: FinetuneArgs,
    /// Kept fractions, comma-separated, e.g. `0.9,0.8,0.7,0.6,0.5` (sets `sweep.keep`).
    /// Default: `sweep.keep` of the configuration.
    #[arg(long, value_delimiter = ',')]
    pub keep: Vec<f64>,
}

/// `sweep`.
pub fn cmd(a: SweepArgs) -> Result<()> {
    let mut run = a.finetune.stage.open()?;
    set_schedule(&mut run.cfg, a.finetune.epochs, a.finetune.lr);
    if !a.keep.is_empty() {
        run.cfg.sweep.keep = a.keep.clone();
        run.cfg
            .sweep
            .validate()
            .map_err(|e| anyhow::anyhow!("--keep: {e}"))?;
    }
    if run.cfg.sweep.keep.is_empty() {
        bail!(
            "no budgets to sweep: pass --keep 0.9,0.8,0.7 or set `keep` in the [sweep] table \
             of {}",
            run.root.join("config.toml").display()
        );
    }
    make_one(
        &run,
        "sweep",
        a.finetune.stage.force,
        a.finetune.stop.stop_after,
    )
}

/// Why the sweep is not part of a run with `cfg`.
pub fn off(cfg: &slimseg_search::RunConfig) -> Option<String> {
    cfg.sweep
        .keep
        .is_empty()
        .then(|| "no [sweep] budgets (sweep.keep is empty)".into())
}

/// One model of the sweep: its size and its latency per batch size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepModel {
    /// Its folder, relative to `RUN/sweep` (`keep-0.7/learned`; the baseline's is
    /// `../baseline`).
    pub dir: String,
    /// Parameters and MACs, with the full model's.
    pub summary: Summary,
    /// Median forward latency in ms, per batch size of [`SweepRecord::batches`].
    pub latency_ms: Vec<f64>,
}

/// One budget of the sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepBudget {
    /// The kept fraction.
    pub keep: f64,
    /// The budget it stands for, in words.
    pub budget: String,
    /// The subnet chosen from the search's gates, fine-tuned.
    pub learned: SweepModel,
    /// Its uniform control of the same cost, fine-tuned the same way.
    pub uniform: Option<SweepModel>,
    /// Wall seconds this call spent making it (`None`: finished before).
    pub seconds: Option<f64>,
}

/// What `sweep.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepRecord {
    /// Device the latencies were measured on, in words.
    pub device: String,
    /// Warm-up and timed runs of the latency measurement.
    pub options: LatencyOptions,
    /// Batch sizes timed.
    pub batches: Vec<usize>,
    /// The full baseline, timed in the same measurement.
    pub full: SweepModel,
    /// Each budget, in the order of `sweep.keep`.
    pub budgets: Vec<SweepBudget>,
}

/// The folder of budget `keep` inside the sweep folder.
pub fn budget_dir(sweep: &Path, keep: f64) -> PathBuf {
    sweep.join(format!("keep-{keep}"))
}

/// What a budget is made from: the sweep's inputs without the budget list, the run's
/// own budget fraction(s) and the latency measurement's options (device, threads,
/// `[bench]`), plus `budget`, the budget in words (kind, scope and fraction), and `keep`,
/// its exact fraction.
fn budget_fingerprint(sweep: &Fingerprint, budget: &Budget, keep: f64) -> Fingerprint {
    const FRACTIONS: [&str; 6] = ["attn", "mlp", "token", "keep", "params", "macs"];
    let mut f = sweep.clone();
    f.config.retain(|k, _| {
        let fraction = k
            .strip_prefix("select.budget.")
            .is_some_and(|x| FRACTIONS.contains(&x));
        !(fraction
            || k.starts_with("sweep.")
            || k.starts_with("bench.")
            || k == "device"
            || k == "threads")
    });
    f.config.insert("budget".into(), budget.to_string());
    f.config.insert("keep".into(), keep.to_string());
    f
}

/// Whether the budget folder `dir` is finished and was made from `fp`.
fn finished(dir: &Path, fp: &Fingerprint) -> bool {
    let p = dir.join(BUDGET_RECORD);
    p.is_file() && read_json::<Fingerprint>(&p).is_ok_and(|r| &r == fp)
}

/// Recreates the tree `src` under `dst` with hard links (copies where links fail).
fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    for e in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        if e.file_type()?.is_dir() {
            link_tree(&from, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// What a budget make needs from the run, loaded once, and what the run trains after it.
struct Sources {
    gates: slimseg_model::GateValues,
    baseline: Option<Network>,
    /// Training slices of the run after the sweep.
    after_sweep: Option<u64>,
}

impl Sources {
    /// Sets `ctx.slices_after` for a training followed by `trainings` more in the sweep.
    fn plan(&self, ctx: &mut Ctx<'_>, trainings: usize) -> Result<()> {
        let epochs = ctx.run.cfg.for_finetune().train.epochs;
        let n = ctx.cohort()?.train.len();
        let total = self.after_sweep.unwrap_or(0) + (trainings * epochs * n) as u64;
        ctx.slices_after = (total > 0).then_some(total);
        Ok(())
    }
}

/// Makes budget `keep` into `dir` unless it is finished from the same inputs; whether it
/// made it.
fn make_budget(
    ctx: &mut Ctx<'_>,
    src: &mut Sources,
    dir: &Path,
    keep: f64,
    fp: &Fingerprint,
    later: usize,
) -> Result<bool> {
    let run = ctx.run;
    let uniform_on = run.cfg.controls.uniform;
    if finished(dir, fp) {
        eprintln!(
            "[sweep] keep {keep}: finished before, kept ({})",
            dir.display()
        );
        return Ok(false);
    }
    let same_inputs = read_json::<Fingerprint>(&dir.join(INPUTS_FILE)).is_ok_and(|r| &r == fp);
    if dir.exists() && !same_inputs {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot clear {} (made from other inputs)", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_json(&dir.join(INPUTS_FILE), fp)?;
    let device = run.device()?;
    let select = SelectConfig {
        budget: run.cfg.select.budget.with_keep(keep),
        ..run.cfg.select
    };
    let table = super::profile::table(run)?;
    let spec = slimseg_search::select_with(&run.cfg.model, &src.gates, &select, table.as_ref())
        .with_context(|| format!("sweep budget {keep} ({})", select.budget))?;
    let learned = dir.join("learned");
    if !learned.join(EVAL_FILE).is_file() {
        std::fs::create_dir_all(&learned)
            .with_context(|| format!("cannot create {}", learned.display()))?;
        spec.save_toml(learned.join(SUBNET_FILE))?;
        let weights = run.stage("search").join("weights.safetensors");
        let cm = compress_checkpoint(
            &run.cfg.model,
            &weights,
            &spec.arch,
            Folding::SoftGates,
            device,
        )
        .with_context(|| format!("cannot compress {}", weights.display()))?;
        src.plan(ctx, later + usize::from(uniform_on))?;
        train_and_save(ctx, &learned, &cm, &format!("sweep {keep} learned"))?;
    }
    if uniform_on {
        let uniform = dir.join("uniform");
        if !uniform.join(EVAL_FILE).is_file() {
            std::fs::create_dir_all(&uniform)
                .with_context(|| format!("cannot create {}", uniform.display()))?;
            if src.baseline.is_none() {
                let weights = run.stage("baseline").join("best.safetensors");
                let mut base = Network::new(&run.cfg.model, tch::Device::Cpu, run.cfg.train.seed)?;
                base.load(&weights).with_context(|| {
                    format!("{} does not fit the run's [model]", weights.display())
                })?;
                src.baseline = Some(base);
            }
            let base = src.baseline.as_ref().expect("loaded above");
            let (arch, record) = control_of(&run.cfg.model, base, &spec.arch)?;
            let cm = compress(&base.model, &base.vs, &arch, Folding::None, device)
                .context("cannot slice the baseline")?;
            write_json(&uniform.join(UNIFORM_FILE), &record)?;
            src.plan(ctx, later)?;
            train_and_save(ctx, &uniform, &cm, &format!("sweep {keep} uniform"))?;
        }
    }
    write_json(&dir.join(BUDGET_RECORD), fp)?;
    Ok(true)
}

/// Makes every budget of `[sweep]` into `dir`, then times them side by side.
pub fn make(ctx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let run = ctx.run;
    let sweep_fp: Fingerprint = read_json(&dir.join(INPUTS_FILE))?;
    let gates_path = run.stage("search").join("gates_end.json");
    let mut src = Sources {
        gates: read_gate_values(&gates_path)
            .with_context(|| format!("cannot read the gates {}", gates_path.display()))?,
        baseline: None,
        after_sweep: ctx.slices_after,
    };
    let target = run.stage("sweep");
    let per_budget = 1 + usize::from(run.cfg.controls.uniform);
    let mut seconds = Vec::new();
    let keeps = run.cfg.sweep.keep.clone();
    for (i, &keep) in keeps.iter().enumerate() {
        let budget = run.cfg.select.budget.with_keep(keep);
        let fp = budget_fingerprint(&sweep_fp, &budget, keep);
        let bdir = budget_dir(dir, keep);
        // Rebuilt beside the complete sweep: its finished budgets carry over.
        let old = budget_dir(&target, keep);
        if dir != target && !ctx.force && !bdir.exists() && finished(&old, &fp) {
            link_tree(&old, &bdir)?;
        }
        eprintln!("[sweep] budget {}/{}: {budget}", i + 1, keeps.len());
        let later = (keeps.len() - i - 1) * per_budget;
        let t = std::time::Instant::now();
        if make_budget(ctx, &mut src, &bdir, keep, &fp, later)? {
            let s = t.elapsed().as_secs_f64();
            eprintln!("[sweep] keep {keep} made in {s:.1} s");
            seconds.push(Some(s));
        } else {
            seconds.push(None);
        }
    }
    ctx.slices_after = src.after_sweep;
    drop(src);

    // Every model of the sweep and the full baseline, timed in one interleaved run.
    // In fp32, with the fast paths as `[bench]` asks, as the bench stage times them.
    let device = run.device()?;
    let infer = InferenceOptions {
        precision: Precision::Fp32,
        fast: run.cfg.bench.fast,
    };
    let full = load_for_inference(run, ModelStage::Baseline, device, infer)?;
    // Per budget, learned then uniform; in `refs` the baseline comes first.
    let subs: &[&str] = match run.cfg.controls.uniform {
        true => &["learned", "uniform"],
        false => &["learned"],
    };
    let mut models = Vec::new();
    for &keep in &keeps {
        for sub in subs {
            let d = budget_dir(dir, keep).join(sub);
            let mut m = CompressedModel::load(d.join(FINETUNED_MODEL_DIR), device)
                .with_context(|| format!("cannot load {}", d.display()))?;
            m.model.prepare_inference(&mut m.vs, infer)?;
            models.push((format!("keep-{keep}/{sub}"), m));
        }
    }
    let opts = LatencyOptions {
        warmup: run.cfg.bench.warmup,
        repeats: run.cfg.bench.repeats,
    };
    let batches = run.cfg.bench.batches.clone();
    eprintln!(
        "[sweep] latency of {} models and the baseline, side by side",
        models.len()
    );
    let mut refs = vec![&full.model];
    refs.extend(models.iter().map(|(_, m)| &m.model));
    let per_batch = time_models(&refs, &batches, &opts)?;
    let latency = |i: usize| -> Vec<f64> { per_batch.iter().map(|row| row[i].median_ms).collect() };
    write_json(&dir.join(SWEEP_LATENCY_FILE), &per_batch)?;
    let full_count = slimseg_model::count::count(&run.cfg.model, None)?;
    let full_model = SweepModel {
        dir: "../baseline".into(),
        summary: Summary {
            params: full_count.params(),
            macs: full_count.macs(),
            full_params: full_count.params(),
            full_macs: full_count.macs(),
        },
        latency_ms: latency(0),
    };
    let mut timed = models
        .iter()
        .enumerate()
        .map(|(i, (dir, m))| {
            Ok(SweepModel {
                dir: dir.clone(),
                summary: Summary::new(&run.cfg.model, m.model.arch().context("a sliced model")?)?,
                latency_ms: latency(i + 1),
            })
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter();
    let mut budgets = Vec::new();
    for (&keep, seconds) in keeps.iter().zip(seconds) {
        let learned = timed.next().context("a learned model per budget")?;
        let uniform = match run.cfg.controls.uniform {
            true => Some(timed.next().context("a uniform model per budget")?),
            false => None,
        };
        budgets.push(SweepBudget {
            keep,
            budget: run.cfg.select.budget.with_keep(keep).to_string(),
            learned,
            uniform,
            seconds,
        });
    }
    let record = SweepRecord {
        device: describe_device(device),
        options: opts,
        batches,
        full: full_model,
        budgets,
    };
    eprint!("{}", summary_table(&record, dir)?);
    write_json(&dir.join(SWEEP_FILE), &record)
}

/// The sweep in a few lines: per budget and model, MACs, test Dice and latency at the
/// first batch size.
fn summary_table(rec: &SweepRecord, dir: &Path) -> Result<String> {
    let dice = |m: &SweepModel| -> Result<String> {
        let rep: EvalReport = read_json(&dir.join(&m.dir).join(EVAL_FILE))?;
        Ok(rep
            .mean_dice
            .map_or("-".into(), |d| format!("{:.2}", 100.0 * d)))
    };
    let b = rec.batches.first().copied().unwrap_or(1);
    let mut s = format!(
        "| keep | model | MACs | Dice | latency at batch {b} (ms) |\n|---:|---|---:|---:|---:|\n"
    );
    for bud in &rec.budgets {
        for (name, m) in [
            ("learned", Some(&bud.learned)),
            ("uniform", bud.uniform.as_ref()),
        ] {
            let Some(m) = m else { continue };
            s += &format!(
                "| {} | {name} | {:.1}% | {} | {:.2} (full {:.2}) |\n",
                bud.keep,
                100.0 * m.summary.macs as f64 / m.summary.full_macs as f64,
                dice(m)?,
                m.latency_ms[0],
                rec.full.latency_ms[0]
            );
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_keyed_by_its_fraction_not_by_the_list_or_the_timing() {
        let run = Budget::Joint {
            params: 0.7,
            macs: 0.7,
            scope: slimseg_search::CostScope::Model,
        };
        let mut f = Fingerprint::default();
        f.config.insert("model.depth".into(), "2".into());
        f.config
            .insert("select.budget.kind".into(), "\"model\"".into());
        f.config.insert("select.budget.params".into(), "0.7".into());
        f.config.insert("sweep.keep".into(), "[0.9, 0.7]".into());
        f.config.insert("bench.repeats".into(), "10".into());
        f.config.insert("threads".into(), "2".into());
        let a = budget_fingerprint(&f, &run.with_keep(0.8), 0.8);
        let mut g = f.clone();
        g.config.insert("sweep.keep".into(), "[0.8, 0.5]".into());
        g.config.insert("select.budget.params".into(), "0.6".into());
        g.config.insert("threads".into(), "8".into());
        assert_eq!(a, budget_fingerprint(&g, &run.with_keep(0.8), 0.8));
        assert_ne!(a, budget_fingerprint(&f, &run.with_keep(0.9), 0.9));
        g.config
            .insert("select.budget.kind".into(), "\"per-dimension\"".into());
        assert_ne!(a, budget_fingerprint(&g, &run.with_keep(0.8), 0.8));
        g.config
            .insert("select.budget.kind".into(), "\"model\"".into());
        g.config.insert("model.depth".into(), "3".into());
        assert_ne!(a, budget_fingerprint(&g, &run.with_keep(0.8), 0.8));
    }
}
