//! `slimseg report RUN`: the paper's experiment (TransUNet, DFTransUnet, searched,
//! compressed, fine-tuned DFTransUnet-slim and the uniform control) side by side
//! (Markdown + JSON + PNG) in `RUN/report`, each with its own test-set scores and its own
//! measured latency, its paired comparisons with intervals, and where every number came from: the stages'
//! fingerprints, the data's identity, the versions, device and threads. It is a stage of
//! the graph, so it is only made from stages that are up to date with each other.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use slimseg_data::metrics::mean_defined;
use slimseg_data::pipeline::resize_cubic;
use slimseg_data::viz::{LABEL_COLORS, slice_with_mask_rgb};
use slimseg_data::{AcdcDataset, Phase};
use slimseg_model::GateValues;
use slimseg_model::count::count;
use slimseg_model::infer::predict_volume_with;
use slimseg_model::profile::LatencyTable;
use slimseg_search::EvalReport;
use slimseg_search::bootstrap::{MeanCi, mean_ci};
use slimseg_search::data::{EvalVolume, eval_volumes};
use slimseg_search::engine::read_gate_values;
use slimseg_search::select::SubnetSpec;
use slimseg_search::stages::SUBNET_FILE;

use crate::graph::{Ctx, GRAPH, Provenance, StageRecord, states};

use crate::figures::{self, Curve, Figure, GatePanel, OverlayRow, ParetoPoint};
use crate::run::{Run, RunArgs, read_json};
use crate::stages::bench::{BenchReport, LATENCY_FILE, side_measurements};
use crate::stages::sweep::{SWEEP_FILE, SweepModel, SweepRecord};
use crate::stages::{
    EVAL_FILE, ModelInfo, ModelStage, load_stage_model, model_info, read_eval, stage_arch,
};
use crate::status::{short_commit, utc};

/// Options of `report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The run directory.
    pub dir: PathBuf,
}

/// Published ACDC results (mean, RV, MYO, LV Dice in %).
const PUBLISHED: [(&str, [f64; 4]); 2] = [
    ("TransUNet (Chen et al. 2021)", [89.71, 88.86, 84.53, 95.73]),
    ("Swin-Unet (Cao et al. 2022)", [90.00, 88.55, 85.62, 95.83]),
];

/// Accuracy summary of one model: per-class means and the mean over classes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Accuracy {
    /// Dice per class (RV, MYO, LV) and mean.
    pub dice: [Option<f64>; 4],
    /// HD95 in mm per class and mean.
    pub hd95_mm: [Option<f64>; 4],
    /// HD95 in voxels per class and mean.
    pub hd95_vox: [Option<f64>; 4],
    /// Volumes evaluated.
    pub volumes: usize,
    /// Mean Dice over the classes of each volume, by (patient, phase).
    #[serde(skip)]
    pub per_volume: Vec<((u32, Phase), f64)>,
    /// Mean over volumes of the per-volume mean Dice, with its 95% bootstrap interval.
    pub dice_ci: Option<MeanCi>,
    /// Mean Dice of the ED volumes and of the ES volumes.
    pub dice_ed_es: [Option<f64>; 2],
}

/// Bootstrap resamples of the report's intervals.
const RESAMPLES: usize = 2000;
/// Seed of the report's bootstrap (fixed: the same run gives the same report).
const BOOTSTRAP_SEED: u64 = 20240206;

/// The paired difference `model - base` of the per-volume mean Dice over the volumes
/// both scored, with its 95% bootstrap interval.
fn paired(model: &Accuracy, base: &Accuracy) -> Option<MeanCi> {
    let d: Vec<f64> = model
        .per_volume
        .iter()
        .filter_map(|(k, v)| {
            base.per_volume
                .iter()
                .find(|(b, _)| b == k)
                .map(|(_, w)| v - w)
        })
        .collect();
    mean_ci(&d, 0.95, RESAMPLES, BOOTSTRAP_SEED)
}

/// `+1.39 points (95% CI -0.21 to +2.98)`, and what it means.
/// A mean Dice with its 95% interval in %: `92.49 (91.51–93.31)`, `–` without one.
fn dice_with_ci(ci: Option<MeanCi>) -> String {
    ci.map_or("–".into(), |c| {
        format!(
            "{:.2} ({:.2}–{:.2})",
            100.0 * c.mean,
            100.0 * c.lo,
            100.0 * c.hi
        )
    })
}

fn describe_difference(d: &MeanCi) -> String {
    let verdict = if d.contains(0.0) {
        "inside the noise: the interval holds 0"
    } else if d.mean > 0.0 {
        "a gain beyond the noise"
    } else {
        "a loss beyond the noise"
    };
    format!(
        "{:+.2} points (95% CI {:+.2} to {:+.2}, {} paired volumes): {verdict}",
        100.0 * d.mean,
        100.0 * d.lo,
        100.0 * d.hi,
        d.n
    )
}

impl Accuracy {
    /// Summarises an evaluation.
    pub fn of(rep: &EvalReport) -> Self {
        let per = |f: &dyn Fn(&slimseg_search::eval::VolumeScore, usize) -> Option<f64>| {
            let c: [Option<f64>; 3] =
                [0, 1, 2].map(|k| mean_defined(rep.volumes.iter().map(|v| f(v, k))));
            [c[0], c[1], c[2], mean_defined(c)]
        };
        let per_volume: Vec<((u32, Phase), f64)> = rep
            .volumes
            .iter()
            .filter_map(|v| mean_defined(v.dice).map(|d| ((v.patient, v.phase), d)))
            .collect();
        let values: Vec<f64> = per_volume.iter().map(|(_, d)| *d).collect();
        let phase = |p: Phase| {
            mean_defined(
                per_volume
                    .iter()
                    .filter(|((_, q), _)| *q == p)
                    .map(|(_, d)| Some(*d)),
            )
        };
        Accuracy {
            dice: per(&|v, k| v.dice[k]),
            hd95_mm: per(&|v, k| v.hd95_mm.and_then(|h| h[k])),
            hd95_vox: per(&|v, k| v.hd95_vox.and_then(|h| h[k])),
            volumes: rep.volumes.len(),
            dice_ci: mean_ci(&values, 0.95, RESAMPLES, BOOTSTRAP_SEED),
            dice_ed_es: [phase(Phase::ED), phase(Phase::ES)],
            per_volume,
        }
    }
}

fn f(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{:.digits$}", x * scale))
}

