//! Gate semantics: off / soft / hard, token removal, equivalence with the reduced model,
//! gradients.
mod common;

use common::{input, max_diff, perturb, random_arch, seeded, slice_into};
use rand::SeedableRng;
use slimseg_model::{
    GATE_PARAM_GROUP, GateMode, LayerArch, ModelConfig, PixelHead, SubnetArch, TransUnet,
};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};

fn tiny(pixel: PixelHead) -> (ModelConfig, nn::VarStore, TransUnet) {
    // No dropout, so that train-mode forwards are deterministic: comparisons run in train
    // mode, where BatchNorm uses batch statistics and the transformer's share of the
    // logits is not attenuated by untrained running statistics.
    let cfg = ModelConfig {
        dropout: 0.0,
        attention_dropout: 0.0,
        ..ModelConfig::tiny()
    }
    .with_pixel_head(pixel);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = seeded(7, || {
        let model = TransUnet::new(&vs.root(), &cfg).unwrap();
        perturb(&vs);
        model
    });
    (cfg, vs, model)
}

/// A fixed arch that removes tokens, head dims (one head entirely) and MLP units.
fn pruned_arch(cfg: &ModelConfig) -> SubnetArch {
    let mut arch = SubnetArch::full(cfg);
    let n = cfg.num_tokens();
    for (l, la) in arch.layers.iter_mut().enumerate() {
        *la = LayerArch {
            head_dims: (0..cfg.heads)
                .map(|h| {
                    if h == 1 && l == 0 {
                        vec![]
                    } else {
                        (0..cfg.head_dim())
                            .filter(|d| (d + h + l) % 3 != 0)
                            .collect()
                    }
                })
                .collect(),
            mlp_units: (0..cfg.mlp_dim).filter(|j| (j + l) % 4 != 1).collect(),
            tokens: (0..n).filter(|t| (t * 7 + l) % 5 != 0 || l == 0).collect(),
        };
    }
    arch
}

#[test]
fn soft_at_init_equals_off() {
    for pixel in [PixelHead::None, PixelHead::DirectionField] {
        let (cfg, vs, mut model) = tiny(pixel);
        let x = input(&cfg, 2, 11);
        let off = model.forward_t(&x, true).unwrap();
        model.attach_soft_gates(&(vs.root() / "gates")).unwrap();
        model.set_gate_mode(GateMode::Soft).unwrap();
        let soft = model.forward_t(&x, true).unwrap();
        let d = max_diff(&off.logits, &soft.logits);
        assert!(d < 1e-5, "soft at init differs from off by {d}");
        if let (Some(a), Some(b)) = (&off.direction_field, &soft.direction_field) {
            assert!(max_diff(a, b) < 1e-5);
        }
    }
}

#[test]
fn hard_with_everything_kept_equals_off() {
    let (cfg, _vs, mut model) = tiny(PixelHead::None);
    let x = input(&cfg, 2, 12);
    let off = model.forward_t(&x, true).unwrap().logits;
    model
        .set_gate_mode(GateMode::Hard {
            arch: SubnetArch::full(&cfg),
            scale_by_soft: false,
        })
        .unwrap();
    let hard = model.forward_t(&x, true).unwrap().logits;
    assert!(max_diff(&off, &hard) < 1e-5);
}

fn check_hard_equals_reduced(
    cfg: &ModelConfig,
    vs: &nn::VarStore,
    model: &mut TransUnet,
    arch: &SubnetArch,
    x: &Tensor,
) {
    let rvs = nn::VarStore::new(Device::Cpu);
    let reduced = TransUnet::new_reduced(&rvs.root(), cfg, arch).unwrap();
    slice_into(vs, &rvs, arch);
    model
        .set_gate_mode(GateMode::Hard {
            arch: arch.clone(),
            scale_by_soft: false,
        })
        .unwrap();
    let hard = model.forward_t(x, true).unwrap();
    let red = reduced.forward_t(x, true).unwrap();
    let field = hard.direction_field.as_ref().unwrap();
    let field_diff = max_diff(field, red.direction_field.as_ref().unwrap());
    assert!(field_diff < 1e-4, "direction fields differ by {field_diff}");
    // The warp cut (|D| <= df_min_magnitude does not warp) is a step: a pixel whose field
    // lies within float noise of it may warp in one model and not in the other, which
    // moves the logits of its 3x3 neighbourhood (the segmentation head). Only a pixel
    // whose magnitude is within the fields' difference of the cut can flip; those
    // (under 1% of them) are left out of the logits comparison.
    let mag = field
        .square()
        .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
        .sqrt();
    let near = (mag - cfg.df_min_magnitude)
        .abs()
        .le(2.0 * field_diff + 1e-7)
        .to_kind(Kind::Float)
        .max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false)
        .gt(0.0);
    let excluded = near.sum(Kind::Int64).int64_value(&[]);
    assert!(
        excluded * 100 < near.numel() as i64,
        "{excluded} pixels near the warp cut"
    );
    let keep = near.logical_not().to_kind(Kind::Float);
    let d = max_diff(&(&hard.logits * &keep), &(&red.logits * &keep));
    assert!(
        d < 1e-4,
        "hard vs reduced: {d} ({excluded} pixels near the cut left out)"
    );
    // And the pruning changes the output, so the comparison is not vacuous.
    model.set_gate_mode(GateMode::Off).unwrap();
    let off = model.forward_t(x, true).unwrap().logits;
    assert!(max_diff(&off, &red.logits) > 1e-3);
}

