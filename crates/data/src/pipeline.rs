//! The 2D protocol of TransUNet/Swin-Unet on ACDC: ED and ES volumes with ground truth,
//! per-volume intensity normalisation, every short-axis slice, TransUNet augmentation,
//! resize to the model size (cubic for images, nearest for labels) and back, and
//! deterministic parallel batches as contiguous buffers ready to become tensors.
//!
//! Resampling follows `scipy.ndimage.zoom` (`grid_mode=False`): output index `o` samples
//! input coordinate `o (n_in - 1) / (n_out - 1)`. Order 3 is the cubic B-spline with its
//! exact prefilter and mirror boundary; order 0 rounds to the nearest input pixel.
//!
//! Augmentation (TransUNet `RandomGenerator`): with p = 0.5, `rot90(k)` with k in 0..4 and
//! a flip along a random axis; else with p = 0.5 a rotation by an angle uniform in
//! [-20, 20] degrees about the slice centre (nearest neighbour for image and labels,
//! zero outside, as `ndimage.rotate(order=0, reshape=False)`); else nothing. TransUNet
//! augments at native size and then resizes; so does this pipeline.
//!
//! Determinism: each sample draws its augmentation from its own ChaCha8 stream seeded by
//! (seed, epoch, slice index), so the batches do not depend on thread scheduling.

use ndarray::{Array2, Array3, ArrayView2, ArrayViewMut2, Axis, s};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::acdc::{AcdcFrame, Phase};
use crate::direction::direction_field_into;
use crate::error::{DataError, Result};

/// Model input size of the paper (224 x 224).
pub const MODEL_SIZE: usize = 224;

/// Per-volume intensity normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// `(v - min) / (max - min)` over the volume (the preprocessed ACDC of TransUNet).
    #[default]
    MinMax,
    /// `(v - mean) / std` over the volume.
    ZScore,
    /// Leave intensities as read.
    None,
}

/// Normalises a whole volume in place. Constant volumes become all zeros.
pub fn normalize_volume(data: &mut Array3<f32>, norm: Normalization) {
    match norm {
        Normalization::None => {}
        Normalization::MinMax => {
            let (lo, hi) = data
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let range = hi - lo;
            if range > 0.0 && range.is_finite() {
                data.mapv_inplace(|v| (v - lo) / range);
            } else {
                data.fill(0.0);
            }
        }
        Normalization::ZScore => {
            let n = data.len().max(1) as f64;
            let mean = data.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let sd = var.sqrt();
            if sd > 0.0 {
                data.mapv_inplace(|v| ((v as f64 - mean) / sd) as f32);
            } else {
                data.fill(0.0);
            }
        }
    }
}

/// Pole of the cubic B-spline prefilter, `sqrt(3) - 2`.
const POLE: f32 = -0.267_949_2;

/// Mirror-reflects index `i` into `0..n` (`d c b | a b c d | c b a`).
fn mirror(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut i = i.rem_euclid(period);
    if i >= n as isize {
        i = period - i;
    }
    i as usize
}

/// Cubic B-spline weights at fractional offset `t` for taps -1, 0, 1, 2.
fn bspline_weights(t: f32) -> [f32; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    let u = 1.0 - t;
    [
        u * u * u / 6.0,
        (4.0 - 6.0 * t2 + 3.0 * t3) / 6.0,
        (1.0 + 3.0 * t + 3.0 * t2 - 3.0 * t3) / 6.0,
        t3 / 6.0,
    ]
}

/// Source coordinate of output index `o` (scipy zoom, `grid_mode=False`).
fn source_coord(o: usize, n_in: usize, n_out: usize) -> f64 {
    if n_out <= 1 {
        0.0
    } else {
        o as f64 * (n_in as f64 - 1.0) / (n_out as f64 - 1.0)
    }
}

/// Taps (mirrored indices) and weights of every output index along one axis.
fn cubic_taps(n_in: usize, n_out: usize) -> Vec<([usize; 4], [f32; 4])> {
    (0..n_out)
        .map(|o| {
            let x = source_coord(o, n_in, n_out);
            let i = x.floor();
            let w = bspline_weights((x - i) as f32);
            let i = i as isize;
            ([-1, 0, 1, 2].map(|d| mirror(i + d, n_in)), w)
        })
        .collect()
}

