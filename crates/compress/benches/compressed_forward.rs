//! Forward latency of the full vs the compressed `tiny` model at a 30% MAC reduction
//! (eval, no grad, CPU, batch 8). The paper-preset figures come from the `latency`
//! example, which also runs on CUDA.
//!
//! Run: `cargo bench -p slimseg-compress --bench compressed_forward`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use slimseg_compress::arch_for_mac_reduction;
use slimseg_model::{ModelConfig, TransUnet};
use tch::{Device, Kind, Tensor, nn};

fn forward(c: &mut Criterion) {
    slimseg_model::runtime::init();
    let cfg = ModelConfig::tiny();
    let (arch, summary) = arch_for_mac_reduction(&cfg, 0.3, cfg.layers / 2).expect("reachable");
    eprintln!(
        "tiny: MACs -{:.1}%, params -{:.1}%, libtorch threads {}",
        100.0 * summary.mac_reduction(),
        100.0 * summary.param_reduction(),
        tch::get_num_threads()
    );
    tch::manual_seed(0);
    let full_vs = nn::VarStore::new(Device::Cpu);
    let full = TransUnet::new(&full_vs.root(), &cfg).expect("valid preset");
    let small_vs = nn::VarStore::new(Device::Cpu);
    let small = TransUnet::new_reduced(&small_vs.root(), &cfg, &arch).expect("valid arch");
    let s = cfg.img_size as i64;
    let x = Tensor::randn([8, 1, s, s], (Kind::Float, Device::Cpu));
    let _guard = tch::no_grad_guard();
    c.bench_function("forward/tiny_full_b8", |b| {
        b.iter(|| full.forward_t(&x, false).expect("forward").logits)
    });
    c.bench_function("forward/tiny_compressed30_b8", |b| {
        b.iter(|| small.forward_t(&x, false).expect("forward").logits)
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = forward
}
criterion_main!(benches);