#[test]
fn hard_masks_equal_the_physically_reduced_model() {
    let (cfg, vs, mut model) = tiny(PixelHead::DirectionField);
    let x = input(&cfg, 2, 13);
    check_hard_equals_reduced(&cfg, &vs, &mut model, &pruned_arch(&cfg), &x);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 4, ..Default::default() })]
    #[test]
    fn slicing_equals_masking_for_random_archs(seed in proptest::prelude::any::<u64>()) {
        let (cfg, vs, mut model) = tiny(PixelHead::DirectionField);
        let arch = random_arch(&cfg, &mut rand::rngs::StdRng::seed_from_u64(seed));
        check_hard_equals_reduced(&cfg, &vs, &mut model, &arch, &input(&cfg, 2, 19));
    }
}

#[test]
fn zero_soft_gates_equal_removal() {
    // Soft gates set to exactly 0 (scores 0 for tokens) and 1 elsewhere give the reduced
    // model: a zero token gate removes the token as key and leaves it unchanged.
    let (cfg, vs, mut model) = tiny(PixelHead::None);
    let arch = pruned_arch(&cfg);
    let gates = model.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    {
        let _g = tch::no_grad_guard();
        let f = &arch.full;
        for (l, la) in arch.layers.iter().enumerate() {
            let mut a = vec![0f32; f.heads * f.head_dim];
            for i in la.attn_flat_indices(f.head_dim) {
                a[i] = 1.0;
            }
            gates
                .attn(l)
                .shallow_clone()
                .copy_(&Tensor::from_slice(&a).view([f.heads as i64, f.head_dim as i64]));
            let mut m = vec![0f32; f.mlp_dim];
            la.mlp_units.iter().for_each(|&j| m[j] = 1.0);
            gates.mlp(l).shallow_clone().copy_(&Tensor::from_slice(&m));
            let mut s = vec![0f32; f.num_tokens];
            la.tokens.iter().for_each(|&t| s[t] = 3.0);
            gates
                .token_scores(l)
                .shallow_clone()
                .copy_(&Tensor::from_slice(&s));
        }
    }
    model.set_gate_mode(GateMode::Soft).unwrap();
    let x = input(&cfg, 1, 14);
    let soft = model.forward_t(&x, true).unwrap().logits;
    let rvs = nn::VarStore::new(Device::Cpu);
    let reduced = TransUnet::new_reduced(&rvs.root(), &cfg, &arch).unwrap();
    slice_into(&vs, &rvs, &arch);
    let red = reduced.forward_t(&x, true).unwrap().logits;
    assert!(max_diff(&soft, &red) < 1e-4, "{}", max_diff(&soft, &red));
}

#[test]
fn removed_token_passes_through_a_block_unchanged() {
    // Remove every token in all blocks: the encoder is then the identity on the
    // embeddings, so changing all transformer weights changes nothing.
    let (cfg, vs, mut model) = tiny(PixelHead::None);
    let mut arch = SubnetArch::full(&cfg);
    arch.layers.iter_mut().for_each(|l| l.tokens.clear());
    model
        .set_gate_mode(GateMode::Hard {
            arch,
            scale_by_soft: false,
        })
        .unwrap();
    let x = input(&cfg, 1, 15);
    let a = model.forward_t(&x, true).unwrap().logits;
    {
        let _g = tch::no_grad_guard();
        for (name, mut t) in vs.variables() {
            if name.starts_with("transformer.encoder.layer.") {
                t.copy_(&t.randn_like());
            }
        }
    }
    let b = model.forward_t(&x, true).unwrap().logits;
    assert!(a.isfinite().all().int64_value(&[]) == 1);
    assert_eq!(max_diff(&a, &b), 0.0);
}

#[test]
fn hard_scale_by_soft_uses_gate_values() {
    let (cfg, vs, mut model) = tiny(PixelHead::None);
    let gates = model.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    let _ = tch::no_grad(|| gates.mlp(0).shallow_clone().fill_(0.5));
    let arch = SubnetArch::full(&cfg);
    let x = input(&cfg, 1, 16);
    model
        .set_gate_mode(GateMode::Hard {
            arch: arch.clone(),
            scale_by_soft: false,
        })
        .unwrap();
    let binary = model.forward_t(&x, true).unwrap().logits;
    model
        .set_gate_mode(GateMode::Hard {
            arch,
            scale_by_soft: true,
        })
        .unwrap();
    let scaled = model.forward_t(&x, true).unwrap().logits;
    model.set_gate_mode(GateMode::Soft).unwrap();
    let soft = model.forward_t(&x, true).unwrap().logits;
    eprintln!("binary vs scaled {}", max_diff(&binary, &scaled));
    assert!(max_diff(&binary, &scaled) > 1e-4);
    // Token scores are at init (gate 1), so hard-with-values equals soft.
    assert!(max_diff(&scaled, &soft) < 1e-5);
}

