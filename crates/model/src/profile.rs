//! Latency tables: what one transformer block costs in time on a device, measured over a
//! grid of kept widths, and what a subnet costs as predicted from them. A latency budget
//! (`budget = { kind = "model", latency = 0.7 }`) ranks the gates by this cost instead of
//! MACs.
//!
//! [`profile`] times, prepared for inference as `slimseg predict` runs it, one block at
//! every point of a grid (kept attention dims as `heads x w` with equal head widths, MLP
//! units, tokens; five levels each, 0 to full) and the whole model before and after the
//! grid; everything that is not a block (ResNet, embeddings, decoder, heads) is the whole model's time less its
//! blocks'. Timings are made monotone (keeping more never costs less time), so that the
//! cost of removing a gate is never negative, and read between grid points by trilinear
//! interpolation. A block's time depends on its total kept attention dims here, not on
//! how they split into heads: aligned subnets (`[select] align`) have equal heads, which
//! is what the grid measures.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::arch::{LayerArch, SubnetArch};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gates::LayerGates;
use crate::infer::{InferenceOptions, Precision};
use crate::runtime::synchronize;
use crate::transunet::TransUnet;
use crate::vit::Block;

/// Grid levels along each axis.
const LEVELS: usize = 5;

/// Per-block latency over a grid of kept widths, and the rest of the model, for one
/// device, batch size and precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTable {
    /// The model measured.
    pub model: ModelConfig,
    /// Device, in words (with the CPU threads).
    pub device: String,
    /// Images per forward pass.
    pub batch: usize,
    /// Precision the model ran in.
    pub precision: Precision,
    /// Whether the inference fast paths were on.
    pub fast_paths: bool,
    /// Grid of kept attention dims per block (`heads x w`, ascending from 0).
    pub attn_dims: Vec<usize>,
    /// Grid of kept MLP units per block.
    pub mlp_units: Vec<usize>,
    /// Grid of kept tokens per block.
    pub tokens: Vec<usize>,
    /// Median ms of one block at each grid point, `[attn][mlp][tokens]` flattened,
    /// monotone along each axis.
    pub block_ms: Vec<f64>,
    /// Median ms of everything but the blocks.
    pub fixed_ms: f64,
    /// Ms of the whole full model, measured: the mean of its medians before and after
    /// the grid.
    pub full_ms: f64,
}

/// `n` levels from 0 to `full`, rounded to whole units (`levels(64, 5)` = 0, 16, 32, 48,
/// 64).
fn levels(full: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..LEVELS)
        .map(|i| (full as f64 * i as f64 / (LEVELS - 1) as f64).round() as usize)
        .collect();
    v.dedup();
    v
}

/// Where `x` falls on `grid`: the lower index and the weight of the upper one.
fn bracket(grid: &[usize], x: usize) -> (usize, f64) {
    let last = grid.len() - 1;
    let x = x.min(grid[last]);
    let i = grid
        .partition_point(|&g| g <= x)
        .saturating_sub(1)
        .min(last.saturating_sub(1));
    if last == 0 || grid[i + 1] == grid[i] {
        return (i.min(last), 0.0);
    }
    let w = (x - grid[i]) as f64 / (grid[i + 1] - grid[i]) as f64;
    (i, w.clamp(0.0, 1.0))
}

impl LatencyTable {
    fn at(&self, a: usize, u: usize, t: usize) -> f64 {
        self.block_ms[(a * self.mlp_units.len() + u) * self.tokens.len() + t]
    }

    /// Predicted ms of one block keeping `attn` attention dims, `mlp` units and `tokens`
    /// tokens (trilinear between grid points).
    pub fn block(&self, attn: usize, mlp: usize, tokens: usize) -> f64 {
        let axes = [
            bracket(&self.attn_dims, attn),
            bracket(&self.mlp_units, mlp),
            bracket(&self.tokens, tokens),
        ];
        let mut ms = 0.0;
        for corner in 0..8usize {
            let mut w = 1.0;
            let mut idx = [0usize; 3];
            for (k, &(i, f)) in axes.iter().enumerate() {
                let up = corner >> k & 1 == 1;
                w *= if up { f } else { 1.0 - f };
                let len = [&self.attn_dims, &self.mlp_units, &self.tokens][k].len();
                idx[k] = if up { (i + 1).min(len - 1) } else { i };
            }
            if w > 0.0 {
                ms += w * self.at(idx[0], idx[1], idx[2]);
            }
        }
        ms
    }

    /// Predicted ms of the model with `arch` (`None`: full widths).
    pub fn predict(&self, arch: Option<&SubnetArch>) -> f64 {
        let cfg = &self.model;
        let blocks: f64 = match arch {
            None => cfg.layers as f64 * self.block(cfg.hidden, cfg.mlp_dim, cfg.num_tokens()),
            Some(a) => a
                .layers
                .iter()
                .map(|l| self.block(l.attn_width(), l.mlp_units.len(), l.tokens.len()))
                .sum(),
        };
        self.fixed_ms + blocks
    }