/// [`prefilter_line`] applied to every column of a row-major `[h, w]` buffer, as
/// row-wise vector updates (cache friendly).
fn prefilter_columns(c: &mut [f32], h: usize, w: usize) {
    let z = POLE;
    for v in c.iter_mut() {
        *v *= 6.0;
    }
    let horizon = 24usize;
    let mut init = c[..w].to_vec();
    let mut zk = z;
    if h > horizon {
        for k in 1..horizon {
            for (i, v) in init.iter_mut().zip(&c[k * w..(k + 1) * w]) {
                *i += zk * v;
            }
            zk *= z;
        }
    } else {
        let z2n = z.powi(2 * (h as i32 - 1));
        let mut zk2 = z2n / z;
        for k in 1..h - 1 {
            for (i, v) in init.iter_mut().zip(&c[k * w..(k + 1) * w]) {
                *i += (zk + zk2) * v;
            }
            zk *= z;
            zk2 /= z;
        }
        for (i, v) in init.iter_mut().zip(&c[(h - 1) * w..]) {
            *i = (*i + zk * v) / (1.0 - z2n);
        }
    }
    c[..w].copy_from_slice(&init);
    for k in 1..h {
        let (prev, cur) = c.split_at_mut(k * w);
        for (o, p) in cur[..w].iter_mut().zip(&prev[(k - 1) * w..]) {
            *o += z * p;
        }
    }
    let (head, last) = c.split_at_mut((h - 1) * w);
    for (o, p) in last.iter_mut().zip(&head[(h - 2) * w..]) {
        *o = (z / (z * z - 1.0)) * (*o + z * p);
    }
    for k in (0..h - 1).rev() {
        let (cur, next) = c.split_at_mut((k + 1) * w);
        for (o, n) in cur[k * w..].iter_mut().zip(&next[..w]) {
            *o = z * (n - *o);
        }
    }
}

/// [`prefilter_columns`]' counterpart along rows: the recursive filter of 8 rows runs in
/// lockstep, so 8 independent dependency chains keep the CPU busy.
fn prefilter_rows(c: &mut [f32], w: usize) {
    const L: usize = 8;
    let z = POLE;
    let horizon = 24usize;
    for block in c.chunks_mut(L * w) {
        let rows = block.len() / w;
        for v in block.iter_mut() {
            *v *= 6.0;
        }
        let mut prev = [0.0f32; L];
        for (j, p) in prev.iter_mut().enumerate().take(rows) {
            let r = &block[j * w..(j + 1) * w];
            // Causal initialisation over the mirrored signal.
            let mut sum = r[0];
            let mut zk = z;
            if w > horizon {
                for v in &r[1..horizon] {
                    sum += zk * v;
                    zk *= z;
                }
            } else {
                let z2n = z.powi(2 * (w as i32 - 1));
                let mut zk2 = z2n / z;
                for v in &r[1..w - 1] {
                    sum += (zk + zk2) * v;
                    zk *= z;
                    zk2 /= z;
                }
                sum = (sum + zk * r[w - 1]) / (1.0 - z2n);
            }
            *p = sum;
            block[j * w] = sum;
        }
        for k in 1..w {
            for j in 0..rows {
                let v = block[j * w + k] + z * prev[j];
                block[j * w + k] = v;
                prev[j] = v;
            }
        }
        for j in 0..rows {
            let last = j * w + w - 1;
            let v = (z / (z * z - 1.0)) * (block[last] + z * block[last - 1]);
            block[last] = v;
            prev[j] = v;
        }
        for k in (0..w - 1).rev() {
            for j in 0..rows {
                let v = z * (prev[j] - block[j * w + k]);
                block[j * w + k] = v;
                prev[j] = v;
            }
        }
    }
}

/// Resizes an image with cubic B-spline interpolation (`scipy.ndimage.zoom(order=3)`).
pub fn resize_cubic(img: ArrayView2<'_, f32>, out_h: usize, out_w: usize) -> Array2<f32> {
    let mut out = vec![0.0f32; out_h * out_w];
    resize_cubic_into(img, out_h, out_w, &mut out);
    Array2::from_shape_vec((out_h, out_w), out).expect("out_h * out_w values")
}

/// [`resize_cubic`] into a caller's row-major `[out_h, out_w]` buffer (e.g. a slot of a
/// batch). Panics if `out` has another length.
pub fn resize_cubic_into(img: ArrayView2<'_, f32>, out_h: usize, out_w: usize, out: &mut [f32]) {
    let (h, w) = img.dim();
    with_coefficients(h, w, out_h, out_w, out, |c| match img.as_slice() {
        Some(sl) => c.copy_from_slice(sl),
        None => ArrayViewMut2::from_shape((h, w), c)
            .expect("h * w values")
            .assign(&img),
    });
}

/// Runs the cubic resize of an `[h, w]` image that `fill` writes into the (length
/// `h * w`) coefficient buffer.
fn with_coefficients(
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    out: &mut [f32],
    fill: impl FnOnce(&mut [f32]),
) {
    assert_eq!(
        out.len(),
        out_h * out_w,
        "output buffer must hold out_h * out_w values"
    );
    if h == 0 || w == 0 {
        out.fill(0.0);
        return;
    }
    SCRATCH.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (c, mid) = &mut *guard;
        // Sized without clearing: every value is overwritten below.
        c.resize(h * w, 0.0);
        fill(&mut c[..h * w]);
        resize_core(&mut c[..h * w], mid, h, w, out_h, out_w, out);
    })
}

