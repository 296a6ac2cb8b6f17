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
