//! Sliced == hard-masked: random architectures (proptest) with the edge cases (a head
//! with no dims, a block with no attention, the MLP removed, tokens dropped from the
//! middle blocks on, empty token sets), with and without folded gates; folding keeps the
//! soft model's output when nothing is pruned.
mod common;

use std::cell::RefCell;

use common::{full_model, input, max_diff, randomise_gates, tiny_cfg};
use proptest::prelude::*;
use slimseg_compress::{Folding, check_equivalence, compress};
use slimseg_model::{GateMode, LayerArch, ModelConfig, PixelHead, SubnetArch, TransUnet};
use tch::{Device, nn};

const TOL: f64 = 1e-4;

/// How a drawn block is forced into an edge case.
#[derive(Debug, Clone, Copy)]
enum Edge {
    None,
    EmptyHead(usize),
    NoAttention,
    NoMlp,
    NothingButTokens,
}

#[derive(Debug, Clone)]
struct LayerDraw {
    dims: Vec<u8>,
    units: Vec<u8>,
    tokens: Vec<u8>,
    thresholds: (u8, u8, u8),
    edge: Edge,
}

fn keep(values: &[u8], threshold: u8) -> Vec<usize> {
    (0..values.len())
        .filter(|&i| values[i] >= threshold)
        .collect()
}

fn layer_draw(cfg: &ModelConfig) -> impl Strategy<Value = LayerDraw> + use<> {
    let (heads, hd, m, n) = (cfg.heads, cfg.head_dim(), cfg.mlp_dim, cfg.num_tokens());
    (
        prop::collection::vec(any::<u8>(), heads * hd),
        prop::collection::vec(any::<u8>(), m),
        prop::collection::vec(any::<u8>(), n),
        (0u8..=255, 0u8..=255, 0u8..=200),
        prop_oneof![
            4 => Just(Edge::None),
            2 => (0..heads).prop_map(Edge::EmptyHead),
            1 => Just(Edge::NoAttention),
            1 => Just(Edge::NoMlp),
            1 => Just(Edge::NothingButTokens),
        ],
    )
        .prop_map(|(dims, units, tokens, thresholds, edge)| LayerDraw {
            dims,
            units,
            tokens,
            thresholds,
            edge,
        })
}

/// Builds the architecture: per-block draws, tokens kept everywhere before `token_from`
/// and pruned from there on (nested with depth when `monotone`).
fn build_arch(
    cfg: &ModelConfig,
    draws: &[LayerDraw],
    token_from: usize,
    monotone: bool,
) -> SubnetArch {
    let full = SubnetArch::full_dims(cfg);
    let mut prev: Vec<usize> = (0..full.num_tokens).collect();
    let layers = draws
        .iter()
        .enumerate()
        .map(|(l, d)| {
            let kept = keep(&d.dims, d.thresholds.0);
            let mut head_dims: Vec<Vec<usize>> = (0..full.heads)
                .map(|h| {
                    kept.iter()
                        .filter(|&&i| i / full.head_dim == h)
                        .map(|&i| i % full.head_dim)
                        .collect()
                })
                .collect();
            let mut mlp_units = keep(&d.units, d.thresholds.1);
            match d.edge {
                Edge::None => {}
                Edge::EmptyHead(h) => head_dims[h].clear(),
                Edge::NoAttention => head_dims.iter_mut().for_each(Vec::clear),
                Edge::NoMlp => mlp_units.clear(),
                Edge::NothingButTokens => {
                    head_dims.iter_mut().for_each(Vec::clear);
                    mlp_units.clear();
                }
            }
            let tokens = if l < token_from {
                (0..full.num_tokens).collect()
            } else {
                let drawn = keep(&d.tokens, d.thresholds.2);
                if monotone {
                    drawn.into_iter().filter(|t| prev.contains(t)).collect()
                } else {
                    drawn
                }
            };
            prev = tokens.clone();
            LayerArch {
                head_dims,
                mlp_units,
                tokens,
            }
        })
        .collect();
    let arch = SubnetArch { full, layers };
    arch.check(cfg).unwrap();
    arch
}

fn arch_strategy(cfg: &ModelConfig) -> impl Strategy<Value = SubnetArch> + use<> {
    let c = cfg.clone();
    (
        prop::collection::vec(layer_draw(cfg), cfg.layers),
        0..=cfg.layers,
        any::<bool>(),
    )
        .prop_map(move |(draws, from, mono)| build_arch(&c, &draws, from, mono))
}

/// Compresses `arch` with and without folding and checks both against the hard-masked
/// full model; returns the two max differences.
fn sliced_vs_hard(
    full: &mut TransUnet,
    vs: &nn::VarStore,
    arch: &SubnetArch,
    x: &tch::Tensor,
) -> (f64, f64) {
    let plain = compress(full, vs, arch, Folding::None, Device::Cpu).unwrap();
    let r_plain = check_equivalence(full, &plain.model, x, Folding::None).unwrap();
    let folded = compress(full, vs, arch, Folding::SoftGates, Device::Cpu).unwrap();
    let r_folded = check_equivalence(full, &folded.model, x, Folding::SoftGates).unwrap();
    assert!(r_folded.folded && !r_plain.folded);
    assert!(
        r_plain.within(TOL) && r_folded.within(TOL),
        "plain {r_plain:?}, folded {r_folded:?}"
    );
    // The gate mode is restored.
    assert_eq!(full.gate_mode(), &GateMode::Off);
    (r_plain.max_abs_diff, r_folded.max_abs_diff)
}

