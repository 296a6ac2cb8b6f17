//! Does hardware alignment pay? From one set of gate values, the subnet of a MAC budget
//! is selected twice, as ranked (unequal heads, any width) and aligned to multiples of
//! `--align` (equal heads, `[select] align`), and both are timed side by side with the
//! full model, prepared for inference as `slimseg predict` runs them.
//!
//! ```text
//! cargo run --release -p slimseg-compress --example align_latency -- \
//!     [--preset paper|tiny] [--gates RUN/search/gates_end.json | --seed 0] \
//!     [--keep 0.7] [--align 8] [--batches 1,8] [--repeats 10] [--threads 2] [--exact]
//! ```
//!
//! Without `--gates`, gate values are drawn at random (uniform in [0, 1)): the worst
//! case for head widths, which then differ the most.

use rand::{Rng, SeedableRng, rngs::StdRng};
use slimseg_compress::latency::time_models;
use slimseg_compress::{LatencyOptions, store::Summary};
use slimseg_model::{GateValues, InferenceOptions, ModelConfig, TransUnet};
use slimseg_search::{Budget, CostMetric, CostScope, SelectConfig, select};
use tch::{Device, nn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    slimseg_model::runtime::init();
    let (mut preset, mut gates_path, mut seed) = ("paper".to_string(), None, 0u64);
    let (mut keep, mut align, mut batches) = (0.7, 8usize, vec![1usize, 8]);
    let mut opts = LatencyOptions::default();
    let mut infer = InferenceOptions::default();
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
            "--exact" => infer.fast = false,
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
    let budget = Budget::Model {
        metric: CostMetric::Macs,
        keep,
        scope: CostScope::Model,
    };
    let mut models = Vec::new();
    for a in [0, align] {
        let spec = select(
            &cfg,
            &gates,
            &SelectConfig {
                budget,
                align: a,
                ..Default::default()
            },
        )?;
        let s = Summary::new(&cfg, &spec.arch)?;
        let widths = &spec.arch.layers[cfg.layers - 1].head_widths();
        println!(
            "align {a}: MACs -{:.1}%, last block heads {widths:?}, MLP {}",
            100.0 * s.mac_reduction(),
            spec.arch.layers[cfg.layers - 1].mlp_units.len()
        );
        let mut vs = nn::VarStore::new(Device::Cpu);
        let mut m = TransUnet::new_reduced(&vs.root(), &cfg, &spec.arch)?;
        m.prepare_inference(&mut vs, infer)?;
        models.push((format!("align {a}"), vs, m));
    }
    let mut vs = nn::VarStore::new(Device::Cpu);
    let mut full = TransUnet::new(&vs.root(), &cfg)?;
    full.prepare_inference(&mut vs, infer)?;
    let mut refs = vec![&full];
    refs.extend(models.iter().map(|(_, _, m)| m));
    let rows = time_models(&refs, &batches, &opts)?;
    for (b, row) in batches.iter().zip(&rows) {
        let f = row[0].median_ms;
        let line: Vec<String> = models
            .iter()
            .zip(&row[1..])
            .map(|((n, _, _), s)| {
                format!(
                    "{n} {:.2} ms ({:+.1}%)",
                    s.median_ms,
                    100.0 * (s.median_ms / f - 1.0)
                )
            })
            .collect();
        println!("batch {b}: full {f:.2} ms, {}", line.join(", "));
    }
    Ok(())
}