fn millions(n: u64) -> String {
    format!("{:.3} M", n as f64 / 1e6)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The unit of a column of counts whose full model counts `scale`: G (3 decimals) from a
/// billion, else M (2 decimals), so that a column never mixes units. `(unit, divisor,
/// decimals)`.
fn count_unit(scale: u64) -> (&'static str, f64, usize) {
    if scale >= 1_000_000_000 {
        ("G", 1e9, 3)
    } else {
        ("M", 1e6, 2)
    }
}

/// A count in the unit of its column (see [`count_unit`]), without the unit.
fn in_unit_value(n: u64, scale: u64) -> String {
    let (_, div, digits) = count_unit(scale);
    format!("{:.digits$}", n as f64 / div)
}

/// A count in the unit of its column, with the unit.
fn in_unit(n: u64, scale: u64) -> String {
    format!("{} {}", in_unit_value(n, scale), count_unit(scale).0)
}

struct Row {
    stage: ModelStage,
    acc: Option<Accuracy>,
    info: Option<ModelInfo>,
    /// Median latency (ms) per batch size of the bench stage.
    latency_ms: Vec<Option<f64>>,
    record: Option<StageRecord>,
}

/// Reads `log.csv` as (epoch, seg_loss, val_dice) rows.
fn read_log(path: &Path) -> Result<Vec<(f64, f64, Option<f64>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{}: no column `{name}`", path.display()))
    };
    let (ce, cl, cv) = (col("epoch")?, col("seg_loss")?, col("val_dice")?);
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let num = |c: usize| -> Result<f64> {
            cells.get(c).and_then(|s| s.parse().ok()).with_context(|| {
                format!(
                    "{}: line {}: bad value in column {c}",
                    path.display(),
                    i + 2
                )
            })
        };
        let val = cells.get(cv).and_then(|s| s.parse::<f64>().ok());
        rows.push((num(ce)?, num(cl)?, val));
    }
    Ok(rows)
}

fn gates_figure(g: &GateValues, spec: Option<&SubnetSpec>) -> Result<Figure> {
    let mags = |v: Vec<f32>| v.iter().map(|v| v.abs() as f64).collect::<Vec<f64>>();
    let panels = [
        GatePanel {
            name: "attention head dims".into(),
            magnitudes: mags(g.attn.iter().flatten().flatten().copied().collect()),
            threshold: spec.and_then(|s| s.thresholds.attn),
        },
        GatePanel {
            name: "MLP units".into(),
            magnitudes: mags(g.mlp.iter().flatten().copied().collect()),
            threshold: spec.and_then(|s| s.thresholds.mlp),
        },
        GatePanel {
            name: "tokens".into(),
            magnitudes: mags(g.token.iter().flatten().copied().collect()),
            threshold: spec.and_then(|s| s.thresholds.token),
        },
    ];
    figures::gates(&panels)
}

/// The precision a training stage ran in, from its `metrics.json`: `fp32`, or the
/// autocast precision (`fp16` for runs from before bf16 autocast, which recorded none).
/// `None` without metrics (an imported baseline).
fn training_precision(run: &Run, dir: &str) -> Option<String> {
    let text = std::fs::read_to_string(run.stage(dir).join("metrics.json")).ok()?;
    let m: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(if m["amp"].as_bool()? {
        m["amp_precision"].as_str().unwrap_or("fp16").to_string()
    } else {
        "fp32".to_string()
    })
}

fn curves_figure(run: &Run, done: &[&str]) -> Result<Option<Figure>> {
    let mut curves = Vec::new();
    let mut offset = 0.0;
    for (dir, label, color) in [
        ("baseline", "baseline", figures::colors::BLUE),
        ("search", "search", figures::colors::ORANGE),
        ("finetuned", "fine-tuning", figures::colors::GREEN),
    ] {
        let p = run.stage(dir).join("log.csv");
        // An imported baseline has no training log.
        if !done.contains(&dir) || !p.is_file() {
            continue;
        }
        let rows = read_log(&p)?;
        curves.push(Curve {
            label: label.into(),
            color,
            loss: rows.iter().map(|r| (offset + r.0, r.1)).collect(),
            dice: rows
                .iter()
                .filter_map(|r| r.2.map(|d| (offset + r.0, d)))
                .collect(),
        });
        offset += rows.last().map_or(0.0, |r| r.0);
    }
    if curves.is_empty() {
        return Ok(None);
    }
    figures::curves(&curves).map(Some)
}

/// A few test volumes for overlays (normalised as in training).
fn overlay_volumes(run: &Run, n: usize) -> Result<Vec<EvalVolume>> {
    let Some(root) = run.cfg.data.root.as_ref() else {
        return Ok(Vec::new());
    };
    let ds = AcdcDataset::open(root)?.with_orientation(run.cfg.data.orientation);
    let split = run.cfg.data.split.resolve(&ds.ids())?;
    let ids: Vec<u32> = split.test.iter().copied().take(n).collect();
    let frames = ds.load_labelled_frames(&ids)?;
    Ok(eval_volumes(&frames, run.cfg.data.normalization)?)
}

