//! Latency tables: what one transformer block costs in time on a device, measured over a
//! grid of kept widths, and what a subnet costs as predicted from them. A latency budget
//! (`budget = { kind = "model", latency = 0.7 }`) ranks the gates by this cost instead of
//! MACs.
//!
//! [`profile`] times, prepared for inference as `slimseg predict` runs it, one block at
//! every point of a grid (kept attention dims as `heads x w` with equal head widths, MLP
//! units, tokens; five levels each, 0 to full), and before and after the grid the whole
//! model side by side with the model whose blocks keep nothing. That hollow model is
//! everything that is not a block (ResNet, embeddings, decoder, heads), measured in
//! place. Timings are made monotone (keeping more never costs less time), so that the
//! cost of removing a gate is never negative, and read between grid points by trilinear
//! interpolation. A block's time depends on its total kept attention dims here, not on
//! how they split into heads: aligned subnets (`[select] align`) have equal heads, which
//! is what the grid measures.
//!
//! A block timed alone runs with its weights and tokens hot in the caches; inside the
//! model the convolutions between them evict them. On the 2-core dev CPU the tiny
//! preset's blocks took 1.1-1.8x their lone time in place (the paper preset's 0.97-1.12x),
//! and lone times over-predicted a tiny subnet's fraction of the full model's latency
//! by 14-22% at batch 1. The grid is therefore scaled by one factor,
//! [`LatencyTable::block_scale`], which makes the full model's blocks take what they
//! take in place: the whole model less the hollow one. (That difference also holds
//! what the blocks' traffic costs the layers after them, which does not shrink with
//! the blocks; the one factor assigns it to the blocks.) Every lone time is taken less
//! the lone time of the empty block, which is the timing's own cost (a device sync), so
//! that a block that keeps nothing costs nothing, as in the hollow model.

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
    /// Median ms of one block, timed alone, less that of the empty block, at each grid
    /// point, `[attn][mlp][tokens]` flattened, monotone along each axis.
    pub block_ms: Vec<f64>,
    /// What a block takes in the model per ms it takes alone (module docs); 1 when
    /// `in_place` is false.
    #[serde(default = "unit_scale")]
    pub block_scale: f64,
    /// Whether `block_scale` and `fixed_ms` were measured in place, from the whole model
    /// and the hollow one. False in tables written before they were, and when the two
    /// timings could not tell the blocks apart (a scale outside [`SCALE_RANGE`]); then
    /// `fixed_ms` is the whole model less its blocks timed alone.
    #[serde(default)]
    pub in_place: bool,
    /// Median ms of everything but the blocks: the model whose blocks keep nothing.
    pub fixed_ms: f64,
    /// Ms of the whole full model, measured: the mean of its medians before and after
    /// the grid.
    pub full_ms: f64,
}

fn unit_scale() -> f64 {
    1.0
}

