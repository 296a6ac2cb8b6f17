//! Exact Euclidean distance transforms on grids, anisotropic spacing supported.
//!
//! The transform is separable: one pass per axis of the 1D lower envelope of parabolas
//! (Felzenszwalb & Huttenlocher, "Distance Transforms of Sampled Functions", Theory of
//! Computing 8, 2012). Each pass is exact, so the result equals the brute-force minimum
//! over all feature points. Distances here are to the nearest *feature* (`true`) voxel;
//! scipy's `distance_transform_edt(x)` measures to the nearest zero, i.e. features = `!x`.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3};
use rayon::prelude::*;

/// Scratch buffers for [`envelope_1d`], reusable across lines.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    v: Vec<usize>,
    z: Vec<f64>,
}

/// One exact 1D pass: `out[q] = min_p (w (q - p)^2 + f[p])` over sites with finite
/// `f[p]`, and `arg[q]` = the minimising `p` (`usize::MAX` and `+inf` when no site is
/// finite). `w` is the squared spacing along the line.
pub fn envelope_1d(f: &[f64], w: f64, out: &mut [f64], arg: &mut [usize], s: &mut Scratch) {
    let n = f.len();
    debug_assert!(out.len() == n && arg.len() == n);
    s.v.clear();
    s.z.clear();
    for q in 0..n {
        let fq = f[q];
        if !fq.is_finite() {
            continue;
        }
        let qf = q as f64;
        loop {
            let Some(&p) = s.v.last() else {
                s.v.push(q);
                s.z.push(f64::NEG_INFINITY);
                break;
            };
            let pf = p as f64;
            let x = ((fq + w * qf * qf) - (f[p] + w * pf * pf)) / (2.0 * w * (qf - pf));
            if x <= *s.z.last().expect("same length as v") {
                s.v.pop();
                s.z.pop();
            } else {
                s.v.push(q);
                s.z.push(x);
                break;
            }
        }
    }
    if s.v.is_empty() {
        out.fill(f64::INFINITY);
        arg.fill(usize::MAX);
        return;
    }
    let mut k = 0;
    for q in 0..n {
        let qf = q as f64;
        while k + 1 < s.v.len() && s.z[k + 1] < qf {
            k += 1;
        }
        let p = s.v[k];
        let d = qf - p as f64;
        out[q] = w * d * d + f[p];
        arg[q] = p;
    }
}

/// Squared distances from every voxel of a `[z, y, x]` grid to the nearest feature voxel,
/// with voxel `spacing` in the same `[z, y, x]` order. `+inf` everywhere when there is no
/// feature.
pub fn squared_edt_3d(features: ArrayView3<'_, bool>, spacing: [f64; 3]) -> Array3<f64> {
    let (nz, ny, nx) = features.dim();
    let yxz = squared_edt_3d_yxz(&|z, y, x| features[[z, y, x]], [nz, ny, nx], spacing);
    Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| yxz[(y * nx + x) * nz + z])
}

