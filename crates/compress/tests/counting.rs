//! The sliced model's parameter count equals the analytic count of its architecture, and
//! the structured MAC-target architectures meet their target.
mod common;

use common::tiny_cfg;
use proptest::prelude::*;
use slimseg_compress::{CompressedModel, Summary};
use slimseg_compress::{KeepFractions, arch_for_mac_reduction, slice_state, structured_arch};
use slimseg_model::{LayerArch, ModelConfig, PixelHead, SubnetArch, TransUnet, count};
use tch::{Device, nn};

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
