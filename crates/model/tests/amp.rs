//! Autocast through the shim: bf16 on the CPU changes what a product computes in, only
//! inside the closure, nested or not; fp16 on the CPU is refused.

use slimseg_model::amp::{AmpPrecision, autocast, autocast_state};
use tch::{Device, Kind, Tensor};

fn product_kind() -> Kind {
    let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
    a.matmul(&a).kind()
}

#[test]
fn bf16_autocast_on_the_cpu_runs_products_in_bf16_inside_only() {
    assert_eq!(autocast_state(Device::Cpu).unwrap(), None);
    assert_eq!(product_kind(), Kind::Float);
    let (inside, nested, after_nested) = autocast(Device::Cpu, AmpPrecision::Bf16, || {
        let inside = product_kind();
        let nested = autocast(Device::Cpu, AmpPrecision::Bf16, product_kind).unwrap();
        (inside, nested, autocast_state(Device::Cpu).unwrap())
    })
    .unwrap();
    assert_eq!(inside, Kind::BFloat16);
    assert_eq!(nested, Kind::BFloat16);
    assert_eq!(
        after_nested,
        Some(AmpPrecision::Bf16),
        "the inner call restores the outer state"
    );
    assert_eq!(autocast_state(Device::Cpu).unwrap(), None);
    assert_eq!(product_kind(), Kind::Float);
}

#[test]
fn gradients_reach_float32_weights_through_bf16_autocast() {
    let w = Tensor::ones([3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let x = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
    let (kind, loss) = autocast(Device::Cpu, AmpPrecision::Bf16, || {
        let y = x.matmul(&w);
        (y.kind(), y.sum(Kind::Float))
    })
    .unwrap();
    assert_eq!(kind, Kind::BFloat16, "the product ran in bf16");
    loss.backward();
    let g = w.grad();
    assert_eq!(
        g.kind(),
        Kind::Float,
        "the weight's gradient stays in its own kind"
    );
    assert!((g - 2.0).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn fp16_autocast_on_the_cpu_is_refused() {
    let err = autocast(Device::Cpu, AmpPrecision::Fp16, product_kind).unwrap_err();
    assert!(err.to_string().contains("CUDA only"), "{err}");
    assert_eq!(autocast_state(Device::Cpu).unwrap(), None);
}
