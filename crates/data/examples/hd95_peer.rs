//! The Rust half of `scripts/hd95_vs_medpy.py`: writes mask pairs (raw `u8`, `[z, y, x]`,
//! 10 x 256 x 256) into a folder and prints, per pair, slimseg's HD95 (spacing 10 x 1.5 x
//! 1.5 mm) and its median time over repeated calls as JSON lines. The script times medpy
//! on the same files in the same run and compares the values.
//!
//! Pairs: the RV, MYO and LV of an ACDC-like heart (concentric LV and MYO, an RV
//! crescent, shrinking toward the apex) against a perturbed copy (shifted by 2 and 3
//! pixels, 6% larger), two independent fields of random blobs filling about half the
//! volume (surfaces everywhere), and two squares far apart (a prediction in the wrong
//! place: every distance is long).
//!
//! `cargo run --release -p slimseg-data --example hd95_peer -- OUT_DIR [REPEATS]`

use std::time::Instant;

use ndarray::Array3;
use rand::{Rng, SeedableRng};
use slimseg_data::metrics::hd95;
use slimseg_data::synth::heart_phantom;

const SHAPE: (usize, usize, usize) = (10, 256, 256);
const SPACING: [f64; 3] = [10.0, 1.5, 1.5];

/// Union of random ellipsoids covering about half of the volume.
fn blobs(seed: u64) -> Array3<bool> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut m = Array3::from_elem(SHAPE, false);
    let n = SHAPE.0 * SHAPE.1 * SHAPE.2;
    while m.iter().filter(|&&v| v).count() < n / 2 {
        let c = [
            rng.gen_range(0.0..SHAPE.0 as f32),
            rng.gen_range(0.0..SHAPE.1 as f32),
            rng.gen_range(0.0..SHAPE.2 as f32),
        ];
        let r = [
            rng.gen_range(0.8..2.5f32),
            rng.gen_range(4.0..20.0f32),
            rng.gen_range(4.0..20.0f32),
        ];
        for ((z, y, x), v) in m.indexed_iter_mut() {
            let q = [z as f32, y as f32, x as f32];
            if (0..3).map(|a| ((q[a] - c[a]) / r[a]).powi(2)).sum::<f32>() < 1.0 {
                *v = true;
            }
        }
    }
    m
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).expect("usage: hd95_peer OUT_DIR [REPEATS]"));
    let repeats: usize = args
        .get(2)
        .map_or(7, |s| s.parse().expect("REPEATS"))
        .max(1);
    std::fs::create_dir_all(&out).expect("OUT_DIR");
    let gt = heart_phantom(SHAPE, (128.0, 140.0), 18.0);
    let pred = heart_phantom(SHAPE, (130.0, 137.0), 18.0 * 1.06);
    let mut pairs: Vec<(String, Array3<bool>, Array3<bool>)> = [("RV", 1u8), ("MYO", 2), ("LV", 3)]
        .into_iter()
        .map(|(name, c)| {
            (
                format!("heart_{name}"),
                pred.mapv(|v| v == c),
                gt.mapv(|v| v == c),
            )
        })
        .collect();
    pairs.push(("random_blobs".into(), blobs(1), blobs(2)));
    // A prediction in the wrong place: two 80 x 80 squares 64 columns apart, in 4 of the
    // 10 slices against all 10 (long searches along y and z for every border voxel).
    let square = |x0: usize, z: std::ops::Range<usize>| {
        Array3::from_shape_fn(SHAPE, |(k, y, x)| {
            z.contains(&k) && (88..168).contains(&y) && (x0..x0 + 80).contains(&x)
        })
    };
    pairs.push(("far_apart".into(), square(16, 3..7), square(160, 0..10)));
    for (name, p, g) in &pairs {
        for (suffix, m) in [("pred", p), ("gt", g)] {
            let bytes: Vec<u8> = m.iter().map(|&v| u8::from(v)).collect();
            std::fs::write(out.join(format!("{name}_{suffix}.u8")), bytes).expect("write");
        }
        let value = hd95(p.view(), g.view(), SPACING).expect("both masks non-empty");
        let mut times: Vec<f64> = (0..repeats)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(hd95(p.view(), g.view(), SPACING));
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{{\"case\": \"{name}\", \"shape\": [{}, {}, {}], \"hd95\": {value:?}, \"median_s\": {}}}",
            SHAPE.0,
            SHAPE.1,
            SHAPE.2,
            times[times.len() / 2]
        );
    }
}
