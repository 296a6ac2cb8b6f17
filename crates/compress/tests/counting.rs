//! The sliced model's parameter count equals the analytic count of its architecture, the
//! structured MAC-target architectures meet their target, and the uniform control is
//! uniform, keeps the highest-ranked units and never costs more than the learned subnet.
mod common;

use common::tiny_cfg;
use proptest::prelude::*;
use slimseg_compress::target::central_tokens;
use slimseg_compress::{CompressedModel, Summary};
use slimseg_compress::{
    KeepFractions, WeightRanking, arch_for_mac_reduction, slice_state, structured_arch,
    uniform_control,
};
use slimseg_model::{LayerArch, ModelConfig, PixelHead, SubnetArch, TransUnet, count};
use tch::{Device, Tensor, nn};

fn subset(mask: &[bool]) -> Vec<usize> {
    (0..mask.len()).filter(|&i| mask[i]).collect()
}

fn arch_strategy(cfg: &ModelConfig) -> impl Strategy<Value = SubnetArch> + use<> {
    let full = SubnetArch::full_dims(cfg);
    let layer = (
        prop::collection::vec(
            prop::collection::vec(any::<bool>(), full.head_dim),
            full.heads,
        ),
        prop::collection::vec(prop::bool::weighted(0.3), full.mlp_dim),
        prop::collection::vec(prop::bool::weighted(0.6), full.num_tokens),
    )
        .prop_map(|(h, m, t)| LayerArch {
            head_dims: h.iter().map(|d| subset(d)).collect(),
            mlp_units: subset(&m),
            tokens: subset(&t),
        });
    prop::collection::vec(layer, cfg.layers).prop_map(move |layers| SubnetArch { full, layers })
}

fn sliced_params(cfg: &ModelConfig, full_vs: &nn::VarStore, arch: &SubnetArch) -> u64 {
    let state = slice_state(cfg, &full_vs.variables(), arch, None).unwrap();
    CompressedModel::from_state(cfg, arch, &state, Device::Cpu)
        .unwrap()
        .num_params()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn sliced_param_count_equals_the_analytic_count(
        arch in arch_strategy(&tiny_cfg(PixelHead::DirectionField)),
    ) {
        let cfg = tiny_cfg(PixelHead::DirectionField);
        let vs = nn::VarStore::new(Device::Cpu);
        let _full = TransUnet::new(&vs.root(), &cfg).unwrap();
        let params = sliced_params(&cfg, &vs, &arch);
        prop_assert_eq!(params, count::count(&cfg, Some(&arch)).unwrap().params());
    }
}

#[test]
fn paper_structured_arch_meets_the_mac_target_and_its_count() {
    let cfg = ModelConfig::paper();
    let (arch, summary) = arch_for_mac_reduction(&cfg, 0.3, cfg.layers / 2).unwrap();
    assert!(summary.mac_reduction() >= 0.3, "{summary:?}");
    assert!(
        summary.mac_reduction() < 0.32,
        "should be the largest arch meeting the target"
    );
    assert_eq!(summary, Summary::new(&cfg, &arch).unwrap());
    // Tokens are nested with depth and only pruned from the middle on.
    for (l, w) in arch.layers.windows(2).enumerate() {
        assert!(
            w[1].tokens.iter().all(|t| w[0].tokens.contains(t)),
            "layer {l}"
        );
    }
    assert_eq!(arch.layers[0].tokens.len(), cfg.num_tokens());
    assert!(arch.layers[cfg.layers - 1].tokens.len() < cfg.num_tokens());

    // The sliced model has exactly the analytic parameter count of the arch.
    let vs = nn::VarStore::new(Device::Cpu);
    let _full = TransUnet::new(&vs.root(), &cfg).unwrap();
    assert_eq!(sliced_params(&cfg, &vs, &arch), summary.params);
}

