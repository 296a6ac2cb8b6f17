//! Forward latency of one TransUNet run four ways, interleaved in one process: as it
//! trains (plain), prepared for inference without fast paths (standardised kernels kept),
//! with the fast paths in fp32, and with the fast paths in bf16. Each prepared model's
//! logits are compared with the plain model's (largest difference, argmax agreement).
//!
//! ```text
//! cargo run --release -p slimseg-model --example fast_paths -- \
//!     [--preset paper|tiny] [--batch 1] [--repeats 10] [--threads 2] [--no-bf16]
//! ```

use std::time::Instant;

use slimseg_model::{InferenceOptions, ModelConfig, Precision, TransUnet};
use tch::{Device, Kind, Tensor, nn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    slimseg_model::runtime::init();
    let (mut preset, mut batch, mut repeats, mut bf16) = ("paper".to_string(), 1i64, 10, true);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut val = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--preset" => preset = val()?,
            "--batch" => batch = val()?.parse()?,
            "--repeats" => repeats = val()?.parse()?,
            "--threads" => tch::set_num_threads(val()?.parse()?),
            "--no-bf16" => bf16 = false,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let cfg = ModelConfig::preset(&preset)?;
    tch::manual_seed(0);
    let base = nn::VarStore::new(Device::Cpu);
    let plain = TransUnet::new(&base.root(), &cfg)?;
    let mut variants: Vec<(String, nn::VarStore, TransUnet)> = Vec::new();
    let mut opts = vec![
        ("prepared fp32", Precision::Fp32, false),
        ("fast fp32", Precision::Fp32, true),
    ];
    if bf16 {
        opts.push(("fast bf16", Precision::Bf16, true));
    }
    for (name, precision, fast) in opts {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let mut model = TransUnet::new(&vs.root(), &cfg)?;
        vs.copy(&base)?;
        model.prepare_inference(&mut vs, InferenceOptions { precision, fast })?;
        variants.push((name.to_string(), vs, model));
    }
    let _guard = tch::no_grad_guard();
    let s = cfg.img_size as i64;
    let xs = Tensor::randn([batch, 1, s, s], (Kind::Float, Device::Cpu));
    let want = plain.forward_t(&xs, false)?.logits;
    let classes = want.argmax(1, false);
    println!(
        "{preset} preset, batch {batch}, {} threads",
        tch::get_num_threads()
    );
    for (name, _, model) in &variants {
        let got = model.forward_t(&xs, false)?.logits.to_kind(Kind::Float);
        let diff = (&got - &want).abs().max().double_value(&[]);
        let agree = got
            .argmax(1, false)
            .eq_tensor(&classes)
            .to_kind(Kind::Float);
        println!(
            "{name:>14}: max |logit diff| {diff:.3e}, argmax agreement {:.4}%",
            100.0 * agree.mean(Kind::Float).double_value(&[])
        );
    }
    let mut models: Vec<(&str, &TransUnet)> = vec![("plain fp32", &plain)];
    models.extend(variants.iter().map(|(n, _, m)| (n.as_str(), m)));
    let mut times = vec![Vec::new(); models.len()];
    for r in 0..repeats + 2 {
        for k in 0..models.len() {
            let i = (k + r) % models.len();
            let start = Instant::now();
            models[i].1.forward_t(&xs, false)?;
            if r >= 2 {
                times[i].push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let base_ms = median(&mut times[0]);
    for ((name, _), t) in models.iter().zip(&mut times) {
        let ms = median(t);
        println!("{name:>14}: {ms:8.2} ms  ({:.2}x plain)", base_ms / ms);
    }
    Ok(())
}
