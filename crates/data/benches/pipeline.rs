//! Slices per second through the training pipeline: TransUNet augmentation at native size
//! then resize to 224 (cubic image, nearest labels), batches of 24 built in parallel.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use slimseg_data::AcdcDataset;
use slimseg_data::pipeline::{Normalization, PipelineConfig, SliceDataset, resize_cubic};
use slimseg_data::synth::{SynthConfig, generate};

fn dataset() -> SliceDataset {
    let root = std::env::temp_dir().join(format!("slimseg-bench-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // Default matrix sizes (200-260 per side), as in ACDC.
    let cfg = SynthConfig {
        training: 6,
        testing: 0,
        write_4d: false,
        ..SynthConfig::default()
    };
    generate(&root, &cfg).expect("synthetic cohort");
    let ds = AcdcDataset::open(&root).expect("open");
    let frames = ds.load_labelled_frames(&ds.ids()).expect("frames");
    let data = SliceDataset::from_frames(&frames, Normalization::MinMax).expect("slices");
    let _ = std::fs::remove_dir_all(&root);
    data
}

fn bench(c: &mut Criterion) {
    let data = dataset();
    let n = data.len();
    let mut g = c.benchmark_group("pipeline_224");
    g.throughput(Throughput::Elements(24));
    for (name, augment, dirs) in [
        ("augment+resize", true, false),
        ("resize_only", false, false),
        ("augment+resize+direction_fields", true, true),
    ] {
        let cfg = PipelineConfig {
            augment,
            direction_fields: dirs,
            ..PipelineConfig::default()
        };
        let mut epoch = 0u64;
        g.bench_function(format!("batch24_{name}"), |b| {
            b.iter(|| {
                epoch += 1;
                let start = (epoch as usize * 24) % (n - 24);
                let idx: Vec<usize> = (start..start + 24).collect();
                data.make_batch(&idx, &cfg, epoch).expect("batch")
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("resize_cubic");
    g.throughput(Throughput::Elements(1));
    let img = data.slices[0].image.clone();
    g.bench_function(
        format!("{}x{}_to_224_single_thread", img.dim().0, img.dim().1),
        |b| b.iter(|| resize_cubic(img.view(), 224, 224)),
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