/// The 3D transform with the result laid out `[y][x][z]` (the last pass writes contiguous
/// z-lines, which keeps every pass parallel without shared writes). `dims` is `[nz, ny, nx]`.
pub(crate) fn squared_edt_3d_yxz(
    is_feature: &(dyn Fn(usize, usize, usize) -> bool + Sync),
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Vec<f64> {
    let [nz, ny, nx] = dims;
    let [wz, wy, wx] = spacing.map(|s| s * s);
    let mut g = vec![0.0f64; nz * ny * nx];
    // Pass x, per row; then pass y, per z-plane.
    g.par_chunks_mut(ny * nx)
        .enumerate()
        .for_each(|(z, plane)| {
            let mut s = Scratch::default();
            let mut f = vec![0.0; nx.max(ny)];
            let mut out = vec![0.0; nx.max(ny)];
            let mut arg = vec![0usize; nx.max(ny)];
            for y in 0..ny {
                for x in 0..nx {
                    f[x] = if is_feature(z, y, x) {
                        0.0
                    } else {
                        f64::INFINITY
                    };
                }
                envelope_1d(&f[..nx], wx, &mut out[..nx], &mut arg[..nx], &mut s);
                plane[y * nx..(y + 1) * nx].copy_from_slice(&out[..nx]);
            }
            for x in 0..nx {
                for y in 0..ny {
                    f[y] = plane[y * nx + x];
                }
                envelope_1d(&f[..ny], wy, &mut out[..ny], &mut arg[..ny], &mut s);
                for y in 0..ny {
                    plane[y * nx + x] = out[y];
                }
            }
        });
    // Pass z, writing [y][x][z].
    let mut h = vec![0.0f64; nz * ny * nx];
    h.par_chunks_mut(nx * nz)
        .enumerate()
        .for_each(|(y, strip)| {
            let mut s = Scratch::default();
            let mut f = vec![0.0; nz];
            let mut arg = vec![0usize; nz];
            for x in 0..nx {
                for z in 0..nz {
                    f[z] = g[(z * ny + y) * nx + x];
                }
                envelope_1d(&f, wz, &mut strip[x * nz..(x + 1) * nz], &mut arg, &mut s);
            }
        });
    h
}

/// The last axis at most this long is finished per query by direct minimisation; a
/// longer one by a full envelope pass.
const DIRECT_Z: usize = 32;

/// Squared distances from each query voxel (`queries[i]` true) to the nearest feature of
/// `features`, both row-major `[z][y][x]` of `dims = [nz, ny, nx]`, written to `out` (one
/// entry per query, in their order). Exact: the minimum over the features of the same expressions as
/// [`squared_edt_3d`] (which returns the value at the minimiser its envelope chose, so the
/// two may differ in the last bit at near-ties), computed for the queries only.
///
/// The x pass of a binary image needs no envelope: the nearest feature of a row is found
/// by one scan each way, for every row. The rest is evaluated at the queries only
/// ([`Rows::nearest`]): the query's own plane first, then the planes outward while the z
/// step alone is below the best value (ACDC has 6 to 21 slices), and in each plane the
/// rows outward while the z and y steps together are below it. Each candidate is
/// `wz dz^2 + (wy dy^2 + wx dx^2)`, the very expression the separable transform evaluates
/// at its minimiser. Queries near features settle within a few rows, so this does far
/// less work than a y pass over whole planes. Volumes with more than [`DIRECT_Z`] slices,
/// or rows too long for the 16-bit x pass, take the full transform.
pub(crate) fn squared_distances_into(
    features: &[bool],
    queries: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    out: &mut [f64],
) {
    let [nz, ny, nx] = dims;
    assert_eq!(features.len(), nz * ny * nx, "features fill the grid");
    assert_eq!(queries.len(), features.len(), "queries fill the grid");
    if nz > DIRECT_Z || nx >= usize::from(u16::MAX) {
        let d = squared_edt_3d_yxz(&|z, y, x| features[(z * ny + y) * nx + x], dims, spacing);
        let at = (0..queries.len()).filter(|&i| queries[i]);
        for (o, i) in out.iter_mut().zip(at) {
            let (z, y, x) = (i / (nx * ny), i / nx % ny, i % nx);
            *o = d[(y * nx + x) * nz + z];
        }
        return;
    }
    // The x pass of every row, [z][y][x]: queries along a row read the same cache lines.
    // Entries are columns to the nearest feature of the row, `nx` without one; `cost`
    // turns them into `wx dx^2` (`+inf` for `nx`) without a branch.
    let mut rows = vec![0u16; nz * ny * nx];
    rows.par_chunks_mut(nx)
        .zip(features.par_chunks(nx))
        .with_min_len(64)
        .for_each(|(out, row)| row_pass(row, out));
    let wx = spacing[2] * spacing[2];
    let cost: Vec<f64> = (0..=nx)
        .map(|d| {
            if d == nx {
                f64::INFINITY
            } else {
                let d = d as f64;
                wx * d * d
            }
        })
        .collect();
    let grid = Rows {
        rows: &rows,
        cost: &cost,
        dims,
        spacing,
    };
    // Each row of queries writes its own piece of `out`.
    let counts: Vec<usize> = queries
        .par_chunks(nx)
        .map(|line| line.iter().filter(|&&q| q).count())
        .collect();
    assert_eq!(
        counts.iter().sum::<usize>(),
        out.len(),
        "one output per query"
    );
    let mut pieces = Vec::with_capacity(counts.len());
    let mut rest = &mut out[..];
    for &c in &counts {
        let (piece, tail) = rest.split_at_mut(c);
        pieces.push(piece);
        rest = tail;
    }
    pieces
        .into_par_iter()
        .zip(queries.par_chunks(nx))
        .enumerate()
        .with_min_len(16)
        .for_each(|(r, (piece, line))| {
            let (z, y) = (r / ny, r % ny);
            let at = line.iter().enumerate().filter(|(_, q)| **q);
            for (o, (x, _)) in piece.iter_mut().zip(at) {
                *o = grid.nearest([z, y, x]).unwrap_or(f64::NAN);
            }
        });
    if out.iter().any(|v| v.is_nan()) {
        grid.finish_far(queries, out);
    }
}

/// Rows a query's search may take on each side of it in one plane before the query is
/// left to [`Rows::finish_far`].
const SEARCH: usize = 32;

/// From `best`, the value in the voxel's own plane `z`, the planes outward while the z step
/// alone (`wz dz^2`) is below the best value: `best = visit(plane, step, best)` for each
/// (`None` from `visit` stops with `None`).
fn planes_outward(
    z: usize,
    nz: usize,
    wz: f64,
    mut best: f64,
    mut visit: impl FnMut(usize, f64, f64) -> Option<f64>,
) -> Option<f64> {
    for dz in 1..nz {
        let d = dz as f64;
        let step = wz * d * d;
        if step >= best {
            break;
        }
        if dz <= z {
            best = visit(z - dz, step, best)?;
        }
        if z + dz < nz {
            best = visit(z + dz, step, best)?;
        }
    }
    Some(best)
}

/// The x pass of a grid with what [`Rows::nearest`] needs to finish it at one voxel.
#[derive(Clone, Copy)]
struct Rows<'a> {
    /// Columns to the nearest feature of each row, `[z][y][x]` (`nx`: none).
    rows: &'a [u16],
    /// `wx dx^2` by column distance, `+inf` at `nx`.
    cost: &'a [f64],
    dims: [usize; 3],
    spacing: [f64; 3],
}