fn upscale(w: usize, h: usize, rgb: &[u8], k: usize) -> (u32, u32, Vec<u8>) {
    let (ow, oh) = (w * k, h * k);
    let mut out = vec![0u8; ow * oh * 3];
    for y in 0..oh {
        for x in 0..ow {
            let s = ((y / k) * w + x / k) * 3;
            let d = (y * ow + x) * 3;
            out[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
        }
    }
    (ow as u32, oh as u32, out)
}

/// Overlays: per volume, the slice with most ground truth as image | truth | each
/// stage's prediction, labelled with patient, phase and slice.
fn overlay_figure(run: &Run, stages: &[ModelStage]) -> Result<Option<Figure>> {
    let vols = overlay_volumes(run, 2)?;
    if vols.is_empty() || stages.is_empty() {
        return Ok(None);
    }
    let device = run.device()?;
    let mut preds: Vec<Vec<ndarray::Array3<u8>>> = Vec::new();
    for &s in stages {
        let m = load_stage_model(run, s, device)?;
        preds.push(
            vols.iter()
                .map(|v| {
                    predict_volume_with(&m.model, v.image.view(), 16, |sl, size| {
                        resize_cubic(sl, size, size)
                    })
                })
                .collect::<std::result::Result<_, _>>()?,
        );
    }
    let mut rows = Vec::new();
    for (i, v) in vols.iter().enumerate() {
        let slices = v.labels.dim().0;
        let z = (0..slices)
            .max_by_key(|&z| {
                v.labels
                    .index_axis(ndarray::Axis(0), z)
                    .iter()
                    .filter(|&&l| l > 0)
                    .count()
            })
            .unwrap_or(0);
        let img = v.image.index_axis(ndarray::Axis(0), z);
        let (h, w) = img.dim();
        let k = if h.max(w) < 160 { 2 } else { 1 };
        let (_, ww, rgb) = slice_with_mask_rgb(img, v.labels.index_axis(ndarray::Axis(0), z))?;
        let half = |rgb: &[u8], right: bool| -> Vec<u8> {
            let mut out = Vec::with_capacity(h * w * 3);
            for y in 0..h {
                let start = (y * ww + if right { w } else { 0 }) * 3;
                out.extend_from_slice(&rgb[start..start + w * 3]);
            }
            out
        };
        let mut tiles = vec![
            upscale(w, h, &half(&rgb, false), k),
            upscale(w, h, &half(&rgb, true), k),
        ];
        for p in &preds {
            let (_, _, rgb) = slice_with_mask_rgb(img, p[i].index_axis(ndarray::Axis(0), z))?;
            tiles.push(upscale(w, h, &half(&rgb, true), k));
        }
        rows.push(OverlayRow {
            label: format!(
                "patient {:03}, {}, slice {} of {slices}",
                v.patient,
                v.phase,
                z + 1
            ),
            tiles,
        });
    }
    let mut titles = vec!["image".to_string(), "ground truth".to_string()];
    titles.extend(stages.iter().map(|s| s.title(&run.cfg.model).to_string()));
    let legend = [
        ("RV", LABEL_COLORS[0]),
        ("MYO", LABEL_COLORS[1]),
        ("LV", LABEL_COLORS[2]),
    ];
    figures::overlays(&titles, &rows, &legend).map(Some)
}

/// Writes the report of the run into `out` (the report stage's folder).
pub fn make(ctx: &mut Ctx<'_>, out: &Path) -> Result<()> {
    let run = ctx.run;
    let cfg = &run.cfg;
    let full = count(&cfg.model, None)?;
    let states = states(run)?;
    let record = |name: &str| states.get(name).and_then(|s| s.done()).cloned();
    let bench_rec = record("bench");
    let latency: Option<BenchReport> = match &bench_rec {
        Some(_) => Some(read_json(&run.stage("bench").join(LATENCY_FILE))?),
        None => None,
    };
    let batches = latency
        .as_ref()
        .map_or_else(Vec::new, |l| l.batches.clone());
    let mut rows = Vec::new();
    for stage in ModelStage::in_run(cfg) {
        let record = record(stage.dir());
        let done = record.is_some();
        let acc = if done {
            read_eval(run, stage)?.as_ref().map(Accuracy::of)
        } else {
            None
        };
        let info = match stage {
            _ if !done => None,
            ModelStage::Transunet | ModelStage::Baseline | ModelStage::Search => {
                Some(model_info(&cfg.model, stage, None)?)
            }
            _ => Some(model_info(
                &cfg.model,
                stage,
                stage_arch(run, stage)?.as_ref(),
            )?),
        };
        let latency_ms = batches
            .iter()
            .map(|&b| {
                latency
                    .as_ref()
                    .and_then(|l| l.get(stage, b))
                    .map(|s| s.median_ms)
            })
            .collect();
        rows.push(Row {
            stage,
            acc,
            info,
            latency_ms,
            record,
        });
    }
    let row = |s: ModelStage| rows.iter().find(|r| r.stage == s);
    let acc_of = |s: ModelStage| row(s).and_then(|r| r.acc.as_ref());
    let title = |s: ModelStage| s.title(&cfg.model);
    let spec = match record("compressed") {
        Some(_) => Some(SubnetSpec::load_toml(
            run.stage("compressed").join(SUBNET_FILE),
        )?),
        None => None,
    };

    let mut md = String::new();
    let synthetic = run.synthetic();
    let data_desc = match &cfg.data.root {
        Some(r) if synthetic => format!("synthetic ACDC-format cohort at `{}`", r.display()),
        Some(r) => format!("ACDC at `{}`", r.display()),
        None => "unknown".into(),
    };
    let _ = writeln!(md, "# slimseg report: `{}`\n", run.root.display());
    let _ = writeln!(
        md,
        "Data: {data_desc}. Model: TransUNet, input {}x{}, hidden {}, {} blocks, {} heads, MLP {}, \
         {}; baseline initialised {}. Test volumes: {}.\n",
        cfg.model.img_size,
        cfg.model.img_size,
        cfg.model.hidden,
        cfg.model.layers,
        cfg.model.heads,
        cfg.model.mlp_dim,
        match cfg.model.pixel_head {
            slimseg_model::PixelHead::None => "no pixel module (TransUNet)",
            slimseg_model::PixelHead::DirectionField =>
                "with the direction-field pixel module (DFTransUnet)",
        },
        cfg.train.pretrained.as_ref().map_or_else(
            || "at random".to_string(),
            |p| format!("from `{}`", p.display())
        ),
        rows.iter()
            .find_map(|r| r.acc.as_ref().map(|a| a.volumes))
            .unwrap_or(0),
    );
    if synthetic {
        let _ = writeln!(
            md,
            "The data is synthetic, so the published ACDC numbers are not shown; scores here \
             say nothing about real cardiac MRI.\n"
        );
    }

    let comparisons = experiment_section(&mut md, cfg, &rows, &batches, full.params(), full.macs());

    let _ = writeln!(md, "## Accuracy on the test set\n");
    let _ = writeln!(
        md,
        "3D scores per volume (ED and ES), averaged over volumes; empty-mask convention `transunet`.\n"
    );
    for (heading, pick, scale, digits) in [
        ("Dice (%)", 0usize, 100.0, 2usize),
        ("HD95 (mm)", 1, 1.0, 2),
        ("HD95 (voxels, medpy without spacing)", 2, 1.0, 2),
    ] {
        let _ = writeln!(md, "**{heading}**\n");
        let _ = writeln!(
            md,
            "| model | mean | RV | MYO | LV |\n|---|---:|---:|---:|---:|"
        );
        for r in &rows {
            let v = r.acc.as_ref().map(|a| match pick {
                0 => a.dice,
                1 => a.hd95_mm,
                _ => a.hd95_vox,
            });
            let v = v.unwrap_or([None; 4]);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                title(r.stage),
                f(v[3], scale, digits),
                f(v[0], scale, digits),
                f(v[1], scale, digits),
                f(v[2], scale, digits)
            );
        }
        md.push('\n');
    }

    let base_acc = acc_of(ModelStage::Baseline).cloned();
    let _ = writeln!(
        md,
        "**Mean Dice (%) over test volumes with its 95% bootstrap interval ({RESAMPLES} \
         resamples of the volumes), by phase, and the paired difference to the baseline \
         (same volumes)**\n"
    );
    let _ = writeln!(
        md,
        "| model | mean Dice (95% CI) | ED | ES | vs baseline, paired |\n|---|---:|---:|---:|---|"
    );
    for r in &rows {
        let Some(a) = &r.acc else {
            let _ = writeln!(md, "| {} | – | – | – | – |", title(r.stage));
            continue;
        };
        let ci = dice_with_ci(a.dice_ci);
        let vs = match (&base_acc, r.stage) {
            (_, ModelStage::Baseline) | (None, _) => "–".to_string(),
            (Some(b), _) => paired(a, b).map_or("–".into(), |d| describe_difference(&d)),
        };
        let _ = writeln!(
            md,
            "| {} | {ci} | {} | {} | {vs} |",
            title(r.stage),
            f(a.dice_ed_es[0], 100.0, 2),
            f(a.dice_ed_es[1], 100.0, 2)
        );
    }
    md.push('\n');

    let _ = writeln!(md, "## Size and speed\n");
    let _ = writeln!(
        md,
        "Counting convention: one MAC is one multiply-accumulate of a convolution, linear layer \
         or matmul, attention matmuls (QK^T and PV) included; FLOPs = 2 x MACs; per image. \
         Parameters are the trainable tensors of the deployed model (gates excluded). The \
         searched model carries soft gates and runs at full width.\n"
    );
    if let Some(l) = &latency {
        let _ = writeln!(
            md,
            "Latency: each model's own median forward time in fp32 (ms per batch; the \
             searched model with its soft gates) on {}, eval mode, {}, warm-up {}, {} runs, \
             the models' runs interleaved.\n",
            l.device,
            if l.fast_paths {
                "prepared for inference with the fast paths (fused q/k/v, \
                 scaled_dot_product_attention, oneDNN linears on CPU) as `predict` runs it"
            } else {
                "computed exactly as in training (`bench.fast = false`)"
            },
            l.options.warmup,
            l.options.repeats
        );
    }
    let (_, tr_full_macs) = full.sum_prefix("transformer.encoder.layer.");
    let lat_cols: String = batches
        .iter()
        .map(|b| format!(" latency, batch {b} (ms) |"))
        .collect();
    let _ = writeln!(
        md,
        "| model | params | MACs | FLOPs | transformer-block MACs | params vs baseline | MACs vs baseline |{lat_cols}\n|---|---:|---:|---:|---:|---:|---:|{}",
        "---:|".repeat(batches.len())
    );
    for r in &rows {
        match &r.info {
            Some(i) => {
                let (_, tm) = i.count.sum_prefix("transformer.encoder.layer.");
                let lat: String = r
                    .latency_ms
                    .iter()
                    .map(|v| format!(" {} |", f(*v, 1.0, 2)))
                    .collect();
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {:+.1}% | {:+.1}% |{lat}",
                    title(r.stage),
                    millions(i.params),
                    in_unit(i.macs, full.macs()),
                    in_unit(i.flops, full.flops()),
                    in_unit(tm, full.macs()),
                    100.0 * (i.params as f64 / full.params() as f64 - 1.0),
                    100.0 * (i.macs as f64 / full.macs() as f64 - 1.0),
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "| {} | – | – | – | – | – | – |{}",
                    title(r.stage),
                    " – |".repeat(batches.len())
                );
            }
        }
    }
    md.push('\n');
    let comp = rows
        .iter()
        .find(|r| r.stage == ModelStage::Compressed)
        .and_then(|r| r.info.as_ref());
    let base_dice = acc_of(ModelStage::Baseline).and_then(|a| a.dice[3]);
    let ft_dice = acc_of(ModelStage::Finetuned).and_then(|a| a.dice[3]);
    let mut summary = json!({});
    if let Some(c) = comp {
        let (_, tm) = c.count.sum_prefix("transformer.encoder.layer.");
        let mac_red = 1.0 - c.macs as f64 / full.macs() as f64;
        let tr_red = 1.0 - tm as f64 / tr_full_macs.max(1) as f64;
        let par_red = 1.0 - c.params as f64 / full.params() as f64;
        let _ = writeln!(
            md,
            "Compressed vs baseline: {:.1}% fewer MACs ({:.1}% fewer in the transformer blocks), \
             {:.1}% fewer parameters.",
            100.0 * mac_red,
            100.0 * tr_red,
            100.0 * par_red
        );
        summary["mac_reduction"] = json!(mac_red);
        summary["transformer_mac_reduction"] = json!(tr_red);
        summary["param_reduction"] = json!(par_red);
    }
    if let (Some(b), Some(t)) = (base_dice, ft_dice) {
        let pairedd = match (acc_of(ModelStage::Finetuned), acc_of(ModelStage::Baseline)) {
            (Some(a), Some(bb)) => paired(a, bb),
            _ => None,
        };
        let _ = writeln!(
            md,
            "Fine-tuned mean Dice {:.2} vs baseline {:.2}: {}.",
            100.0 * t,
            100.0 * b,
            pairedd.map_or_else(
                || format!("{:+.2} points", 100.0 * (t - b)),
                |d| describe_difference(&d)
            )
        );
        summary["dice_change_points"] = json!(100.0 * (t - b));
        if let Some(d) = pairedd {
            summary["dice_change_ci95_points"] = json!([100.0 * d.lo, 100.0 * d.hi]);
            summary["dice_change_inside_noise"] = json!(d.contains(0.0));
        }
    }
    md.push('\n');

    if let Some(spec) = &spec {
        let _ = writeln!(md, "## Kept widths per transformer block\n");
        let _ = writeln!(
            md,
            "Budget: {}; floors per block: {} attention dim(s), {} MLP unit(s), {} token(s); \
             {}. Thresholds (smallest kept gate): attention {}, MLP {}, token {}.\n",
            spec.budget,
            spec.floors.attn_dims,
            spec.floors.mlp_units,
            spec.floors.tokens,
            if spec.align > 1 {
                format!(
                    "aligned to multiples of {} (in each block every kept head keeps the same \
                     number of dims, and the MLP a multiple of {} units: dense GEMMs, no \
                     padded heads)",
                    spec.align, spec.align
                )
            } else {
                "not aligned (heads keep the dims their gates chose)".into()
            },
            f(spec.thresholds.attn, 1.0, 4),
            f(spec.thresholds.mlp, 1.0, 4),
            f(spec.thresholds.token, 1.0, 4)
        );
        let info = model_info(&cfg.model, ModelStage::Compressed, Some(&spec.arch))?;
        let full_info = model_info(&cfg.model, ModelStage::Baseline, None)?;
        let _ = writeln!(
            md,
            "| block | kept dims per head | attention dims | MLP units | tokens | params | MACs |\n|---:|---|---:|---:|---:|---:|---:|"
        );
        for (b, fb) in info.blocks.iter().zip(&full_info.blocks) {
            let _ = writeln!(
                md,
                "| {} | {} | {}/{} | {}/{} | {}/{} | {} | {} |",
                b.layer,
                b.head_widths
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                b.attn_dims,
                fb.attn_dims,
                b.mlp_units,
                fb.mlp_units,
                b.tokens,
                fb.tokens,
                thousands(b.params),
                thousands(b.macs)
            );
        }
        md.push('\n');
    }

    if record("compressed").is_some() {
        let rec: crate::stages::compress::CompressRecord =
            read_json(&run.stage("compressed").join("compress.json"))?;
        let _ = writeln!(md, "## Search health\n");
        if rec.warnings.is_empty() {
            let _ = writeln!(
                md,
                "The gates separated (in each dimension a share fell below 0.05 or the \
                 magnitudes spread apart), no selection threshold is near the gates' initial \
                 value 1, and the budget is met by more than one dimension.\n"
            );
        } else {
            for w in &rec.warnings {
                let _ = writeln!(md, "- **Warning:** {w}.");
            }
            md.push('\n');
        }
        summary["search_warnings"] = json!(rec.warnings);
    }

    let mut figures = Vec::new();
    let gates_path = run.stage("search").join("gates_end.json");
    if record("search").is_some() {
        let g = read_gate_values(&gates_path)?;
        gates_figure(&g, spec.as_ref())?.save_png(&out.join("gates.png"))?;
        figures.push("gates.png");
        let _ = writeln!(
            md,
            "## Gate distributions\n\nMagnitudes of the soft gates at the end of the search, \
             with the selection's threshold (red).\n\n![gates](gates.png)\n"
        );
    }
    let done: Vec<&str> = ["baseline", "search", "finetuned"]
        .into_iter()
        .filter(|n| record(n).is_some())
        .collect();
    let trained_in: Vec<(&str, String)> = done
        .iter()
        .filter_map(|&d| training_precision(run, d).map(|p| (d, p)))
        .collect();
    if let Some(c) = curves_figure(run, &done)? {
        c.save_png(&out.join("curves.png"))?;
        figures.push("curves.png");
        let precision = if trained_in.is_empty() {
            String::new()
        } else {
            let stages: Vec<String> = trained_in.iter().map(|(d, p)| format!("{d} {p}")).collect();
            format!(" Trained in: {} (`train.amp`).", stages.join(", "))
        };
        let _ = writeln!(
            md,
            "## Training curves\n\nSegmentation loss (0.5 CE + 0.5 Dice) per epoch and \
             validation Dice, baseline, search and fine-tuning in sequence.{precision}\n\n\
             ![curves](curves.png)\n"
        );
    }
    let overlay_stages: Vec<ModelStage> = [
        ModelStage::Baseline,
        ModelStage::Compressed,
        ModelStage::Finetuned,
    ]
    .into_iter()
    .filter(|s| record(s.dir()).is_some())
    .collect();
    match overlay_figure(run, &overlay_stages) {
        Ok(Some(c)) => {
            c.save_png(&out.join("overlays.png"))?;
            figures.push("overlays.png");
            let _ = writeln!(
                md,
                "## Predictions\n\nTest slices with the most ground truth: image, ground truth \
                 and predictions (RV red, MYO green, LV blue).\n\n![overlays](overlays.png)\n"
            );
        }
        Ok(None) => {}
        Err(e) => eprintln!("report: no overlays: {e:#}"),
    }

    let precision = match &latency {
        Some(l) => precision_section(&mut md, l, acc_of, &title)?,
        None => json!(null),
    };
    let table = match record("profile") {
        Some(_) => crate::stages::profile::table(run)?,
        None => None,
    };
    let prediction = match (&latency, &table) {
        (Some(l), Some(t)) => prediction_section(run, &mut md, l, t, &title)?,
        _ => json!(null),
    };

    let sweep = match record("sweep") {
        Some(_) => sweep_section(
            run,
            &mut md,
            out,
            &mut figures,
            acc_of(ModelStage::Baseline),
        )?,
        None => json!(null),
    };

    let now = Provenance::now(run.device()?);
    let date = utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0));
    let data_id = run.data_identity()?.clone();
    let _ = writeln!(md, "## Provenance\n");
    let _ = writeln!(
        md,
        "Made {date} by slimseg {} (commit {}) on libtorch {}, {}, seed {}. Data: {}. Every \
         stage below was made from the recorded outputs of the stages above it (its \
         fingerprint covers the configuration values it read, the digests of what it \
         consumed and the data); the report is only made when all of them are up to date.\n",
        now.slimseg,
        short_commit(&now.commit),
        now.libtorch,
        now.device,
        cfg.train.seed,
        data_id.short()
    );
    let _ = writeln!(
        md,
        "| stage | fingerprint | finished | wall time (s) | made by |\n|---|---|---|---:|---|"
    );
    let mut total = 0.0;
    let mut stage_json = serde_json::Map::new();
    for d in GRAPH.iter().filter(|d| d.name != "report") {
        match record(d.name) {
            Some(r) => {
                total += r.seconds;
                let _ = writeln!(
                    md,
                    "| {} | `{}` | {} | {:.1} | slimseg {} ({}), libtorch {}, {} |",
                    d.name,
                    r.id,
                    utc(r.finished_unix),
                    r.seconds,
                    r.made_by.slimseg,
                    short_commit(&r.made_by.commit),
                    r.made_by.libtorch,
                    r.made_by.device
                );
                stage_json.insert(
                    d.name.into(),
                    json!({
                        "fingerprint": r.id,
                        "finished_unix": r.finished_unix,
                        "seconds": r.seconds,
                        "made_by": r.made_by,
                    }),
                );
            }
            None => {
                let state = match d.off_because(cfg) {
                    Some(why) => format!("off: {why}"),
                    None => "not made".into(),
                };
                let _ = writeln!(md, "| {} | – | {state} | – | – |", d.name);
            }
        }
    }
    let _ = writeln!(md, "| total | | | {total:.1} | |\n");
    let sides = side_results(run)?;
    if !sides.is_empty() {
        let _ = writeln!(
            md,
            "Side results kept in the run, not part of the tables above: {}.\n",
            sides.join(", ")
        );
    }

    if !synthetic {
        let _ = writeln!(md, "## Published ACDC results\n");
        let _ = writeln!(
            md,
            "| model | mean Dice | RV | MYO | LV |\n|---|---:|---:|---:|---:|"
        );
        for (name, v) in PUBLISHED {
            let _ = writeln!(
                md,
                "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
                v[0], v[1], v[2], v[3]
            );
        }
        for r in [row(ModelStage::Baseline), row(ModelStage::Finetuned)]
            .into_iter()
            .flatten()
        {
            if let Some(a) = &r.acc {
                let _ = writeln!(
                    md,
                    "| ours, {} | {} | {} | {} | {} |",
                    title(r.stage),
                    f(a.dice[3], 100.0, 2),
                    f(a.dice[0], 100.0, 2),
                    f(a.dice[1], 100.0, 2),
                    f(a.dice[2], 100.0, 2)
                );
            }
        }
        let _ = writeln!(
            md,
            "\nThe paper (J. Imaging 2024, 10, 206) claims 30% fewer parameters and FLOPs than \
             TransUNet with no loss of Dice on ACDC.\n"
        );
    }

    let report_json = json!({
        "run": run.root,
        "data": { "root": cfg.data.root, "synthetic": synthetic },
        "conventions": {
            "macs": "multiply-accumulates of conv, linear and matmul (attention matmuls included), per image",
            "flops": "2 x MACs",
            "dice_convention": "transunet",
        },
        "models": rows.iter().map(|r| json!({
            "name": r.stage.name(&cfg.model),
            "stage": r.stage,
            "label": title(r.stage),
            "accuracy": r.acc,
            "dice_mean": r.acc.as_ref().and_then(|a| a.dice_ci.map(|c| c.mean)),
            "dice_ci95": r.acc.as_ref().and_then(|a| a.dice_ci.map(|c| [c.lo, c.hi])),
            "dice_vs_baseline": match (&r.acc, acc_of(ModelStage::Baseline), r.stage) {
                (Some(a), Some(b), s) if s != ModelStage::Baseline => paired(a, b).map(|d| json!({
                    "mean": d.mean, "ci95": [d.lo, d.hi], "inside_noise": d.contains(0.0), "volumes": d.n,
                })),
                _ => None,
            },
            "params": r.info.as_ref().map(|i| i.params),
            "macs": r.info.as_ref().map(|i| i.macs),
            "flops": r.info.as_ref().map(|i| i.flops),
            "latency_ms": batches
                .iter()
                .zip(&r.latency_ms)
                .filter_map(|(b, v)| v.map(|v| (b.to_string(), json!(v))))
                .collect::<serde_json::Map<_, _>>(),
            "stage_seconds": r.record.as_ref().map(|x| x.seconds),
        })).collect::<Vec<_>>(),
        "comparisons": comparisons,
        "sweep": sweep,
        "precision": precision,
        "latency_prediction": prediction,
        "summary": summary,
        "subnet": spec,
        // The evaluations are summarised under `precision`.
        "latency": latency.map(|l| BenchReport { accuracy: Vec::new(), ..l }),
        "published": if synthetic { json!(null) } else {
            json!(PUBLISHED.iter().map(|(n, v)| json!({"model": n, "dice": v})).collect::<Vec<_>>())
        },
        "figures": figures,
        "provenance": {
            "date": date,
            "slimseg": now.slimseg,
            "commit": now.commit,
            "libtorch": now.libtorch,
            "device": now.device,
            "threads": now.threads,
            "seed": cfg.train.seed,
            "data": data_id,
            "stages": stage_json,
            "training_precision": trained_in.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        },
        "side_results": sides,
    });
    crate::run::write_json(&out.join("report.json"), &report_json)?;
    let md_path = out.join("report.md");
    slimseg_data::write_atomic(&md_path, md.as_bytes())
        .with_context(|| format!("cannot write {}", md_path.display()))
}

