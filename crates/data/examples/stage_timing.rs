//! Times each stage of the 2D pipeline on one thread (diagnostics for the benches).
//!
//! `cargo run --release -p slimseg-data --example stage_timing`

use std::time::Instant;

use ndarray::Array2;
use slimseg_data::direction::direction_field;
use slimseg_data::pipeline::{
    Augmentation, resize_cubic, resize_nearest, rot90_flip, rot90_flip_view, rotation_source_map,
};

fn time<T>(name: &str, n: usize, mut f: impl FnMut() -> T) {
    // STAGE=<substring> runs only the matching stages (for `perf stat`).
    if std::env::var("STAGE").is_ok_and(|s| !name.contains(&s)) {
        return;
    }
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    println!(
        "{name:40} {:8.1} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
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