fn resize_core(
    c: &mut [f32],
    mid: &mut Vec<f32>,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    out: &mut [f32],
) {
    if h >= 2 {
        prefilter_columns(c, h, w);
    }
    if w >= 2 {
        prefilter_rows(c, w);
    }
    // Interpolate along x within each coefficient row. Rows are padded with their
    // mirror images (1 value left, 2 right) so every output reads 4 consecutive taps.
    let tx: Vec<(usize, [f32; 4])> = (0..out_w)
        .map(|o| {
            let x = source_coord(o, w, out_w);
            let i = x.floor();
            (i as usize, bspline_weights((x - i) as f32))
        })
        .collect();
    mid.resize(h * out_w, 0.0);
    let mut padded = vec![0.0f32; w + 3];
    for (mrow, crow) in mid.chunks_exact_mut(out_w).zip(c.chunks_exact(w)) {
        padded[1..w + 1].copy_from_slice(crow);
        padded[0] = crow[mirror(-1, w)];
        padded[w + 1] = crow[mirror(w as isize, w)];
        padded[w + 2] = crow[mirror(w as isize + 1, w)];
        for (o, &(i, wt)) in mrow.iter_mut().zip(&tx) {
            let t: &[f32; 4] = padded[i..i + 4].try_into().expect("4 taps");
            *o = wt[0] * t[0] + wt[1] * t[1] + wt[2] * t[2] + wt[3] * t[3];
        }
    }
    // Interpolate along y: each output row combines four rows (vectorised).
    let ty = cubic_taps(h, out_h);
    for (orow, (idx, wt)) in out.chunks_exact_mut(out_w).zip(&ty) {
        let r = idx.map(|i| &mid[i * out_w..(i + 1) * out_w]);
        for (x, o) in orow.iter_mut().enumerate() {
            *o = wt[0] * r[0][x] + wt[1] * r[1][x] + wt[2] * r[2][x] + wt[3] * r[3][x];
        }
    }
}

thread_local! {
    /// Per-thread work buffers of [`resize_cubic_into`] (avoids page-faulting fresh
    /// allocations for every slice).
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Nearest-neighbour resize (`scipy.ndimage.zoom(order=0)`), for labels.
pub fn resize_nearest<T: Copy + Default>(
    img: ArrayView2<'_, T>,
    out_h: usize,
    out_w: usize,
) -> Array2<T> {
    let (h, w) = img.dim();
    if h == 0 || w == 0 {
        return Array2::default((out_h, out_w));
    }
    let near = |o: usize, n_in: usize, n_out: usize| {
        (source_coord(o, n_in, n_out) + 0.5)
            .floor()
            .min((n_in - 1) as f64) as usize
    };
    let xs: Vec<usize> = (0..out_w).map(|o| near(o, w, out_w)).collect();
    let mut out = Vec::with_capacity(out_h * out_w);
    match img.as_slice() {
        Some(src) => {
            for oy in 0..out_h {
                let row = &src[near(oy, h, out_h) * w..][..w];
                out.extend(xs.iter().map(|&x| row[x]));
            }
        }
        None => {
            for oy in 0..out_h {
                let row = img.row(near(oy, h, out_h));
                out.extend(xs.iter().map(|&x| row[x]));
            }
        }
    }
    Array2::from_shape_vec((out_h, out_w), out).expect("out_h * out_w values")
}

/// How an augmented `[h, w]` grid reads a native row-major slice, so that augmentation
/// and resize run as one gather (no intermediate augmented image).
#[derive(Debug, Clone, Copy)]
enum SourceGrid<'a> {
    /// Flat index `base + i * di + j * dj`: identity and the eight rot90/flip maps.
    Affine {
        h: usize,
        w: usize,
        base: isize,
        di: isize,
        dj: isize,
    },
    /// Flat index `map[i * w + j]` (`u32::MAX` outside): rotations.
    Map { h: usize, w: usize, map: &'a [u32] },
}

impl<'a> SourceGrid<'a> {
    /// The grid of `aug` applied to a native `[h, w]` slice (`map` must be the rotation
    /// map for rotations).
    fn new(aug: Augmentation, h: usize, w: usize, map: Option<&'a [u32]>) -> Self {
        let (hi, wi) = (h as isize, w as isize);
        match (aug, map) {
            (Augmentation::Rotate { .. }, Some(map)) => SourceGrid::Map { h, w, map },
            (Augmentation::Rot90Flip { k, axis }, _) => {
                let k = k % 4;
                let (oh, ow) = if k % 2 == 1 { (w, h) } else { (h, w) };
                let (ohi, owi) = (oh as isize, ow as isize);
                let rot = |i: isize, j: isize| match k {
                    0 => (i, j),
                    1 => (j, wi - 1 - i),
                    2 => (hi - 1 - i, wi - 1 - j),
                    _ => (hi - 1 - j, i),
                };
                let src = |i: isize, j: isize| {
                    let (y, x) = if axis % 2 == 0 {
                        rot(ohi - 1 - i, j)
                    } else {
                        rot(i, owi - 1 - j)
                    };
                    y * wi + x
                };
                let base = src(0, 0);
                SourceGrid::Affine {
                    h: oh,
                    w: ow,
                    base,
                    di: src(1, 0) - base,
                    dj: src(0, 1) - base,
                }
            }
            _ => SourceGrid::Affine {
                h,
                w,
                base: 0,
                di: wi,
                dj: 1,
            },
        }
    }

    fn dims(&self) -> (usize, usize) {
        match *self {
            SourceGrid::Affine { h, w, .. } | SourceGrid::Map { h, w, .. } => (h, w),
        }
    }

    /// Copies the augmented grid of `src` into `out` (length h * w), zero outside.
    fn fill<T: Copy + Default>(&self, src: &[T], out: &mut [T]) {
        match *self {
            SourceGrid::Affine {
                w, base, di, dj, ..
            } => {
                for (i, row) in out.chunks_exact_mut(w).enumerate() {
                    let r = base + i as isize * di;
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = src[(r + j as isize * dj) as usize];
                    }
                }
            }
            SourceGrid::Map { map, .. } => {
                for (o, &m) in out.iter_mut().zip(map) {
                    *o = src.get(m as usize).copied().unwrap_or_default();
                }
            }
        }
    }
}

