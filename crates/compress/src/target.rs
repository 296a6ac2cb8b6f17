//! Structured subnet architectures for benchmarks and sanity checks, without a search:
//! keep a fraction of each head's dims, of the MLP units and (from a given block on) of
//! the tokens nearest the image centre, and find the fraction that meets a MAC target.
//!
//! These are hand-made architectures, not searched ones: they fix the widths a searched
//! subnet of the same size would have, which is what latency depends on. The uniform
//! control ([`uniform_control`]) is one of them sized like a learned subnet, the control
//! that tells whether the search's non-uniform allocation beats uniform pruning.

use std::collections::HashMap;

use slimseg_model::{LayerArch, ModelConfig, SubnetArch};
use tch::{Kind, Tensor};

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

/// Importance order of the units of a full-width model, from its weights alone (no
/// gates): per block and head, the head's dims by decreasing weight norm; per block, the
/// MLP units by decreasing weight norm (ties by index).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightRanking {
    /// `[block][head]`: dims of that head, most important first.
    pub attn: Vec<Vec<Vec<usize>>>,
    /// `[block]`: MLP units, most important first.
    pub mlp: Vec<Vec<usize>>,
}

fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

fn var<'a>(vars: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    vars.get(name)
        .ok_or_else(|| Error::MissingVariable(name.to_string()))
}

/// Squared L2 norms of the rows (`dim = 1`) or columns (`dim = 0`) of a 2-d weight.
fn norms(t: &Tensor, dim: i64) -> Result<Vec<f64>> {
    let s = t
        .to_kind(Kind::Double)
        .square()
        .sum_dim_intlist([dim].as_slice(), false, Kind::Double);
    Ok(Vec::<f64>::try_from(s.to_device(tch::Device::Cpu))?)
}

impl WeightRanking {
    /// Ranks a head dim `(h, d)` by the squared norm of its rows of the query, key and
    /// value weights plus its column of the output projection, and an MLP unit by its
    /// row of `fc1` plus its column of `fc2` (`vars`: official names, full widths).
    pub fn of(cfg: &ModelConfig, vars: &HashMap<String, Tensor>) -> Result<Self> {
        let full = SubnetArch::full_dims(cfg);
        let _guard = tch::no_grad_guard();
        let (mut attn, mut mlp) = (Vec::new(), Vec::new());
        for l in 0..cfg.layers {
            let p = format!("transformer.encoder.layer.{l}");
            let mut score = norms(var(vars, &format!("{p}.attn.out.weight"))?, 0)?;
            for w in ["query", "key", "value"] {
                let rows = norms(var(vars, &format!("{p}.attn.{w}.weight"))?, 1)?;
                if rows.len() != score.len() {
                    return Err(Error::Invalid(format!(
                        "{p}.attn.{w}.weight has {} rows, the output projection {} columns",
                        rows.len(),
                        score.len()
                    )));
                }
                score.iter_mut().zip(rows).for_each(|(s, r)| *s += r);
            }
            if score.len() != full.heads * full.head_dim {
                return Err(Error::Invalid(format!(
                    "{p}.attn is {} wide, the configuration says {} heads x {} dims",
                    score.len(),
                    full.heads,
                    full.head_dim
                )));
            }
            attn.push(score.chunks(full.head_dim).map(descending).collect());
            let mut units = norms(var(vars, &format!("{p}.ffn.fc1.weight"))?, 1)?;
            let cols = norms(var(vars, &format!("{p}.ffn.fc2.weight"))?, 0)?;
            if units.len() != full.mlp_dim || cols.len() != full.mlp_dim {
                return Err(Error::Invalid(format!(
                    "{p}.ffn has {} / {} units, the configuration says {}",
                    units.len(),
                    cols.len(),
                    full.mlp_dim
                )));
            }
            units.iter_mut().zip(cols).for_each(|(s, c)| *s += c);
            mlp.push(descending(&units));
        }
        Ok(WeightRanking { attn, mlp })
    }
}

/// The uniform-width control of a learned subnet: every block keeps the same number of
/// attention dims (spread over the heads as evenly as possible, the first heads taking
/// the remainder), the same number of MLP units and the same tokens. The counts are the
/// learned subnet's kept share of each dimension over all blocks, rounded down; the dims
/// and units kept are those `rank` puts first, the tokens those nearest the image
/// centre; and the token count is lowered until the control's MACs are at most the
/// learned subnet's. Its parameters are at most the learned subnet's by construction.
/// Returns it with its counts.
pub fn uniform_control(
    cfg: &ModelConfig,
    learned: &SubnetArch,
    rank: &WeightRanking,
) -> Result<(SubnetArch, Summary)> {
    learned.check(cfg)?;
    let full = SubnetArch::full_dims(cfg);
    let complete = |order: &[usize], n: usize| {
        let mut seen = vec![false; n];
        order.len() == n
            && order
                .iter()
                .all(|&i| i < n && !std::mem::replace(&mut seen[i], true))
    };
    let heads_ok = |heads: &Vec<Vec<usize>>| {
        heads.len() == full.heads && heads.iter().all(|o| complete(o, full.head_dim))
    };
    if rank.attn.len() != cfg.layers
        || rank.mlp.len() != cfg.layers
        || !rank.attn.iter().all(heads_ok)
        || !rank.mlp.iter().all(|o| complete(o, full.mlp_dim))
    {
        return Err(Error::Invalid(format!(
            "the weight ranking does not order every dim of {} heads x {} and every one of \
             {} MLP units in each of {} blocks",
            full.heads, full.head_dim, full.mlp_dim, cfg.layers
        )));
    }
    let (fa, fm, ft) = learned.kept_fractions();
    let floor = |f: f64, n: usize| ((f * n as f64 + 1e-9).floor() as usize).min(n);
    let attn = floor(fa, full.heads * full.head_dim);
    let widths: Vec<usize> = (0..full.heads)
        .map(|h| attn / full.heads + usize::from(h < attn % full.heads))
        .collect();
    let m = floor(fm, full.mlp_dim);
    let build = |t: usize| -> Result<(SubnetArch, Summary)> {
        let tokens = central_tokens(cfg.grid_size(), t);
        let sorted = |order: &[usize], k: usize| {
            let mut v = order[..k].to_vec();
            v.sort_unstable();
            v
        };
        let layers = (0..cfg.layers)
            .map(|l| LayerArch {
                head_dims: rank.attn[l]
                    .iter()
                    .zip(&widths)
                    .map(|(o, &k)| sorted(o, k))
                    .collect(),
                mlp_units: sorted(&rank.mlp[l], m),
                tokens: tokens.clone(),
            })
            .collect();
        let arch = SubnetArch { full, layers };
        arch.check(cfg)?;
        let summary = Summary::new(cfg, &arch)?;
        Ok((arch, summary))
    };
    let limit = Summary::new(cfg, learned)?.macs;
    let mut t = floor(ft, full.num_tokens);
    loop {
        let cand = build(t)?;
        if cand.1.macs <= limit || t == 0 {
            return Ok(cand);
        }
        t -= 1;
    }
}