/// In-place scales believed: outside them the difference between the whole and the
/// hollow model is the machine's noise rather than the blocks.
pub const SCALE_RANGE: std::ops::RangeInclusive<f64> = 0.25..=4.0;

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

    /// Predicted ms of one block in the model keeping `attn` attention dims, `mlp` units
    /// and `tokens` tokens: trilinear between grid points, times
    /// [`LatencyTable::block_scale`].
    pub fn block(&self, attn: usize, mlp: usize, tokens: usize) -> f64 {
        self.block_scale * self.alone(attn, mlp, tokens)
    }

    /// Interpolated ms of one block timed alone.
    fn alone(&self, attn: usize, mlp: usize, tokens: usize) -> f64 {
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
            && self.fixed_ms >= 0.0
            && self.block_scale.is_finite()
            && self.block_scale > 0.0;
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

    /// Sets the whole model's ms, the fixed part and the in-place scale from the medians
    /// of the whole and the hollow model (module docs).
    fn calibrate(&mut self, full_ms: f64, hollow_ms: f64) {
        let cfg = &self.model;
        let alone = cfg.layers as f64 * self.alone(cfg.hidden, cfg.mlp_dim, cfg.num_tokens());
        let scale = (full_ms - hollow_ms) / alone;
        self.full_ms = full_ms;
        self.in_place = alone > 0.0 && SCALE_RANGE.contains(&scale);
        if self.in_place {
            self.block_scale = scale;
            self.fixed_ms = hollow_ms;
        } else {
            self.block_scale = 1.0;
            self.fixed_ms = (full_ms - alone).max(0.0);
        }
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

/// Ms of one call of `f`.
fn once_ms(device: Device, f: &mut impl FnMut()) -> f64 {
    synchronize(device);
    let start = Instant::now();
    f();
    synchronize(device);
    start.elapsed().as_secs_f64() * 1e3
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Median ms of `f` over `repeats` runs after `warmup`.
fn median_ms(warmup: usize, repeats: usize, device: Device, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..repeats.max(1))
            .map(|_| once_ms(device, &mut f))
            .collect(),
    )
}

/// Median ms of `f` and of `g`, their runs alternating, so that a drift of the machine
/// touches both alike.
fn paired_median_ms(
    warmup: usize,
    repeats: usize,
    device: Device,
    mut f: impl FnMut(),
    mut g: impl FnMut(),
) -> (f64, f64) {
    for _ in 0..warmup {
        f();
        g();
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..repeats.max(1) {
        a.push(once_ms(device, &mut f));
        b.push(once_ms(device, &mut g));
    }
    (median(a), median(b))
}

/// A block of `cfg` at a grid point: `heads x w` attention dims (equal heads), `u` MLP
/// units and `t` tokens, each the first ones.
fn grid_block(cfg: &ModelConfig, w: usize, u: usize, t: usize) -> LayerArch {
    LayerArch {
        head_dims: vec![(0..w).collect(); cfg.heads],
        mlp_units: (0..u).collect(),
        tokens: (0..t).collect(),
    }
}

/// The subnet of `cfg` whose blocks keep nothing (the empty grid point): each passes its
/// tokens through.
fn hollow(cfg: &ModelConfig) -> SubnetArch {
    SubnetArch {
        full: SubnetArch::full_dims(cfg),
        layers: vec![grid_block(cfg, 0, 0, 0); cfg.layers],
    }
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
    // The whole model and the hollow one, side by side before and after the grid (the
    // mean of both medians), so that a drift of the machine during the grid touches
    // the blocks and the rest alike.
    let mut vs = nn::VarStore::new(device);
    let mut full = TransUnet::new(&vs.root(), cfg)?;
    full.prepare_inference(&mut vs, opts)?;
    let mut hollow_vs = nn::VarStore::new(device);
    let mut rest = TransUnet::new_reduced(&hollow_vs.root(), cfg, &hollow(cfg))?;
    rest.prepare_inference(&mut hollow_vs, opts)?;
    let s = cfg.img_size as i64;
    let image = Tensor::randn([batch as i64, 1, s, s], (Kind::Float, device));
    let time_models = || -> Result<(f64, f64)> {
        let err = std::cell::RefCell::new(None);
        let run = |m: &TransUnet| {
            if let Err(e) = m.forward_t(&image, false) {
                *err.borrow_mut() = Some(e);
            }
        };
        let ms = paired_median_ms(warmup, repeats, device, || run(&full), || run(&rest));
        err.into_inner().map_or(Ok(ms), Err)
    };
    let before = time_models()?;
    let gates = LayerGates::default();
    let mut block_ms = Vec::with_capacity(widths.len() * mlp_units.len() * tokens.len());
    for &w in &widths {
        for &u in &mlp_units {
            for &t in &tokens {
                let arch = grid_block(cfg, w, u, t);
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
    let after = time_models()?;
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
        block_scale: 1.0,
        in_place: false,
        fixed_ms: 0.0,
        full_ms: 0.0,
    };
    table.make_monotone();
    // The smallest time, once monotone: the empty block's.
    let empty = table.block_ms[0];
    for ms in &mut table.block_ms {
        *ms -= empty;
    }
    table.calibrate((before.0 + after.0) / 2.0, (before.1 + after.1) / 2.0);
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
            block_scale: 1.0,
            in_place: false,
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
    fn the_in_place_scale_multiplies_every_block_and_not_the_rest() {
        let mut t = linear_table();
        let cfg = ModelConfig::tiny();
        let (lone, lone_full) = (t.block(50, 100, 7), t.predict(None));
        t.block_scale = 1.5;
        t.check(&cfg).unwrap();
        assert!((t.block(50, 100, 7) - 1.5 * lone).abs() < 1e-9);
        let blocks = lone_full - t.fixed_ms;
        assert!((t.predict(None) - (t.fixed_ms + 1.5 * blocks)).abs() < 1e-9);
        t.block_scale = 0.0;
        assert!(
            t.check(&cfg).is_err(),
            "a zero scale would make every block free"
        );
    }

    #[test]
    fn calibration_scales_the_blocks_to_their_time_in_place_or_keeps_lone_times() {
        let cfg = ModelConfig::tiny();
        let mut t = linear_table();
        let alone = cfg.layers as f64 * t.block(cfg.hidden, cfg.mlp_dim, cfg.num_tokens());
        // In place the blocks take 1.5x: the whole model is the hollow one plus that.
        t.calibrate(2.0 + 1.5 * alone, 2.0);
        assert!(t.in_place && (t.block_scale - 1.5).abs() < 1e-9, "{t:?}");
        assert!((t.predict(None) - t.full_ms).abs() < 1e-6);
        assert!((t.predict(Some(&hollow(&cfg))) - 2.0).abs() < 1e-9);
        // A hollow model no faster than the whole one: noise, so the lone times stand.
        t.calibrate(alone + 3.0, alone + 3.5);
        assert!(!t.in_place && t.block_scale == 1.0, "{t:?}");
        assert!((t.fixed_ms - 3.0).abs() < 1e-9 && (t.predict(None) - t.full_ms).abs() < 1e-6);
        // Nor a scale past the believable range.
        t.calibrate(2.0 + 10.0 * alone, 2.0);
        assert!(!t.in_place, "{t:?}");
    }

    #[test]
    fn tables_written_before_the_in_place_scale_read_as_lone_times() {
        // (The stage writes JSON; the fields' defaults are the same in any format.)
        let mut value = toml::Value::try_from(linear_table()).unwrap();
        let fields = value.as_table_mut().unwrap();
        fields.remove("block_scale").unwrap();
        fields.remove("in_place").unwrap();
        let t: LatencyTable = value.try_into().unwrap();
        assert!(t.block_scale == 1.0 && !t.in_place);
        t.check(&ModelConfig::tiny()).unwrap();
        assert_eq!(t.predict(None), linear_table().predict(None));
    }

    #[test]
    fn the_hollow_model_is_everything_but_the_blocks() {
        let cfg = ModelConfig::tiny();
        let arch = hollow(&cfg);
        arch.check(&cfg).unwrap();
        let (full, rest) = (
            crate::count::count(&cfg, None).unwrap(),
            crate::count::count(&cfg, Some(&arch)).unwrap(),
        );
        let blocks = "transformer.encoder.layer.";
        // (Its blocks keep their norms and output biases, unused without tokens.)
        assert_eq!(rest.sum_prefix(blocks).1, 0);
        assert_eq!(rest.macs(), full.macs() - full.sum_prefix(blocks).1);
        // Blocks that keep no token pass the tokens through, so the model still runs.
        let vs = nn::VarStore::new(Device::Cpu);
        let m = TransUnet::new_reduced(&vs.root(), &cfg, &arch).unwrap();
        let x = Tensor::randn([1, 1, 96, 96], (Kind::Float, Device::Cpu));
        assert_eq!(
            m.forward_t(&x, false).unwrap().logits.size(),
            [1, 4, 96, 96]
        );
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
        // The fixed part, measured as the hollow model, and the blocks scaled to their
        // time in place add up to the full model.
        assert!((t.predict(None) - t.full_ms).abs() < 1e-9 || t.fixed_ms == 0.0);
        assert!(t.fixed_ms <= t.full_ms && t.block_scale > 0.0, "{t:?}");
        // The empty block costs nothing, so neither do the hollow model's blocks.
        assert_eq!(t.block(0, 0, 0), 0.0);
        assert!((t.predict(Some(&hollow(&cfg))) - t.fixed_ms).abs() < 1e-9);
        assert!(t.block(0, 0, 0) <= t.block(cfg.hidden, cfg.mlp_dim, cfg.num_tokens()));
        let mut other = cfg.clone();
        other.layers += 1;
        assert!(t.check(&other).is_err());
    }
}