/// Nearest resize of the augmented label grid to `[s, s]`, written as i64 into a batch
/// slot: equal to `resize_nearest(aug.apply(labels), s, s)`.
fn nearest_labels_into(src: &[u8], grid: SourceGrid<'_>, s: usize, out: &mut [i64]) {
    let (h, w) = grid.dims();
    let near = |o: usize, n_in: usize| {
        (source_coord(o, n_in, s) + 0.5)
            .floor()
            .min((n_in.max(1) - 1) as f64) as usize
    };
    let xs: Vec<usize> = (0..s).map(|o| near(o, w)).collect();
    for (oy, row) in out.chunks_exact_mut(s).enumerate() {
        let y = near(oy, h);
        match grid {
            SourceGrid::Affine { base, di, dj, .. } => {
                let r = base + y as isize * di;
                for (o, &x) in row.iter_mut().zip(&xs) {
                    *o = src[(r + x as isize * dj) as usize] as i64;
                }
            }
            SourceGrid::Map { map, .. } => {
                for (o, &x) in row.iter_mut().zip(&xs) {
                    *o = src.get(map[y * w + x] as usize).map_or(0, |&v| v as i64);
                }
            }
        }
    }
}

/// Applies `aug` to an image and its labels and resizes both to `[size, size]` (cubic
/// image, nearest labels) in one gather per pixel, writing a batch slot: the same values
/// as `resize_cubic(aug.apply(image))` and `resize_nearest(aug.apply(labels))`.
pub fn augment_resize_into(
    image: ArrayView2<'_, f32>,
    labels: ArrayView2<'_, u8>,
    aug: Augmentation,
    size: usize,
    img_out: &mut [f32],
    lab_out: &mut [i64],
) {
    assert_eq!(
        image.dim(),
        labels.dim(),
        "image and labels must share a grid"
    );
    assert_eq!(
        lab_out.len(),
        size * size,
        "label buffer must hold size^2 values"
    );
    let (h, w) = image.dim();
    let map = match aug {
        Augmentation::Rotate { degrees } => Some(rotation_source_map(h, w, degrees)),
        _ => None,
    };
    let grid = SourceGrid::new(aug, h, w, map.as_deref());
    let (img, lab) = (image.as_standard_layout(), labels.as_standard_layout());
    let (img, lab) = (
        img.as_slice().expect("standard layout"),
        lab.as_slice().expect("standard layout"),
    );
    let (gh, gw) = grid.dims();
    with_coefficients(gh, gw, size, size, img_out, |c| grid.fill(img, c));
    nearest_labels_into(lab, grid, size, lab_out);
}

/// One geometric augmentation of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Augmentation {
    /// Unchanged.
    Identity,
    /// `np.rot90(k)` (counter-clockwise in (row, col)) then `np.flip(axis)`.
    Rot90Flip {
        /// Quarter turns, 0..4.
        k: u8,
        /// Flip axis: 0 = rows (upside down), 1 = columns (mirror).
        axis: u8,
    },
    /// Rotation about the slice centre by `degrees` (nearest neighbour, zero outside).
    Rotate {
        /// Angle in degrees.
        degrees: f32,
    },
}

impl Augmentation {
    /// Draws TransUNet's augmentation (see the module docs).
    pub fn sample(rng: &mut impl Rng) -> Self {
        if rng.gen_bool(0.5) {
            Augmentation::Rot90Flip {
                k: rng.gen_range(0..4),
                axis: rng.gen_range(0..2),
            }
        } else if rng.gen_bool(0.5) {
            Augmentation::Rotate {
                degrees: rng.gen_range(-20.0f32..=20.0),
            }
        } else {
            Augmentation::Identity
        }
    }

    /// The inverse of an exact (rot90/flip/identity) augmentation; `None` for rotations by
    /// arbitrary angles, which lose pixels at the corners.
    pub fn inverse(self) -> Option<InverseRot90Flip> {
        match self {
            Augmentation::Identity => Some(InverseRot90Flip { k: 0, axis: None }),
            Augmentation::Rot90Flip { k, axis } => Some(InverseRot90Flip {
                k,
                axis: Some(axis),
            }),
            Augmentation::Rotate { .. } => None,
        }
    }