#[test]
fn structured_arch_keeps_the_asked_fractions() {
    let cfg = tiny_cfg(PixelHead::None);
    let arch = structured_arch(
        &cfg,
        KeepFractions {
            attn: 0.5,
            mlp: 0.25,
            tokens: 0.5,
        },
        2,
    )
    .unwrap();
    let la = &arch.layers[3];
    assert!(la.head_dims.iter().all(|d| d.len() == cfg.head_dim() / 2));
    assert_eq!(la.mlp_units.len(), cfg.mlp_dim / 4);
    assert_eq!(la.tokens.len(), cfg.num_tokens() / 2);
    assert_eq!(arch.layers[1].tokens.len(), cfg.num_tokens());
    // The kept tokens are the central ones: the grid centre is kept, the corners are not.
    let g = cfg.grid_size();
    assert!(la.tokens.contains(&(g / 2 * g + g / 2)));
    assert!(!la.tokens.contains(&0) && !la.tokens.contains(&(g * g - 1)));
    assert!(
        structured_arch(
            &cfg,
            KeepFractions {
                attn: 1.5,
                mlp: 1.0,
                tokens: 1.0
            },
            0
        )
        .is_err()
    );
    assert!(arch_for_mac_reduction(&cfg, 0.99, 0).is_err());
}

/// Identity-like ranking: every head's dims and every block's units in index order.
fn index_ranking(cfg: &ModelConfig) -> WeightRanking {
    let full = SubnetArch::full_dims(cfg);
    WeightRanking {
        attn: vec![vec![(0..full.head_dim).collect(); full.heads]; cfg.layers],
        mlp: vec![(0..full.mlp_dim).collect(); cfg.layers],
    }
}

