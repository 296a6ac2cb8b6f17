//! Segmentation metrics per 3D volume and class: Dice and HD95, as medpy computes them.
//!
//! HD95 (medpy `hd95`): the border of a mask is the mask minus its erosion with face
//! connectivity (6-neighbourhood in 3D; voxels outside the array count as background);
//! for each border voxel of one mask, the distance to the nearest border voxel of the
//! other mask; distances of both directions pooled; 95th percentile with linear
//! interpolation (numpy's default). Distances are exact (see [`crate::edt`]), in mm with
//! the voxel spacing or in voxels without it (what TransUNet/Swin-Unet report).
//!
//! Empty masks follow a named [`Convention`].

use ndarray::{Array3, ArrayView3};
use serde::{Deserialize, Serialize};

use crate::acdc::{CLASS_NAMES, NUM_CLASSES};
use crate::edt::squared_distances_at;
use crate::error::{DataError, Result};

/// How to score a class when the prediction or the ground truth is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    /// TransUNet's `calculate_metric_percase`: pred>0 & gt>0: computed; pred>0 & gt=0:
    /// dice 1, hd 0; pred=0: dice 0, hd 0.
    TransUnet,
    /// Undefined cases are missing (`None`): Dice needs a non-empty union (so one empty
    /// mask scores 0); HD95 needs both masks non-empty.
    Strict,
}

impl Convention {
    /// Parses `transunet` or `strict`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "transunet" => Some(Convention::TransUnet),
            "strict" => Some(Convention::Strict),
            _ => None,
        }
    }
}

/// Scores of one class in one volume; `None` = undefined under the convention.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Dice coefficient in [0, 1].
    pub dice: Option<f64>,
    /// HD95 in millimetres (with voxel spacing).
    pub hd95_mm: Option<f64>,
    /// HD95 in voxels (spacing 1).
    pub hd95_vox: Option<f64>,
}

/// Scores of the three foreground classes of one volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeMetrics {
    /// Convention used.
    pub convention: Convention,
    /// RV, MYO, LV (labels 1, 2, 3).
    pub classes: [ClassMetrics; NUM_CLASSES - 1],
}

impl VolumeMetrics {
    /// Class name and scores, RV first.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, &ClassMetrics)> {
        CLASS_NAMES[1..].iter().copied().zip(self.classes.iter())
    }
}

/// Dice `2|A∩B| / (|A| + |B|)`; `None` when both masks are empty.
pub fn dice(pred: ArrayView3<'_, bool>, gt: ArrayView3<'_, bool>) -> Option<f64> {
    let (mut a, mut b, mut ab) = (0u64, 0u64, 0u64);
    for (&p, &g) in pred.iter().zip(gt.iter()) {
        a += p as u64;
        b += g as u64;
        ab += (p && g) as u64;
    }
    (a + b > 0).then(|| 2.0 * ab as f64 / (a + b) as f64)
}

/// Border voxels `(z, y, x)` of a mask: mask voxels with a face neighbour that is
/// background or outside the array.
pub fn border_voxels(mask: ArrayView3<'_, bool>) -> Vec<[usize; 3]> {
    let (nz, ny, nx) = mask.dim();
    let owned;
    let m: &[bool] = match mask.as_slice() {
        Some(s) => s,
        None => {
            owned = mask.iter().copied().collect::<Vec<bool>>();
            &owned
        }
    };
    let (sz, sy) = (ny * nx, nx);
    let mut out = Vec::new();
    for z in 0..nz {
        for y in 0..ny {
            let row = z * sz + y * sy;
            for x in 0..nx {
                let i = row + x;
                if !m[i] {
                    continue;
                }
                let interior = z > 0
                    && z + 1 < nz
                    && y > 0
                    && y + 1 < ny
                    && x > 0
                    && x + 1 < nx
                    && m[i - sz]
                    && m[i + sz]
                    && m[i - sy]
                    && m[i + sy]
                    && m[i - 1]
                    && m[i + 1];
                if !interior {
                    out.push([z, y, x]);
                }
            }
        }
    }
    out
}

