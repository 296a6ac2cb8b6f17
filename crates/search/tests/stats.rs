//! Gate statistics and histograms on hand cases.

use slimseg_model::GateValues;
use slimseg_search::stats::{DimStats, GateStats, histogram, render_histogram};

#[test]
fn dim_stats_use_magnitudes_and_count_gates_below_005() {
    let s = DimStats::of([0.0f32, -0.04, 0.05, 0.5, 1.0]);
    assert_eq!(s.count, 5);
    assert!((s.mean - 1.59 / 5.0).abs() < 1e-6);
    assert_eq!(s.min, 0.0);
    assert_eq!(s.max, 1.0);
    assert!(
        (s.below_005 - 0.4).abs() < 1e-12,
        "0 and |-0.04| are below 0.05; 0.05 is not"
    );
}

#[test]
fn gate_stats_summarise_each_dimension() {
    let g = GateValues {
        attn: vec![vec![vec![1.0, 0.0]]],
        mlp: vec![vec![0.01, 0.02, 0.5, 1.0]],
        token: vec![vec![0.9]],
    };
    let s = GateStats::of(&g);
    assert_eq!((s.attn.count, s.mlp.count, s.token.count), (2, 4, 1));
    assert!((s.attn.below_005 - 0.5).abs() < 1e-12);
    assert!((s.mlp.below_005 - 0.5).abs() < 1e-12);
    assert_eq!(s.token.below_005, 0.0);
}

#[test]
fn histogram_bins_magnitudes_and_clamps_the_top() {
    let h = histogram([0.0f32, 0.09, 0.1, -0.55, 1.0, 3.0], 10, 1.0);
    assert_eq!(h, vec![2, 1, 0, 0, 0, 1, 0, 0, 0, 2]);
    let text = render_histogram(&h, 1.0, 4);
    assert_eq!(text.lines().count(), 10);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("[0.00, 0.10)      2 ####")
    );
}