    /// Applies the augmentation to an image or label slice. Rotations keep the shape;
    /// odd quarter turns swap height and width.
    pub fn apply<T: Copy + Default>(self, img: ArrayView2<'_, T>) -> Array2<T> {
        match self {
            Augmentation::Identity => img.to_owned(),
            Augmentation::Rot90Flip { k, axis } => rot90_flip(img, k, axis),
            Augmentation::Rotate { degrees } => rotate_nearest(img, degrees),
        }
    }
}

/// Undoes a rot90+flip: flip again, then rotate back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InverseRot90Flip {
    k: u8,
    axis: Option<u8>,
}

impl InverseRot90Flip {
    /// Restores the slice that the forward augmentation was applied to.
    pub fn apply<T: Copy + Default>(self, img: ArrayView2<'_, T>) -> Array2<T> {
        let unflipped = match self.axis {
            Some(a) => flip(img, a),
            None => img.to_owned(),
        };
        rot90(unflipped.view(), (4 - self.k % 4) % 4)
    }
}

/// Applies an index map `out[i, j] = img[src(i, j)]` that is affine in `(i, j)` (the
/// eight rot90/flip transforms), on raw slices.
fn affine_gather<T: Copy>(
    img: ArrayView2<'_, T>,
    out_dim: (usize, usize),
    src: impl Fn(isize, isize) -> (isize, isize),
) -> Array2<T> {
    let (_, w) = img.dim();
    let data = img.as_standard_layout();
    let data = data.as_slice().expect("standard layout");
    let lin = |(y, x): (isize, isize)| y * w as isize + x;
    let base = lin(src(0, 0));
    let di = lin(src(1, 0)) - base;
    let dj = lin(src(0, 1)) - base;
    let mut out = Vec::with_capacity(out_dim.0 * out_dim.1);
    for i in 0..out_dim.0 as isize {
        let row = base + i * di;
        out.extend((0..out_dim.1 as isize).map(|j| data[(row + j * dj) as usize]));
    }
    Array2::from_shape_vec(out_dim, out).expect("out_dim values")
}

/// `np.rot90(img, k)`: `k` counter-clockwise quarter turns.
pub fn rot90<T: Copy>(img: ArrayView2<'_, T>, k: u8) -> Array2<T> {
    let (h, w) = img.dim();
    let (hi, wi) = (h as isize, w as isize);
    match k % 4 {
        0 => img.to_owned(),
        1 => affine_gather(img, (w, h), |i, j| (j, wi - 1 - i)),
        2 => affine_gather(img, (h, w), |i, j| (hi - 1 - i, wi - 1 - j)),
        _ => affine_gather(img, (w, h), |i, j| (hi - 1 - j, i)),
    }
}

/// `np.flip(img, axis)` (result in standard layout).
pub fn flip<T: Copy>(img: ArrayView2<'_, T>, axis: u8) -> Array2<T> {
    let (h, w) = img.dim();
    let (hi, wi) = (h as isize, w as isize);
    if axis % 2 == 0 {
        affine_gather(img, (h, w), |i, j| (hi - 1 - i, j))
    } else {
        affine_gather(img, (h, w), |i, j| (i, wi - 1 - j))
    }
}

/// `np.flip(np.rot90(img, k), axis)` in one pass.
pub fn rot90_flip<T: Copy>(img: ArrayView2<'_, T>, k: u8, axis: u8) -> Array2<T> {
    let (h, w) = img.dim();
    let (hi, wi) = (h as isize, w as isize);
    let k = k % 4;
    let (oh, ow) = if k % 2 == 1 { (w, h) } else { (h, w) };
    let (ohi, owi) = (oh as isize, ow as isize);
    let rot = move |i: isize, j: isize| match k {
        0 => (i, j),
        1 => (j, wi - 1 - i),
        2 => (hi - 1 - i, wi - 1 - j),
        _ => (hi - 1 - j, i),
    };
    if axis % 2 == 0 {
        affine_gather(img, (oh, ow), move |i, j| rot(ohi - 1 - i, j))
    } else {
        affine_gather(img, (oh, ow), move |i, j| rot(i, owi - 1 - j))
    }
}

