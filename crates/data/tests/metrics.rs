//! Dice and HD95 against brute-force references (medpy semantics), and the empty-mask
//! conventions.

use ndarray::{Array3, s};
use proptest::prelude::*;
use slimseg_data::metrics::{
    Convention, border, dice, evaluate_class, evaluate_volume, hd95, percentile_linear,
};

/// medpy's border: mask voxels with a face neighbour outside the mask or the array.
fn brute_border(m: &Array3<bool>) -> Vec<(usize, usize, usize)> {
    let (nz, ny, nx) = m.dim();
    let get = |z: isize, y: isize, x: isize| {
        z >= 0
            && y >= 0
            && x >= 0
            && (z as usize) < nz
            && (y as usize) < ny
            && (x as usize) < nx
            && m[[z as usize, y as usize, x as usize]]
    };
    m.indexed_iter()
        .filter(|&((z, y, x), &v)| {
            let (z, y, x) = (z as isize, y as isize, x as isize);
            v && !(get(z - 1, y, x)
                && get(z + 1, y, x)
                && get(z, y - 1, x)
                && get(z, y + 1, x)
                && get(z, y, x - 1)
                && get(z, y, x + 1))
        })
        .map(|(i, _)| i)
        .collect()
}

fn brute_hd95(a: &Array3<bool>, b: &Array3<bool>, sp: [f64; 3]) -> Option<f64> {
    let (ba, bb) = (brute_border(a), brute_border(b));
    if ba.is_empty() || bb.is_empty() {
        return None;
    }
    let dist = |p: &(usize, usize, usize), q: &(usize, usize, usize)| {
        let dz = (p.0 as f64 - q.0 as f64) * sp[0];
        let dy = (p.1 as f64 - q.1 as f64) * sp[1];
        let dx = (p.2 as f64 - q.2 as f64) * sp[2];
        (dz * dz + dy * dy + dx * dx).sqrt()
    };
    let mut all: Vec<f64> = ba
        .iter()
        .map(|p| bb.iter().map(|q| dist(p, q)).fold(f64::INFINITY, f64::min))
        .collect();
    all.extend(
        bb.iter()
            .map(|p| ba.iter().map(|q| dist(p, q)).fold(f64::INFINITY, f64::min)),
    );
    all.sort_by(|x, y| x.total_cmp(y));
    // numpy.percentile(..., 95), linear interpolation.
    let pos = 0.95 * (all.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(all[lo] + (all[hi] - all[lo]) * (pos - lo as f64))
}

/// `hd95` equals the brute force up to rounding, or both are undefined.
fn hd95_equals_brute_force(
    a: &Array3<bool>,
    b: &Array3<bool>,
    sp: [f64; 3],
) -> Result<(), TestCaseError> {
    match (hd95(a.view(), b.view(), sp), brute_hd95(a, b, sp)) {
        (Some(g), Some(w)) => prop_assert!((g - w).abs() <= 1e-9 * w.max(1.0), "{} vs {}", g, w),
        (g, w) => prop_assert_eq!(g, w),
    }
    Ok(())
}

fn mask_strategy() -> impl Strategy<Value = (Array3<bool>, Array3<bool>)> {
    (1usize..5, 2usize..8, 2usize..8).prop_flat_map(|(nz, ny, nx)| {
        let n = nz * ny * nx;
        (
            proptest::collection::vec(proptest::bool::weighted(0.4), n),
            proptest::collection::vec(proptest::bool::weighted(0.4), n),
        )
            .prop_map(move |(a, b)| {
                (
                    Array3::from_shape_vec((nz, ny, nx), a).unwrap(),
                    Array3::from_shape_vec((nz, ny, nx), b).unwrap(),
                )
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn border_and_its_box_equal_brute_force(
        dims in (1usize..5, 1usize..8, 1usize..8),
        bits in proptest::collection::vec(proptest::bool::weighted(0.6), 256),
        flip in any::<bool>(),
    ) {
        let (_, ny, nx) = dims;
        let m = Array3::from_shape_fn(dims, |(z, y, x)| bits[(z * ny + y) * nx + x]);
        // A view with a negative stride is not in standard layout.
        let view = if flip { m.slice(s![.., ..;-1, ..]) } else { m.view() };
        let got = border(view);
        let owned = view.to_owned();
        let want = brute_border(&owned);
        let got_voxels: Vec<(usize, usize, usize)> =
            got.mask.indexed_iter().filter(|(_, b)| **b).map(|(i, _)| i).collect();
        prop_assert_eq!(&got_voxels, &want);
        let want_box = (!want.is_empty()).then(|| {
            let lo = [0, 1, 2].map(|a| want.iter().map(|p| [p.0, p.1, p.2][a]).min().unwrap());
            let hi = [0, 1, 2].map(|a| want.iter().map(|p| [p.0, p.1, p.2][a]).max().unwrap());
            [lo, hi]
        });
        prop_assert_eq!(got.bounds, want_box);
    }

    #[test]
    fn hd95_of_volumes_with_many_slices_equals_brute_force(
        a in proptest::collection::vec(proptest::bool::weighted(0.2), 36 * 3 * 4),
        b in proptest::collection::vec(proptest::bool::weighted(0.2), 36 * 3 * 4),
        sp in (0.5f64..3.0, 0.5f64..2.0, 0.5f64..2.0),
    ) {
        // More than 32 slices: the distances come from the full transform, read at the
        // border voxels only.
        let shape = (36, 3, 4);
        let ma = Array3::from_shape_vec(shape, a).unwrap();
        let mb = Array3::from_shape_vec(shape, b).unwrap();
        hd95_equals_brute_force(&ma, &mb, [sp.0, sp.1, sp.2])?;
    }

    #[test]
    fn hd95_of_far_apart_masks_in_part_of_the_volume_equals_brute_force(
        a in proptest::collection::vec(proptest::bool::weighted(0.3), 2 * 6 * 8),
        b in proptest::collection::vec(proptest::bool::weighted(0.3), 3 * 6 * 8),
        sp in (1.0f64..12.0, 0.5f64..2.0, 0.5f64..2.0),
    ) {
        // `a` in the first rows of slices 1..3, `b` in the last rows of slices 0..3, both
        // in columns 4..12 of 20: the distances are cropped to a box, and most are longer
        // than the row search, so they go through the column envelopes.
        let shape = (4, 50, 20);
        let ma = Array3::from_shape_fn(shape, |(z, y, x)| {
            (1..3).contains(&z) && y < 6 && (4..12).contains(&x) && a[((z - 1) * 6 + y) * 8 + x - 4]
        });
        let mb = Array3::from_shape_fn(shape, |(z, y, x)| {
            z < 3 && y >= 44 && (4..12).contains(&x) && b[(z * 6 + y - 44) * 8 + x - 4]
        });
        hd95_equals_brute_force(&ma, &mb, [sp.0, sp.1, sp.2])?;
    }

    #[test]
    fn dice_and_hd95_equal_brute_force(
        (a, b) in mask_strategy(),
        sp in (1.0f64..12.0, 0.5f64..2.0, 0.5f64..2.0),
    ) {
        let sp = [sp.0, sp.1, sp.2];
        let (na, nb) = (a.iter().filter(|&&v| v).count(), b.iter().filter(|&&v| v).count());
        let nab = a.iter().zip(b.iter()).filter(|(x, y)| **x && **y).count();
        let want_dice = (na + nb > 0).then(|| 2.0 * nab as f64 / (na + nb) as f64);
        prop_assert_eq!(dice(a.view(), b.view()), want_dice);
        for spacing in [sp, [1.0; 3]] {
            hd95_equals_brute_force(&a, &b, spacing)?;
        }
    }
}

#[test]
fn hd95_hand_cases() {
    // Two single voxels 3 slices apart at 10 mm: every distance is 30 mm.
    let mut a = Array3::from_elem((5, 3, 3), false);
    let mut b = a.clone();
    a[[0, 1, 1]] = true;
    b[[3, 1, 1]] = true;
    assert_eq!(hd95(a.view(), b.view(), [10.0, 1.5, 1.5]), Some(30.0));
    assert_eq!(hd95(a.view(), b.view(), [1.0; 3]), Some(3.0));
    assert_eq!(hd95(a.view(), a.view(), [10.0, 1.5, 1.5]), Some(0.0));
    let mut v = vec![1.0, 2.0, 3.0, 4.0, 5.0];
    assert!((percentile_linear(&mut v, 95.0) - 4.8).abs() < 1e-12);
    // numpy 2.4.6 `np.percentile(v, 95)`, to the bit: numpy interpolates from the nearer
    // end (`a + (b - a) t` would give ...142).
    let mut v = vec![9.574887923797217, 6.535439616905504, 8.276847177866479];
    assert_eq!(percentile_linear(&mut v, 95.0), 9.445083849204144);
}

#[test]
fn conventions_on_empty_masks() {
    let empty = Array3::from_elem((2, 4, 4), false);
    let mut some = empty.clone();
    some[[0, 1, 1]] = true;
    let sp = [10.0, 1.5, 1.5];
    let t = Convention::TransUnet;
    let s = Convention::Strict;
    // pred>0, gt=0
    let m = evaluate_class(some.view(), empty.view(), sp, t);
    assert_eq!(
        (m.dice, m.hd95_mm, m.hd95_vox),
        (Some(1.0), Some(0.0), Some(0.0))
    );
    let m = evaluate_class(some.view(), empty.view(), sp, s);
    assert_eq!((m.dice, m.hd95_mm, m.hd95_vox), (Some(0.0), None, None));
    // pred=0, gt>0
    let m = evaluate_class(empty.view(), some.view(), sp, t);
    assert_eq!((m.dice, m.hd95_mm), (Some(0.0), Some(0.0)));
    let m = evaluate_class(empty.view(), some.view(), sp, s);
    assert_eq!((m.dice, m.hd95_mm), (Some(0.0), None));
    // both empty
    let m = evaluate_class(empty.view(), empty.view(), sp, t);
    assert_eq!((m.dice, m.hd95_mm), (Some(0.0), Some(0.0)));
    let m = evaluate_class(empty.view(), empty.view(), sp, s);
    assert_eq!((m.dice, m.hd95_mm), (None, None));
    assert_eq!(Convention::parse("TransUNet"), Some(t));
    assert_eq!(Convention::parse("strict"), Some(s));
}

#[test]
fn evaluate_volume_scores_each_class() {
    let gt = Array3::from_shape_fn((3, 8, 8), |(_, y, x)| match (y, x) {
        (1..=2, 1..=2) => 1u8,
        (4..=6, 4..=6) => 3,
        (3, 3..=7) => 2,
        _ => 0,
    });
    let mut pred = gt.clone();
    pred[[1, 3, 3]] = 0; // one MYO voxel missed
    let m = evaluate_volume(pred.view(), gt.view(), [10.0, 1.0, 1.0], Convention::Strict).unwrap();
    assert_eq!(m.classes[0].dice, Some(1.0));
    assert_eq!(m.classes[2].hd95_mm, Some(0.0));
    let d = m.classes[1].dice.unwrap();
    assert!((d - 2.0 * 14.0 / 29.0).abs() < 1e-12, "{d}");
    assert!(
        evaluate_volume(
            pred.view(),
            gt.slice(ndarray::s![..2, .., ..]),
            [1.0; 3],
            Convention::Strict
        )
        .is_err()
    );
}