impl Rows<'_> {
    /// The squared distance from `[z, y, x]` to the nearest feature: planes and rows
    /// outward from the voxel, each direction stopping once its step alone reaches the
    /// best value (exact, as every term is `>= 0` and rounding is monotone). `None` when
    /// a plane needs more than [`SEARCH`] rows on a side: the feature is far.
    fn nearest(&self, [z, y, x]: [usize; 3]) -> Option<f64> {
        let [nz, ny, nx] = self.dims;
        let [wz, wy, _] = self.spacing.map(|s| s * s);
        // Rows of plane `p` outward from `y`, each candidate `step + (wy dy^2 + wx dx^2)`;
        // the own plane has step 0 (and `0 + v == v`).
        let plane = |p: usize, step: f64, mut best: f64| {
            let at = |r: usize| self.cost[usize::from(self.rows[(p * ny + r) * nx + x])];
            best = lesser(best, step + at(y));
            for dy in 1..ny {
                let d = dy as f64;
                let c = wy * d * d;
                if step + c >= best || (dy > y && y + dy >= ny) {
                    break;
                }
                if dy > SEARCH {
                    return None;
                }
                if dy <= y {
                    best = lesser(best, step + (c + at(y - dy)));
                }
                if y + dy < ny {
                    best = lesser(best, step + (c + at(y + dy)));
                }
            }
            Some(best)
        };
        planes_outward(z, nz, wz, plane(z, 0.0, f64::INFINITY)?, plane)
    }

    /// Fills the NaN entries of `out` (the queries [`Rows::nearest`] left, in query
    /// order) the way of the separable transform: the exact y envelope of every plane's
    /// column through such a query, then the z pass at the query. Linear in the columns
    /// however far the features are.
    fn finish_far(&self, queries: &[bool], out: &mut [f64]) {
        let [nz, ny, nx] = self.dims;
        let [wz, wy, _] = self.spacing.map(|s| s * s);
        let far: Vec<[usize; 3]> = queries
            .iter()
            .enumerate()
            .filter(|(_, q)| **q)
            .map(|(i, _)| i)
            .zip(out.iter())
            .filter(|(_, v)| v.is_nan())
            .map(|(i, _)| [i / (nx * ny), i / nx % ny, i % nx])
            .collect();
        // Column slot of each x with a far query.
        let mut slot = vec![usize::MAX; nx];
        let mut xs = Vec::new();
        for &[_, _, x] in &far {
            if slot[x] == usize::MAX {
                slot[x] = xs.len();
                xs.push(x);
            }
        }
        // Columns [z][slot][y], each the exact y pass of the x pass.
        let mut cols = vec![0.0f64; nz * xs.len() * ny];
        cols.par_chunks_mut(ny).enumerate().for_each_init(
            || (vec![0.0; ny], vec![0usize; ny], Scratch::default()),
            |(line, arg, s), (c, col)| {
                let (z, x) = (c / xs.len(), xs[c % xs.len()]);
                for (y, v) in line.iter_mut().enumerate() {
                    *v = self.cost[usize::from(self.rows[(z * ny + y) * nx + x])];
                }
                envelope_1d(line, wy, col, arg, s);
            },
        );
        let values: Vec<f64> = far
            .par_iter()
            .map(|&[z, y, x]| {
                let at = |p: usize| cols[(p * xs.len() + slot[x]) * ny + y];
                planes_outward(z, nz, wz, at(z), |p, step, best| {
                    Some(lesser(best, step + at(p)))
                })
                .expect("column lookups always give a value")
            })
            .collect();
        let nan_slots = out.iter_mut().filter(|v| v.is_nan());
        for (o, v) in nan_slots.zip(values) {
            *o = v;
        }
    }
}

