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

/// Squared distances from each of `queries` (`[z, y, x]`) to the nearest feature of
/// `features` (row-major `[z][y][x]` of `dims = [nz, ny, nx]`), exact: the minimum over
/// the features of the same expressions as [`squared_edt_3d`] (which returns the value at
/// the minimiser its envelope chose, so the two may differ in the last bit at near-ties),
/// computed for the queries only.
///
/// The x pass of a binary image needs no envelope: the nearest feature of a row is found
/// by one scan each way. The y pass minimises near each site ([`nearby_line`]), falling
/// back to the exact envelope for lines whose sites are far from every feature. The z
/// pass, usually short (ACDC has 6 to 21 slices), is evaluated at the queries only:
/// `min_z' wz (z - z')^2 + g(z')` from the query's own plane outward, stopping once the z
/// step alone is no better, the very expression the envelope evaluates at its minimiser.
pub(crate) fn squared_distances_at(
    features: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    queries: &[[usize; 3]],
) -> Vec<f64> {
    let [nz, ny, nx] = dims;
    assert_eq!(features.len(), nz * ny * nx, "features fill the grid");
    if nz > DIRECT_Z {
        let d = squared_edt_3d_yxz(&|z, y, x| features[(z * ny + y) * nx + x], dims, spacing);
        return queries
            .iter()
            .map(|&[z, y, x]| d[(y * nx + x) * nz + z])
            .collect();
    }
    let [wz, wy, wx] = spacing.map(|s| s * s);
    // Per z plane: pass x per row into a transposed scratch plane ([x][y], so the y lines
    // are contiguous), then pass y per line into g, laid out [z][y][x].
    let mut g = vec![0.0f64; nz * ny * nx];
    g.par_chunks_mut(ny * nx)
        .zip(features.par_chunks(ny * nx))
        .for_each_init(
            || {
                (
                    vec![0.0; nx * ny],
                    vec![0.0; 16 * nx],
                    vec![0.0; ny],
                    vec![0usize; ny],
                    Scratch::default(),
                )
            },
            |(tp, rows, out, arg, s), (plane, feat)| {
                // Rows in blocks, transposed block-wise: each x writes 16 contiguous values.
                const BLOCK: usize = 16;
                for y0 in (0..ny).step_by(BLOCK) {
                    let b = BLOCK.min(ny - y0);
                    for r in 0..b {
                        let y = y0 + r;
                        row_pass(
                            &feat[y * nx..(y + 1) * nx],
                            wx,
                            &mut rows[r * nx..(r + 1) * nx],
                        );
                    }
                    for x in 0..nx {
                        for r in 0..b {
                            tp[x * ny + y0 + r] = rows[r * nx + x];
                        }
                    }
                }
                for x in 0..nx {
                    let line = &tp[x * ny..(x + 1) * ny];
                    if !line.iter().any(|v| v.is_finite()) {
                        out.fill(f64::INFINITY);
                    } else if !nearby_line(line, wy, out) {
                        envelope_1d(line, wy, out, arg, s);
                    }
                    for (y, &v) in out.iter().enumerate() {
                        plane[y * nx + x] = v;
                    }
                }
            },
        );
    // Pass z at each query: its own plane first, then outward while the z step alone
    // (wz dz^2) is below the best value.
    queries
        .par_iter()
        .map(|&[z, y, x]| {
            let at = |p: usize| g[(p * ny + y) * nx + x];
            let mut best = at(z);
            for dz in 1..nz {
                let d = dz as f64;
                let step = wz * d * d;
                if step >= best {
                    break;
                }
                if dz <= z {
                    best = lesser(best, step + at(z - dz));
                }
                if z + dz < nz {
                    best = lesser(best, step + at(z + dz));
                }
            }
            best
        })
        .collect()
}

/// The smaller of two values that are never NaN (one compare, unlike `f64::min`).
#[inline]
fn lesser(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

/// Steps [`nearby_line`] may look on each side before it gives the line up.
const NEARBY: usize = 32;

/// The y pass of one line by direct minimisation near each site, `out[q] = min_p w (q -
/// p)^2 + f[p]`: from `q` outward, stopping once `w d^2` alone reaches the best value
/// (exact, as `f >= 0`). Dense surfaces settle each site within a few steps; when one is
/// not settled within [`NEARBY`] steps on each side, the line is left to the envelope
/// (returns false).
fn nearby_line(f: &[f64], w: f64, out: &mut [f64]) -> bool {
    let n = f.len();
    for q in 0..n {
        let qf = q as f64;
        let mut best = f[q];
        let mut step = 1;
        loop {
            let d = step as f64;
            if w * d * d >= best {
                break;
            }
            if step > NEARBY {
                return false;
            }
            if step <= q {
                let dd = qf - (q - step) as f64;
                best = lesser(best, w * dd * dd + f[q - step]);
            }
            if q + step < n {
                let dd = qf - (q + step) as f64;
                best = lesser(best, w * dd * dd + f[q + step]);
            }
            step += 1;
        }
        out[q] = best;
    }
    true
}

/// The x pass of one row of a binary image: `out[q] = w (q - p)^2` for the nearest
/// feature `p` of the row, `+inf` without one.
fn row_pass(features: &[bool], w: f64, out: &mut [f64]) {
    let mut last: Option<usize> = None;
    for (q, (&f, o)) in features.iter().zip(out.iter_mut()).enumerate() {
        if f {
            last = Some(q);
        }
        *o = match last {
            Some(p) => {
                let d = q as f64 - p as f64;
                w * d * d
            }
            None => f64::INFINITY,
        };
    }
    let mut next: Option<usize> = None;
    for (q, (&f, o)) in features.iter().zip(out.iter_mut()).enumerate().rev() {
        if f {
            next = Some(q);
        }
        if let Some(p) = next {
            let d = q as f64 - p as f64;
            *o = lesser(*o, w * d * d);
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
            let queries: Vec<[usize; 3]> = m.indexed_iter().map(|((z, y, x), _)| [z, y, x]).collect();
            let fast = squared_distances_at(&feats, [nz, ny, nx], sp, &queries);
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
    fn far_sites_leave_the_line_to_the_envelope() {
        let w = 2.25;
        let mut f = vec![f64::INFINITY; 100];
        f[99] = 0.0;
        let mut out = vec![0.0; 100];
        assert!(
            !nearby_line(&f, w, &mut out),
            "site 0 is 99 steps from the feature"
        );
        let mut dense = vec![f64::INFINITY; 100];
        for q in (0..100).step_by(5) {
            dense[q] = 1.0;
        }
        assert!(nearby_line(&dense, w, &mut out));
        let (mut env, mut arg) = (vec![0.0; 100], vec![0; 100]);
        envelope_1d(&dense, w, &mut env, &mut arg, &mut Scratch::default());
        assert_eq!(out, env);
    }

    #[test]
    fn a_line_far_from_its_feature_goes_through_the_envelope() {
        // One feature at the end of a 100-voxel y line: no site near the other end settles
        // within NEARBY steps, so squared_distances_at takes the envelope for it.
        let (nz, ny, nx) = (2, 100, 2);
        let mut m = Array3::from_elem((nz, ny, nx), false);
        m[[1, 99, 1]] = true;
        let feats: Vec<bool> = m.iter().copied().collect();
        let queries: Vec<[usize; 3]> = m.indexed_iter().map(|((z, y, x), _)| [z, y, x]).collect();
        let sp = [10.0, 1.5, 1.25];
        let fast = squared_distances_at(&feats, [nz, ny, nx], sp, &queries);
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
