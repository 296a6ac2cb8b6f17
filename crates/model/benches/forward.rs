//! Forward latency on CPU: `paper` at batch 1 and `tiny` at batch 8 (eval mode, no grad);
//! also on CUDA device 0 (`*_cuda`) when a GPU is present.
//!
//! Run: `cargo bench -p slimseg-model --bench forward`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use slimseg_model::{ModelConfig, TransUnet};
use tch::{Device, Kind, Tensor, nn};

fn bench_forward(c: &mut Criterion, name: &str, cfg: ModelConfig, batch: i64, device: Device) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let model = TransUnet::new(&vs.root(), &cfg).expect("valid preset");
    let s = cfg.img_size as i64;
    let x = Tensor::randn([batch, 1, s, s], (Kind::Float, device));
    let _guard = tch::no_grad_guard();
    c.bench_function(name, |b| {
        b.iter(|| {
            let logits = model.forward_t(&x, false).expect("forward").logits;
            if let Device::Cuda(i) = device {
                tch::Cuda::synchronize(i as i64);
            }
            logits
        })
    });
}

fn forward(c: &mut Criterion) {
    slimseg_model::runtime::init();
    eprintln!("libtorch threads: {}", tch::get_num_threads());
    if std::env::var_os("SLIMSEG_BENCH_CUDA_ONLY").is_none() {
        bench_forward(c, "forward/paper_b1", ModelConfig::paper(), 1, Device::Cpu);
        bench_forward(c, "forward/tiny_b8", ModelConfig::tiny(), 8, Device::Cpu);
    }
    if tch::Cuda::is_available() {
        bench_forward(
            c,
            "forward/paper_b1_cuda",
            ModelConfig::paper(),
            1,
            Device::Cuda(0),
        );
        bench_forward(
            c,
            "forward/tiny_b8_cuda",
            ModelConfig::tiny(),
            8,
            Device::Cuda(0),
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(10));
    targets = forward
}
criterion_main!(benches);