/// The smaller of two values that are never NaN (one compare, unlike `f64::min`).
#[inline]
fn lesser(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

/// The x pass of one row of a binary image: `out[q] = |q - p|` for the nearest feature `p`
/// of the row, the row's length everywhere without one. The row is shorter than
/// `u16::MAX`.
fn row_pass(features: &[bool], out: &mut [u16]) {
    let n = out.len() as u16;
    let mut last: Option<u16> = None;
    for (q, (&f, o)) in (0..n).zip(features.iter().zip(out.iter_mut())) {
        if f {
            last = Some(q);
        }
        *o = last.map_or(n, |p| q - p);
    }
    let mut next: Option<u16> = None;
    for (q, (&f, o)) in (0..n).zip(features.iter().zip(out.iter_mut())).rev() {
        if f {
            next = Some(q);
        }
        if let Some(p) = next {
            *o = (*o).min(p - q);
        }
    }
}

/// Exact 2D transform with nearest-feature indices.
#[derive(Debug, Clone)]
pub struct NearestFeature2d {
    /// Squared distance to the nearest feature pixel (`+inf` when there is none).
    pub sq_dist: Array2<f64>,
    /// Row and column of that feature pixel (`(u32::MAX, u32::MAX)` when there is none).
    pub nearest: Array2<(u32, u32)>,
}

/// Distance from every pixel of a `[y, x]` grid to its nearest feature pixel, with the
/// feature's coordinates; `spacing` is `[y, x]`. Ties are broken by the envelope (any
/// one of the equidistant features).
pub fn nearest_feature_2d(features: ArrayView2<'_, bool>, spacing: [f64; 2]) -> NearestFeature2d {
    let (ny, nx) = features.dim();
    let [wy, wx] = spacing.map(|s| s * s);
    let mut s = Scratch::default();
    let n = nx.max(ny);
    let (mut f, mut out, mut arg) = (vec![0.0; n], vec![0.0; n], vec![0usize; n]);
    // Row pass: the nearest feature column in the row, by two sweeps (features are 0/inf,
    // so the envelope reduces to nearest-left / nearest-right).
    let mut row_d = vec![f64::INFINITY; ny * nx];
    let mut row_col = vec![usize::MAX; ny * nx];
    for y in 0..ny {
        let cols = &mut row_col[y * nx..(y + 1) * nx];
        let mut last = usize::MAX;
        for x in 0..nx {
            if features[[y, x]] {
                last = x;
            }
            cols[x] = last;
        }
        let mut next = usize::MAX;
        for x in (0..nx).rev() {
            if features[[y, x]] {
                next = x;
            }
            if next != usize::MAX && (cols[x] == usize::MAX || next - x < x - cols[x]) {
                cols[x] = next;
            }
        }
        for x in 0..nx {
            if cols[x] != usize::MAX {
                let d = x as f64 - cols[x] as f64;
                row_d[y * nx + x] = wx * d * d;
            }
        }
    }
    let mut sq_dist = Array2::from_elem((ny, nx), f64::INFINITY);
    let mut nearest = Array2::from_elem((ny, nx), (u32::MAX, u32::MAX));
    for x in 0..nx {
        for y in 0..ny {
            f[y] = row_d[y * nx + x];
        }
        envelope_1d(&f[..ny], wy, &mut out[..ny], &mut arg[..ny], &mut s);
        for y in 0..ny {
            let r = arg[y];
            if r != usize::MAX {
                sq_dist[[y, x]] = out[y];
                nearest[[y, x]] = (r as u32, row_col[r * nx + x] as u32);
            }
        }
    }
    NearestFeature2d { sq_dist, nearest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// [`squared_distances_into`] into a new vector.
    fn squared_distances_from(
        features: &[bool],
        queries: &[bool],
        dims: [usize; 3],
        spacing: [f64; 3],
    ) -> Vec<f64> {
        let mut out = vec![0.0; queries.iter().filter(|&&q| q).count()];
        squared_distances_into(features, queries, dims, spacing, &mut out);
        out
    }

    fn brute_3d(m: &Array3<bool>, sp: [f64; 3]) -> Array3<f64> {
        let feats: Vec<(usize, usize, usize)> = m
            .indexed_iter()
            .filter(|(_, b)| **b)
            .map(|(i, _)| i)
            .collect();
        Array3::from_shape_fn(m.dim(), |(z, y, x)| {
            feats
                .iter()
                .map(|&(a, b, c)| {
                    let dz = (z as f64 - a as f64) * sp[0];
                    let dy = (y as f64 - b as f64) * sp[1];
                    let dx = (x as f64 - c as f64) * sp[2];
                    dz * dz + dy * dy + dx * dx
                })
                .fold(f64::INFINITY, f64::min)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn edt_3d_equals_brute_force(
            dims in (1usize..6, 1usize..7, 1usize..7),
            bits in proptest::collection::vec(proptest::bool::weighted(0.15), 252),
            sp in (0.3f64..3.0, 0.3f64..3.0, 0.3f64..12.0),
        ) {
            let (nz, ny, nx) = dims;
            let m = Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| bits[(z * ny + y) * nx + x]);
            let sp = [sp.2, sp.0, sp.1];
            let fast = squared_edt_3d(m.view(), sp);
            let slow = brute_3d(&m, sp);
            for (a, b) in fast.iter().zip(slow.iter()) {
                prop_assert!(a == b || (a - b).abs() <= 1e-9 * b.max(1.0), "{a} vs {b}");
            }
        }

        #[test]
        fn distances_at_queries_equal_brute_force(
            dims in prop_oneof![
                (1usize..6, 1usize..9, 1usize..9),
                (33usize..40, 1usize..3, 1usize..3),
                (1usize..3, 60usize..90, 1usize..3),
            ],
            bits in proptest::collection::vec(proptest::bool::weighted(0.15), 324),
            sp in (0.3f64..3.0, 0.3f64..3.0, 0.3f64..12.0),
        ) {
            // Both paths: the direct z minimisation (nz <= 32) and the full transform.
            let (nz, ny, nx) = dims;
            let feats: Vec<bool> = (0..nz * ny * nx).map(|i| bits[i % bits.len()] ^ (i % 7 == 3)).collect();
            let m = Array3::from_shape_vec((nz, ny, nx), feats.clone()).unwrap();
            let sp = [sp.2, sp.0, sp.1];
            let queries = vec![true; nz * ny * nx];
            let fast = squared_distances_from(&feats, &queries, [nz, ny, nx], sp);
            let slow = brute_3d(&m, sp);
            for (a, b) in fast.iter().zip(slow.iter()) {
                prop_assert!(a == b || (a - b).abs() <= 1e-9 * b.max(1.0), "{a} vs {b}");
            }
        }

        #[test]
        fn sparse_features_far_along_y_equal_brute_force(
            dims in (1usize..4, 40usize..80, 1usize..5),
            sites in proptest::collection::vec((0usize..4, 0usize..80, 0usize..5), 0..4),
            sp in (0.3f64..3.0, 0.3f64..3.0, 0.3f64..12.0),
        ) {
            // A few features in long columns: most queries are further than SEARCH rows
            // from every feature and go through the column envelopes, the rest do not.
            let (nz, ny, nx) = dims;
            let mut m = Array3::from_elem((nz, ny, nx), false);
            for (z, y, x) in sites {
                m[[z % nz, y % ny, x % nx]] = true;
            }
            let feats: Vec<bool> = m.iter().copied().collect();
            let sp = [sp.2, sp.0, sp.1];
            let fast = squared_distances_from(&feats, &vec![true; nz * ny * nx], [nz, ny, nx], sp);
            let slow = brute_3d(&m, sp);
            for (a, b) in fast.iter().zip(slow.iter()) {
                prop_assert!(a == b || (a - b).abs() <= 1e-9 * b.max(1.0), "{a} vs {b}");
            }
        }

        #[test]
        fn nearest_2d_is_a_true_nearest_feature(
            dims in (1usize..9, 1usize..9),
            bits in proptest::collection::vec(proptest::bool::weighted(0.2), 64),
        ) {
            let (ny, nx) = dims;
            let m = Array2::from_shape_fn((ny, nx), |(y, x)| bits[y * nx + x]);
            let r = nearest_feature_2d(m.view(), [1.0, 1.0]);
            for ((y, x), &d) in r.sq_dist.indexed_iter() {
                let best = m.indexed_iter().filter(|(_, b)| **b)
                    .map(|((a, b), _)| (y as f64 - a as f64).powi(2) + (x as f64 - b as f64).powi(2))
                    .fold(f64::INFINITY, f64::min);
                prop_assert_eq!(d, best);
                if best.is_finite() {
                    let (ry, rx) = r.nearest[[y, x]];
                    prop_assert!(m[[ry as usize, rx as usize]]);
                    let dd = (y as f64 - ry as f64).powi(2) + (x as f64 - rx as f64).powi(2);
                    prop_assert_eq!(dd, best);
                }
            }
        }
    }

    #[test]
    fn a_feature_far_along_y_and_z_is_found() {
        // One feature at the far corner of a 100-voxel y line: the search from the other
        // end crosses the whole line and the other plane.
        let (nz, ny, nx) = (2, 100, 2);
        let mut m = Array3::from_elem((nz, ny, nx), false);
        m[[1, 99, 1]] = true;
        let feats: Vec<bool> = m.iter().copied().collect();
        let queries = vec![true; nz * ny * nx];
        let sp = [10.0, 1.5, 1.25];
        let fast = squared_distances_from(&feats, &queries, [nz, ny, nx], sp);
        let slow = brute_3d(&m, sp);
        assert_eq!(fast, slow.iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn no_features_gives_infinity() {
        let m = Array3::from_elem((2, 3, 4), false);
        assert!(
            squared_edt_3d(m.view(), [1.0; 3])
                .iter()
                .all(|v| v.is_infinite())
        );
    }
}
