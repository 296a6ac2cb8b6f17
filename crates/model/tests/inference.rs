//! A model prepared for inference (`TransUnet::prepare_inference`): without fast paths it
//! computes bit for bit what the unprepared model computes; with them (fused q/k/v,
//! `scaled_dot_product_attention`, oneDNN linears, narrow 1x1 convolutions as matrix
//! products, BatchNorms folded into the decoder's convolutions) it differs by fp32
//! rounding only, on
//! the full model, with gates, and on reduced models with unequal, empty and dropped
//! heads, empty MLPs and dropped tokens; in bf16 it runs in bf16 and stays close; and it
//! refuses what it cannot do.

mod common;

use common::{input, max_diff, perturb, random_arch, seeded};
use rand::SeedableRng;
use rand::rngs::StdRng;
use slimseg_model::{
    GateMode, InferenceOptions, ModelConfig, PixelHead, Precision, SubnetArch, TransUnet,
};
use tch::{Device, Kind, Tensor, nn};

/// A model of `cfg` (reduced to `arch` if given) with random weights, and a second copy
/// of it prepared with `opts`.
fn pair(
    cfg: &ModelConfig,
    arch: Option<&SubnetArch>,
    opts: InferenceOptions,
    seed: i64,
) -> ((nn::VarStore, TransUnet), (nn::VarStore, TransUnet)) {
    let build = |vs: &nn::VarStore| match arch {
        None => TransUnet::new(&vs.root(), cfg).unwrap(),
        Some(a) => TransUnet::new_reduced(&vs.root(), cfg, a).unwrap(),
    };
    let (vs, model) = seeded(seed, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(&vs);
        perturb(&vs);
        (vs, model)
    });
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let mut prepared = build(&vs2);
    vs2.copy(&vs).unwrap();
    prepared.prepare_inference(&mut vs2, opts).unwrap();
    ((vs, model), (vs2, prepared))
}

fn logits(model: &TransUnet, xs: &Tensor) -> (Tensor, Option<Tensor>) {
    let _g = tch::no_grad_guard();
    let out = model.forward_t(xs, false).unwrap();
    (out.logits, out.direction_field)
}

const EXACT: InferenceOptions = InferenceOptions {
    precision: Precision::Fp32,
    fast: false,
};
const FAST: InferenceOptions = InferenceOptions {
    precision: Precision::Fp32,
    fast: true,
};

fn tiny_df() -> ModelConfig {
    ModelConfig::tiny().with_pixel_head(PixelHead::DirectionField)
}

#[test]
fn prepared_without_fast_paths_is_bit_identical() {
    let cfg = tiny_df();
    let ((_, plain), (_, prepared)) = pair(&cfg, None, EXACT, 1);
    let xs = input(&cfg, 2, 2);
    let (a, fa) = logits(&plain, &xs);
    let (b, fb) = logits(&prepared, &xs);
    assert!(a.equal(&b), "logits differ by {:e}", max_diff(&a, &b));
    assert!(fa.unwrap().equal(&fb.unwrap()));
}

/// Fast paths change the summation order only: the largest difference is a small
/// multiple of fp32 rounding at the logits' scale.
fn assert_close_fp32(a: &Tensor, b: &Tensor) {
    let scale = a.abs().max().double_value(&[]);
    assert!(scale > 1e-2, "logits too small to compare ({scale:e})");
    let d = max_diff(a, b);
    assert!(
        d <= 1e-5 * scale.max(1.0),
        "differ by {d:e} at scale {scale:e}"
    );
}

#[test]
fn fast_paths_on_the_full_model_differ_by_rounding_only() {
    let cfg = tiny_df();
    let ((_, plain), (_, fast)) = pair(&cfg, None, FAST, 3);
    for batch in [1, 3] {
        let xs = input(&cfg, batch, 4);
        let (a, fa) = logits(&plain, &xs);
        let (b, fb) = logits(&fast, &xs);
        assert_close_fp32(&a, &b);
        assert_close_fp32(&fa.unwrap(), &fb.unwrap());
    }
}

