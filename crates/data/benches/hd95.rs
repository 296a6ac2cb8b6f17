//! HD95 on a 256 x 256 x 10 volume (1.5 x 1.5 x 10 mm), per class, for heart-sized masks
//! and for masks spanning the whole field of view (worst case for the cropped transform).
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{Criterion, criterion_group, criterion_main};
use slimseg_data::metrics::{Convention, evaluate_volume, hd95};
use slimseg_data::synth::heart_phantom;

fn bench(c: &mut Criterion) {
    let spacing = [10.0, 1.5, 1.5];
    for (name, r) in [("heart_sized", 18.0f32), ("full_fov", 70.0)] {
        let gt = heart_phantom((10, 256, 256), (128.0, 140.0), r);
        let pred = heart_phantom((10, 256, 256), (130.0, 137.0), r * 1.08);
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