#[test]
fn gradients_reach_every_gate() {
    let (cfg, vs, mut model) = tiny(PixelHead::DirectionField);
    model.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    model.set_gate_mode(GateMode::Soft).unwrap();
    let out = model.forward_t(&input(&cfg, 2, 17), true).unwrap();
    let w = out.logits.randn_like();
    let loss = (&out.logits * w).sum(Kind::Float)
        + out.direction_field.unwrap().square().mean(Kind::Float);
    let gates = model.soft_gates().unwrap();
    let l1 = gates.l1_attn() * 1e-4 + gates.l1_mlp() * 1e-4 + gates.l1_token() * 1e-4;
    (loss + l1).backward();
    for (i, v) in gates.variables().iter().enumerate() {
        let g = v.grad();
        assert!(g.defined(), "gate variable {i} has no gradient");
        let zeros = g.eq(0.0).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(
            zeros,
            0,
            "gate variable {i} {:?}: {zeros} entries without gradient",
            v.size()
        );
    }
}

#[test]
fn gate_mode_errors() {
    let (cfg, vs, mut model) = tiny(PixelHead::None);
    assert!(model.set_gate_mode(GateMode::Soft).is_err());
    let mut bad = SubnetArch::full(&cfg);
    bad.layers[0].mlp_units = vec![3, 2];
    let err = model
        .set_gate_mode(GateMode::Hard {
            arch: bad,
            scale_by_soft: false,
        })
        .unwrap_err();
    assert!(err.to_string().contains("ascending"), "{err}");
    model.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    assert!(model.attach_soft_gates(&(vs.root() / "gates2")).is_err());
    let rvs = nn::VarStore::new(Device::Cpu);
    let mut reduced = TransUnet::new_reduced(&rvs.root(), &cfg, &pruned_arch(&cfg)).unwrap();
    assert!(reduced.attach_soft_gates(&(rvs.root() / "gates")).is_err());
    assert!(reduced.set_gate_mode(GateMode::Soft).is_err());
}

#[test]
fn gate_values_and_l1_at_init() {
    let (cfg, vs, mut model) = tiny(PixelHead::None);
    let gates = model.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    let v = gates.values();
    assert_eq!(v.attn.len(), cfg.layers);
    assert_eq!(v.attn[0].len(), cfg.heads);
    assert_eq!(v.attn[0][0].len(), cfg.head_dim());
    assert_eq!(v.mlp[0].len(), cfg.mlp_dim);
    assert_eq!(v.token[0].len(), cfg.num_tokens());
    assert!(v.token.iter().flatten().all(|&g| (g - 1.0).abs() < 1e-6));
    let l = cfg.layers as f64;
    assert!((gates.l1_attn().double_value(&[]) - l * cfg.hidden as f64).abs() < 1e-3);
    assert!((gates.l1_mlp().double_value(&[]) - l * cfg.mlp_dim as f64).abs() < 1e-3);
    let tok = l * cfg.num_tokens() as f64 * 3f64.tanh();
    assert!((gates.l1_token().double_value(&[]) - tok).abs() < 1e-3);
    assert!(vs.variables().keys().any(|k| k == "gates.attn.0"));
    assert!(vs.variables().keys().any(|k| k == "gates.token.3"));
}

#[test]
fn gates_live_in_their_own_parameter_group() {
    let (cfg, vs, mut model) = tiny(PixelHead::None);
    model.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    model.set_gate_mode(GateMode::Soft).unwrap();
    let mut opt = nn::Sgd::default().build(&vs, 0.1).unwrap();
    opt.set_lr_group(GATE_PARAM_GROUP, 0.0);
    let before_gates: Vec<Tensor> = model
        .soft_gates()
        .unwrap()
        .variables()
        .iter()
        .map(|t| t.detach().copy())
        .collect();
    let w = vs.variables()["segmentation_head.0.weight"].detach().copy();
    let loss = model
        .forward_t(&input(&cfg, 2, 18), true)
        .unwrap()
        .logits
        .square()
        .mean(Kind::Float);
    opt.backward_step(&loss);
    for (b, a) in before_gates
        .iter()
        .zip(model.soft_gates().unwrap().variables())
    {
        assert_eq!(max_diff(b, &a), 0.0, "a gate moved with learning rate 0");
    }
    assert!(max_diff(&w, &vs.variables()["segmentation_head.0.weight"]) > 0.0);
}