    /// Checks that the table was measured for `cfg` and is well formed.
    pub fn check(&self, cfg: &ModelConfig) -> Result<()> {
        if &self.model != cfg {
            return Err(Error::Input(
                "the latency table was measured for another model configuration".into(),
            ));
        }
        let n = self.attn_dims.len() * self.mlp_units.len() * self.tokens.len();
        // Each grid from 0 to the full width, strictly ascending.
        let grid = |g: &[usize], full: usize| {
            g.first() == Some(&0) && g.last() == Some(&full) && g.windows(2).all(|w| w[0] < w[1])
        };
        let well_formed = self.block_ms.len() == n
            && grid(&self.attn_dims, cfg.hidden)
            && grid(&self.mlp_units, cfg.mlp_dim)
            && grid(&self.tokens, cfg.num_tokens())
            && self.block_ms.iter().all(|v| v.is_finite() && *v >= 0.0)
            && self.fixed_ms.is_finite()
            && self.fixed_ms >= 0.0;
        if !well_formed {
            return Err(Error::Input("the latency table is malformed".into()));
        }
        // Keeping more must never cost less time (the selection's costs rely on it).
        let mut repaired = self.clone();
        repaired.make_monotone();
        if repaired.block_ms != self.block_ms {
            return Err(Error::Input(
                "the latency table is not monotone (a wider block takes less time)".into(),
            ));
        }
        Ok(())
    }

    /// Makes the block times non-decreasing along every axis (keeping more never costs
    /// less time): each value becomes the largest of those at or below it.
    fn make_monotone(&mut self) {
        let (na, nu, nt) = (
            self.attn_dims.len(),
            self.mlp_units.len(),
            self.tokens.len(),
        );
        let idx = |a: usize, u: usize, t: usize| (a * nu + u) * nt + t;
        for a in 0..na {
            for u in 0..nu {
                for t in 0..nt {
                    let mut v = self.block_ms[idx(a, u, t)];
                    if a > 0 {
                        v = v.max(self.block_ms[idx(a - 1, u, t)]);
                    }
                    if u > 0 {
                        v = v.max(self.block_ms[idx(a, u - 1, t)]);
                    }
                    if t > 0 {
                        v = v.max(self.block_ms[idx(a, u, t - 1)]);
                    }
                    self.block_ms[idx(a, u, t)] = v;
                }
            }
        }
    }
}

