//! 2D pipeline: resize, augmentation, normalisation, deterministic batches, direction
//! fields.

use ndarray::{Array2, Array3};
use proptest::prelude::*;
use slimseg_data::direction::direction_field;
use slimseg_data::pipeline::{
    Augmentation, InferenceVolume, Normalization, PipelineConfig, SliceDataset,
    augment_resize_into, flip, normalize_volume, resize_cubic, resize_nearest, rot90,
    rot90_flip_view, rotate_nearest,
};
use slimseg_data::synth::{SynthConfig, generate};
use slimseg_data::{AcdcDataset, Phase};

fn labels_strategy() -> impl Strategy<Value = Array2<u8>> {
    (1usize..24, 1usize..24).prop_flat_map(|(h, w)| {
        proptest::collection::vec(0u8..4, h * w)
            .prop_map(move |v| Array2::from_shape_vec((h, w), v).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn resize_and_augmentation_keep_labels_in_range(
        lab in labels_strategy(),
        out in (1usize..40, 1usize..40),
        deg in -20.0f32..20.0,
        k in 0u8..4,
        axis in 0u8..2,
    ) {
        let r = resize_nearest(lab.view(), out.0, out.1);
        prop_assert_eq!(r.dim(), out);
        prop_assert!(r.iter().all(|&v| v <= 3));
        for aug in [Augmentation::Rotate { degrees: deg }, Augmentation::Rot90Flip { k, axis }] {
            let a = aug.apply(lab.view());
            prop_assert!(a.iter().all(|&v| v <= 3));
            // Every output value comes from the input (or is the zero fill).
            let present: std::collections::BTreeSet<u8> = lab.iter().copied().chain([0]).collect();
            prop_assert!(a.iter().all(|v| present.contains(v)));
        }
    }

    #[test]
    fn rot90_flip_is_invertible(lab in labels_strategy(), k in 0u8..4, axis in 0u8..2) {
        let aug = Augmentation::Rot90Flip { k, axis };
        let a = aug.apply(lab.view());
        let back = aug.inverse().unwrap().apply(a.view());
        prop_assert_eq!(back, lab.clone());
        // The strided view equals the copy.
        prop_assert_eq!(rot90_flip_view(lab.view(), k, axis).to_owned(), a.clone());
        // Four quarter turns and two flips are identities.
        prop_assert_eq!(rot90(rot90(rot90(rot90(lab.view(), 1).view(), 1).view(), 1).view(), 1), lab.clone());
        prop_assert_eq!(flip(flip(lab.view(), axis).view(), axis), lab);
    }

    #[test]
    fn zero_rotation_and_same_size_resize_are_identities(
        img in (1usize..20, 1usize..20).prop_flat_map(|(h, w)| proptest::collection::vec(-1.0f32..1.0, h * w)
            .prop_map(move |v| Array2::from_shape_vec((h, w), v).unwrap())),
    ) {
        prop_assert_eq!(rotate_nearest(img.view(), 0.0), img.clone());
        prop_assert_eq!(Augmentation::Rotate { degrees: 0.0 }.apply(img.view()), img.clone());
        let (h, w) = img.dim();
        prop_assert_eq!(resize_nearest(img.view(), h, w), img.clone());
        // Cubic B-spline interpolation reproduces the samples at the nodes.
        let c = resize_cubic(img.view(), h, w);
        for (a, b) in c.iter().zip(img.iter()) {
            prop_assert!((a - b).abs() < 1e-4, "{} vs {}", a, b);
        }
    }
}

#[test]
fn fused_augment_resize_equals_augment_then_resize() {
    let img = Array2::from_shape_fn((23, 31), |(y, x)| {
        ((y * 7 + x * 3) % 17) as f32 / 17.0 + 0.01 * x as f32
    });
    let lab = Array2::from_shape_fn((23, 31), |(y, x)| ((y / 5 + x / 7) % 4) as u8);
    let mut augs = vec![
        Augmentation::Identity,
        Augmentation::Rotate { degrees: 17.5 },
        Augmentation::Rotate { degrees: -20.0 },
    ];
    for k in 0..4 {
        for axis in 0..2 {
            augs.push(Augmentation::Rot90Flip { k, axis });
        }
    }
    for aug in augs {
        let (mut io, mut lo) = (vec![0.0f32; 40 * 40], vec![0i64; 40 * 40]);
        augment_resize_into(img.view(), lab.view(), aug, 40, &mut io, &mut lo);
        let want_img = resize_cubic(aug.apply(img.view()).view(), 40, 40);
        let want_lab = resize_nearest(aug.apply(lab.view()).view(), 40, 40);
        for (g, w) in io.iter().zip(want_img.iter()) {
            assert!((g - w).abs() < 1e-6, "{aug:?}: {g} vs {w}");
        }
        assert!(
            lo.iter().zip(want_lab.iter()).all(|(g, w)| *g == *w as i64),
            "{aug:?}"
        );
    }
}

#[test]
fn rot90_matches_numpy_convention() {
    // np.rot90([[1, 2], [3, 4]]) == [[2, 4], [1, 3]]
    let a = Array2::from_shape_vec((2, 2), vec![1, 2, 3, 4]).unwrap();
    assert_eq!(
        rot90(a.view(), 1).into_raw_vec_and_offset().0,
        vec![2, 4, 1, 3]
    );
    assert_eq!(
        flip(a.view(), 0).into_raw_vec_and_offset().0,
        vec![3, 4, 1, 2]
    );
    let r = rotate_nearest(
        Array2::from_shape_fn((5, 5), |(y, x)| (y * 5 + x) as u8).view(),
        90.0,
    );
    assert_eq!(r[[2, 2]], 12, "rotation is about the centre");
}

#[test]
fn cubic_resize_is_smooth_and_preserves_constants() {
    let c = Array2::from_elem((37, 53), 0.25f32);
    let r = resize_cubic(c.view(), 224, 224);
    assert!(r.iter().all(|v| (v - 0.25).abs() < 1e-5));
    // A smooth ramp upsampled stays a ramp in the interior (cubic splines reproduce
    // polynomials away from the mirror boundary).
    let ramp = Array2::from_shape_fn((64, 64), |(y, x)| 0.01 * y as f32 + 0.02 * x as f32);
    let r = resize_cubic(ramp.view(), 127, 127);
    for y in 20..100 {
        for x in 20..100 {
            let want = 0.01 * (y as f32 * 0.5) + 0.02 * (x as f32 * 0.5);
            assert!(
                (r[[y, x]] - want).abs() < 1e-4,
                "{y},{x}: {} vs {want}",
                r[[y, x]]
            );
        }
    }
}

#[test]
fn normalisation_per_volume() {
    let mut v = Array3::from_shape_fn((2, 3, 4), |(z, y, x)| {
        (z * 12 + y * 4 + x) as f32 * 3.0 + 5.0
    });
    normalize_volume(&mut v, Normalization::MinMax);
    assert_eq!(v.iter().cloned().fold(f32::INFINITY, f32::min), 0.0);
    assert_eq!(v.iter().cloned().fold(f32::NEG_INFINITY, f32::max), 1.0);
    let mut z = Array3::from_shape_fn((2, 3, 4), |(a, b, c)| (a + b * c) as f32);
    normalize_volume(&mut z, Normalization::ZScore);
    let mean = z.iter().sum::<f32>() / z.len() as f32;
    let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / z.len() as f32;
    assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4);
}

fn small_dataset() -> SliceDataset {
    // One directory per call: tests run in parallel threads.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slimseg-pipeline-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    generate(&root, &SynthConfig::small(2, 0, 3)).unwrap();
    let ds = AcdcDataset::open(&root).unwrap();
    let frames = ds.load_labelled_frames(&ds.ids()).unwrap();
    let _ = std::fs::remove_dir_all(&root);
    SliceDataset::from_frames(&frames, Normalization::MinMax).unwrap()
}

#[test]
fn batches_are_contiguous_deterministic_and_in_range() {
    let data = small_dataset();
    assert!(data.len() >= 24, "{} slices", data.len());
    let cfg = PipelineConfig {
        size: 64,
        batch_size: 5,
        direction_fields: true,
        seed: 77,
        ..PipelineConfig::default()
    };
    let run = |cfg: &PipelineConfig, epoch| {
        data.epoch(cfg, epoch)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let a = run(&cfg, 0);
    let b = run(&cfg, 0);
    assert_eq!(a.len(), data.len() / 5);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.images, y.images);
        assert_eq!(x.labels, y.labels);
        assert_eq!(x.directions, y.directions);
        assert_eq!(x.ids, y.ids);
    }
    let first = &a[0];
    assert_eq!(first.image_shape(), [5, 1, 64, 64]);
    assert_eq!(first.images.len(), 5 * 64 * 64);
    assert_eq!(first.labels.len(), 5 * 64 * 64);
    assert_eq!(first.directions.as_ref().unwrap().len(), 5 * 2 * 64 * 64);
    assert!(
        a.iter()
            .all(|bt| bt.labels.iter().all(|&l| (0..=3).contains(&l)))
    );
    assert!(a.iter().all(|bt| bt.images.iter().all(|v| v.is_finite())));
    // Another epoch or seed gives another order and other augmentations.
    let c = run(&cfg, 1);
    assert_ne!(a[0].ids, c[0].ids);
    let d = run(
        &PipelineConfig {
            seed: 78,
            ..cfg.clone()
        },
        0,
    );
    assert_ne!(a[0].ids, d[0].ids);
    // The same sample is augmented the same way whichever batch it lands in.
    let idx = [3usize, 1, 4];
    let e1 = data.make_batch(&idx, &cfg, 5).unwrap();
    let e2 = data.make_batch(&[4, 3], &cfg, 5).unwrap();
    let plane = 64 * 64;
    assert_eq!(e1.images[..plane], e2.images[plane..2 * plane]);
    assert_eq!(e1.augmentations[2], e2.augmentations[0]);
    // Augmentations are drawn from all three branches.
    let augs: Vec<_> = a.iter().flat_map(|b| b.augmentations.clone()).collect();
    assert!(
        augs.iter()
            .any(|a| matches!(a, Augmentation::Rot90Flip { .. }))
    );
    assert!(
        augs.iter()
            .any(|a| matches!(a, Augmentation::Rotate { .. }))
    );
    assert!(augs.iter().any(|a| matches!(a, Augmentation::Identity)));
    // Direction fields of the batch equal those of the batch labels.
    let lab = Array2::from_shape_fn((64, 64), |(y, x)| first.labels[y * 64 + x] as u8);
    let df = direction_field(lab.view());
    assert_eq!(
        df.as_slice().unwrap(),
        &first.directions.as_ref().unwrap()[..2 * plane]
    );
    // Each augmented sample equals augmenting the native slice then resizing it.
    for bt in &a[..2] {
        for (k, aug) in bt.augmentations.iter().enumerate() {
            let sl = data.slices.iter().find(|s| s.id == bt.ids[k]).unwrap();
            let img = resize_cubic(aug.apply(sl.image.view()).view(), 64, 64);
            let lab = resize_nearest(aug.apply(sl.labels.view()).view(), 64, 64);
            let got = &bt.images[k * plane..(k + 1) * plane];
            for (g, w) in got.iter().zip(img.iter()) {
                assert!((g - w).abs() < 1e-5, "{aug:?}: {g} vs {w}");
            }
            let got_lab = &bt.labels[k * plane..(k + 1) * plane];
            assert!(
                got_lab.iter().zip(lab.iter()).all(|(g, w)| *g == *w as i64),
                "{aug:?}"
            );
        }
    }
    // No augmentation: the batch is the plain resized slice.
    let plain = PipelineConfig {
        augment: false,
        shuffle: false,
        ..cfg.clone()
    };
    let p = data.make_batch(&[0], &plain, 0).unwrap();
    let want = resize_cubic(data.slices[0].image.view(), 64, 64);
    assert_eq!(p.images, want.into_raw_vec_and_offset().0);
}

#[test]
fn inference_volume_round_trips_labels() {
    let data = small_dataset();
    let s0 = &data.slices[0];
    let (h, w) = s0.image.dim();
    let vol = Array3::from_shape_fn((2, h, w), |(_, y, x)| s0.image[[y, x]]);
    let iv = InferenceVolume::new(&vol, Normalization::MinMax, 224);
    assert_eq!(iv.image_shape(), [2, 1, 224, 224]);
    // Predicting the resized ground truth and restoring it gives back the ground truth
    // up to nearest-neighbour round-off on boundaries.
    let small = resize_nearest(s0.labels.view(), 224, 224);
    let mut pred: Vec<i64> = Vec::new();
    for _ in 0..2 {
        pred.extend(small.iter().map(|&v| v as i64));
    }
    let back = iv.restore(&pred).unwrap();
    assert_eq!(back.dim(), (2, h, w));
    let agree = back
        .index_axis(ndarray::Axis(0), 1)
        .iter()
        .zip(s0.labels.iter())
        .filter(|(a, b)| a == b)
        .count();
    assert!(agree as f64 / (h * w) as f64 > 0.99, "{agree} of {}", h * w);
    assert!(iv.restore(&pred[1..]).is_err());
    let _ = Phase::ED;
}