/// `np.flip(np.rot90(img, k), axis)` as a strided view of `img` (no copy).
pub fn rot90_flip_view<T>(img: ArrayView2<'_, T>, k: u8, axis: u8) -> ArrayView2<'_, T> {
    let rotated = match k % 4 {
        0 => img,
        1 => img.slice_move(s![.., ..;-1]).reversed_axes(),
        2 => img.slice_move(s![..;-1, ..;-1]),
        _ => img.slice_move(s![..;-1, ..]).reversed_axes(),
    };
    if axis % 2 == 0 {
        rotated.slice_move(s![..;-1, ..])
    } else {
        rotated.slice_move(s![.., ..;-1])
    }
}

/// Rotation about the centre `((h-1)/2, (w-1)/2)` by `degrees` (same sense as
/// `scipy.ndimage.rotate`), nearest neighbour, zero (default) outside; zero degrees is
/// the identity.
pub fn rotate_nearest<T: Copy + Default>(img: ArrayView2<'_, T>, degrees: f32) -> Array2<T> {
    let (h, w) = img.dim();
    let map = rotation_source_map(h, w, degrees);
    gather_map(img, &map)
}

/// For each output pixel of a rotation by `degrees` about the centre of an `[h, w]`
/// slice, the row-major index of its nearest source pixel (`u32::MAX` outside). Shared by
/// image and labels so the coordinates are computed once per sample.
pub fn rotation_source_map(h: usize, w: usize, degrees: f32) -> Vec<u32> {
    // scipy.ndimage.rotate's convention: input = R (output - centre) + centre with
    // R = [[c, s], [-s, c]] in (row, col) coordinates; here s is negated once so that the
    // inverse map below reads as "rotate the offset by -theta".
    let theta = -(degrees as f64).to_radians();
    let (s, c) = theta.sin_cos();
    let cy = (h as f64 - 1.0) / 2.0;
    let cx = (w as f64 - 1.0) / 2.0;
    // 32.32 fixed point: source coordinates advance linearly along a row, and an
    // arithmetic shift is an exact floor. At 0 degrees every step is an exact integer,
    // so the map is the identity.
    const ONE: f64 = 4_294_967_296.0;
    const HALF: i64 = 1 << 31;
    let wi = w as i64;
    // Largest admissible coordinate n - 1, plus the 0.5 rounding offset.
    let (max_y, max_x) = ((2 * h as i64 - 1) * HALF, (2 * wi - 1) * HALF);
    let mut map = Vec::with_capacity(h * w);
    for y in 0..h {
        let dy = y as f64 - cy;
        // Inverse map: rotate the output offset (dy, dx) by -theta; +0.5 rounds.
        let sy0 = c * dy + s * cx + cy + 0.5;
        let sx0 = s * dy - c * cx + cx + 0.5;
        let mut fy = (sy0 * ONE).round() as i64;
        let mut fx = (sx0 * ONE).round() as i64;
        let (step_y, step_x) = ((-s * ONE).round() as i64, (c * ONE).round() as i64);
        for _ in 0..w {
            // Like scipy's mode='constant', a source coordinate outside [0, n - 1] reads
            // the fill value even when it would round to an edge pixel.
            let inside = fy >= HALF && fy <= max_y && fx >= HALF && fx <= max_x;
            map.push(if inside {
                ((fy >> 32) * wi + (fx >> 32)) as u32
            } else {
                u32::MAX
            });
            fy += step_y;
            fx += step_x;
        }
    }
    map
}

/// `out[i] = img[map[i]]` (default where `map[i] == u32::MAX`), same shape as `img`.
pub fn gather_map<T: Copy + Default>(img: ArrayView2<'_, T>, map: &[u32]) -> Array2<T> {
    let data = img.as_standard_layout();
    let data = data.as_slice().expect("standard layout");
    let out: Vec<T> = map
        .iter()
        .map(|&m| data.get(m as usize).copied().unwrap_or_default())
        .collect();
    Array2::from_shape_vec(img.dim(), out).expect("map covers the image")
}

/// Where a slice comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SliceId {
    /// Patient number.
    pub patient: u32,
    /// ED or ES.
    pub phase: Phase,
    /// Slice index in the volume.
    pub z: u32,
}

/// One native-resolution, normalised slice with its labels.
#[derive(Debug, Clone)]
pub struct Slice2d {
    /// Normalised intensities `[H, W]`.
    pub image: Array2<f32>,
    /// Labels `[H, W]`, 0..=3.
    pub labels: Array2<u8>,
    /// Origin.
    pub id: SliceId,
}

/// Options of the training pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineConfig {
    /// Output height and width (default 224).
    pub size: usize,
    /// Slices per batch (default 24, TransUNet's).
    pub batch_size: usize,
    /// Apply TransUNet augmentation (default true for training).
    pub augment: bool,
    /// Shuffle slices each epoch (default true).
    pub shuffle: bool,
    /// Drop the last incomplete batch (default true, as TransUNet's loader).
    pub drop_last: bool,
    /// Also produce direction-field targets `[B, 2, H, W]` (default false).
    pub direction_fields: bool,
    /// Intensity normalisation per volume (default min-max).
    pub normalization: Normalization,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            size: MODEL_SIZE,
            batch_size: 24,
            augment: true,
            shuffle: true,
            drop_last: true,
            direction_fields: false,
            normalization: Normalization::MinMax,
            seed: 1234,
        }
    }
}

