//! Evaluation: 3D Dice (and optionally HD95) per volume and class, with slimseg-model's
//! slice-wise volume inference and slimseg-data's metrics.

use serde::{Deserialize, Serialize};
use slimseg_data::Phase;
use slimseg_data::acdc::CLASS_NAMES;
use slimseg_data::metrics::{Convention, dice, evaluate_volume, mean_defined};
use slimseg_data::pipeline::resize_cubic;
use slimseg_model::TransUnet;
use slimseg_model::infer::predict_volume_with;

use crate::data::EvalVolume;
use crate::error::Result;

/// How to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Slices per forward pass.
    pub batch: usize,
    /// Also compute HD95 (mm and voxels); slower.
    pub hd95: bool,
    /// Empty-mask convention.
    pub convention: Convention,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            batch: 16,
            hd95: false,
            convention: Convention::TransUnet,
        }
    }
}

/// Scores of one volume for RV, MYO and LV (in that order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeScore {
    /// Patient number.
    pub patient: u32,
    /// ED or ES.
    pub phase: Phase,
    /// Dice per class (`None` where the convention leaves it undefined).
    pub dice: [Option<f64>; 3],
    /// HD95 in mm per class, when computed.
    pub hd95_mm: Option<[Option<f64>; 3]>,
    /// HD95 in voxels per class, when computed.
    pub hd95_vox: Option<[Option<f64>; 3]>,
}

/// Scores of a set of volumes and their means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Class names of the three columns.
    pub classes: [String; 3],
    /// Per-volume scores.
    pub volumes: Vec<VolumeScore>,
    /// Mean Dice per class over volumes (defined values only).
    pub mean_dice_per_class: [Option<f64>; 3],
    /// Mean of the per-class means.
    pub mean_dice: Option<f64>,
    /// Mean HD95 (mm) per class, when computed.
    pub mean_hd95_mm_per_class: Option<[Option<f64>; 3]>,
}

fn dice_by_convention(
    pred: &ndarray::Array3<bool>,
    gt: &ndarray::Array3<bool>,
    c: Convention,
) -> Option<f64> {
    let p_any = pred.iter().any(|&v| v);
    let g_any = gt.iter().any(|&v| v);
    match (c, p_any, g_any) {
        (Convention::TransUnet, true, false) => Some(1.0),
        (Convention::TransUnet, false, _) => Some(0.0),
        _ => dice(pred.view(), gt.view()),
    }
}

/// Predicts every volume with `model` (eval mode, no gradients) and scores it. Slices are
/// resized with the data pipeline's cubic resize, as the training slices were (and as
/// `slimseg predict` does), so reported scores are those of the written predictions.
pub fn evaluate(
    model: &TransUnet,
    volumes: &[EvalVolume],
    opts: &EvalOptions,
) -> Result<EvalReport> {
    let mut scores = Vec::with_capacity(volumes.len());
    for v in volumes {
        let pred = predict_volume_with(model, v.image.view(), opts.batch, |s, size| {
            resize_cubic(s, size, size)
        })?;
        let score = if opts.hd95 {
            let m = evaluate_volume(pred.view(), v.labels.view(), v.spacing, opts.convention)?;
            VolumeScore {
                patient: v.patient,
                phase: v.phase,
                dice: m.classes.map(|c| c.dice),
                hd95_mm: Some(m.classes.map(|c| c.hd95_mm)),
                hd95_vox: Some(m.classes.map(|c| c.hd95_vox)),
            }
        } else {
            let dice = [1u8, 2, 3].map(|k| {
                let p = pred.mapv(|x| x == k);
                let g = v.labels.mapv(|x| x == k);
                dice_by_convention(&p, &g, opts.convention)
            });
            VolumeScore {
                patient: v.patient,
                phase: v.phase,
                dice,
                hd95_mm: None,
                hd95_vox: None,
            }
        };
        scores.push(score);
    }
    let per_class = [0, 1, 2].map(|k| mean_defined(scores.iter().map(|s| s.dice[k])));
    let hd = opts.hd95.then(|| {
        [0, 1, 2].map(|k| mean_defined(scores.iter().map(|s| s.hd95_mm.and_then(|h| h[k]))))
    });
    Ok(EvalReport {
        classes: [1, 2, 3].map(|k| CLASS_NAMES[k].to_string()),
        mean_dice: mean_defined(per_class),
        mean_dice_per_class: per_class,
        volumes: scores,
        mean_hd95_mm_per_class: hd,
    })
}
