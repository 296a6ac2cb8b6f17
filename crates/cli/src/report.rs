//! `slimseg report RUN`: baseline, searched, compressed and fine-tuned models side by
//! side (Markdown + JSON + PNG) in `RUN/report`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use slimseg_compress::LatencyReport;
use slimseg_data::AcdcDataset;
use slimseg_data::metrics::mean_defined;
use slimseg_data::pipeline::resize_cubic;
use slimseg_data::viz::slice_with_mask_rgb;
use slimseg_model::GateValues;
use slimseg_model::count::count;
use slimseg_model::infer::predict_volume_with;
use slimseg_search::EvalReport;
use slimseg_search::data::{EvalVolume, eval_volumes};
use slimseg_search::engine::read_gate_values;
use slimseg_search::select::SubnetSpec;
use slimseg_search::stages::SUBNET_FILE;

use crate::plot::{
    Canvas, Chart, HistogramPanel, Series, bin_counts, colors, histograms, line_charts,
};
use crate::run::{Run, RunArgs, STAGE_RECORD, StageRecord, read_json};
use crate::stages::{
    LATENCY_FILE, ModelInfo, ModelStage, load_stage_model, model_info, read_eval, stage_arch,
};

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
}

impl Accuracy {
    /// Summarises an evaluation.
    pub fn of(rep: &EvalReport) -> Self {
        let per = |f: &dyn Fn(&slimseg_search::eval::VolumeScore, usize) -> Option<f64>| {
            let c: [Option<f64>; 3] =
                [0, 1, 2].map(|k| mean_defined(rep.volumes.iter().map(|v| f(v, k))));
            [c[0], c[1], c[2], mean_defined(c)]
        };
        Accuracy {
            dice: per(&|v, k| v.dice[k]),
            hd95_mm: per(&|v, k| v.hd95_mm.and_then(|h| h[k])),
            hd95_vox: per(&|v, k| v.hd95_vox.and_then(|h| h[k])),
            volumes: rep.volumes.len(),
        }
    }
}

fn f(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{:.digits$}", x * scale))
}

fn millions(n: u64) -> String {
    format!("{:.3} M", n as f64 / 1e6)
}