impl PipelineConfig {
    /// Checks the options.
    pub fn check(&self) -> Result<()> {
        if self.size < 2 || self.size > 4096 {
            return Err(DataError::InvalidArgument(format!(
                "pipeline size must be in 2..=4096, got {}",
                self.size
            )));
        }
        if self.batch_size == 0 {
            return Err(DataError::InvalidArgument(
                "batch_size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A batch as contiguous row-major buffers, ready for `Tensor::from_slice(..).view(..)`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images, shape `[B, 1, H, W]`.
    pub images: Vec<f32>,
    /// Labels 0..=3, shape `[B, H, W]`.
    pub labels: Vec<i64>,
    /// Direction fields `[B, 2, H, W]` when requested (see [`crate::direction`]).
    pub directions: Option<Vec<f32>>,
    /// Origin of each sample.
    pub ids: Vec<SliceId>,
    /// Augmentation applied to each sample.
    pub augmentations: Vec<Augmentation>,
    /// Height = width of every sample.
    pub size: usize,
}

impl Batch {
    /// Number of samples B.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// `[B, 1, H, W]`.
    pub fn image_shape(&self) -> [usize; 4] {
        [self.len(), 1, self.size, self.size]
    }
    /// `[B, H, W]`.
    pub fn label_shape(&self) -> [usize; 3] {
        [self.len(), self.size, self.size]
    }
}

/// Normalised slices of labelled frames, held in memory at native resolution.
#[derive(Debug, Clone, Default)]
pub struct SliceDataset {
    /// All slices, in (frame, z) order.
    pub slices: Vec<Slice2d>,
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    // splitmix64 of a combination: distinct streams per (seed, epoch, index).
    let mut x =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Splits a labelled frame into normalised slices (all short-axis slices).
pub fn frame_slices(frame: &AcdcFrame, norm: Normalization) -> Result<Vec<Slice2d>> {
    let labels = frame.labels.as_ref().ok_or_else(|| {
        DataError::InvalidArgument(format!(
            "{}: frame has no ground truth",
            frame.image.path.display()
        ))
    })?;
    let mut img = frame.image.data.clone();
    normalize_volume(&mut img, norm);
    Ok((0..img.shape()[0])
        .map(|z| Slice2d {
            image: img.index_axis(Axis(0), z).to_owned(),
            labels: labels.data.index_axis(Axis(0), z).to_owned(),
            id: SliceId {
                patient: frame.patient,
                phase: frame.phase,
                z: z as u32,
            },
        })
        .collect())
}

impl SliceDataset {
    /// Slices of all given labelled frames, normalised per volume.
    pub fn from_frames(frames: &[AcdcFrame], norm: Normalization) -> Result<Self> {
        let nested: Vec<Vec<Slice2d>> = frames
            .par_iter()
            .map(|f| frame_slices(f, norm))
            .collect::<Result<_>>()?;
        Ok(SliceDataset {
            slices: nested.into_iter().flatten().collect(),
        })
    }

    /// Number of slices.
    pub fn len(&self) -> usize {
        self.slices.len()
    }

    /// True when there is no slice.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// Slice order of an epoch (shuffled with (seed, epoch) when `cfg.shuffle`).
    pub fn epoch_order(&self, cfg: &PipelineConfig, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        if cfg.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
                cfg.seed,
                epoch,
                u64::MAX,
            )));
        }
        order
    }

    /// Number of batches in an epoch.
    pub fn batches_per_epoch(&self, cfg: &PipelineConfig) -> usize {
        if cfg.drop_last {
            self.len() / cfg.batch_size
        } else {
            self.len().div_ceil(cfg.batch_size)
        }
    }

    /// Builds the batch of the given slice indices (augmented with streams keyed by
    /// `(cfg.seed, epoch, index)`), in parallel.
    pub fn make_batch(&self, indices: &[usize], cfg: &PipelineConfig, epoch: u64) -> Result<Batch> {
        cfg.check()?;
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::InvalidArgument(format!(
                "slice index {bad} out of range (dataset has {} slices)",
                self.len()
            )));
        }
        let s = cfg.size;
        let b = indices.len();
        let mut images = vec![0.0f32; b * s * s];
        let mut labels = vec![0i64; b * s * s];
        let mut directions = cfg.direction_fields.then(|| vec![0.0f32; b * 2 * s * s]);
        let augs: Vec<Augmentation> = images
            .par_chunks_mut(s * s)
            .zip(labels.par_chunks_mut(s * s))
            .zip(indices.par_iter())
            .map(|((img_out, lab_out), &i)| self.sample_into(i, cfg, epoch, img_out, lab_out))
            .collect();
        if let Some(dirs) = directions.as_mut() {
            dirs.par_chunks_mut(2 * s * s)
                .zip(labels.par_chunks(s * s))
                .for_each(|(d, l)| {
                    let lab = ArrayView2::from_shape((s, s), l).expect("s*s labels");
                    let lab = lab.mapv(|v| v as u8);
                    let view = ndarray::ArrayViewMut3::from_shape((2, s, s), d).expect("2*s*s");
                    direction_field_into(lab.view(), view);
                });
        }
        Ok(Batch {
            images,
            labels,
            directions,
            ids: indices.iter().map(|&i| self.slices[i].id).collect(),
            augmentations: augs,
            size: s,
        })
    }

    /// One processed sample: augmentation drawn for `(seed, epoch, index)`, applied at
    /// native size, then resized to `cfg.size` (cubic image, nearest labels).
    pub fn sample(
        &self,
        index: usize,
        cfg: &PipelineConfig,
        epoch: u64,
    ) -> (Augmentation, Array2<f32>, Array2<u8>) {
        let n = cfg.size * cfg.size;
        let (mut img, mut lab) = (vec![0.0f32; n], vec![0i64; n]);
        let aug = self.sample_into(index, cfg, epoch, &mut img, &mut lab);
        let shape = (cfg.size, cfg.size);
        (
            aug,
            Array2::from_shape_vec(shape, img).expect("size^2 values"),
            Array2::from_shape_vec(shape, lab.into_iter().map(|v| v as u8).collect())
                .expect("size^2 values"),
        )
    }

    /// [`sample`](Self::sample) written into caller buffers of `cfg.size^2` values
    /// (image and labels of one batch slot).
    pub fn sample_into(
        &self,
        index: usize,
        cfg: &PipelineConfig,
        epoch: u64,
        img_out: &mut [f32],
        lab_out: &mut [i64],
    ) -> Augmentation {
        let sl = &self.slices[index];
        let aug = if cfg.augment {
            Augmentation::sample(&mut ChaCha8Rng::seed_from_u64(mix(
                cfg.seed,
                epoch,
                index as u64,
            )))
        } else {
            Augmentation::Identity
        };
        let s = cfg.size;
        augment_resize_into(sl.image.view(), sl.labels.view(), aug, s, img_out, lab_out);
        aug
    }

    /// Iterates over the batches of one epoch.
    pub fn epoch<'a>(&'a self, cfg: &'a PipelineConfig, epoch: u64) -> EpochBatches<'a> {
        EpochBatches {
            dataset: self,
            cfg,
            epoch,
            order: self.epoch_order(cfg, epoch),
            next: 0,
        }
    }
}

