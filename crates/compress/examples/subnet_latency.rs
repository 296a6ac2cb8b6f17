//! Latency of selected subnets against the full model, timed side by side (prepared for
//! inference as `slimseg predict` runs them), from one set of gate values.
//!
//! ```text
//! cargo run --release -p slimseg-compress --example subnet_latency -- \
//!     [--preset paper|tiny] [--gates RUN/search/gates_end.json | --seed 0] \
//!     [--budget macs|latency] [--keep 0.7] [--align 8] [--batches 1,8] \
//!     [--repeats 10] [--threads 2] [--exact] [--pixel]
//! ```
//!
//! `--pixel`: with the pixel module (DFTransUnet; the presets in code are TransUNet).
//!
//! - `--budget macs` (the default): does alignment pay? The subnet of `--keep` of the MACs
//!   is selected twice, as ranked (unequal heads, any width) and aligned to multiples of
//!   `--align` (`[select] align`), and both are timed with the full model.
//! - `--budget latency`: at each batch size the model is profiled on this CPU
//!   (`slimseg_model::profile`), the aligned subnet of `--keep` of the predicted latency
//!   is selected, and the measured latencies are set beside the predicted ones.
//!
//! Without `--gates`, gate values are drawn at random (uniform in [0, 1)): the worst case
//! for head widths, which then differ the most.

use rand::{Rng, SeedableRng, rngs::StdRng};
use slimseg_compress::LatencyOptions;
use slimseg_compress::latency::{describe_device, time_models};
use slimseg_model::profile::profile;
use slimseg_model::{GateValues, InferenceOptions, ModelConfig, PixelHead, SubnetArch, TransUnet};
use slimseg_search::{Budget, CostMetric, CostScope, SelectConfig, SubnetSpec, select_with};
use tch::{Device, nn};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A model of `arch` (`None`: full widths) with initial weights, prepared with `infer`.
fn prepared(
    cfg: &ModelConfig,
    arch: Option<&SubnetArch>,
    infer: InferenceOptions,
) -> Res<(nn::VarStore, TransUnet)> {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let mut m = match arch {
        None => TransUnet::new(&vs.root(), cfg)?,
        Some(a) => TransUnet::new_reduced(&vs.root(), cfg, a)?,
    };
    m.prepare_inference(&mut vs, infer)?;
    Ok((vs, m))
}

fn describe(spec: &SubnetSpec, cfg: &ModelConfig) -> String {
    let last = &spec.arch.layers[cfg.layers - 1];
    format!(
        "MACs -{:.1}%, last block heads {:?}, MLP {}, tokens {}",
        100.0 * (1.0 - spec.macs as f64 / spec.full_macs as f64),
        last.head_widths(),
        last.mlp_units.len(),
        last.tokens.len()
    )
}

fn main() -> Res<()> {
    slimseg_model::runtime::init();
    let (mut preset, mut gates_path, mut seed) = ("paper".to_string(), None, 0u64);
    let (mut keep, mut align, mut batches) = (0.7, 8usize, vec![1usize, 8]);
    let mut metric = CostMetric::Macs;
    let mut opts = LatencyOptions::default();
    let mut infer = InferenceOptions::default();
    let mut pixel = PixelHead::None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut val = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--preset" => preset = val()?,
            "--gates" => gates_path = Some(val()?),
            "--seed" => seed = val()?.parse()?,
            "--budget" => {
                metric = match val()?.as_str() {
                    "macs" => CostMetric::Macs,
                    "latency" => CostMetric::Latency,
                    other => return Err(format!("--budget {other}: macs or latency").into()),
                }
            }
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
            "--pixel" => pixel = PixelHead::DirectionField,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let cfg = ModelConfig::preset(&preset)?.with_pixel_head(pixel);
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
    let selection = |a: usize| SelectConfig {
        budget: Budget::Model {
            metric,
            keep,
            scope: CostScope::Model,
        },
        align: a,
        ..Default::default()
    };
    let (_full_vs, full) = prepared(&cfg, None, infer)?;
    if metric == CostMetric::Macs {
        let mut models = Vec::new();
        for a in [0, align] {
            let spec = select_with(&cfg, &gates, &selection(a), None)?;
            println!("align {a}: {}", describe(&spec, &cfg));
            models.push((a, prepared(&cfg, Some(&spec.arch), infer)?));
        }
        let mut refs = vec![&full];
        refs.extend(models.iter().map(|(_, (_, m))| m));
        for (b, row) in batches.iter().zip(time_models(&refs, &batches, &opts)?) {
            let f = row[0].median_ms;
            let line: Vec<String> = models
                .iter()
                .zip(&row[1..])
                .map(|((a, _), s)| {
                    let ms = s.median_ms;
                    format!("align {a} {ms:.2} ms ({:+.1}%)", 100.0 * (ms / f - 1.0))
                })
                .collect();
            println!("batch {b}: full {f:.2} ms, {}", line.join(", "));
        }
        return Ok(());
    }
    for &batch in &batches {
        let t = std::time::Instant::now();
        let name = describe_device(Device::Cpu);
        let table = profile(
            &cfg,
            Device::Cpu,
            &name,
            batch,
            infer,
            opts.warmup,
            opts.repeats,
        )?;
        let spec = select_with(&cfg, &gates, &selection(align), Some(&table))?;
        println!(
            "batch {batch}: profiled in {:.1} s (blocks in place {:.2}x their time alone); {}",
            t.elapsed().as_secs_f64(),
            table.block_scale,
            describe(&spec, &cfg)
        );
        let (_vs, sub) = prepared(&cfg, Some(&spec.arch), infer)?;
        let row = &time_models(&[&full, &sub], &[batch], &opts)?[0];
        let (f, s) = (row[0].median_ms, row[1].median_ms);
        let (pf, ps) = (table.predict(None), table.predict(Some(&spec.arch)));
        println!(
            "  full: predicted {pf:.1} ms, measured {f:.1} ms ({:+.1}%); subnet: predicted \
             {ps:.1} ms, measured {s:.1} ms ({:+.1}%); latency reduction predicted {:.1}%, \
             measured {:.1}% (subnet / full predicted over measured: {:+.1}%)",
            100.0 * (pf / f - 1.0),
            100.0 * (ps / s - 1.0),
            100.0 * (1.0 - ps / pf),
            100.0 * (1.0 - s / f),
            100.0 * ((ps / pf) / (s / f) - 1.0)
        );
    }
    Ok(())
}
