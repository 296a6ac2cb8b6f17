//! Structured subnet architectures for benchmarks and sanity checks, without a search:
//! keep a fraction of each head's dims, of the MLP units and (from a given block on) of
//! the tokens nearest the image centre, and find the fraction that meets a MAC target.
//!
//! These are hand-made architectures, not searched ones: they fix the widths a searched
//! subnet of the same size would have, which is what latency depends on.

use slimseg_model::{LayerArch, ModelConfig, SubnetArch};

use crate::error::{Error, Result};
use crate::store::Summary;

/// Fractions of each searched dimension kept per block (each in `[0, 1]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeepFractions {
    /// Fraction of the dims of every head (rounded per head, so all heads keep the same width).
    pub attn: f64,
    /// Fraction of the MLP units.
    pub mlp: f64,
    /// Fraction of the tokens, in blocks at or after `token_from_layer`.
    pub tokens: f64,
}

fn keep_count(fraction: f64, n: usize) -> usize {
    ((fraction.clamp(0.0, 1.0) * n as f64).round() as usize).min(n)
}

/// The `k` tokens of a `grid x grid` grid nearest its centre (ties by index), ascending.
/// Nested in `k`, so token sets built from it are monotone with depth.
pub fn central_tokens(grid: usize, k: usize) -> Vec<usize> {
    let c = (grid as f64 - 1.0) / 2.0;
    let mut order: Vec<(f64, usize)> = (0..grid * grid)
        .map(|t| {
            let (r, col) = ((t / grid) as f64, (t % grid) as f64);
            ((r - c).powi(2) + (col - c).powi(2), t)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut kept: Vec<usize> = order.into_iter().take(k).map(|(_, t)| t).collect();
    kept.sort_unstable();
    kept
}

/// A structured architecture: every head keeps its first `round(attn * head_dim)` dims,
/// every MLP its first `round(mlp * mlp_dim)` units, blocks before `token_from_layer` keep
/// every token and later ones the `round(tokens * num_tokens)` tokens nearest the centre.
pub fn structured_arch(
    cfg: &ModelConfig,
    keep: KeepFractions,
    token_from_layer: usize,
) -> Result<SubnetArch> {
    cfg.validate()?;
    for (name, f) in [
        ("attn", keep.attn),
        ("mlp", keep.mlp),
        ("tokens", keep.tokens),
    ] {
        if !(0.0..=1.0).contains(&f) {
            return Err(Error::Invalid(format!(
                "keep fraction `{name}` must be in [0, 1], found {f}"
            )));
        }
    }
    let full = SubnetArch::full_dims(cfg);
    let dims: Vec<usize> = (0..keep_count(keep.attn, full.head_dim)).collect();
    let units: Vec<usize> = (0..keep_count(keep.mlp, full.mlp_dim)).collect();
    let tokens = central_tokens(cfg.grid_size(), keep_count(keep.tokens, full.num_tokens));
    let arch = SubnetArch {
        full,
        layers: (0..cfg.layers)
            .map(|l| LayerArch {
                head_dims: vec![dims.clone(); full.heads],
                mlp_units: units.clone(),
                tokens: if l < token_from_layer {
                    (0..full.num_tokens).collect()
                } else {
                    tokens.clone()
                },
            })
            .collect(),
    };
    arch.check(cfg)?;
    Ok(arch)
}

/// The structured architecture ([`structured_arch`] with one fraction `k` for attention
/// dims, MLP units and tokens) with the largest `k` whose whole-model MAC reduction is at
/// least `target` (a fraction, e.g. 0.3). Returns it with its counts. Fails if even
/// `k = 0` cannot reach the target (the ResNet and decoder are never pruned).
pub fn arch_for_mac_reduction(
    cfg: &ModelConfig,
    target: f64,
    token_from_layer: usize,
) -> Result<(SubnetArch, Summary)> {
    if !(0.0..1.0).contains(&target) {
        return Err(Error::Invalid(format!(
            "MAC reduction target must be in [0, 1), found {target}"
        )));
    }
    let at = |k: f64| -> Result<(SubnetArch, Summary)> {
        let arch = structured_arch(
            cfg,
            KeepFractions {
                attn: k,
                mlp: k,
                tokens: k,
            },
            token_from_layer,
        )?;
        let summary = Summary::new(cfg, &arch)?;
        Ok((arch, summary))
    };
    let floor = at(0.0)?;
    if floor.1.mac_reduction() < target {
        return Err(Error::Invalid(format!(
            "a MAC reduction of {target} is out of reach: removing every searched entry gives {:.4}",
            floor.1.mac_reduction()
        )));
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut best = floor;
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        let cand = at(mid)?;
        if cand.1.mac_reduction() >= target {
            lo = mid;
            best = cand;
        } else {
            hi = mid;
        }
    }
    Ok(best)
}
