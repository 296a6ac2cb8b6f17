//! slimseg's side of `scripts/speed_vs_pytorch.py`: builds one model and times its
//! forward pass on request, so that the script can interleave it with the official
//! PyTorch model in one run. After warm-up it prints `ready libtorch VERSION`; then for each line `N` on
//! stdin it runs N forward passes and prints their wall times in ms on one line. An empty
//! line or end of input ends it.
//!
//! ```text
//! cargo run --release -p slimseg-model --example peer_timer -- \
//!     [--preset paper|tiny] [--batch 1] [--threads 2] [--warmup 3] \
//!     [--mode plain|exact|fast] [--precision fp32|bf16]
//! ```
//!
//! `plain` is the model as it trains; `exact` prepared for inference without fast paths;
//! `fast` (the default) with them, as `slimseg predict` runs it.

use std::io::{BufRead, Write};
use std::time::Instant;

use slimseg_model::{InferenceOptions, ModelConfig, Precision, TransUnet};
use tch::{Device, Kind, Tensor, nn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let info = slimseg_model::runtime::init();
    let (mut preset, mut batch, mut warmup) = ("paper".to_string(), 1i64, 3usize);
    let (mut mode, mut precision) = ("fast".to_string(), Precision::Fp32);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut val = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--preset" => preset = val()?,
            "--batch" => batch = val()?.parse()?,
            "--threads" => tch::set_num_threads(val()?.parse()?),
            "--warmup" => warmup = val()?.parse()?,
            "--mode" => mode = val()?,
            "--precision" => precision = val()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let cfg = ModelConfig::preset(&preset)?;
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let mut model = TransUnet::new(&vs.root(), &cfg)?;
    match mode.as_str() {
        "plain" => {}
        "exact" | "fast" => {
            let fast = mode == "fast";
            model.prepare_inference(&mut vs, InferenceOptions { precision, fast })?;
        }
        other => return Err(format!("--mode {other}: expected plain, exact or fast").into()),
    }
    let _guard = tch::no_grad_guard();
    let s = cfg.img_size as i64;
    let xs = Tensor::randn([batch, 1, s, s], (Kind::Float, Device::Cpu));
    for _ in 0..warmup {
        model.forward_t(&xs, false)?;
    }
    let mut out = std::io::stdout().lock();
    let version = info.version.as_deref().unwrap_or("unknown");
    writeln!(out, "ready libtorch {version}")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            break;
        }
        let n: usize = line.trim().parse()?;
        let times: Vec<String> = (0..n)
            .map(|_| {
                let start = Instant::now();
                model.forward_t(&xs, false)?;
                Ok(format!("{:.3}", start.elapsed().as_secs_f64() * 1e3))
            })
            .collect::<Result<_, slimseg_model::Error>>()?;
        writeln!(out, "{}", times.join(" "))?;
        out.flush()?;
    }
    Ok(())
}