fn giga(n: u64) -> String {
    if n >= 100_000_000 {
        format!("{:.3} G", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}

struct Row {
    stage: ModelStage,
    acc: Option<Accuracy>,
    info: Option<ModelInfo>,
    latency_ms: Option<f64>,
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

fn gates_figure(g: &GateValues, spec: Option<&SubnetSpec>) -> Canvas {
    let dims: [(&str, Vec<f32>, Option<f64>); 3] = [
        (
            "ATTENTION",
            g.attn.iter().flatten().flatten().copied().collect(),
            spec.and_then(|s| s.thresholds.attn),
        ),
        (
            "MLP",
            g.mlp.iter().flatten().copied().collect(),
            spec.and_then(|s| s.thresholds.mlp),
        ),
        (
            "TOKEN",
            g.token.iter().flatten().copied().collect(),
            spec.and_then(|s| s.thresholds.token),
        ),
    ];
    let panels: Vec<HistogramPanel> = dims
        .into_iter()
        .map(|(name, vals, t)| {
            let mags: Vec<f64> = vals.iter().map(|v| v.abs() as f64).collect();
            let max = mags.iter().copied().fold(0.0, f64::max);
            let min = mags.iter().copied().fold(f64::INFINITY, f64::min);
            // Gates that barely moved cluster far from 0: zoom onto their range.
            let (lo, hi) = if max <= 0.0 {
                (0.0, 1.0)
            } else if min > 0.5 * max {
                let pad = ((max - min) * 0.05).max(max * 1e-3);
                ((min - pad).max(0.0), max + pad)
            } else {
                (0.0, max * 1.02)
            };
            HistogramPanel {
                title: format!("{name} N={}", vals.len()),
                counts: bin_counts(&mags, lo, hi, 40),
                lo,
                hi,
                threshold: t,
            }
        })
        .collect();
    histograms(&panels)
}

fn curves_figure(run: &Run) -> Result<Option<Canvas>> {
    let mut loss = Vec::new();
    let mut dice = Vec::new();
    let mut offset = 0.0;
    for (dir, label, color) in [
        ("baseline", "BASELINE", colors::BLUE),
        ("search", "SEARCH", colors::ORANGE),
        ("finetuned", "FINE-TUNE", colors::GREEN),
    ] {
        let p = run.stage(dir).join("log.csv");
        if !p.exists() {
            continue;
        }
        let rows = read_log(&p)?;
        loss.push(Series {
            label: label.into(),
            color,
            points: rows.iter().map(|r| (offset + r.0, r.1)).collect(),
        });
        dice.push(Series {
            label: label.into(),
            color,
            points: rows
                .iter()
                .filter_map(|r| r.2.map(|d| (offset + r.0, d)))
                .collect(),
        });
        offset += rows.last().map_or(0.0, |r| r.0);
    }
    if loss.is_empty() {
        return Ok(None);
    }
    let xlabel = "EPOCH (STAGES IN SEQUENCE)".to_string();
    Ok(Some(line_charts(&[
        Chart {
            title: "SEGMENTATION LOSS".into(),
            xlabel: xlabel.clone(),
            series: loss,
            y_range: None,
        },
        Chart {
            title: "VALIDATION DICE".into(),
            xlabel,
            series: dice,
            y_range: Some((0.0, 1.0)),
        },
    ])))
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

fn upscale(w: usize, h: usize, rgb: &[u8], k: usize) -> (usize, usize, Vec<u8>) {
    let (ow, oh) = (w * k, h * k);
    let mut out = vec![0u8; ow * oh * 3];
    for y in 0..oh {
        for x in 0..ow {
            let s = ((y / k) * w + x / k) * 3;
            let d = (y * ow + x) * 3;
            out[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
        }
    }
    (ow, oh, out)
}

/// Overlays: per volume, the slice with most ground truth as image | truth | predictions.
fn overlay_figure(run: &Run, stages: &[ModelStage]) -> Result<Option<Canvas>> {
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
    let mut tiles: Vec<Vec<(usize, usize, Vec<u8>)>> = Vec::new();
    for (i, v) in vols.iter().enumerate() {
        let z = (0..v.labels.dim().0)
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
        let mut row = Vec::new();
        let (_, ww, rgb) = slice_with_mask_rgb(img, v.labels.index_axis(ndarray::Axis(0), z))?;
        let half = |rgb: &[u8], right: bool| -> Vec<u8> {
            let mut out = Vec::with_capacity(h * w * 3);
            for y in 0..h {
                let start = (y * ww + if right { w } else { 0 }) * 3;
                out.extend_from_slice(&rgb[start..start + w * 3]);
            }
            out
        };
        row.push(upscale(w, h, &half(&rgb, false), k));
        row.push(upscale(w, h, &half(&rgb, true), k));
        for p in &preds {
            let (_, _, rgb) = slice_with_mask_rgb(img, p[i].index_axis(ndarray::Axis(0), z))?;
            row.push(upscale(w, h, &half(&rgb, true), k));
        }
        tiles.push(row);
    }
    let cols = 2 + stages.len();
    let tw = tiles.iter().flatten().map(|t| t.0).max().unwrap_or(1);
    let th = tiles.iter().flatten().map(|t| t.1).max().unwrap_or(1);
    let gap = 8;
    let top = 24;
    let mut c = Canvas::new(
        cols * (tw + gap) + gap,
        top + tiles.len() * (th + gap) + gap,
        colors::WHITE,
    );
    let mut titles = vec!["IMAGE".to_string(), "GROUND TRUTH".to_string()];
    titles.extend(stages.iter().map(|s| s.dir().to_uppercase()));
    for (j, t) in titles.iter().enumerate() {
        c.text((gap + j * (tw + gap)) as i64, 8, t, 1, colors::BLACK);
    }
    for (i, row) in tiles.iter().enumerate() {
        for (j, (w, h, rgb)) in row.iter().enumerate() {
            c.blit(gap + j * (tw + gap), top + i * (th + gap), *w, *h, rgb);
        }
    }
    Ok(Some(c))
}

/// Writes the report of `run` into `RUN/report` and returns the path of `report.md`.
pub fn write_report(run: &Run) -> Result<PathBuf> {
    let out = run.stage("report");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let cfg = &run.cfg;
    let full = count(&cfg.model, None)?;
    let latency: Option<LatencyReport> = {
        let p = run.stage("compressed").join(LATENCY_FILE);
        if p.exists() {
            Some(read_json(&p)?)
        } else {
            None
        }
    };
    let lat_row = latency.as_ref().and_then(|l| l.rows.first());
    let mut rows = Vec::new();
    for stage in ModelStage::ALL {
        let rec_path = run.stage(stage.dir()).join(STAGE_RECORD);
        let record: Option<StageRecord> = if rec_path.exists() {
            Some(read_json(&rec_path)?)
        } else {
            None
        };
        let acc = read_eval(run, stage)?.as_ref().map(Accuracy::of);
        let info = match stage {
            ModelStage::Baseline | ModelStage::Search => Some(model_info(&cfg.model, stage, None)?),
            _ => match stage_arch(run, stage) {
                Ok(a) => Some(model_info(&cfg.model, stage, a.as_ref())?),
                Err(_) => None,
            },
        };
        let latency_ms = lat_row.map(|r| match stage {
            ModelStage::Baseline | ModelStage::Search => r.full.median_ms,
            _ => r.compressed.median_ms,
        });
        rows.push(Row {
            stage,
            acc,
            info,
            latency_ms,
            record,
        });
    }
    let spec_path = [
        run.stage("compressed").join(SUBNET_FILE),
        run.stage("search").join(SUBNET_FILE),
    ]
    .into_iter()
    .find(|p| p.exists());
    let spec = match &spec_path {
        Some(p) => Some(SubnetSpec::load_toml(p)?),
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
         pixel head `{:?}`; baseline initialised {}. Test volumes: {}. Device: `{:?}`.\n",
        cfg.model.img_size,
        cfg.model.img_size,
        cfg.model.hidden,
        cfg.model.layers,
        cfg.model.heads,
        cfg.model.mlp_dim,
        cfg.model.pixel_head,
        cfg.train.pretrained.as_ref().map_or_else(
            || "at random".to_string(),
            |p| format!("from `{}`", p.display())
        ),
        rows.iter()
            .find_map(|r| r.acc.as_ref().map(|a| a.volumes))
            .unwrap_or(0),
        cfg.train.device
    );
    if synthetic {
        let _ = writeln!(
            md,
            "The data is synthetic, so the published ACDC numbers are not shown; scores here \
             say nothing about real cardiac MRI.\n"
        );
    }

    let _ = writeln!(md, "## Accuracy on the test set\n");
    let _ = writeln!(
        md,
        "3D scores per volume (ED and ES), averaged over volumes; empty-mask convention `transunet`.\n"
    );
    for (title, pick, scale, digits) in [
        ("Dice (%)", 0usize, 100.0, 2usize),
        ("HD95 (mm)", 1, 1.0, 2),
        ("HD95 (voxels, medpy without spacing)", 2, 1.0, 2),
    ] {
        let _ = writeln!(md, "**{title}**\n");
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
                r.stage.label(),
                f(v[3], scale, digits),
                f(v[0], scale, digits),
                f(v[1], scale, digits),
                f(v[2], scale, digits)
            );
        }
        md.push('\n');
    }

    let _ = writeln!(md, "## Size and speed\n");
    let _ = writeln!(
        md,
        "Counting convention: one MAC is one multiply-accumulate of a convolution, linear layer \
         or matmul, attention matmuls (QK^T and PV) included; FLOPs = 2 x MACs; per image. \
         Parameters are the trainable tensors of the deployed model (gates excluded). The \
         searched model carries soft gates and runs at full width.\n"
    );
    if let Some(l) = &latency {
        let b = l.rows.first().map_or(0, |r| r.batch);
        let _ = writeln!(
            md,
            "Latency: median forward time at batch {b} on {}, eval mode, warm-up {}, {} runs.\n",
            l.device, l.options.warmup, l.options.repeats
        );
    }
    let (_, tr_full_macs) = full.sum_prefix("transformer.encoder.layer.");
    let _ = writeln!(
        md,
        "| model | params | MACs | FLOPs | transformer-block MACs | params vs baseline | MACs vs baseline | latency (ms) |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        match &r.info {
            Some(i) => {
                let (_, tm) = i.count.sum_prefix("transformer.encoder.layer.");
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {:+.1}% | {:+.1}% | {} |",
                    r.stage.label(),
                    millions(i.params),
                    giga(i.macs),
                    giga(i.flops),
                    giga(tm),
                    100.0 * (i.params as f64 / full.params() as f64 - 1.0),
                    100.0 * (i.macs as f64 / full.macs() as f64 - 1.0),
                    f(r.latency_ms, 1.0, 2)
                );
            }
            None => {
                let _ = writeln!(md, "| {} | – | – | – | – | – | – | – |", r.stage.label());
            }
        }
    }
    md.push('\n');
    let comp = rows
        .iter()
        .find(|r| r.stage == ModelStage::Compressed)
        .and_then(|r| r.info.as_ref());
    let base_dice = rows[0].acc.as_ref().and_then(|a| a.dice[3]);
    let ft_dice = rows[3].acc.as_ref().and_then(|a| a.dice[3]);
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
        let _ = writeln!(
            md,
            "Fine-tuned mean Dice {:.2} vs baseline {:.2}: {:+.2} points.",
            100.0 * t,
            100.0 * b,
            100.0 * (t - b)
        );
        summary["dice_change_points"] = json!(100.0 * (t - b));
    }
    md.push('\n');

    if let Some(spec) = &spec {
        let _ = writeln!(md, "## Kept widths per transformer block\n");
        let _ = writeln!(
            md,
            "Budget `{:?}`, floors `{:?}`; thresholds (smallest kept gate): attention {}, MLP {}, token {}.\n",
            spec.budget,
            spec.floors,
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
                "| {} | {:?} | {}/{} | {}/{} | {}/{} | {} | {} |",
                b.layer,
                b.head_widths,
                b.attn_dims,
                fb.attn_dims,
                b.mlp_units,
                fb.mlp_units,
                b.tokens,
                fb.tokens,
                b.params,
                b.macs
            );
        }
        md.push('\n');
    }

    let mut figures = Vec::new();
    let gates_path = run.stage("search").join("gates_end.json");
    if gates_path.exists() {
        let g = read_gate_values(&gates_path)?;
        gates_figure(&g, spec.as_ref()).save_png(&out.join("gates.png"))?;
        figures.push("gates.png");
        let _ = writeln!(
            md,
            "## Gate distributions\n\nMagnitudes of the soft gates at the end of the search, \
             with the selection's threshold (red).\n\n![gates](gates.png)\n"
        );
    }
    if let Some(c) = curves_figure(run)? {
        c.save_png(&out.join("curves.png"))?;
        figures.push("curves.png");
        let _ = writeln!(
            md,
            "## Training curves\n\nSegmentation loss (0.5 CE + 0.5 Dice) per epoch and \
             validation Dice, baseline, search and fine-tuning in sequence.\n\n![curves](curves.png)\n"
        );
    }
    let overlay_stages: Vec<ModelStage> = [ModelStage::Baseline, ModelStage::Finetuned]
        .into_iter()
        .filter(|s| run.stage(s.dir()).join(STAGE_RECORD).exists())
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

    let _ = writeln!(
        md,
        "## Stage times\n\n| stage | wall time (s) |\n|---|---:|"
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} |",
            r.stage.dir(),
            f(r.record.as_ref().map(|x| x.seconds), 1.0, 1)
        );
    }
    md.push('\n');

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
        for r in [&rows[0], &rows[3]] {
            if let Some(a) = &r.acc {
                let _ = writeln!(
                    md,
                    "| ours, {} | {} | {} | {} | {} |",
                    r.stage.label(),
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
            "stage": r.stage,
            "label": r.stage.label(),
            "accuracy": r.acc,
            "params": r.info.as_ref().map(|i| i.params),
            "macs": r.info.as_ref().map(|i| i.macs),
            "flops": r.info.as_ref().map(|i| i.flops),
            "latency_ms": r.latency_ms,
            "stage_seconds": r.record.as_ref().map(|x| x.seconds),
        })).collect::<Vec<_>>(),
        "summary": summary,
        "subnet": spec,
        "latency": latency,
        "published": if synthetic { json!(null) } else {
            json!(PUBLISHED.iter().map(|(n, v)| json!({"model": n, "dice": v})).collect::<Vec<_>>())
        },
        "figures": figures,
    });
    crate::run::write_json(&out.join("report.json"), &report_json)?;
    let md_path = out.join("report.md");
    slimseg_data::write_atomic(&md_path, md.as_bytes())
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    Ok(md_path)
}

/// `report RUN`.
pub fn report_cmd(args: ReportArgs) -> Result<()> {
    let run_args = RunArgs {
        run: Some(args.dir.clone()),
        config: None,
        data: None,
        set: Vec::new(),
        device: None,
        pretrained: None,
        synth: crate::run::SynthSize {
            synth_train: 0,
            synth_val: 0,
            synth_test: 0,
        },
    };
    let run = Run::open(&run_args, false)?;
    let path = write_report(&run)?;
    println!("report: {}", path.display());
    Ok(())
}
