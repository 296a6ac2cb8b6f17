//! Gate statistics for logs and reports: per-dimension summaries and histograms.

use serde::{Deserialize, Serialize};
use slimseg_model::GateValues;

/// Threshold of the "nearly closed" share reported during search.
pub const NEAR_ZERO: f64 = 0.05;

/// Summary of one dimension's gate magnitudes over all layers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DimStats {
    /// Number of gates.
    pub count: usize,
    /// Mean magnitude.
    pub mean: f64,
    /// Smallest magnitude.
    pub min: f64,
    /// Largest magnitude.
    pub max: f64,
    /// Share of gates with magnitude below [`NEAR_ZERO`].
    pub below_005: f64,
}

impl DimStats {
    /// Summarises magnitudes `|v|`.
    pub fn of(values: impl IntoIterator<Item = f32>) -> Self {
        let (mut n, mut sum, mut lo, mut hi, mut low) =
            (0usize, 0.0, f64::INFINITY, 0.0f64, 0usize);
        for v in values {
            let a = (v as f64).abs();
            n += 1;
            sum += a;
            lo = lo.min(a);
            hi = hi.max(a);
            low += usize::from(a < NEAR_ZERO);
        }
        DimStats {
            count: n,
            mean: if n > 0 { sum / n as f64 } else { 0.0 },
            min: if n > 0 { lo } else { 0.0 },
            max: hi,
            below_005: if n > 0 { low as f64 / n as f64 } else { 0.0 },
        }
    }
}

/// Summaries of the three gate dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GateStats {
    /// Attention (head, dim) gates.
    pub attn: DimStats,
    /// MLP unit gates.
    pub mlp: DimStats,
    /// Token gates.
    pub token: DimStats,
}

impl GateStats {
    /// Summarises gate values.
    pub fn of(g: &GateValues) -> Self {
        GateStats {
            attn: DimStats::of(g.attn.iter().flatten().flatten().copied()),
            mlp: DimStats::of(g.mlp.iter().flatten().copied()),
            token: DimStats::of(g.token.iter().flatten().copied()),
        }
    }
}

/// Histogram of magnitudes over `[0, hi]` in `bins` equal bins; values above `hi` go to
/// the last bin. Returns the counts.
pub fn histogram(values: impl IntoIterator<Item = f32>, bins: usize, hi: f64) -> Vec<usize> {
    let mut h = vec![0usize; bins.max(1)];
    let nb = h.len();
    for v in values {
        let a = (v as f64).abs();
        let i = if hi > 0.0 {
            ((a / hi) * nb as f64).floor() as usize
        } else {
            0
        };
        h[i.min(nb - 1)] += 1;
    }
    h
}

/// Renders a histogram as text rows `[lo, hi) count bar`.
pub fn render_histogram(counts: &[usize], hi: f64, width: usize) -> String {
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let nb = counts.len().max(1);
    let mut s = String::new();
    for (i, &c) in counts.iter().enumerate() {
        let lo_v = hi * i as f64 / nb as f64;
        let hi_v = hi * (i + 1) as f64 / nb as f64;
        let bar = "#".repeat((c * width).div_ceil(max).min(width));
        s.push_str(&format!("[{lo_v:.2}, {hi_v:.2}) {c:>6} {bar}\n"));
    }
    s
}

/// Warnings about a search whose gates did not separate, and about a subnet chosen from
/// such gates: every gate of a dimension still far from 0 (few below [`NEAR_ZERO`] and a
/// narrow spread), a selection threshold near the gates' initial value 1, a budget met
/// by one dimension alone. Empty when nothing looks wrong.
pub fn health(g: &GateValues, spec: Option<&crate::select::SubnetSpec>) -> Vec<String> {
    let s = GateStats::of(g);
    let mut out = Vec::new();
    for (name, d) in [("attention", s.attn), ("MLP", s.mlp), ("token", s.token)] {
        if d.count == 0 {
            continue;
        }
        // Separated gates leave a share near 0 and spread far apart.
        if d.below_005 < 0.05 && d.max < 4.0 * d.min.max(1e-12) {
            out.push(format!(
                "{name} gates did not separate: {:.1}% below {NEAR_ZERO}, magnitudes \
                 {:.3}..{:.3} (mean {:.3}); the selection among them is close to arbitrary \
                 (raise the sparsity factor or the search epochs)",
                100.0 * d.below_005,
                d.min,
                d.max,
                d.mean
            ));
        }
    }
    if let Some(spec) = spec {
        let t = spec.thresholds;
        for (name, th) in [("attention", t.attn), ("MLP", t.mlp), ("token", t.token)] {
            if let Some(th) = th.filter(|&th| th > 0.9) {
                out.push(format!(
                    "the {name} threshold is {th:.4}, near the gates' initial value 1: the \
                     kept {name} gates barely moved"
                ));
            }
        }
        let (a, m, tk) = spec.arch.kept_fractions();
        let pruned: Vec<&str> = [("attention", a), ("MLP", m), ("tokens", tk)]
            .into_iter()
            .filter(|(_, f)| *f < 1.0)
            .map(|(n, _)| n)
            .collect();
        if pruned.len() == 1 {
            out.push(format!(
                "the budget is met by {} alone (kept: attention {:.1}%, MLP {:.1}%, tokens \
                 {:.1}%)",
                pruned[0],
                100.0 * a,
                100.0 * m,
                100.0 * tk
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gates(attn: f32, mlp: &[f32], token: f32) -> GateValues {
        GateValues {
            attn: vec![vec![vec![attn; 4]; 2]],
            mlp: vec![mlp.to_vec()],
            token: vec![vec![token; 4]],
        }
    }

    #[test]
    fn gates_that_did_not_move_are_named_and_separated_ones_are_not() {
        let w = health(&gates(0.99, &[1.0, 0.98, 0.97, 1.01], 0.999), None);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("attention gates did not separate"),
            "{w:?}"
        );
        let ok = health(&gates(0.99, &[1.2, 0.01, 0.002, 0.9], 0.999), None);
        assert!(ok.iter().all(|m| !m.starts_with("MLP")), "{ok:?}");
    }
}
