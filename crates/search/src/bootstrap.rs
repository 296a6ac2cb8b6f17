//! Percentile bootstrap confidence intervals of a mean over test volumes, for the
//! report's "is this difference more than noise" question. Seeded, so a report is
//! reproducible.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// A mean with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    /// The sample mean.
    pub mean: f64,
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
    /// Values the mean is over.
    pub n: usize,
}

impl MeanCi {
    /// Whether the interval holds `x` (a difference whose interval holds 0 is inside the
    /// noise).
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// The `level` (e.g. 0.95) percentile bootstrap interval of the mean of `values`, from
/// `resamples` resamples with replacement drawn with `seed`. `None` for no values.
pub fn mean_ci(values: &[f64], level: f64, resamples: usize, seed: u64) -> Option<MeanCi> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| values[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| {
        // The order statistic at p (nearest rank), as the percentile method uses.
        let k = ((p * means.len() as f64).ceil() as usize).clamp(1, means.len()) - 1;
        means[k]
    };
    let a = (1.0 - level) / 2.0;
    Some(MeanCi {
        mean,
        lo: q(a).min(mean),
        hi: q(1.0 - a).max(mean),
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_values_give_the_whole_range_and_constants_a_point() {
        // Resample means of [0, 1] are 0, 0.5 and 1 with probabilities 1/4, 1/2, 1/4:
        // the 2.5% and 97.5% points are 0 and 1.
        let ci = mean_ci(&[0.0, 1.0], 0.95, 4000, 1).unwrap();
        assert_eq!((ci.mean, ci.lo, ci.hi, ci.n), (0.5, 0.0, 1.0, 2));
        let c = mean_ci(&[0.7; 9], 0.95, 500, 2).unwrap();
        assert!(
            (c.lo - 0.7).abs() < 1e-12 && (c.hi - 0.7).abs() < 1e-12,
            "{c:?}"
        );
        assert!(mean_ci(&[], 0.95, 10, 0).is_none());
    }

    #[test]
    fn intervals_narrow_with_more_volumes_and_are_seeded() {
        let few: Vec<f64> = (0..6).map(|i| (i % 3) as f64).collect();
        let many: Vec<f64> = (0..600).map(|i| (i % 3) as f64).collect();
        let a = mean_ci(&few, 0.95, 2000, 3).unwrap();
        let b = mean_ci(&many, 0.95, 2000, 3).unwrap();
        assert!(b.hi - b.lo < (a.hi - a.lo) / 5.0, "{a:?} {b:?}");
        assert!(a.contains(1.0) && b.contains(1.0));
        assert_eq!(mean_ci(&few, 0.95, 2000, 3), Some(a));
    }
}
