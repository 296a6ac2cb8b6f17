//! Threshold selection: exact per-dimension fractions, model budgets met within one gate's
//! cost and never exceeded, monotone token sets, floors, errors that say what is reachable.

use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use slimseg_model::{GateValues, ModelConfig};
use slimseg_search::select::{arch_cost, full_cost, max_gate_cost, tokens_monotone};
use slimseg_search::{
    Budget, CostMetric, CostScope, Error, Floors, SelectConfig, SubnetSpec, select,
};

/// A small random preset: 1-4 layers, 1-4 heads of 1-8 dims, 1-40 MLP units, 2x2 to 4x4
/// tokens.
fn random_config(rng: &mut StdRng) -> ModelConfig {
    let mut c = ModelConfig::tiny();
    c.layers = rng.gen_range(1..=4);
    c.heads = rng.gen_range(1..=4);
    c.hidden = c.heads * rng.gen_range(1..=8);
    c.mlp_dim = rng.gen_range(1..=40);
    c.img_size = 16 * rng.gen_range(2..=4);
    c.validate().expect("random preset is valid");
    c
}

/// Random gate values; a fraction of them tied (equal values) to exercise tie-breaking.
fn random_gates(cfg: &ModelConfig, rng: &mut StdRng) -> GateValues {
    let v = |rng: &mut StdRng| -> f32 {
        if rng.gen_bool(0.2) {
            0.5
        } else {
            rng.gen_range(-0.2f32..1.2)
        }
    };
    GateValues {
        attn: (0..cfg.layers)
            .map(|_| {
                (0..cfg.heads)
                    .map(|_| (0..cfg.head_dim()).map(|_| v(rng)).collect())
                    .collect()
            })
            .collect(),
        mlp: (0..cfg.layers)
            .map(|_| (0..cfg.mlp_dim).map(|_| v(rng)).collect())
            .collect(),
        token: (0..cfg.layers)
            .map(|_| (0..cfg.num_tokens()).map(|_| v(rng)).collect())
            .collect(),
    }
}