thread_local! {
    static TINY: RefCell<Option<(nn::VarStore, TransUnet)>> = const { RefCell::new(None) };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn sliced_equals_hard_masked_on_random_tiny_archs(
        arch in arch_strategy(&tiny_cfg(PixelHead::None)),
        seed in 0i64..1000,
    ) {
        TINY.with(|cell| {
            let mut cell = cell.borrow_mut();
            let (vs, full) = cell.get_or_insert_with(|| {
                let cfg = tiny_cfg(PixelHead::None);
                let (vs, mut m) = full_model(&cfg, 3);
                m.attach_soft_gates(&(vs.root() / "gates")).unwrap();
                (vs, m)
            });
            // Fresh gate values each case; token gates away from 1 (binarisation is what
            // the folded comparison then checks).
            randomise_gates(full, seed, false);
            let x = input(full.config(), 1, seed);
            sliced_vs_hard(full, vs, &arch, &x);
        });
    }
}

/// Every edge case of the issue in one architecture, with the pixel module on; the
/// pruning must change the output (the comparison is not vacuous).
#[test]
fn edge_cases_together_with_direction_field_head() {
    let cfg = tiny_cfg(PixelHead::DirectionField);
    let full_dims = SubnetArch::full_dims(&cfg);
    let mut arch = SubnetArch::full(&cfg);
    let all_tokens: Vec<usize> = (0..full_dims.num_tokens).collect();
    // Block 0: head 1 has no dims, others keep odd dims. Block 1: no attention at all.
    arch.layers[0].head_dims[1].clear();
    for h in [0, 2, 3] {
        arch.layers[0].head_dims[h] = (0..full_dims.head_dim).filter(|d| d % 2 == 1).collect();
    }
    arch.layers[1].head_dims.iter_mut().for_each(Vec::clear);
    // Block 2: MLP fully removed, tokens dropped from here on (nested), block 3 keeps none.
    arch.layers[2].mlp_units.clear();
    arch.layers[2].tokens = all_tokens.iter().copied().filter(|t| t % 3 != 0).collect();
    arch.layers[3].tokens.clear();
    arch.layers[3].mlp_units = vec![5, 17, 100];
    assert_eq!(arch.layers[1].tokens, all_tokens);

    let (vs, mut full) = full_model(&cfg, 11);
    full.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    randomise_gates(&full, 12, false);
    let x = input(&cfg, 2, 13);
    let (d_plain, d_folded) = sliced_vs_hard(&mut full, &vs, &arch, &x);
    eprintln!("edge cases: plain {d_plain:e}, folded {d_folded:e}");

    let sliced = compress(&full, &vs, &arch, Folding::None, Device::Cpu).unwrap();
    let r = check_equivalence(&mut full, &sliced.model, &x, Folding::None).unwrap();
    let _g = tch::no_grad_guard();
    let off = full.forward_t(&x, false).unwrap().logits;
    let small = sliced.model.forward_t(&x, false).unwrap().logits;
    let effect = max_diff(&off, &small);
    eprintln!("{r:?}");
    assert!(effect > 1e-3, "pruning did not change the output: {effect}");
    assert!(
        (r.pruning_effect - effect).abs() < 1e-5,
        "{} vs {effect}",
        r.pruning_effect
    );
    assert!(r.direction_field_max_abs_diff.is_some());
}

/// Nothing pruned: the folded compressed model reproduces the searched soft model
/// (attention and MLP gates away from 1, token gates at 1 as binarisation requires),
/// while slicing without folding does not.
#[test]
fn folding_keeps_the_soft_model_output_when_nothing_is_pruned() {
    for pixel in [PixelHead::None, PixelHead::DirectionField] {
        let cfg = tiny_cfg(pixel);
        let (vs, mut full) = full_model(&cfg, 21);
        full.attach_soft_gates(&(vs.root() / "gates")).unwrap();
        randomise_gates(&full, 22, true);
        full.set_gate_mode(GateMode::Soft).unwrap();
        let x = input(&cfg, 2, 23);
        let arch = SubnetArch::full(&cfg);
        let folded = compress(&full, &vs, &arch, Folding::SoftGates, Device::Cpu).unwrap();
        let plain = compress(&full, &vs, &arch, Folding::None, Device::Cpu).unwrap();
        let _g = tch::no_grad_guard();
        let soft = full.forward_t(&x, false).unwrap();
        let f = folded.model.forward_t(&x, false).unwrap();
        let d = max_diff(&soft.logits, &f.logits);
        assert!(d <= TOL, "folded vs soft: {d}");
        if let (Some(a), Some(b)) = (&soft.direction_field, &f.direction_field) {
            assert!(max_diff(a, b) <= TOL);
        }
        let p = plain.model.forward_t(&x, false).unwrap().logits;
        let unfolded = max_diff(&soft.logits, &p);
        eprintln!("soft vs folded {d:e}, soft vs unfolded {unfolded:e}");
        assert!(
            unfolded > 2.0 * TOL,
            "gates away from 1 must matter beyond the tolerance, else this test proves nothing"
        );
    }
}

#[test]
fn folding_without_soft_gates_is_an_error() {
    let cfg = tiny_cfg(PixelHead::None);
    let (vs, full) = full_model(&cfg, 1);
    let err = compress(
        &full,
        &vs,
        &SubnetArch::full(&cfg),
        Folding::SoftGates,
        Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, slimseg_compress::Error::Gates(_)), "{err}");
}