/// Linear-interpolated percentile (numpy's default method) of `values`, `q` in [0, 100].
/// Reorders `values`. NaN for an empty slice.
pub fn percentile_linear(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = (q / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let (_, &mut a, rest) = values.select_nth_unstable_by(lo, |x, y| x.total_cmp(y));
    if frac == 0.0 || rest.is_empty() {
        return a;
    }
    let b = rest.iter().copied().fold(f64::INFINITY, f64::min);
    // numpy's `_lerp`: from the nearer end, so the rounding is numpy's too.
    if frac >= 0.5 {
        b - (b - a) * (1.0 - frac)
    } else {
        a + (b - a) * frac
    }
}

/// Distances from each of `queries` to the nearest of `features` (both `(z, y, x)` in a
/// grid of `dims`), computed exactly on the bounding box of both sets.
fn distances_to(features: &[[usize; 3]], queries: &[[usize; 3]], spacing: [f64; 3]) -> Vec<f64> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for p in features.iter().chain(queries) {
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    // The nearest feature of a query inside the box is inside the box (all features
    // are), and the separable transform is exact on any box, so cropping is exact.
    let dims = [0, 1, 2].map(|a| hi[a] - lo[a] + 1);
    let [nz, ny, nx] = dims;
    let mut is_feat = vec![false; nz * ny * nx];
    for p in features {
        is_feat[((p[0] - lo[0]) * ny + (p[1] - lo[1])) * nx + (p[2] - lo[2])] = true;
    }
    let local: Vec<[usize; 3]> = queries
        .iter()
        .map(|p| [p[0] - lo[0], p[1] - lo[1], p[2] - lo[2]])
        .collect();
    squared_distances_at(&is_feat, dims, spacing, &local)
        .into_iter()
        .map(f64::sqrt)
        .collect()
}

/// HD95 between two masks (medpy semantics, see the module docs) with `spacing` in
/// `[z, y, x]` order; `None` when either mask is empty. Shapes must match.
pub fn hd95(
    pred: ArrayView3<'_, bool>,
    gt: ArrayView3<'_, bool>,
    spacing: [f64; 3],
) -> Option<f64> {
    assert_eq!(pred.dim(), gt.dim(), "hd95: masks must have the same shape");
    let (bp, bg) = rayon::join(|| border_voxels(pred), || border_voxels(gt));
    if bp.is_empty() || bg.is_empty() {
        return None;
    }
    let (mut d1, d2) = rayon::join(
        || distances_to(&bg, &bp, spacing),
        || distances_to(&bp, &bg, spacing),
    );
    d1.extend(d2);
    Some(percentile_linear(&mut d1, 95.0))
}

fn class_mask(labels: ArrayView3<'_, u8>, class: u8) -> Array3<bool> {
    labels.mapv(|v| v == class)
}

/// Dice and HD95 (mm and voxels) of one class between label volumes.
pub fn evaluate_class(
    pred: ArrayView3<'_, bool>,
    gt: ArrayView3<'_, bool>,
    spacing: [f64; 3],
    convention: Convention,
) -> ClassMetrics {
    let p_any = pred.iter().any(|&v| v);
    let g_any = gt.iter().any(|&v| v);
    match convention {
        Convention::TransUnet => match (p_any, g_any) {
            (true, true) => ClassMetrics {
                dice: dice(pred, gt),
                hd95_mm: hd95(pred, gt, spacing),
                hd95_vox: hd95(pred, gt, [1.0; 3]),
            },
            (true, false) => ClassMetrics {
                dice: Some(1.0),
                hd95_mm: Some(0.0),
                hd95_vox: Some(0.0),
            },
            (false, _) => ClassMetrics {
                dice: Some(0.0),
                hd95_mm: Some(0.0),
                hd95_vox: Some(0.0),
            },
        },
        Convention::Strict => {
            let both = p_any && g_any;
            ClassMetrics {
                dice: dice(pred, gt),
                hd95_mm: if both { hd95(pred, gt, spacing) } else { None },
                hd95_vox: if both { hd95(pred, gt, [1.0; 3]) } else { None },
            }
        }
    }
}

/// Scores RV, MYO and LV of a predicted label volume against the ground truth (`[z, y, x]`,
/// `spacing` in the same order, mm). Fails when the shapes differ.
pub fn evaluate_volume(
    pred: ArrayView3<'_, u8>,
    gt: ArrayView3<'_, u8>,
    spacing: [f64; 3],
    convention: Convention,
) -> Result<VolumeMetrics> {
    if pred.dim() != gt.dim() {
        return Err(DataError::InvalidArgument(format!(
            "prediction shape {:?} differs from ground-truth shape {:?}",
            pred.dim(),
            gt.dim()
        )));
    }
    let classes = [1u8, 2, 3].map(|c| {
        let p = class_mask(pred, c);
        let g = class_mask(gt, c);
        evaluate_class(p.view(), g.view(), spacing, convention)
    });
    Ok(VolumeMetrics {
        convention,
        classes,
    })
}

/// Mean of the defined values (`None` when none is defined).
pub fn mean_defined(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for v in values.into_iter().flatten() {
        s += v;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}
