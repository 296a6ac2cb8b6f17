//! Latency of the full vs the compressed TransUNet on CPU or CUDA, batch sizes of choice.
//!
//! ```text
//! cargo run --release -p slimseg-compress --example latency -- \
//!     [--preset paper|tiny | --config FILE.toml] [--device cpu|cuda|cuda:N] \
//!     [--mac-reduction 0.3] [--token-from-layer L] [--compressed DIR] \
//!     [--batches 1,8] [--warmup 3] [--repeats 10] [--threads N] [--json OUT.json] \
//!     [--precision fp32|bf16|fp16] [--exact]
//! ```
//!
//! Both models are prepared for inference in the given precision, with the fast paths
//! unless `--exact`.
//!
//! Without `--compressed`, the compressed architecture is the structured one of
//! `slimseg_compress::arch_for_mac_reduction` (same kept fraction of head dims, MLP units
//! and, from block `--token-from-layer` on (default: half the depth), centre tokens), the
//! largest that removes at least `--mac-reduction` of the whole model's MACs. With
//! `--compressed DIR` the architecture and config of a saved compressed model are used.

use std::process::ExitCode;

use slimseg_compress::{
    LatencyOptions, Manifest, arch_for_mac_reduction, bench_full_vs_compressed, store::Summary,
};
use slimseg_model::{InferenceOptions, ModelConfig};
use tch::Device;

struct Args {
    cfg: ModelConfig,
    device: Device,
    mac_reduction: f64,
    token_from_layer: Option<usize>,
    compressed: Option<String>,
    batches: Vec<usize>,
    opts: LatencyOptions,
    threads: Option<i32>,
    json: Option<String>,
    infer: InferenceOptions,
}

fn parse_device(s: &str) -> Result<Device, String> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("unknown device `{s}`, expected cpu, cuda or cuda:N")),
    }
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        cfg: ModelConfig::paper(),
        device: Device::Cpu,
        mac_reduction: 0.3,
        token_from_layer: None,
        compressed: None,
        batches: vec![1, 8],
        opts: LatencyOptions::default(),
        threads: None,
        json: None,
        infer: InferenceOptions::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--preset" => a.cfg = ModelConfig::preset(&val()?).map_err(|e| e.to_string())?,
            "--config" => a.cfg = ModelConfig::from_toml_file(val()?).map_err(|e| e.to_string())?,
            "--device" => a.device = parse_device(&val()?)?,
            "--mac-reduction" => a.mac_reduction = num(val()?)?,
            "--token-from-layer" => a.token_from_layer = Some(num(val()?)? as usize),
            "--compressed" => a.compressed = Some(val()?),
            "--batches" => {
                a.batches = val()?
                    .split(',')
                    .map(|b| {
                        b.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--batches: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--warmup" => a.opts.warmup = num(val()?)? as usize,
            "--repeats" => a.opts.repeats = num(val()?)? as usize,
            "--threads" => a.threads = Some(num(val()?)? as i32),
            "--json" => a.json = Some(val()?),
            "--precision" => a.infer.precision = val()?.parse().map_err(|e| format!("{e}"))?,
            "--exact" => a.infer.fast = false,
            "-h" | "--help" => return Err("see the header of examples/latency.rs".into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

fn run(args: Args) -> Result<(), String> {
    let info = slimseg_model::runtime::init();
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    if let Device::Cuda(_) = args.device {
        if !tch::Cuda::is_available() {
            return Err(format!(
                "CUDA is not available (CUDA backend: {:?})",
                info.cuda_backend
            ));
        }
    }
    let (cfg, arch, summary) = match &args.compressed {
        Some(dir) => {
            let m = Manifest::load(dir).map_err(|e| e.to_string())?;
            let s = Summary::new(&m.model, &m.arch).map_err(|e| e.to_string())?;
            (m.model, m.arch, s)
        }
        None => {
            let from = args.token_from_layer.unwrap_or(args.cfg.layers / 2);
            let (arch, s) = arch_for_mac_reduction(&args.cfg, args.mac_reduction, from)
                .map_err(|e| e.to_string())?;
            let (a, m, t) = arch.kept_fractions();
            eprintln!(
                "structured arch: kept attention dims {:.3}, MLP units {:.3}, tokens {:.3} \
                 (tokens pruned from block {from} on)",
                a, m, t
            );
            (args.cfg.clone(), arch, s)
        }
    };
    eprintln!(
        "libtorch {:?}, device {:?}, MACs -{:.1}%, params -{:.1}%",
        info.version,
        args.device,
        100.0 * summary.mac_reduction(),
        100.0 * summary.param_reduction()
    );
    let report = bench_full_vs_compressed(
        &cfg,
        &arch,
        args.device,
        &args.batches,
        &args.opts,
        args.infer,
    )
    .map_err(|e| e.to_string())?;
    println!("{}", report.to_markdown());
    if let Some(path) = args.json {
        let s = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(&path, s).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
