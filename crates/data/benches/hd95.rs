//! HD95 on a 256 x 256 x 10 volume (1.5 x 1.5 x 10 mm), per class, for heart-sized masks
//! and for masks spanning the whole field of view (worst case for the cropped transform).
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::Array3;
use slimseg_data::metrics::{Convention, evaluate_volume, hd95};

/// Concentric LV / MYO and an RV crescent, centre `c`, LV radius `r` (pixels), shrinking
/// toward the apex slices.
fn heart(c: (f32, f32), r: f32) -> Array3<u8> {
    Array3::from_shape_fn((10, 256, 256), |(z, y, x)| {
        let f = (1.0 - (z as f32 / 10.5).powi(2)).sqrt();
        let (dy, dx) = (y as f32 - c.0, x as f32 - c.1);
        let d = (dy * dy + dx * dx).sqrt();
        let rv = ((dx + 1.3 * r * f) / (0.8 * r * f)).powi(2) + (dy / (1.4 * r * f)).powi(2);
        if d < r * f {
            3
        } else if d < (r + 6.0) * f {
            2
        } else if rv < 1.0 {
            1
        } else {
            0
        }
    })
}

fn bench(c: &mut Criterion) {
    let spacing = [10.0, 1.5, 1.5];
    for (name, r) in [("heart_sized", 18.0f32), ("full_fov", 70.0)] {
        let gt = heart((128.0, 140.0), r);
        let pred = heart((130.0, 137.0), r * 1.08);
        let mut g = c.benchmark_group(format!("hd95_256x256x10_{name}"));
        for (class, label) in [("RV", 1u8), ("MYO", 2), ("LV", 3)] {
            let (p, t) = (pred.mapv(|v| v == label), gt.mapv(|v| v == label));
            g.bench_function(format!("{class}_mm"), |b| {
                b.iter(|| hd95(p.view(), t.view(), spacing))
            });
        }
        g.bench_function("evaluate_volume_3_classes_dice_hd95mm_hd95vox", |b| {
            b.iter(|| {
                evaluate_volume(pred.view(), gt.view(), spacing, Convention::TransUnet)
                    .expect("same shape")
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