/// Iterator over one epoch's batches (see [`SliceDataset::epoch`]).
#[derive(Debug)]
pub struct EpochBatches<'a> {
    dataset: &'a SliceDataset,
    cfg: &'a PipelineConfig,
    epoch: u64,
    order: Vec<usize>,
    next: usize,
}

impl Iterator for EpochBatches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let remaining = self.order.len().saturating_sub(self.next);
        let bs = self.cfg.batch_size.max(1);
        if remaining == 0 || (self.cfg.drop_last && remaining < bs) {
            return None;
        }
        let take = remaining.min(bs);
        let idx = &self.order[self.next..self.next + take];
        self.next += take;
        Some(self.dataset.make_batch(idx, self.cfg, self.epoch))
    }
}

/// A normalised volume prepared for slice-wise inference at the model size.
#[derive(Debug, Clone)]
pub struct InferenceVolume {
    /// Slices resized to `size`, shape `[Z, 1, size, size]`, contiguous.
    pub images: Vec<f32>,
    /// Number of slices Z.
    pub depth: usize,
    /// Model size.
    pub size: usize,
    /// Native `[H, W]` of each slice.
    pub native: (usize, usize),
}

impl InferenceVolume {
    /// Normalises `image` (`[z, y, x]`) and resizes every slice to `size` with cubic
    /// interpolation (TransUNet's test protocol).
    pub fn new(image: &Array3<f32>, norm: Normalization, size: usize) -> Self {
        let mut img = image.clone();
        normalize_volume(&mut img, norm);
        let (z, h, w) = img.dim();
        let mut images = vec![0.0f32; z * size * size];
        images
            .par_chunks_mut(size * size)
            .enumerate()
            .for_each(|(k, out)| {
                resize_cubic_into(img.index_axis(Axis(0), k), size, size, out);
            });
        InferenceVolume {
            images,
            depth: z,
            size,
            native: (h, w),
        }
    }

    /// `[Z, 1, size, size]`.
    pub fn image_shape(&self) -> [usize; 4] {
        [self.depth, 1, self.size, self.size]
    }

    /// Resizes per-slice predictions (`[Z, size, size]` class indices, any integer type)
    /// back to the native grid with nearest neighbour, giving a `[z, y, x]` label volume.
    pub fn restore<T: Copy + Into<i64> + Sync>(&self, pred: &[T]) -> Result<Array3<u8>> {
        let s = self.size;
        if pred.len() != self.depth * s * s {
            return Err(DataError::InvalidArgument(format!(
                "prediction has {} values, expected {} x {s} x {s}",
                pred.len(),
                self.depth
            )));
        }
        let (h, w) = self.native;
        let mut out = Array3::<u8>::zeros((self.depth, h, w));
        for (k, mut plane) in out.axis_iter_mut(Axis(0)).enumerate() {
            let p = &pred[k * s * s..(k + 1) * s * s];
            let small =
                Array2::from_shape_fn((s, s), |(y, x)| p[y * s + x].into().clamp(0, 3) as u8);
            let r = resize_nearest(small.view(), h, w);
            plane.assign(&r);
        }
        Ok(out)
    }
}