#[test]
fn fast_paths_on_reduced_models_differ_by_rounding_only() {
    let cfg = ModelConfig::tiny();
    let mut rng = StdRng::seed_from_u64(5);
    for seed in 0..4 {
        let arch = random_arch(&cfg, &mut rng);
        // Unequal heads (the padded path) must be among the cases.
        if seed == 0 {
            let widths = arch.layers[0].head_widths();
            assert!(widths.iter().any(|&w| w != widths[0]), "{widths:?}");
        }
        let ((_, plain), (_, fast)) = pair(&cfg, Some(&arch), FAST, 10 + seed);
        let xs = input(&cfg, 2, 20 + seed);
        assert_close_fp32(&logits(&plain, &xs).0, &logits(&fast, &xs).0);
    }
}

#[test]
fn fast_paths_keep_the_gates() {
    let cfg = ModelConfig::tiny();
    let (mut vs, mut plain) = seeded(6, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = TransUnet::new(&vs.root(), &cfg).unwrap();
        (vs, m)
    });
    plain.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    plain.set_gate_mode(GateMode::Soft).unwrap();
    seeded(7, || {
        let _g = tch::no_grad_guard();
        // Gates between 0.25 and 1, so that they change what the model computes.
        for (name, mut t) in vs.variables() {
            if name.starts_with("gates.") {
                t.copy_(&(t.rand_like() * 0.75 + 0.25));
            }
        }
        perturb(&vs);
    });
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let mut fast = TransUnet::new(&vs2.root(), &cfg).unwrap();
    fast.attach_soft_gates(&(vs2.root() / "gates")).unwrap();
    fast.set_gate_mode(GateMode::Soft).unwrap();
    vs2.copy(&vs).unwrap();
    fast.prepare_inference(&mut vs2, FAST).unwrap();
    let xs = input(&cfg, 2, 8);
    assert_close_fp32(&logits(&plain, &xs).0, &logits(&fast, &xs).0);
    // Lower precision needs the gates off.
    let err = plain
        .prepare_inference(
            &mut vs,
            InferenceOptions {
                precision: Precision::Bf16,
                fast: true,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("without gates"), "{err}");
}

#[test]
fn bf16_runs_in_bf16_and_stays_close() {
    let cfg = tiny_df();
    let opts = InferenceOptions {
        precision: Precision::Bf16,
        fast: true,
    };
    let ((_, plain), (vs, half)) = pair(&cfg, None, opts, 9);
    assert!(vs.variables().values().all(|t| t.kind() == Kind::BFloat16));
    let xs = input(&cfg, 2, 10);
    let (a, _) = logits(&plain, &xs);
    let (b, _) = logits(&half, &xs);
    assert_eq!(b.kind(), Kind::BFloat16);
    let scale = a.abs().max().double_value(&[]);
    let d = max_diff(&a, &b.to_kind(Kind::Float));
    assert!(
        d > 0.0 && d < 0.05 * scale,
        "differ by {d:e} at scale {scale:e}"
    );
}

#[test]
fn a_prepared_model_refuses_what_it_cannot_do() {
    let cfg = ModelConfig::tiny();
    let ((_, _), (mut vs, mut prepared)) = pair(&cfg, None, FAST, 11);
    let xs = input(&cfg, 1, 12);
    let train = prepared.forward_t(&xs, true).unwrap_err().to_string();
    assert!(train.contains("cannot train"), "{train}");
    let again = prepared.prepare_inference(&mut vs, FAST).unwrap_err();
    assert!(again.to_string().contains("already prepared"), "{again}");
    vs.double();
    let moved = prepared.forward_t(&xs, false).unwrap_err().to_string();
    assert!(moved.contains("prepare it again"), "{moved}");

    let mut vs = nn::VarStore::new(Device::Cpu);
    let mut m = TransUnet::new(&vs.root(), &cfg).unwrap();
    let fp16 = InferenceOptions {
        precision: Precision::Fp16,
        fast: true,
    };
    let err = m.prepare_inference(&mut vs, fp16).unwrap_err().to_string();
    assert!(err.contains("CUDA only"), "{err}");
    assert!(!m.is_prepared());
}

#[test]
fn precision_names_round_trip() {
    for p in Precision::ALL {
        assert_eq!(p.name().parse::<Precision>().unwrap(), p);
    }
    let err = "fp64".parse::<Precision>().unwrap_err().to_string();
    assert!(err.contains("fp32, bf16 or fp16"), "{err}");
}
