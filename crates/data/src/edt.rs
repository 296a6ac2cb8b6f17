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
    fn no_features_gives_infinity() {
        let m = Array3::from_elem((2, 3, 4), false);
        assert!(
            squared_edt_3d(m.view(), [1.0; 3])
                .iter()
                .all(|v| v.is_infinite())
        );
    }
}
