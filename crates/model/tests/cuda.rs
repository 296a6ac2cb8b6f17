//! The model on CUDA, where a GPU is present (skipped with a message otherwise): forward
//! shapes, soft-at-init == off, hard == reduced, gradients, volume inference, and CPU vs
//! CUDA agreement. Comparisons run in float64: libtorch's default TF32 convolutions on
//! Ampere and later differ from CPU float32 by a few percent of the logits once the
//! train-mode BatchNorms have amplified them. CI has no GPU; run on a GPU machine with
//! `cargo test -p slimseg-model --test cuda -- --nocapture`.
mod common;

use common::{input, max_diff, slice_into};
use slimseg_model::infer::predict_volume;
use slimseg_model::{GateMode, LayerArch, ModelConfig, PixelHead, SubnetArch, TransUnet};
use tch::{Device, Kind, nn};

fn cuda() -> Option<Device> {
    let info = slimseg_model::runtime::init();
    if tch::Cuda::is_available() {
        Some(Device::Cuda(0))
    } else {
        eprintln!("CUDA not available ({:?}): skipped", info.cuda_backend);
        None
    }
}

#[test]
fn model_runs_on_cuda_like_on_cpu() {
    let Some(dev) = cuda() else { return };
    let cfg = ModelConfig {
        dropout: 0.0,
        ..ModelConfig::tiny()
    }
    .with_pixel_head(PixelHead::DirectionField);
    tch::manual_seed(1);
    let cpu_vs = nn::VarStore::new(Device::Cpu);
    let cpu = TransUnet::new(&cpu_vs.root(), &cfg).unwrap();
    let mut vs = nn::VarStore::new(dev);
    let mut model = TransUnet::new(&vs.root(), &cfg).unwrap();
    vs.copy(&cpu_vs).unwrap();
    let mut cpu_vs = cpu_vs;
    cpu_vs.double();
    vs.double();
    let x = input(&cfg, 2, 3).to_kind(Kind::Double);
    let a = cpu.forward_t(&x, true).unwrap().logits;
    let b = model.forward_t(&x.to_device(dev), true).unwrap();
    assert_eq!(b.logits.device(), dev);
    let d = max_diff(&a, &b.logits.to_device(Device::Cpu));
    eprintln!("cpu vs cuda logits: {d:.3e}");
    assert!(d < 1e-9, "cpu vs cuda {d}");

    // Gates on CUDA: soft at init == off, gradients reach every gate.
    let off = model.forward_t(&x.to_device(dev), true).unwrap().logits;
    model.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    model.set_gate_mode(GateMode::Soft).unwrap();
    let out = model.forward_t(&x.to_device(dev), true).unwrap();
    assert!(max_diff(&off, &out.logits) < 1e-9);
    (out.logits.square().mean(Kind::Float)
        + out.direction_field.unwrap().square().mean(Kind::Float))
    .backward();
    for v in model.soft_gates().unwrap().variables() {
        assert!(v.grad().defined() && v.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    // Hard masks == physically reduced model on CUDA.
    let mut arch = SubnetArch::full(&cfg);
    for (l, la) in arch.layers.iter_mut().enumerate() {
        *la = LayerArch {
            head_dims: (0..cfg.heads)
                .map(|h| {
                    (0..cfg.head_dim())
                        .filter(|d| (d + h + l) % 3 != 0)
                        .collect()
                })
                .collect(),
            mlp_units: (0..cfg.mlp_dim).filter(|j| j % 2 == 0).collect(),
            tokens: (0..cfg.num_tokens()).filter(|t| (t + l) % 4 != 0).collect(),
        };
    }
    model
        .set_gate_mode(GateMode::Hard {
            arch: arch.clone(),
            scale_by_soft: false,
        })
        .unwrap();
    let mut rvs = nn::VarStore::new(dev);
    let reduced = TransUnet::new_reduced(&rvs.root(), &cfg, &arch).unwrap();
    rvs.double();
    slice_into(&vs, &rvs, &arch);
    let h = model.forward_t(&x.to_device(dev), true).unwrap().logits;
    let r = reduced.forward_t(&x.to_device(dev), true).unwrap().logits;
    assert!(
        max_diff(&h, &r) < 1e-9,
        "hard vs reduced on cuda {}",
        max_diff(&h, &r)
    );

    // Volume inference with the model on CUDA.
    let vol =
        ndarray::Array3::<f32>::from_shape_fn((3, 70, 50), |(z, y, x)| ((z + y * x) % 7) as f32);
    let labels = predict_volume(&reduced, vol.view(), 2).unwrap();
    assert_eq!(labels.dim(), (3, 70, 50));
}

#[test]
fn paper_forward_on_cuda() {
    let Some(dev) = cuda() else { return };
    let cfg = ModelConfig::paper();
    let vs = nn::VarStore::new(dev);
    let model = TransUnet::new(&vs.root(), &cfg).unwrap();
    let x = input(&cfg, 2, 4).to_device(dev);
    let _g = tch::no_grad_guard();
    let out = model.forward_t(&x, false).unwrap();
    assert_eq!(out.logits.size(), vec![2, 4, 224, 224]);
}
