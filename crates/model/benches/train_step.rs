//! One training step of `tiny` at batch 8 on CPU: train-mode forward, 0.5 CE + 0.5 Dice
//! loss, backward, SGD (momentum 0.9, weight decay 1e-4) update.
//!
//! Run: `cargo bench -p slimseg-model --bench train_step`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use slimseg_model::{ModelConfig, TransUnet};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Reduction, Tensor, nn};

fn train_step(c: &mut Criterion) {
    tch::manual_seed(0);
    let cfg = ModelConfig::tiny();
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
    let x = Tensor::randn([8, 1, s, s], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(k, [8, s, s], (Kind::Int64, Device::Cpu));
    let onehot = y.one_hot(k).permute([0, 3, 1, 2]).to_kind(Kind::Float);
    c.bench_function("train_step/tiny_b8", |b| {
        b.iter(|| {
            let logits = model.forward_t(&x, true).expect("forward").logits;
            let ce = logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0);
            let p = logits.softmax(1, Kind::Float);
            let inter = (&p * &onehot).sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Float);
            let denom = p.sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Float)
                + onehot.sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Float);
            let dice = 1.0 - ((inter * 2.0 + 1e-5) / (denom + 1e-5)).mean(Kind::Float);
            let loss = ce * 0.5 + dice * 0.5;
            opt.backward_step(&loss);
            loss
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(10));
    targets = train_step
}
criterion_main!(benches);