/// The precision section: the bench stage's evaluations of the baseline and the
/// fine-tuned model in each precision (and with the fast paths), each against the stage's
/// own exact fp32 evaluation (`stage_acc`), with the latency of that precision. Returns
/// `report.json`'s `precision` array.
fn precision_section<'a>(
    md: &mut String,
    l: &BenchReport,
    stage_acc: impl Fn(ModelStage) -> Option<&'a Accuracy>,
    title: &dyn Fn(ModelStage) -> &'static str,
) -> Result<serde_json::Value> {
    if l.accuracy.is_empty() {
        return Ok(json!([]));
    }
    let batch = l.batches[0];
    let _ = writeln!(
        md,
        "### Precision\n\nThe baseline and the fine-tuned model as the bench stage ran \
         them ({}), evaluated on the test set in each precision. The change is the paired \
         per-volume difference from the stage's own evaluation (fp32, computed exactly as in \
         training), with its 95% bootstrap interval; the latency is that of the same \
         precision at batch {batch}, with its speed-up over fp32.\n",
        if l.fast_paths {
            "with the fast paths"
        } else {
            "exactly as in training"
        }
    );
    let _ = writeln!(
        md,
        "| model | precision | mean Dice (95% CI) | change vs exact fp32 (points) | latency, \
         batch {batch} (ms) | speed-up vs fp32 |\n|---|---|---:|---:|---:|---:|"
    );
    let mut out = Vec::new();
    for e in &l.accuracy {
        let acc = Accuracy::of(&e.report);
        let change = stage_acc(e.stage).and_then(|base| paired(&acc, base));
        let ms = l.get_at(e.stage, e.precision, batch).map(|s| s.median_ms);
        let fp32_ms = l.get(e.stage, batch).map(|s| s.median_ms);
        let speedup = ms.zip(fp32_ms).map(|(m, f)| f / m);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            title(e.stage),
            e.precision,
            dice_with_ci(acc.dice_ci),
            change.map_or("–".into(), |d| format!(
                "{:+.3} ({:+.3} to {:+.3})",
                100.0 * d.mean,
                100.0 * d.lo,
                100.0 * d.hi
            )),
            f(ms, 1.0, 2),
            speedup.map_or("–".into(), |s| format!("{s:.2}x")),
        );
        out.push(json!({
            "stage": e.stage,
            "precision": e.precision,
            "fast_paths": e.fast_paths,
            "dice_mean": acc.dice_ci.map(|c| c.mean),
            "dice_ci95": acc.dice_ci.map(|c| [c.lo, c.hi]),
            "change_vs_exact_fp32": change.map(|d| json!({"mean": d.mean, "ci95": [d.lo, d.hi], "volumes": d.n})),
            "latency_ms": ms,
            "speedup_vs_fp32": speedup,
        }));
    }
    md.push('\n');
    Ok(json!(out))
}

