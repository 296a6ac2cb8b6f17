//! A latency budget end to end: profile the model on this device at a batch size, select
//! the subnet of `--keep` of the predicted latency from gate values (aligned to
//! `--align`), then time the full model and the subnet side by side and set the
//! measurement beside the prediction.
//!
//! ```text
//! cargo run --release -p slimseg-compress --example latency_budget -- \
//!     [--preset paper|tiny] [--gates RUN/search/gates_end.json | --seed 0] \
//!     [--keep 0.7] [--align 8] [--batches 1,8] [--repeats 10] [--threads 2]
//! ```
//!
//! Without `--gates`, gate values are drawn at random (uniform in [0, 1)).

use rand::{Rng, SeedableRng, rngs::StdRng};
use slimseg_compress::LatencyOptions;
use slimseg_compress::latency::{describe_device, time_models};
use slimseg_model::profile::profile;
use slimseg_model::{GateValues, InferenceOptions, ModelConfig, TransUnet};
use slimseg_search::{Budget, CostMetric, CostScope, SelectConfig, select_with};
use tch::{Device, nn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    slimseg_model::runtime::init();
    let (mut preset, mut gates_path, mut seed) = ("paper".to_string(), None, 0u64);
    let (mut keep, mut align, mut batches) = (0.7, 8usize, vec![1usize, 8]);
    let mut opts = LatencyOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut val = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--preset" => preset = val()?,
            "--gates" => gates_path = Some(val()?),
            "--seed" => seed = val()?.parse()?,
            "--keep" => keep = val()?.parse()?,
            "--align" => align = val()?.parse()?,
            "--batches" => {
                batches = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--repeats" => opts.repeats = val()?.parse()?,
            "--threads" => tch::set_num_threads(val()?.parse()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let cfg = ModelConfig::preset(&preset)?;
    let gates: GateValues = match &gates_path {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p)?)?,
        None => {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut draw = |n: usize| (0..n).map(|_| rng.r#gen::<f32>()).collect::<Vec<_>>();
            GateValues {
                attn: (0..cfg.layers)
                    .map(|_| (0..cfg.heads).map(|_| draw(cfg.head_dim())).collect())
                    .collect(),
                mlp: (0..cfg.layers).map(|_| draw(cfg.mlp_dim)).collect(),
                token: (0..cfg.layers).map(|_| draw(cfg.num_tokens())).collect(),
            }
        }
    };
    let infer = InferenceOptions::default();
    let device = Device::Cpu;
    for &batch in &batches {
        let t = std::time::Instant::now();
        let table = profile(
            &cfg,
            device,
            &describe_device(device),
            batch,
            infer,
            opts.warmup,
            opts.repeats,
        )?;
        let sel = SelectConfig {
            budget: Budget::Model {
                metric: CostMetric::Latency,
                keep,
                scope: CostScope::Model,
            },
            align,
            ..Default::default()
        };
        let spec = select_with(&cfg, &gates, &sel, Some(&table))?;
        let last = &spec.arch.layers[cfg.layers - 1];
        println!(
            "batch {batch}: profiled in {:.1} s; subnet MACs -{:.1}%, last block heads {:?}, \
             MLP {}, tokens {}",
            t.elapsed().as_secs_f64(),
            100.0 * (1.0 - spec.macs as f64 / spec.full_macs as f64),
            last.head_widths(),
            last.mlp_units.len(),
            last.tokens.len()
        );
        let mut vs = nn::VarStore::new(device);
        let mut full = TransUnet::new(&vs.root(), &cfg)?;
        full.prepare_inference(&mut vs, infer)?;
        let mut vs2 = nn::VarStore::new(device);
        let mut sub = TransUnet::new_reduced(&vs2.root(), &cfg, &spec.arch)?;
        sub.prepare_inference(&mut vs2, infer)?;
        let row = &time_models(&[&full, &sub], &[batch], &opts)?[0];
        let (f, s) = (row[0].median_ms, row[1].median_ms);
        let (pf, ps) = (table.predict(None), table.predict(Some(&spec.arch)));
        println!(
            "  full: predicted {pf:.1} ms, measured {f:.1} ms ({:+.1}%); subnet: predicted \
             {ps:.1} ms, measured {s:.1} ms ({:+.1}%); measured latency reduction {:.1}%",
            100.0 * (pf / f - 1.0),
            100.0 * (ps / s - 1.0),
            100.0 * (1.0 - s / f)
        );
    }
    Ok(())
}
