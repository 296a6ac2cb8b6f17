//! One training step on CPU: train-mode forward, 0.5 CE + 0.5 Dice loss, backward, SGD
//! (momentum 0.9, weight decay 1e-4) update; float32, and under bf16 autocast
//! (`train.amp = "bf16"`: float32 weights, products in bfloat16). `tiny` at batch 8 and
//! the paper preset at batch 2.
//!
//! Run: `cargo bench -p slimseg-model --bench train_step [-- tiny|paper]`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use slimseg_model::amp::{AmpPrecision, autocast};
use slimseg_model::{ModelConfig, TransUnet};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Reduction, Tensor, nn};

fn train_step(c: &mut Criterion) {
    for (preset, batch) in [("tiny", 8i64), ("paper", 2)] {
        tch::manual_seed(0);
        let cfg = ModelConfig::preset(preset).expect("a preset");
        let vs = nn::VarStore::new(Device::Cpu);
        let model = TransUnet::new(&vs.root(), &cfg).expect("valid preset");
        let mut opt = nn::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            wd: 1e-4,
            nesterov: false,
        }
        .build(&vs, 0.01)
        .expect("sgd");
        let s = cfg.img_size as i64;
        let k = cfg.num_classes as i64;
        let x = Tensor::randn([batch, 1, s, s], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(k, [batch, s, s], (Kind::Int64, Device::Cpu));
        let onehot = y.one_hot(k).permute([0, 3, 1, 2]).to_kind(Kind::Float);
        let mut group = c.benchmark_group(format!("train_step/{preset}_b{batch}"));
        for amp in [None, Some(AmpPrecision::Bf16)] {
            let name = amp.map_or("fp32".to_string(), |p| format!("{p}_autocast"));
            group.bench_function(name, |b| {
                b.iter(|| {
                    let forward = || model.forward_t(&x, true).expect("forward").logits;
                    let logits = match amp {
                        Some(p) => autocast(Device::Cpu, p, forward).expect("bf16 on the CPU"),
                        None => forward(),
                    };
                    let ce =
                        logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0);
                    let p = logits.softmax(1, Kind::Float);
                    let dims = [0i64, 2, 3];
                    let inter = (&p * &onehot).sum_dim_intlist(dims.as_slice(), false, Kind::Float);
                    let denom = p.sum_dim_intlist(dims.as_slice(), false, Kind::Float)
                        + onehot.sum_dim_intlist(dims.as_slice(), false, Kind::Float);
                    let dice = 1.0 - ((inter * 2.0 + 1e-5) / (denom + 1e-5)).mean(Kind::Float);
                    let loss = ce * 0.5 + dice * 0.5;
                    opt.backward_step(&loss);
                    loss
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(10));
    targets = train_step
}
criterion_main!(benches);
