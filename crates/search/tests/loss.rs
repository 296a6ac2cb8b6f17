//! Losses against hand-computed values.

use slimseg_model::{ModelConfig, SoftGates};
use slimseg_search::config::{SearchConfig, SparsityKind};
use slimseg_search::loss::{
    DICE_SMOOTH, cross_entropy, dice_loss, direction_loss, segmentation_loss, sparsity_factors,
    sparsity_loss,
};
use slimseg_search::select::gate_macs;
use tch::{Device, Kind, Tensor, nn};

/// Two pixels, two classes: pixel a has logits (0, 0) and label 1, pixel b has logits
/// (ln 3, 0) and label 0, so the softmax is (1/2, 1/2) and (3/4, 1/4).
fn two_pixels() -> (Tensor, Tensor) {
    let l3 = 3f32.ln();
    // [B=1, K=2, H=1, W=2]: channel 0 = (0, ln3), channel 1 = (0, 0)
    let logits = Tensor::from_slice(&[0.0f32, l3, 0.0, 0.0]).view([1, 2, 1, 2]);
    let labels = Tensor::from_slice(&[1i64, 0]).view([1, 1, 2]);
    (logits, labels)
}

fn val(t: &Tensor) -> f64 {
    t.double_value(&[])
}

#[test]
fn cross_entropy_matches_hand_value() {
    let (logits, labels) = two_pixels();
    let want = (-(0.5f64).ln() - (0.75f64).ln()) / 2.0; // 0.490415
    assert!((val(&cross_entropy(&logits, &labels)) - want).abs() < 1e-6);
}

#[test]
fn dice_loss_matches_transunet_formula_by_hand() {
    let (logits, labels) = two_pixels();
    let e = DICE_SMOOTH;
    // class 0: p = (1/2, 3/4), t = (0, 1): inter 3/4, sum p^2 = 1/4 + 9/16, sum t^2 = 1
    let d0 = (2.0 * 0.75 + e) / (0.25 + 0.5625 + 1.0 + e);
    // class 1: p = (1/2, 1/4), t = (1, 0): inter 1/2, sum p^2 = 1/4 + 1/16, sum t^2 = 1
    let d1 = (2.0 * 0.5 + e) / (0.25 + 0.0625 + 1.0 + e);
    let want = 1.0 - (d0 + d1) / 2.0; // 0.205254...
    let got = val(&dice_loss(&logits, &labels));
    assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
    let seg = val(&segmentation_loss(&logits, &labels));
    let ce = (-(0.5f64).ln() - (0.75f64).ln()) / 2.0;
    assert!((seg - (0.5 * ce + 0.5 * want)).abs() < 1e-6);
}

#[test]
fn perfect_prediction_has_near_zero_dice_loss_and_absent_class_counts_fully() {
    // Very confident correct logits: Dice of both present classes ~1. A third class that
    // is absent with p ~ 0 gives (0 + e) / (0 + e) = 1 as well (TransUNet's smoothing).
    let logits =
        Tensor::from_slice(&[50.0f32, -50.0, -50.0, 50.0, -50.0, -50.0]).view([1, 3, 1, 2]);
    let labels = Tensor::from_slice(&[0i64, 1]).view([1, 1, 2]);
    assert!(val(&dice_loss(&logits, &labels)) < 1e-4);
}

#[test]
fn direction_loss_is_mean_squared_vector_distance() {
    // 1 image, 2 pixels: pred (1, 0) and (0, 0); target (0, 1) and (0, 0).
    // Squared distances 2 and 0 -> mean 1.
    let pred = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0]).view([1, 2, 1, 2]);
    let target = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 0.0]).view([1, 2, 1, 2]);
    assert!((val(&direction_loss(&pred, &target)) - 1.0).abs() < 1e-7);
}

#[test]
fn vit_slim_sparsity_is_weighted_sum_of_l1_norms_at_init() {
    let cfg = ModelConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let gates = SoftGates::new(&(vs.root() / "gates"), &cfg);
    let search = SearchConfig::default();
    let f = sparsity_factors(&cfg, &search);
    assert_eq!(f, (2e-4, 5e-5, 1e-4));
    // At init: attention and MLP gates are 1, token scores 3 (|tanh 3| each).
    let (l, h, m, n) = (4.0, 192.0, 768.0, 36.0);
    let want = 2e-4 * l * h + 5e-5 * l * m + 1e-4 * l * n * 3f64.tanh();
    let got = sparsity_loss(&gates, f)
        .to_kind(Kind::Double)
        .double_value(&[]);
    assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
}

#[test]
fn cost_aware_factors_are_proportional_to_macs_with_the_requested_mean() {
    let cfg = ModelConfig::tiny();
    let search = SearchConfig {
        sparsity: SparsityKind::CostAware,
        cost_weight: 1e-3,
        ..SearchConfig::default()
    };
    let (fa, fm, ft) = sparsity_factors(&cfg, &search);
    let (a, m, t) = gate_macs(&cfg);
    assert!((fa / fm - a as f64 / m as f64).abs() < 1e-9);
    assert!((ft / fm - t as f64 / m as f64).abs() < 1e-9);
    let (na, nm, nt) = (4.0 * 192.0, 4.0 * 768.0, 4.0 * 36.0);
    let mean = (fa * na + fm * nm + ft * nt) / (na + nm + nt);
    assert!((mean - 1e-3).abs() < 1e-12, "mean factor {mean}");
    // Hand values for tiny (hidden 192, 36 tokens, MLP 768): an attention dim controls
    // 36 * 4 * 192 (projections) + 2 * 36^2 (both attention matmuls) MACs.
    assert_eq!(a, 36 * 4 * 192 + 2 * 36 * 36);
    assert_eq!(m, 36 * 2 * 192);
}