/// Median ms of `f` over `repeats` runs after `warmup`.
fn median_ms(warmup: usize, repeats: usize, device: Device, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            synchronize(device);
            let start = Instant::now();
            f();
            synchronize(device);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Measures the latency table of `cfg` on `device` at `batch` images, with the model
/// prepared as `opts` says, each point timed as the median of `repeats` runs after
/// `warmup`. `device_name` is recorded as given.
pub fn profile(
    cfg: &ModelConfig,
    device: Device,
    device_name: &str,
    batch: usize,
    opts: InferenceOptions,
    warmup: usize,
    repeats: usize,
) -> Result<LatencyTable> {
    cfg.validate()?;
    if batch == 0 {
        return Err(Error::Input("the batch size must be positive".into()));
    }
    let _guard = tch::no_grad_guard();
    let kind = opts.precision.kind();
    let (heads, d, n) = (cfg.heads, cfg.head_dim(), cfg.num_tokens());
    let widths = levels(d);
    let attn_dims: Vec<usize> = widths.iter().map(|w| w * heads).collect();
    let mlp_units = levels(cfg.mlp_dim);
    let tokens = levels(n);
    let xs = Tensor::randn(
        [batch as i64, n as i64, cfg.hidden as i64],
        (Kind::Float, device),
    )
    .to_kind(kind);
    // The whole model, timed before and after the grid (the mean of both medians), so
    // that a drift of the machine during the grid touches both parts alike.
    let mut vs = nn::VarStore::new(device);
    let mut full = TransUnet::new(&vs.root(), cfg)?;
    full.prepare_inference(&mut vs, opts)?;
    let s = cfg.img_size as i64;
    let image = Tensor::randn([batch as i64, 1, s, s], (Kind::Float, device));
    let time_full = || -> Result<f64> {
        let mut err = None;
        let ms = median_ms(warmup, repeats, device, || {
            if let Err(e) = full.forward_t(&image, false) {
                err = Some(e);
            }
        });
        err.map_or(Ok(ms), Err)
    };
    let before = time_full()?;
    let gates = LayerGates::default();
    let mut block_ms = Vec::with_capacity(widths.len() * mlp_units.len() * tokens.len());
    for &w in &widths {
        for &u in &mlp_units {
            for &t in &tokens {
                let arch = LayerArch {
                    head_dims: vec![(0..w).collect(); heads],
                    mlp_units: (0..u).collect(),
                    tokens: (0..t).collect(),
                };
                let mut vs = nn::VarStore::new(device);
                let mut block = Block::new(&vs.root(), cfg, Some(&arch));
                block.prepare(kind, opts.fast);
                opts.precision.cast(&mut vs);
                block_ms.push(median_ms(warmup, repeats, device, || {
                    let _ = block.forward_t(&xs, &gates, false);
                }));
            }
        }
    }
    let full_ms = (before + time_full()?) / 2.0;
    let mut table = LatencyTable {
        model: cfg.clone(),
        device: device_name.to_string(),
        batch,
        precision: opts.precision,
        fast_paths: opts.fast,
        attn_dims,
        mlp_units,
        tokens,
        block_ms,
        fixed_ms: 0.0,
        full_ms,
    };
    table.make_monotone();
    let blocks = cfg.layers as f64 * table.block(cfg.hidden, cfg.mlp_dim, n);
    table.fixed_ms = (full_ms - blocks).max(0.0);
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table whose block time is `attn + 2 mlp + 3 tokens` ms at every grid point.
    fn linear_table() -> LatencyTable {
        let cfg = ModelConfig::tiny();
        let (a, u, t) = (
            levels(cfg.head_dim())
                .iter()
                .map(|w| w * cfg.heads)
                .collect::<Vec<_>>(),
            levels(cfg.mlp_dim),
            levels(cfg.num_tokens()),
        );
        let mut block_ms = Vec::new();
        for &x in &a {
            for &y in &u {
                for &z in &t {
                    block_ms.push(x as f64 + 2.0 * y as f64 + 3.0 * z as f64);
                }
            }
        }
        LatencyTable {
            model: cfg,
            device: "test".into(),
            batch: 1,
            precision: Precision::Fp32,
            fast_paths: true,
            attn_dims: a,
            mlp_units: u,
            tokens: t,
            block_ms,
            fixed_ms: 5.0,
            full_ms: 0.0,
        }
    }

    #[test]
    fn interpolation_is_exact_on_a_linear_table_between_and_on_grid_points() {
        let t = linear_table();
        t.check(&ModelConfig::tiny()).unwrap();
        for (a, u, n) in [
            (0, 0, 0),
            (192, 768, 36),
            (50, 100, 7),
            (13, 767, 35),
            (1, 1, 1),
        ] {
            let want = a as f64 + 2.0 * u as f64 + 3.0 * n as f64;
            assert!((t.block(a, u, n) - want).abs() < 1e-9, "{a} {u} {n}");
        }
        // Past the grid: the full width.
        assert_eq!(t.block(999, 9999, 99), t.block(192, 768, 36));
        let cfg = ModelConfig::tiny();
        let full = t.predict(None);
        assert!((full - (5.0 + cfg.layers as f64 * (192.0 + 1536.0 + 108.0))).abs() < 1e-9);
    }

    #[test]
    fn monotone_repair_never_lets_more_cost_less() {
        let mut t = linear_table();
        let n = t.block_ms.len();
        // Noise: a dip in the middle and at the far corner.
        t.block_ms[n / 2] = 0.0;
        t.block_ms[n - 1] = 1.0;
        t.make_monotone();
        let (na, nu, nt) = (t.attn_dims.len(), t.mlp_units.len(), t.tokens.len());
        for a in 0..na {
            for u in 0..nu {
                for k in 0..nt {
                    let v = t.at(a, u, k);
                    assert!(a == 0 || v >= t.at(a - 1, u, k));
                    assert!(u == 0 || v >= t.at(a, u - 1, k));
                    assert!(k == 0 || v >= t.at(a, u, k - 1));
                }
            }
        }
    }

    #[test]
    fn a_tiny_profile_predicts_the_full_model_it_measured() {
        let cfg = ModelConfig::tiny();
        let opts = InferenceOptions::default();
        let t = profile(&cfg, Device::Cpu, "cpu", 1, opts, 1, 1).unwrap();
        t.check(&cfg).unwrap();
        assert_eq!(t.block_ms.len(), 125);
        // The fixed part is what the blocks leave of the full model.
        assert!((t.predict(None) - t.full_ms).abs() < 1e-9 || t.fixed_ms == 0.0);
        assert!(t.block(0, 0, 0) <= t.block(cfg.hidden, cfg.mlp_dim, cfg.num_tokens()));
        let mut other = cfg.clone();
        other.layers += 1;
        assert!(t.check(&other).is_err());
    }
}
