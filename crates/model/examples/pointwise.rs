//! A 1x1 convolution with few channels through `conv2d` (oneDNN on CPU) against the
//! matrix product the inference fast path runs instead (`crate::layers` docs), timed
//! alternately in one process at the pixel module's and the tiny bottlenecks' shapes,
//! with the largest difference of their outputs.
//!
//! ```text
//! cargo run --release -p slimseg-model --example pointwise -- [--threads 2] [--repeats 60]
//! ```

use std::time::Instant;

use tch::{Device, Kind, Tensor};

/// Median microseconds of `f`, its runs alternating with `g`'s; then `g`'s.
fn paired_us(repeats: usize, f: impl Fn() -> Tensor, g: impl Fn() -> Tensor) -> (f64, f64) {
    let time = |h: &dyn Fn() -> Tensor| {
        let t = Instant::now();
        let _ = h();
        t.elapsed().as_secs_f64() * 1e6
    };
    for _ in 0..5 {
        let _ = (f(), g());
    }
    let (mut a, mut b): (Vec<f64>, Vec<f64>) = (0..repeats).map(|_| (time(&f), time(&g))).unzip();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    (a[repeats / 2], b[repeats / 2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut repeats = 60;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut val = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--threads" => tch::set_num_threads(val()?.parse()?),
            "--repeats" => repeats = val()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let _guard = tch::no_grad_guard();
    let opts = (Kind::Float, Device::Cpu);
    println!("threads {}", tch::get_num_threads());
    // (batch, in, out, side): the direction field and the fusion of the tiny preset's
    // pixel module, a tiny bottleneck projection, the paper preset's direction field.
    for (b, cin, cout, side) in [
        (1, 8, 2, 96),
        (8, 8, 2, 96),
        (1, 16, 8, 96),
        (8, 16, 8, 96),
        (1, 32, 8, 24),
        (8, 32, 8, 24),
        (1, 16, 2, 224),
    ] {
        let xs = Tensor::randn([b, cin, side, side], opts);
        let w = Tensor::randn([cout, cin, 1, 1], opts);
        let bias = Tensor::randn([cout], opts);
        let conv = || xs.conv2d(&w, Some(&bias), [1, 1], [0, 0], [1, 1], 1);
        let product = || {
            (w.view([cout, cin]).matmul(&xs.view([b, cin, side * side])) + bias.view([cout, 1]))
                .view([b, cout, side, side])
        };
        let diff = (conv() - product()).abs().max().double_value(&[]);
        let (c, m) = paired_us(repeats, conv, product);
        println!(
            "[{b}, {cin}, {side}, {side}] -> {cout}: conv2d {c:.0} us, matmul {m:.0} us \
             ({:.1}x), max |diff| {diff:.1e}",
            c / m
        );
    }
    Ok(())
}