fn kept_counts(spec: &SubnetSpec) -> (usize, usize, usize) {
    let a = spec.arch.layers.iter().map(|l| l.attn_width()).sum();
    let m = spec.arch.layers.iter().map(|l| l.mlp_units.len()).sum();
    let t = spec.arch.layers.iter().map(|l| l.tokens.len()).sum();
    (a, m, t)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn per_dimension_budgets_keep_exactly_the_requested_fraction(
        seed in any::<u64>(),
        fa in 0.0f64..=1.0,
        fm in 0.0f64..=1.0,
        ft in 0.0f64..=1.0,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let cfg = random_config(&mut rng);
        let gates = random_gates(&cfg, &mut rng);
        let sel = SelectConfig {
            budget: Budget::PerDimension { attn: fa, mlp: fm, token: ft },
            floors: Floors { attn_dims: 0, mlp_units: 0, tokens: 0 }, align: 0 };
        let spec = select(&cfg, &gates, &sel).expect("no floors: always reachable");
        let l = cfg.layers;
        let (na, nm, nt) = (l * cfg.hidden, l * cfg.mlp_dim, l * cfg.num_tokens());
        let (a, m, t) = kept_counts(&spec);
        prop_assert_eq!(a, (fa * na as f64).round() as usize);
        prop_assert_eq!(m, (fm * nm as f64).round() as usize);
        prop_assert_eq!(t, (ft * nt as f64).round() as usize);
        prop_assert!(tokens_monotone(&spec.arch));
        spec.check(&cfg).unwrap();
        // Every kept attention/MLP gate is at least as large as every dropped one.
        if let Some(th) = spec.thresholds.mlp {
            for (li, layer) in gates.mlp.iter().enumerate() {
                for (j, &g) in layer.iter().enumerate() {
                    if !spec.arch.layers[li].mlp_units.contains(&j) {
                        prop_assert!((g as f64).abs() <= th);
                    }
                }
            }
        }
    }

    #[test]
    fn per_dimension_floors_keep_every_layer_alive_and_counts_exact(
        seed in any::<u64>(),
        fa in 0.0f64..=1.0,
        fm in 0.0f64..=1.0,
        ft in 0.0f64..=1.0,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let cfg = random_config(&mut rng);
        let gates = random_gates(&cfg, &mut rng);
        let sel = SelectConfig {
            budget: Budget::PerDimension { attn: fa, mlp: fm, token: ft },
            floors: Floors::default(), align: 0 };
        match select(&cfg, &gates, &sel) {
            Ok(spec) => {
                let l = cfg.layers;
                let (a, m, t) = kept_counts(&spec);
                prop_assert_eq!(a, (fa * (l * cfg.hidden) as f64).round() as usize);
                prop_assert_eq!(m, (fm * (l * cfg.mlp_dim) as f64).round() as usize);
                prop_assert_eq!(t, (ft * (l * cfg.num_tokens()) as f64).round() as usize);
                for la in &spec.arch.layers {
                    prop_assert!(la.attn_width() >= 1 && !la.mlp_units.is_empty() && !la.tokens.is_empty());
                }
                prop_assert!(tokens_monotone(&spec.arch));
            }
            Err(e) => {
                // Only a fraction below one gate per layer can be unreachable.
                prop_assert!(matches!(e, Error::Budget(_)), "{e}");
                prop_assert!(e.to_string().contains("reachable"));
                let l = cfg.layers as f64;
                let lowest = [
                    (fa * (cfg.layers * cfg.hidden) as f64).round() / l,
                    (fm * (cfg.layers * cfg.mlp_dim) as f64).round() / l,
                    (ft * (cfg.layers * cfg.num_tokens()) as f64).round() / l,
                ];
                prop_assert!(lowest.iter().any(|&k| k < 1.0), "{lowest:?}: {e}");
            }
        }
    }

    #[test]
    fn model_budgets_are_never_exceeded_and_met_within_one_gate(
        seed in any::<u64>(),
        keep in 0.05f64..=1.0,
        macs in any::<bool>(),
        transformer in any::<bool>(),
        floors in any::<bool>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let cfg = random_config(&mut rng);
        let gates = random_gates(&cfg, &mut rng);
        let metric = if macs { CostMetric::Macs } else { CostMetric::Params };
        let scope = if transformer { CostScope::Transformer } else { CostScope::Model };
        let floors = if floors { Floors::default() } else { Floors { attn_dims: 0, mlp_units: 0, tokens: 0 } };
        let sel = SelectConfig { budget: Budget::Model { metric, keep, scope }, floors, align: 0 };
        let full = full_cost(&cfg, metric, scope).unwrap();
        let target = (keep * full as f64).floor() as u64;
        match select(&cfg, &gates, &sel) {
            Ok(spec) => {
                let cost = arch_cost(&cfg, &spec.arch, metric, scope).unwrap();
                prop_assert!(cost <= target, "cost {cost} > target {target}");
                prop_assert!(target - cost <= max_gate_cost(&cfg, metric),
                    "undershoot {} exceeds one gate ({})", target - cost, max_gate_cost(&cfg, metric));
                prop_assert!(tokens_monotone(&spec.arch));
                spec.check(&cfg).unwrap();
                if metric == CostMetric::Params {
                    // Tokens control no parameters and are never removed for a params target.
                    prop_assert!(spec.arch.layers.iter().all(|l| l.tokens.len() == cfg.num_tokens()));
                }
            }
            Err(e) => {
                prop_assert!(matches!(e, Error::Budget(_)), "{e}");
                prop_assert!(e.to_string().contains("reachable fractions are"), "{e}");
                // Unreachable means even removing all that the floors allow stays above.
                let all = SelectConfig { budget: Budget::Model { metric, keep: 1e-9, scope }, floors, align: 0 };
                prop_assert!(select(&cfg, &gates, &all).is_err());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn joint_budgets_never_exceed_either_limit(
        seed in any::<u64>(),
        params in 0.05f64..=1.0,
        macs in 0.05f64..=1.0,
        transformer in any::<bool>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let cfg = random_config(&mut rng);
        let gates = random_gates(&cfg, &mut rng);
        let scope = if transformer { CostScope::Transformer } else { CostScope::Model };
        let floors = Floors::default();
        let sel = SelectConfig { budget: Budget::Joint { params, macs, scope }, floors, align: 0 };
        let target = |m, keep: f64| (keep * full_cost(&cfg, m, scope).unwrap() as f64).floor() as u64;
        match select(&cfg, &gates, &sel) {
            Ok(spec) => {
                let p = arch_cost(&cfg, &spec.arch, CostMetric::Params, scope).unwrap();
                let m = arch_cost(&cfg, &spec.arch, CostMetric::Macs, scope).unwrap();
                prop_assert!(p <= target(CostMetric::Params, params), "params {p}");
                prop_assert!(m <= target(CostMetric::Macs, macs), "MACs {m}");
                prop_assert!(tokens_monotone(&spec.arch));
                spec.check(&cfg).unwrap();
                // No gate goes that both limits could have kept: with a loose MAC limit
                // the subnet is the params-only one (tokens control no parameters).
                if macs >= 1.0 {
                    let alone = SelectConfig {
                        budget: Budget::Model { metric: CostMetric::Params, keep: params, scope },
                        floors, align: 0 };
                    prop_assert_eq!(&select(&cfg, &gates, &alone).unwrap().arch, &spec.arch);
                }
            }
            Err(e) => {
                prop_assert!(matches!(e, Error::Budget(_)), "{e}");
                prop_assert!(e.to_string().contains("reachable fractions are"), "{e}");
                let all = SelectConfig {
                    budget: Budget::Joint { params: 1e-9, macs: 1e-9, scope },
                    floors, align: 0 };
                prop_assert!(select(&cfg, &gates, &all).is_err());
            }
        }
    }
}

#[test]
fn joint_budgets_read_from_toml_as_the_paper_writes_them() {
    #[derive(serde::Deserialize)]
    struct T {
        budget: Budget,
    }
    let t: T = toml::from_str("budget = { kind = \"model\", params = 0.7, macs = 0.6 }").unwrap();
    assert_eq!(
        t.budget,
        Budget::Joint {
            params: 0.7,
            macs: 0.6,
            scope: CostScope::Model
        }
    );
    let t: T = toml::from_str("budget = { kind = \"model\", macs = 0.7 }").unwrap();
    assert_eq!(
        t.budget,
        Budget::Model {
            metric: CostMetric::Macs,
            keep: 0.7,
            scope: CostScope::Model
        }
    );
    let old: T = toml::from_str(
        "budget = { kind = \"model\", metric = \"params\", keep = 0.5, scope = \"transformer\" }",
    )
    .unwrap();
    assert_eq!(
        old.budget,
        Budget::Model {
            metric: CostMetric::Params,
            keep: 0.5,
            scope: CostScope::Transformer
        }
    );
    assert!(
        toml::from_str::<T>(
            "budget = { kind = \"model\", metric = \"macs\", keep = 0.5, params = 0.5 }"
        )
        .is_err()
    );
    // Round trip.
    let back: T = toml::from_str(&format!(
        "budget = {}",
        toml::Value::try_from(Budget::Joint {
            params: 0.7,
            macs: 0.7,
            scope: CostScope::Model
        })
        .unwrap()
    ))
    .unwrap();
    assert_eq!(
        back.budget,
        Budget::Joint {
            params: 0.7,
            macs: 0.7,
            scope: CostScope::Model
        }
    );
}

#[test]
fn tokens_are_monotone_even_when_deep_layers_prefer_other_tokens() {
    // Layer 1 (last) strongly prefers token 0, layer 0 prefers token 3: the token kept in
    // layer 1 must also be kept in layer 0.
    let mut cfg = ModelConfig::tiny();
    cfg.layers = 2;
    cfg.img_size = 32; // 2x2 tokens
    let full = |v: f32, n: usize| vec![v; n];
    let gates = GateValues {
        attn: vec![vec![full(1.0, cfg.head_dim()); cfg.heads]; 2],
        mlp: vec![full(1.0, cfg.mlp_dim); 2],
        token: vec![vec![0.01, 0.2, 0.3, 0.9], vec![0.95, 0.02, 0.03, 0.04]],
    };
    let sel = SelectConfig {
        budget: Budget::PerDimension {
            attn: 1.0,
            mlp: 1.0,
            token: 3.0 / 8.0,
        },
        floors: Floors {
            attn_dims: 0,
            mlp_units: 0,
            tokens: 0,
        },
        align: 0,
    };
    let spec = select(&cfg, &gates, &sel).unwrap();
    assert_eq!(spec.arch.layers[1].tokens, vec![0]);
    assert_eq!(spec.arch.layers[0].tokens, vec![0, 3]);
    assert!(tokens_monotone(&spec.arch));
}

#[test]
fn unreachable_model_target_says_what_is_reachable() {
    let cfg = ModelConfig::tiny();
    let mut rng = StdRng::seed_from_u64(3);
    let gates = random_gates(&cfg, &mut rng);
    let sel = SelectConfig {
        budget: Budget::Model {
            metric: CostMetric::Macs,
            keep: 0.3,
            scope: CostScope::Model,
        },
        floors: Floors::default(),
        align: 0,
    };
    let err = select(&cfg, &gates, &sel).unwrap_err().to_string();
    // tiny's ResNet and decoder are 40% of its MACs: 30% of the whole model is out of reach.
    assert!(
        err.contains("not reachable") && err.contains("reachable fractions are model MACs 0.40"),
        "{err}"
    );
}

#[test]
fn unreachable_per_dimension_budget_names_the_floor() {
    let cfg = ModelConfig::tiny();
    let mut rng = StdRng::seed_from_u64(4);
    let gates = random_gates(&cfg, &mut rng);
    let sel = SelectConfig {
        budget: Budget::PerDimension {
            attn: 0.0,
            mlp: 0.5,
            token: 0.5,
        },
        floors: Floors::default(),
        align: 0,
    };
    let err = select(&cfg, &gates, &sel).unwrap_err().to_string();
    assert!(
        err.contains("attention") && err.contains("reachable fractions are 0.0052"),
        "{err}"
    );
}

#[test]
fn subnet_spec_round_trips_through_toml_and_checks_its_counts() {
    let cfg = ModelConfig::tiny();
    let mut rng = StdRng::seed_from_u64(5);
    let gates = random_gates(&cfg, &mut rng);
    let sel = SelectConfig {
        budget: Budget::Model {
            metric: CostMetric::Macs,
            keep: 0.7,
            scope: CostScope::Transformer,
        },
        floors: Floors::default(),
        align: 0,
    };
    let spec = select(&cfg, &gates, &sel).unwrap();
    let text = spec.to_toml_string().unwrap();
    assert!(
        text.contains("[budget]") && text.contains("[[arch.layers]]"),
        "{text}"
    );
    let back = SubnetSpec::from_toml_str(&text).unwrap();
    assert_eq!(back, spec);
    back.check(&cfg).unwrap();
    let mut wrong = back.clone();
    wrong.macs += 1;
    assert!(wrong.check(&cfg).is_err());
}

#[test]
fn gate_values_of_another_config_are_rejected() {
    let cfg = ModelConfig::tiny();
    let mut rng = StdRng::seed_from_u64(6);
    let mut other = cfg.clone();
    other.mlp_dim = 64;
    let gates = random_gates(&other, &mut rng);
    let err = select(&cfg, &gates, &SelectConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("MLP gates"), "{err}");
}

/// `w` grown by one alignment group of `m`, capped at the full width `cap`.
fn grown(w: usize, m: usize, cap: usize) -> Option<usize> {
    (w < cap).then(|| (w / m * m + m).min(cap))
}

/// `arch` with layer `l`'s MLP or every kept head grown by one group (`None` when full).
fn with_group(
    arch: &slimseg_model::SubnetArch,
    l: usize,
    mlp: bool,
    m: usize,
    cfg: &ModelConfig,
) -> Option<slimseg_model::SubnetArch> {
    let mut a = arch.clone();
    let la = &mut a.layers[l];
    let first_free = |kept: &[usize], n: usize, cap: usize| -> Vec<usize> {
        let mut v = kept.to_vec();
        v.extend((0..cap).filter(|i| !kept.contains(i)).take(n - kept.len()));
        v.sort_unstable();
        v
    };
    if mlp {
        let n = grown(la.mlp_units.len(), m, cfg.mlp_dim)?;
        la.mlp_units = first_free(&la.mlp_units, n, cfg.mlp_dim);
    } else {
        let w = la.head_dims.iter().map(Vec::len).max()?;
        let n = grown(w, m, cfg.head_dim())?;
        for h in la.head_dims.iter_mut().filter(|h| !h.is_empty()) {
            *h = first_free(h, n, cfg.head_dim());
        }
    }
    Some(a)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn aligned_subnets_are_dense_in_groups_within_budget_and_full_to_it(
        seed in any::<u64>(),
        keep in 0.05f64..1.0,
        m in prop::sample::select(vec![2usize, 4, 8]),
        joint in any::<bool>(),
        transformer in any::<bool>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let cfg = random_config(&mut rng);
        let gates = random_gates(&cfg, &mut rng);
        let scope = if transformer { CostScope::Transformer } else { CostScope::Model };
        let (budget, limits) = if joint {
            (Budget::Joint { params: keep, macs: keep, scope },
             vec![CostMetric::Params, CostMetric::Macs])
        } else {
            (Budget::Model { metric: CostMetric::Macs, keep, scope }, vec![CostMetric::Macs])
        };
        let sel = SelectConfig { budget, floors: Floors::default(), align: m };
        let target = |metric| (keep * full_cost(&cfg, metric, scope).unwrap() as f64).floor() as u64;
        let within = |arch: &slimseg_model::SubnetArch| limits
            .iter()
            .all(|&metric| arch_cost(&cfg, arch, metric, scope).unwrap() <= target(metric));
        match select(&cfg, &gates, &sel) {
            Ok(spec) => {
                spec.check(&cfg).unwrap();
                prop_assert_eq!(spec.align, m);
                prop_assert!(within(&spec.arch), "over budget");
                for (l, la) in spec.arch.layers.iter().enumerate() {
                    let widths: Vec<usize> =
                        la.head_widths().into_iter().filter(|&w| w > 0).collect();
                    prop_assert!(!widths.is_empty(), "layer {l}: the floor keeps a head");
                    prop_assert!(widths.iter().all(|&w| w == widths[0]), "layer {l}: {widths:?}");
                    prop_assert!(widths[0] % m == 0 || widths[0] == cfg.head_dim(),
                        "layer {l}: head width {} of {}", widths[0], cfg.head_dim());
                    let u = la.mlp_units.len();
                    prop_assert!(u > 0 && (u % m == 0 || u == cfg.mlp_dim),
                        "layer {l}: {u} MLP units of {}", cfg.mlp_dim);
                    // Full to the budget: one more group anywhere would break it.
                    for mlp in [true, false] {
                        if let Some(bigger) = with_group(&spec.arch, l, mlp, m, &cfg) {
                            prop_assert!(!within(&bigger),
                                "layer {l}: one more {} group still fits",
                                if mlp { "MLP" } else { "head" });
                        }
                    }
                }
                prop_assert!(tokens_monotone(&spec.arch));
            }
            Err(e) => prop_assert!(matches!(e, Error::Budget(_)), "{e}"),
        }
    }
}

#[test]
fn alignment_refills_the_most_important_group_first() {
    // Two blocks of one 8-dim head and 32 MLP units; attention and tokens far more
    // important than any unit, so only MLP units go. Block 0 has 10 strong units, block 1
    // 10 weaker ones, the rest are weak in both.
    let mut cfg = ModelConfig::tiny();
    cfg.layers = 2;
    cfg.heads = 1;
    cfg.hidden = 8;
    cfg.mlp_dim = 32;
    cfg.img_size = 32;
    cfg.validate().unwrap();
    let units = |strong: f32| -> Vec<f32> {
        (0..32)
            .map(|j| if j < 10 { strong } else { 0.01 })
            .collect()
    };
    let gates = GateValues {
        attn: vec![vec![vec![10.0; 8]]; 2],
        mlp: vec![units(1.0), units(0.5)],
        token: vec![vec![10.0; cfg.num_tokens()]; 2],
    };
    // A budget that removes 39.5 units' worth: the plain selection keeps 14 units in
    // block 0 and 10 in block 1; aligned to 8, both round down to 8, and one group of 8
    // fits back, worth more in block 0 (two strong units) than in block 1 (two weaker).
    let (_, unit, _) = slimseg_search::select::gate_macs(&cfg);
    let full = full_cost(&cfg, CostMetric::Macs, CostScope::Transformer).unwrap();
    let keep = (full as f64 - 39.5 * unit as f64) / full as f64;
    let budget = Budget::Model {
        metric: CostMetric::Macs,
        keep,
        scope: CostScope::Transformer,
    };
    let plain = select(
        &cfg,
        &gates,
        &SelectConfig {
            budget,
            floors: Floors::default(),
            align: 0,
        },
    )
    .unwrap();
    let kept = |s: &SubnetSpec| {
        s.arch
            .layers
            .iter()
            .map(|l| l.mlp_units.len())
            .collect::<Vec<_>>()
    };
    assert_eq!(kept(&plain), [14, 10]);
    let aligned = select(
        &cfg,
        &gates,
        &SelectConfig {
            budget,
            floors: Floors::default(),
            align: 8,
        },
    )
    .unwrap();
    assert_eq!(kept(&aligned), [16, 8]);
    // And within a block, the units kept are the most important ones.
    assert!(aligned.arch.layers[1].mlp_units.iter().all(|&j| j < 10));
}

/// A latency table of `cfg` whose block time grows with each width by its own rate, with
/// a fixed part; tokens cost the most per unit, then attention dims, then MLP units.
fn latency_table(cfg: &ModelConfig) -> slimseg_model::profile::LatencyTable {
    let grid = |full: usize| -> Vec<usize> {
        let mut v: Vec<usize> = (0..5).map(|i| (full * i + 2) / 4).collect();
        v.dedup();
        v
    };
    let (a, u, t) = (
        grid(cfg.head_dim())
            .iter()
            .map(|w| w * cfg.heads)
            .collect::<Vec<_>>(),
        grid(cfg.mlp_dim),
        grid(cfg.num_tokens()),
    );
    let mut block_ms = Vec::new();
    for &x in &a {
        for &y in &u {
            for &z in &t {
                // Products through the tokens, like a block's GEMMs: no tokens, no time.
                block_ms.push(1e-3 * z as f64 * (2.0 * x as f64 + y as f64 + 1.0));
            }
        }
    }
    slimseg_model::profile::LatencyTable {
        model: cfg.clone(),
        device: "test".into(),
        batch: 1,
        precision: slimseg_model::Precision::Fp32,
        fast_paths: true,
        attn_dims: a,
        mlp_units: u,
        tokens: t,
        block_ms,
        block_scale: 1.0,
        in_place: false,
        fixed_ms: 0.5,
        full_ms: 0.0,
    }
}

#[test]
fn latency_budgets_select_by_the_table_and_need_one() {
    let cfg = ModelConfig::tiny();
    let mut rng = StdRng::seed_from_u64(7);
    let gates = random_gates(&cfg, &mut rng);
    let table = latency_table(&cfg);
    let budget: Budget = toml::from_str::<toml::Table>("b = { kind = \"model\", latency = 0.7 }")
        .unwrap()["b"]
        .clone()
        .try_into()
        .unwrap();
    assert_eq!(
        budget,
        Budget::Model {
            metric: CostMetric::Latency,
            keep: 0.7,
            scope: CostScope::Model
        }
    );
    assert_eq!(
        budget.to_string(),
        "at most 70% of the latency of the whole model"
    );
    for align in [0, 8] {
        let sel = SelectConfig {
            budget,
            floors: Floors::default(),
            align,
        };
        let spec = slimseg_search::select_with(&cfg, &gates, &sel, Some(&table)).unwrap();
        let full = table.predict(None);
        let ms = table.predict(Some(&spec.arch));
        assert!(ms <= 0.7 * full + 1e-9, "align {align}: {ms} of {full} ms");
        assert!(
            ms >= 0.6 * full,
            "align {align}: {ms} of {full} ms, far under the budget"
        );
        // The cost functions agree with the table's own prediction (in ns).
        let ns = slimseg_search::select::arch_cost_with(
            &cfg,
            &spec.arch,
            CostMetric::Latency,
            CostScope::Model,
            Some(&table),
        )
        .unwrap();
        assert!(
            (ns as f64 / 1e6 - ms).abs() < 1e-3 * cfg.layers as f64,
            "{ns} ns vs {ms} ms"
        );
    }
    let sel = SelectConfig {
        budget,
        floors: Floors::default(),
        align: 0,
    };
    let err = select(&cfg, &gates, &sel).unwrap_err().to_string();
    assert!(err.contains("slimseg profile"), "{err}");
    let mut other = cfg.clone();
    other.layers -= 1;
    let err =
        slimseg_search::select_with(&other, &random_gates(&other, &mut rng), &sel, Some(&table))
            .unwrap_err()
            .to_string();
    assert!(err.contains("another model configuration"), "{err}");
}