/// The latency the profile's table predicts for each model beside the bench stage's
/// measurement of it (same device, batch and precision). Returns `report.json`'s
/// `latency_prediction` array.
fn prediction_section(
    run: &Run,
    md: &mut String,
    l: &BenchReport,
    t: &LatencyTable,
    title: &dyn Fn(ModelStage) -> &'static str,
) -> Result<serde_json::Value> {
    if t.device != l.device || t.fast_paths != l.fast_paths {
        let _ = writeln!(
            md,
            "### Latency predicted by the profile\n\nThe latency table was measured on {} \
             ({}), the bench stage timed on {} ({}): no comparison.\n",
            t.device,
            if t.fast_paths { "fast paths" } else { "exact" },
            l.device,
            if l.fast_paths { "fast paths" } else { "exact" }
        );
        return Ok(json!([]));
    }
    let _ = writeln!(
        md,
        "### Latency predicted by the profile\n\nThe latency budget selects by a table of \
         block latencies measured over a grid of widths on {}, at batch {} in {} (`slimseg \
         profile`). Each model's latency as the table predicts it, beside the bench \
         stage's measurement at the same batch and precision. A whole-model latency budget \
         is a fraction of the full model's latency, so the last column compares fractions: \
         each model's predicted over measured latency, each taken relative to the full \
         model's, which cancels a change of the machine's speed between the profile and \
         the bench stage:\n\n| model | predicted (ms) | measured (ms) | predicted / measured | \
         relative to the full model |\n|---|---:|---:|---:|---:|",
        t.device, t.batch, t.precision
    );
    let full = l
        .get_at(ModelStage::Baseline, t.precision, t.batch)
        .map(|s| (t.predict(None), s.median_ms));
    let mut out = Vec::new();
    for stage in ModelStage::in_run(&run.cfg) {
        if stage == ModelStage::Search || stage == ModelStage::Transunet {
            continue; // the gates' cost, or another model than the table's
        }
        let Some(measured) = l.get_at(stage, t.precision, t.batch).map(|s| s.median_ms) else {
            continue;
        };
        let predicted = t.predict(stage_arch(run, stage)?.as_ref());
        let relative = full.map(|(pf, mf)| (predicted / pf) / (measured / mf));
        let _ = writeln!(
            md,
            "| {} | {predicted:.2} | {measured:.2} | {:.2} | {} |",
            title(stage),
            predicted / measured,
            relative.map_or("-".into(), |r| format!("{r:.2}"))
        );
        out.push(json!({
            "stage": stage,
            "predicted_ms": predicted,
            "measured_ms": measured,
            "relative_predicted_over_measured": relative,
        }));
    }
    md.push('\n');
    Ok(json!(out))
}