fn kept_floor(fraction: f64, n: usize) -> usize {
    ((fraction * n as f64 + 1e-9).floor() as usize).min(n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_uniform_control_is_uniform_and_never_costs_more_than_the_learned_subnet(
        learned in arch_strategy(&tiny_cfg(PixelHead::DirectionField)),
        attn_kept in 0usize..8,
    ) {
        let cfg = tiny_cfg(PixelHead::DirectionField);
        let full = SubnetArch::full_dims(&cfg);
        // Also subnets that keep a handful of attention dims in all (fewer than heads).
        let mut learned = learned;
        if attn_kept < 4 {
            for (l, layer) in learned.layers.iter_mut().enumerate() {
                for (h, dims) in layer.head_dims.iter_mut().enumerate() {
                    dims.retain(|&d| d == 0 && h == 0 && l < attn_kept);
                }
            }
        }
        let (fa, fm, ft) = learned.kept_fractions();
        let (arch, summary) = uniform_control(&cfg, &learned, &index_ranking(&cfg)).unwrap();
        let mine = Summary::new(&cfg, &learned).unwrap();
        prop_assert!(summary.params <= mine.params, "{summary:?} vs {mine:?}");
        prop_assert!(summary.macs <= mine.macs, "{summary:?} vs {mine:?}");
        prop_assert_eq!(summary, Summary::new(&cfg, &arch).unwrap());
        let a = kept_floor(fa, full.heads * full.head_dim);
        let m = kept_floor(fm, full.mlp_dim);
        let first = &arch.layers[0];
        for layer in &arch.layers {
            prop_assert_eq!(layer.head_widths(), first.head_widths());
            prop_assert_eq!(layer.attn_width(), a);
            prop_assert_eq!(layer.mlp_units.len(), m);
            prop_assert_eq!(&layer.tokens, &first.tokens);
        }
        let w = first.head_widths();
        prop_assert!(w.iter().max().unwrap() - w.iter().min().unwrap() <= 1, "{w:?}");
        let t = first.tokens.len();
        prop_assert!(t <= kept_floor(ft, full.num_tokens));
        prop_assert_eq!(&first.tokens, &central_tokens(cfg.grid_size(), t));
        // The token count is the largest within the learned MACs.
        if t < kept_floor(ft, full.num_tokens) {
            let mut more = arch.clone();
            for l in &mut more.layers {
                l.tokens = central_tokens(cfg.grid_size(), t + 1);
            }
            prop_assert!(Summary::new(&cfg, &more).unwrap().macs > mine.macs);
        }
    }
}

#[test]
fn weight_ranking_orders_dims_and_units_by_weight_norm_and_the_control_keeps_the_first() {
    let cfg = tiny_cfg(PixelHead::None);
    let full = SubnetArch::full_dims(&cfg);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = TransUnet::new(&vs.root(), &cfg).unwrap();
    let mut vars = vs.variables();
    let p = "transformer.encoder.layer.0";
    for w in [
        "attn.query",
        "attn.key",
        "attn.value",
        "attn.out",
        "ffn.fc1",
        "ffn.fc2",
    ] {
        let t = vars.get_mut(&format!("{p}.{w}.weight")).unwrap();
        *t = t.zeros_like();
    }
    let hd = full.head_dim as i64;
    let set = |vars: &mut std::collections::HashMap<String, Tensor>, name: &str, dim, i, v| {
        let t = vars.get_mut(&format!("{p}.{name}.weight")).unwrap();
        let _ = t.narrow(dim, i, 1).fill_(v);
    };
    // Head 1: dim 3 by a query row (norm^2 4 x hidden), dim 5 by its output column (1 x
    // hidden), dim 0 by key and value rows together (2 x 0.25 x hidden).
    set(&mut vars, "attn.query", 0, hd + 3, 2.0);
    set(&mut vars, "attn.out", 1, hd + 5, 1.0);
    set(&mut vars, "attn.key", 0, hd, 0.5);
    set(&mut vars, "attn.value", 0, hd, 0.5);
    // MLP: unit 7 by its fc2 column, unit 2 by its fc1 row.
    set(&mut vars, "ffn.fc2", 1, 7, 3.0);
    set(&mut vars, "ffn.fc1", 0, 2, 1.0);
    let rank = WeightRanking::of(&cfg, &vars).unwrap();
    assert_eq!(&rank.attn[0][1][..4], &[3, 5, 0, 1]);
    assert_eq!(&rank.attn[0][0][..3], &[0, 1, 2], "all zero: index order");
    assert_eq!(&rank.mlp[0][..3], &[7, 2, 0]);
    // A learned subnet keeping 2 dims per head and 2 units per block on average: the
    // control keeps exactly those ranked first.
    let learned = structured_arch(
        &cfg,
        KeepFractions {
            attn: 2.0 / full.head_dim as f64,
            mlp: 2.0 / full.mlp_dim as f64,
            tokens: 1.0,
        },
        0,
    )
    .unwrap();
    let (arch, _) = uniform_control(&cfg, &learned, &rank).unwrap();
    assert_eq!(arch.layers[0].head_dims[1], vec![3, 5]);
    assert_eq!(arch.layers[0].mlp_units, vec![2, 7]);
    let mut top = rank.mlp[1][..2].to_vec();
    top.sort_unstable();
    assert_eq!(arch.layers[1].mlp_units, top);
}

#[test]
fn the_uniform_control_drops_tokens_below_the_learned_share_when_the_macs_need_it() {
    // Learned: block 0 keeps every MLP unit but few tokens, later blocks few units but
    // every token. Spread evenly, the same shares cost more MACs, so the control keeps
    // fewer tokens than the learned share.
    let cfg = tiny_cfg(PixelHead::None);
    let full = SubnetArch::full_dims(&cfg);
    let mut learned = SubnetArch::full(&cfg);
    learned.layers[0].tokens = central_tokens(cfg.grid_size(), full.num_tokens / 10);
    for l in &mut learned.layers[1..] {
        l.mlp_units = (0..full.mlp_dim / 10).collect();
    }
    let (arch, summary) = uniform_control(&cfg, &learned, &index_ranking(&cfg)).unwrap();
    let mine = Summary::new(&cfg, &learned).unwrap();
    assert!(summary.macs <= mine.macs, "{summary:?} vs {mine:?}");
    let (_, _, ft) = learned.kept_fractions();
    assert!(arch.layers[0].tokens.len() < kept_floor(ft, full.num_tokens));
}
