//! Times each stage of the 2D pipeline (diagnostics for the benches): wall time and the
//! process CPU time per call. `STAGE=<substring>` selects stages; `STAGE=make_batch` also
//! times whole 24-slice batches on a small synthetic cohort.
//!
//! `cargo run --release -p slimseg-data --example stage_timing`

use std::time::Instant;

use ndarray::Array2;
use slimseg_data::AcdcDataset;
use slimseg_data::direction::direction_field;
use slimseg_data::pipeline::{
    Augmentation, Normalization, PipelineConfig, SliceDataset, resize_cubic, resize_nearest,
    rot90_flip, rot90_flip_view, rotation_source_map,
};
use slimseg_data::synth::{SynthConfig, generate};

fn time<T>(name: &str, n: usize, mut f: impl FnMut() -> T) {
    // STAGE=<substring> runs only the matching stages (for `perf stat`).
    if std::env::var("STAGE").is_ok_and(|s| !name.contains(&s)) {
        return;
    }
    let t = Instant::now();
    let c = cpu_seconds();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    println!(
        "{name:40} {:8.1} us wall {:8.1} us cpu (all threads)",
        t.elapsed().as_secs_f64() * 1e6 / n as f64,
        (cpu_seconds() - c) * 1e6 / n as f64
    );
}

/// User + system CPU time of this process (all threads), from /proc/self/stat (Linux);
/// 0 elsewhere. On a shared, loaded machine this is steadier than wall time.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let img = Array2::from_shape_fn((215, 208), |(y, x)| ((x * 7 + y * 13) % 255) as f32 / 255.0);
    let lab = Array2::from_shape_fn((215, 208), |(y, x)| ((x / 40 + y / 50) % 4) as u8);
    let lab224 = resize_nearest(lab.view(), 224, 224);
    // Heart-like labels: LV disk, myocardial ring, RV blob.
    let heart = Array2::from_shape_fn((224, 224), |(y, x)| {
        let (dy, dx) = (y as f32 - 110.0, x as f32 - 120.0);
        let d = (dy * dy + dx * dx).sqrt();
        if d < 18.0 {
            3u8
        } else if d < 25.0 {
            2
        } else if ((dx + 38.0) / 14.0).powi(2) + (dy / 30.0).powi(2) < 1.0 {
            1
        } else {
            0
        }
    });
    let n = 300;
    time("resize_cubic 215x208->224", n, || {
        resize_cubic(img.view(), 224, 224)
    });
    time("resize_nearest u8 215x208->224", n, || {
        resize_nearest(lab.view(), 224, 224)
    });
    time("rotate 13deg f32", n, || {
        Augmentation::Rotate { degrees: 13.0 }.apply(img.view())
    });
    time("rotate 13deg u8", n, || {
        Augmentation::Rotate { degrees: 13.0 }.apply(lab.view())
    });
    time("rot90flip f32", n, || {
        Augmentation::Rot90Flip { k: 1, axis: 1 }.apply(img.view())
    });
    time("rot90(1)+flip view -> resize_cubic", n, || {
        resize_cubic(rot90_flip_view(img.view(), 1, 0), 224, 224)
    });
    time("rot90(1)+flip copy -> resize_cubic", n, || {
        resize_cubic(rot90_flip(img.view(), 1, 0).view(), 224, 224)
    });
    time("rot90(1)+flip view -> resize_nearest u8", n, || {
        resize_nearest(rot90_flip_view(lab.view(), 1, 0), 224, 224)
    });
    time("rotation_source_map 215x208", n, || {
        rotation_source_map(215, 208, 13.0)
    });
    if std::env::var("STAGE").is_ok_and(|s| "make_batch".contains(&s)) {
        // 24-slice batches through augmentation + resize on a small default-size cohort.
        let root = std::env::temp_dir().join(format!("slimseg-stage-{}", std::process::id()));
        let cfg = SynthConfig {
            training: 4,
            testing: 0,
            write_4d: false,
            ..SynthConfig::default()
        };
        generate(&root, &cfg).expect("cohort");
        let ds = AcdcDataset::open(&root).expect("open");
        let frames = ds.load_labelled_frames(&ds.ids()).expect("frames");
        let data = SliceDataset::from_frames(&frames, Normalization::MinMax).expect("slices");
        let _ = std::fs::remove_dir_all(&root);
        let pc = PipelineConfig::default();
        let mut epoch = 0;
        time("make_batch 24 augment+resize 224", 400, || {
            epoch += 1;
            let start = (epoch * 24) % (data.len() - 24);
            let idx: Vec<usize> = (start..start + 24).collect();
            data.make_batch(&idx, &pc, epoch as u64).expect("batch")
        });
    }
    time("identity f32", n, || {
        Augmentation::Identity.apply(img.view())
    });
    time("direction_field 224 (heart-like labels)", n, || {
        direction_field(heart.view())
    });
    time("direction_field 224 (labels everywhere)", n / 3, || {
        direction_field(lab224.view())
    });
}