/// One sweep model's accuracy from its `eval.json`.
fn sweep_accuracy(sweep: &Path, m: &SweepModel) -> Result<Accuracy> {
    let path = sweep.join(&m.dir).join(EVAL_FILE);
    let rep: EvalReport = read_json(&path)?;
    Ok(Accuracy::of(&rep))
}

/// The budget sweep: per budget, the learned subnet and its uniform control (size, Dice
/// with its interval, latency) and their paired difference, and the Pareto figures of
/// Dice against MACs and against latency. Returns `report.json`'s `sweep` array.
fn sweep_section(
    run: &Run,
    md: &mut String,
    out: &Path,
    figures: &mut Vec<&'static str>,
    baseline: Option<&Accuracy>,
) -> Result<serde_json::Value> {
    let dir = run.stage("sweep");
    let rec: SweepRecord = read_json(&dir.join(SWEEP_FILE))?;
    let full = &rec.full.summary;
    let (mac_unit, mac_scale, _) = count_unit(full.full_macs);
    let batch = rec.batches.first().copied().unwrap_or(1);
    let _ = writeln!(
        md,
        "## Budget sweep\n\nFrom the one search, one subnet per budget (the run's budget kind \
         at each kept fraction), sliced and fine-tuned with the fine-tuning schedule, and its \
         uniform control of no more cost, fine-tuned the same way. Dice is the mean over the \
         test volumes with its 95% bootstrap interval; the difference is paired over the same \
         volumes. Latency: median ms per forward pass at batch {batch} on {}, every model and \
         the full baseline ({:.2} ms) timed side by side in one run.\n",
        rec.device, rec.full.latency_ms[0]
    );
    let _ = writeln!(
        md,
        "| keep | model | params | MACs ({mac_unit}) | mean Dice (95% CI) | latency (ms) | \
         learned − uniform (points, 95% CI) |\n|---:|---|---:|---:|---:|---:|---:|"
    );
    let pct = |v: u64, of: u64| 100.0 * (v as f64 / of as f64 - 1.0);
    let point = |m: &SweepModel, a: &Accuracy| {
        json!({
            "params": m.summary.params,
            "macs": m.summary.macs,
            "dice_mean": a.dice_ci.map(|c| c.mean),
            "dice_ci95": a.dice_ci.map(|c| [c.lo, c.hi]),
            "latency_ms": rec.batches.iter().zip(&m.latency_ms)
                .map(|(b, v)| (b.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>(),
        })
    };
    let pareto_point = |cost: f64, a: &Accuracy, label: String| {
        a.dice_ci.map(|c| ParetoPoint {
            cost,
            dice: 100.0 * c.mean,
            ci: (100.0 * c.lo, 100.0 * c.hi),
            label,
        })
    };
    let mut entries = Vec::new();
    let (mut by_macs, mut by_latency) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for b in &rec.budgets {
        let learned = sweep_accuracy(&dir, &b.learned)?;
        let uniform = match &b.uniform {
            Some(u) => Some((u, sweep_accuracy(&dir, u)?)),
            None => None,
        };
        let diff = uniform.as_ref().and_then(|(_, ua)| paired(&learned, ua));
        let models = std::iter::once(("learned", &b.learned, &learned))
            .chain(uniform.as_ref().map(|(u, ua)| ("uniform", *u, ua)));
        for (k, (name, m, a)) in models.enumerate() {
            let _ = writeln!(
                md,
                "| {} | {name} | {} ({:+.1}%) | {} ({:+.1}%) | {} | {:.2} ({:+.1}%) | {} |",
                b.keep,
                thousands(m.summary.params),
                pct(m.summary.params, full.full_params),
                in_unit_value(m.summary.macs, full.full_macs),
                pct(m.summary.macs, full.full_macs),
                dice_with_ci(a.dice_ci),
                m.latency_ms[0],
                100.0 * (m.latency_ms[0] / rec.full.latency_ms[0] - 1.0),
                match (k, &diff) {
                    (0, Some(d)) => format!(
                        "{:+.2} ({:+.2} to {:+.2})",
                        100.0 * d.mean,
                        100.0 * d.lo,
                        100.0 * d.hi
                    ),
                    _ => String::new(),
                }
            );
            let i = usize::from(k > 0);
            let label = format!("{}", b.keep);
            by_macs[i].extend(pareto_point(
                m.summary.macs as f64 / mac_scale,
                a,
                label.clone(),
            ));
            by_latency[i].extend(pareto_point(m.latency_ms[0], a, label));
        }
        entries.push(json!({
            "keep": b.keep,
            "budget": b.budget,
            "learned": point(&b.learned, &learned),
            "uniform": uniform.as_ref().map(|(u, ua)| point(u, ua)),
            "learned_minus_uniform": diff.map(|d| json!({
                "mean": d.mean, "ci95": [d.lo, d.hi], "volumes": d.n,
            })),
        }));
    }
    md.push('\n');
    let full_points = baseline.map(|a| {
        (
            pareto_point(full.full_macs as f64 / mac_scale, a, "full baseline".into()),
            pareto_point(rec.full.latency_ms[0], a, "full baseline".into()),
        )
    });
    if let Some((Some(fm), Some(fl))) = full_points {
        let [lm, um] = &by_macs;
        figures::pareto(
            &format!("MACs per image ({mac_unit})"),
            lm,
            um,
            &fm,
            "the paper's budget: 70% of the MACs",
        )?
        .save_png(&out.join("pareto_macs.png"))?;
        let [ll, ul] = &by_latency;
        figures::pareto(
            &format!("latency at batch {batch} (ms)"),
            ll,
            ul,
            &fl,
            "70% of the full model's latency",
        )?
        .save_png(&out.join("pareto_latency.png"))?;
        figures.extend(["pareto_macs.png", "pareto_latency.png"]);
        let _ = writeln!(
            md,
            "Mean test Dice against MACs and against measured latency, learned subnets \
             (blue, labelled with their kept fraction){} with their 95% intervals, the full \
             baseline (cross) and 70% of its MACs (the paper's budget) or of its latency \
             (dashed).\n\n![Pareto: Dice against MACs](pareto_macs.png)\n\n\
             ![Pareto: Dice against latency](pareto_latency.png)\n",
            match um.is_empty() {
                true => "",
                false => " and uniform controls (orange)",
            }
        );
    }
    Ok(json!(entries))
}

/// The comparisons the paper's experiment makes: each as (model, reference, what it
/// tells), paired over the same test volumes.
const COMPARISONS: [(ModelStage, ModelStage, &str); 4] = [
    (
        ModelStage::Baseline,
        ModelStage::Transunet,
        "the pixel module (DFTransUnet vs TransUNet)",
    ),
    (
        ModelStage::Finetuned,
        ModelStage::Transunet,
        "the paper's claim (DFTransUnet-slim vs TransUNet)",
    ),
    (
        ModelStage::Finetuned,
        ModelStage::Baseline,
        "compression (fine-tuned slim model vs the baseline it was searched from)",
    ),
    (
        ModelStage::Finetuned,
        ModelStage::Uniform,
        "learned vs uniform allocation at no more cost (fine-tuned slim model vs uniform control)",
    ),
];

/// Writes the experiment's headline table (each model's Dice with its interval, HD95 in
/// both conventions, size and latency) and its paired comparisons in words; returns the
/// comparisons for `report.json`.
fn experiment_section(
    md: &mut String,
    cfg: &slimseg_search::RunConfig,
    rows: &[Row],
    batches: &[usize],
    full_params: u64,
    full_macs: u64,
) -> Vec<serde_json::Value> {
    let title = |s: ModelStage| s.title(&cfg.model);
    let _ = writeln!(md, "## The experiment\n");
    let _ = writeln!(
        md,
        "Mean Dice over test volumes (95% bootstrap interval), HD95 in mm and in voxels \
         (medpy without spacing, as TransUNet reports it), size, and each model's own median \
         latency{}.\n",
        batches
            .first()
            .map_or(String::new(), |b| format!(" at batch {b}"))
    );
    let _ = writeln!(
        md,
        "| model | mean Dice (95% CI) | HD95 (mm) | HD95 (voxels) | params | MACs | latency (ms) |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let dice = dice_with_ci(r.acc.as_ref().and_then(|a| a.dice_ci));
        let hd = |pick: fn(&Accuracy) -> Option<f64>| f(r.acc.as_ref().and_then(pick), 1.0, 2);
        let size = r.info.as_ref().map_or(("–".into(), "–".into()), |i| {
            (
                format!(
                    "{} ({:+.1}%)",
                    millions(i.params),
                    100.0 * (i.params as f64 / full_params as f64 - 1.0)
                ),
                format!(
                    "{} ({:+.1}%)",
                    in_unit(i.macs, full_macs),
                    100.0 * (i.macs as f64 / full_macs as f64 - 1.0)
                ),
            )
        });
        let _ = writeln!(
            md,
            "| {} | {dice} | {} | {} | {} | {} | {} |",
            title(r.stage),
            hd(|a| a.hd95_mm[3]),
            hd(|a| a.hd95_vox[3]),
            size.0,
            size.1,
            f(r.latency_ms.first().copied().flatten(), 1.0, 2)
        );
    }
    md.push('\n');
    let acc = |s: ModelStage| {
        rows.iter()
            .find(|r| r.stage == s)
            .and_then(|r| r.acc.as_ref())
    };
    let mut out = Vec::new();
    for (a, b, what) in COMPARISONS {
        let (Some(x), Some(y)) = (acc(a), acc(b)) else {
            continue;
        };
        let Some(d) = paired(x, y) else {
            continue;
        };
        let _ = writeln!(md, "- {what}: {}.", describe_difference(&d));
        out.push(json!({
            "model": a.name(&cfg.model),
            "reference": b.name(&cfg.model),
            "what": what,
            "dice_difference": d.mean,
            "ci95": [d.lo, d.hi],
            "inside_noise": d.contains(0.0),
            "volumes": d.n,
        }));
    }
    if let Some(r) = rows.iter().find(|r| r.stage == ModelStage::Uniform) {
        if r.record.is_some() {
            let _ = writeln!(
                md,
                "- The uniform control keeps the compressed subnet's kept fraction of \
                 attention dims, MLP units and tokens in every block (at most its parameters \
                 and MACs), \
                 chosen by the baseline's weight norms and nearest the image centre, sliced \
                 from the baseline and fine-tuned with the same schedule; it does not get the \
                 search's epochs."
            );
        }
    }
    md.push('\n');
    out
}

/// The side evaluations and measurements of a run, by path inside it.
fn side_results(run: &Run) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let evals = run.root.join(crate::eval_cmd::EVALS_DIR);
    if evals.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(&evals)?
            .filter_map(|e| e.ok())
            .map(|e| {
                format!(
                    "`{}/{}`",
                    crate::eval_cmd::EVALS_DIR,
                    e.file_name().to_string_lossy()
                )
            })
            .collect();
        names.sort();
        out.extend(names);
    }
    for name in side_measurements(run)?.into_keys() {
        out.push(format!(
            "`{}/{name}`",
            crate::stages::bench::MEASUREMENTS_DIR
        ));
    }
    Ok(out)
}

/// `report RUN`: (re)writes the report.
pub fn report_cmd(args: ReportArgs) -> Result<()> {
    let open = crate::run::Open {
        reads_data: true,
        ..crate::run::Open::write()
    };
    let run = Run::open(&RunArgs::dir(&args.dir), open)?;
    let redo = states(&run)?["report"].record().is_some();
    crate::stages::make_one(&run, "report", redo, None)?;
    println!(
        "report: {}",
        run.stage("report").join("report.md").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_with_thousands_separators_and_one_unit_per_column() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_179_648), "10,179,648");
        assert_eq!(in_unit(78_130_000, 111_620_000), "78.13 M");
        assert_eq!(in_unit(1_130_000_000, 111_620_000), "1130.00 M");
        assert_eq!(in_unit(20_451_000_000, 29_216_899_072), "20.451 G");
    }
}
