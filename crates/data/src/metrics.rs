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

use ndarray::{Array3, ArrayView3, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::acdc::{CLASS_NAMES, NUM_CLASSES};
use crate::edt::squared_distances_into;
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

/// The border of a mask, row-major `[z][y][x]` like the mask: mask voxels with a face
/// neighbour that is background or outside the array.
#[derive(Debug, Clone, PartialEq)]
pub struct Border {
    /// `true` at border voxels.
    pub mask: Array3<bool>,
    /// Inclusive bounding box `[lo, hi]` of the border (that of the mask), `(z, y, x)`;
    /// `None` for an empty mask.
    pub bounds: Option<[[usize; 3]; 2]>,
}

/// The border of `mask` (see [`Border`]), a row at a time: interior voxels are those
/// whose six face neighbours are all in the mask, which is a few `&` of whole rows.
pub fn border(mask: ArrayView3<'_, bool>) -> Border {
    let (nz, ny, nx) = mask.dim();
    let owned;
    let m: &[bool] = match mask.as_slice() {
        Some(s) => s,
        None => {
            owned = mask.iter().copied().collect::<Vec<bool>>();
            &owned
        }
    };
    let mut out = vec![false; m.len()];
    let plane = ny * nx;
    let row_bounds: Vec<Option<[usize; 3]>> = out
        .par_chunks_mut(nx.max(1))
        .enumerate()
        .with_min_len(64)
        .map(|(r, o)| {
            let (z, y) = (r / ny, r % ny);
            let i = r * nx;
            let cur = &m[i..i + nx];
            if z == 0 || z + 1 == nz || y == 0 || y + 1 == ny || nx <= 2 {
                o.copy_from_slice(cur);
            } else {
                let n = nx - 2;
                let (left, mid, right) = (&cur[..n], &cur[1..n + 1], &cur[2..]);
                let (up, down) = (&m[i - nx + 1..][..n], &m[i + nx + 1..][..n]);
                let (prev, next) = (&m[i - plane + 1..][..n], &m[i + plane + 1..][..n]);
                let inner = &mut o[1..n + 1];
                for k in 0..n {
                    let interior = left[k] & right[k] & up[k] & down[k] & prev[k] & next[k];
                    inner[k] = mid[k] & !interior;
                }
                o[0] = cur[0];
                o[nx - 1] = cur[nx - 1];
            }
            let first = o.iter().position(|&b| b)?;
            let last = o.iter().rposition(|&b| b).expect("a first one exists");
            Some([r, first, last])
        })
        .collect();
    let mut bounds: Option<[[usize; 3]; 2]> = None;
    for [r, first, last] in row_bounds.into_iter().flatten() {
        let (z, y) = (r / ny, r % ny);
        let [lo, hi] = bounds.get_or_insert([[z, y, first], [z, y, last]]);
        *lo = [lo[0].min(z), lo[1].min(y), lo[2].min(first)];
        *hi = [hi[0].max(z), hi[1].max(y), hi[2].max(last)];
    }
    Border {
        mask: Array3::from_shape_vec((nz, ny, nx), out).expect("the mask's shape"),
        bounds,
    }
}

/// Linear-interpolated percentile (numpy's default method) of `values`, `q` in [0, 100].
/// Reorders `values`. NaN for an empty slice.
pub fn percentile_linear(values: &mut [f64], q: f64) -> f64 {
    percentile_linear_of(values, q, |v| v)
}

/// [`percentile_linear`] of `f(values)` for a non-decreasing `f`, applying `f` only to the
/// two order statistics it interpolates between (`f` preserves their ranks).
fn percentile_linear_of(values: &mut [f64], q: f64, f: impl Fn(f64) -> f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = (q / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let (_, &mut a, rest) = values.select_nth_unstable_by(lo, |x, y| x.total_cmp(y));
    let a = f(a);
    if frac == 0.0 || rest.is_empty() {
        return a;
    }
    let b = f(rest.iter().copied().fold(f64::INFINITY, f64::min));
    // numpy's `_lerp`: from the nearer end, so the rounding is numpy's too.
    if frac >= 0.5 {
        b - (b - a) * (1.0 - frac)
    } else {
        a + (b - a) * frac
    }
}

/// HD95 between two masks (medpy semantics, see the module docs) with `spacing` in
/// `[z, y, x]` order; `None` when either mask is empty. Shapes must match.
pub fn hd95(
    pred: ArrayView3<'_, bool>,
    gt: ArrayView3<'_, bool>,
    spacing: [f64; 3],
) -> Option<f64> {
    assert_eq!(pred.dim(), gt.dim(), "hd95: masks must have the same shape");
    let (bp, bg) = rayon::join(|| border(pred), || border(gt));
    let ([plo, phi], [glo, ghi]) = (bp.bounds?, bg.bounds?);
    // The nearest border voxel of a query inside the union box is inside the box (all
    // of them are), and the distances are exact on any box, so cropping is exact.
    let lo = [0, 1, 2].map(|a| plo[a].min(glo[a]));
    let hi = [0, 1, 2].map(|a| phi[a].max(ghi[a]));
    let dims = [0, 1, 2].map(|a| hi[a] - lo[a] + 1);
    let crop = |m: Array3<bool>| -> Vec<bool> {
        if dims == [m.dim().0, m.dim().1, m.dim().2] {
            return m.into_raw_vec_and_offset().0;
        }
        let mut out = Vec::with_capacity(dims.iter().product());
        for plane in m
            .slice(s![lo[0]..=hi[0], lo[1]..=hi[1], lo[2]..=hi[2]])
            .outer_iter()
        {
            for row in plane.outer_iter() {
                out.extend_from_slice(row.as_slice().expect("rows of a standard layout"));
            }
        }
        out
    };
    let (cp, cg) = (crop(bp.mask), crop(bg.mask));
    // Both directions write into one buffer, pred's border voxels first.
    let n_pred = cp.iter().filter(|&&b| b).count();
    let mut d = vec![0.0; n_pred + cg.iter().filter(|&&b| b).count()];
    let (to_gt, to_pred) = d.split_at_mut(n_pred);
    rayon::join(
        || squared_distances_into(&cg, &cp, dims, spacing, to_gt),
        || squared_distances_into(&cp, &cg, dims, spacing, to_pred),
    );
    Some(percentile_linear_of(&mut d, 95.0, f64::sqrt))
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
