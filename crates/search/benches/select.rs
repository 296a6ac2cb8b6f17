//! Threshold selection on the `paper` preset (12 layers, 49,584 gates): per-dimension
//! budgets and a whole-model MAC target.
//!
//! Run: `cargo bench -p slimseg-search --bench select`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::StdRng};
use slimseg_model::{GateValues, ModelConfig};
use slimseg_search::{Budget, CostMetric, CostScope, Floors, SelectConfig, select};

fn random_gates(cfg: &ModelConfig, seed: u64) -> GateValues {
    let mut rng = StdRng::seed_from_u64(seed);
    GateValues {
        attn: (0..cfg.layers)
            .map(|_| {
                (0..cfg.heads)
                    .map(|_| (0..cfg.head_dim()).map(|_| rng.r#gen::<f32>()).collect())
                    .collect()
            })
            .collect(),
        mlp: (0..cfg.layers)
            .map(|_| (0..cfg.mlp_dim).map(|_| rng.r#gen::<f32>()).collect())
            .collect(),
        token: (0..cfg.layers)
            .map(|_| (0..cfg.num_tokens()).map(|_| rng.r#gen::<f32>()).collect())
            .collect(),
    }
}

fn bench_select(c: &mut Criterion) {
    let cfg = ModelConfig::paper();
    let gates = random_gates(&cfg, 7);
    let per_dim = SelectConfig {
        budget: Budget::PerDimension {
            attn: 0.6,
            mlp: 0.5,
            token: 0.8,
        },
        floors: Floors::default(),
        align: 0,
    };
    let model = SelectConfig {
        budget: Budget::Model {
            metric: CostMetric::Macs,
            keep: 0.7,
            scope: CostScope::Model,
        },
        floors: Floors::default(),
        align: 0,
    };
    c.bench_function("select/paper_per_dimension", |b| {
        b.iter(|| select(&cfg, &gates, &per_dim).expect("reachable"))
    });
    c.bench_function("select/paper_macs_70", |b| {
        b.iter(|| select(&cfg, &gates, &model).expect("reachable"))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench_select
}
criterion_main!(benches);
