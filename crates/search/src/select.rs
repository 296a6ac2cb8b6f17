//! Threshold selection: soft gate values -> [`SubnetSpec`] (DESIGN.md, "Search").
//!
//! Two kinds of budget:
//! - [`Budget::PerDimension`] (ViT-Slim): for each dimension, the gate magnitudes of all
//!   layers are pooled and exactly `round(keep * count)` of them are kept, the largest
//!   first (ties: lower layer, then lower index). ViT-Slim thresholds at a quantile and
//!   keeps ties, which can overshoot; ranking keeps the count exact.
//! - [`Budget::Model`]: a whole-model target on parameters, MACs or latency. All gates of all
//!   dimensions are ranked once by importance = magnitude / cost it controls at full width
//!   and removed in that order until the model's cost is at most the target. Marginal
//!   parameter and MAC costs only shrink as gates go, so the ranked result never exceeds
//!   the target and undershoots it by less than one gate's full-width cost (a latency
//!   table's marginal costs need not shrink; the result still never exceeds the target). Token gates control no parameters, so a
//!   parameter target never removes tokens. The target can cover the whole network or
//!   only the transformer blocks ([`CostScope`]). A latency target reads each layer's
//!   cost from a measured [`LatencyTable`] (`slimseg profile`; see
//!   `slimseg_model::profile`), in nanoseconds, so a gate's cost is the time it saves.
//!
//! Tokens are ranked by their effective magnitude `max over l' >= l of |g[l'][t]|`, which
//! makes every keep-set monotone with depth (kept in layer `l+1` implies kept in `l`),
//! the property that ViT-Slim gets by OR-ing masks from the last layer down.
//!
//! Floors keep at least `attn_dims` attention dims, `mlp_units` MLP units and `tokens`
//! tokens in every layer; a floor of 0 explicitly allows that dimension of a layer to
//! vanish. A budget below what the floors allow is an error that names the reachable range.
//!
//! With [`SelectConfig::align`] (default 8) the ranked subnet is then aligned: per block,
//! equal widths for the kept heads and an MLP width, multiples of `align` (fn `align`).
//! The exact counts of a per-dimension budget and the one-gate undershoot of a model
//! budget then hold before alignment only; a model budget is refilled by whole groups.

use std::cmp::Ordering;
use std::path::Path;

use serde::{Deserialize, Serialize};
use slimseg_model::count::{block_count, count};
use slimseg_model::profile::LatencyTable;
use slimseg_model::{GateValues, LayerArch, ModelConfig, SubnetArch};

use crate::error::{Error, Result};

/// Which cost a whole-model budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CostMetric {
    /// Trainable parameters of the deployed model.
    Params,
    /// Multiply-accumulates per image (FLOPs = 2 x MACs).
    Macs,
    /// Forward latency as a measured latency table predicts it.
    Latency,
}

impl CostMetric {
    /// The cost in words (`parameters`, `MACs`, `latency`).
    pub fn name(self) -> &'static str {
        match self {
            CostMetric::Params => "parameters",
            CostMetric::Macs => "MACs",
            CostMetric::Latency => "latency",
        }
    }
}

/// What part of the model a whole-model budget measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CostScope {
    /// The whole network (ResNet, transformer, decoder, heads).
    #[default]
    Model,
    /// The transformer blocks only (the part the gates can shrink).
    Transformer,
}

/// What to keep.
///
/// In TOML: `{ kind = "per-dimension", attn = .., mlp = .., token = .. }`, or a
/// whole-model budget `{ kind = "model", metric = "macs", keep = 0.7 }`, or both limits
/// at once `{ kind = "model", params = 0.7, macs = 0.7 }` (either alone is the same as
/// `metric` + `keep`), or `{ kind = "model", latency = 0.7 }` (a latency table needed);
/// `scope` (`model` or `transformer`) is optional.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawBudget", into = "RawBudget")]
pub enum Budget {
    /// Keep these fractions of each dimension's gates, pooled over layers (ViT-Slim).
    PerDimension {
        /// Fraction of attention (head, dim) gates kept, in [0, 1].
        attn: f64,
        /// Fraction of MLP unit gates kept, in [0, 1].
        mlp: f64,
        /// Fraction of (layer, token) gates kept, in [0, 1].
        token: f64,
    },
    /// Keep at most this fraction of the whole model's parameters or MACs.
    Model {
        /// The cost limited.
        metric: CostMetric,
        /// Fraction of the full cost kept, in (0, 1].
        keep: f64,
        /// Whole model (default) or the transformer blocks only.
        scope: CostScope,
    },
    /// Keep at most these fractions of the parameters and of the MACs, both met by one
    /// global ranking of the gates.
    Joint {
        /// Fraction of the full parameter count kept, in (0, 1].
        params: f64,
        /// Fraction of the full MACs kept, in (0, 1].
        macs: f64,
        /// Whole model (default) or the transformer blocks only.
        scope: CostScope,
    },
}

impl Budget {
    /// The cost limits of a model or joint budget, each a cost with its kept fraction,
    /// and the scope they measure (`None` for a per-dimension budget).
    pub fn limits(&self) -> Option<(Vec<(CostMetric, f64)>, CostScope)> {
        match *self {
            Budget::PerDimension { .. } => None,
            Budget::Model {
                metric,
                keep,
                scope,
            } => Some((vec![(metric, keep)], scope)),
            Budget::Joint {
                params,
                macs,
                scope,
            } => Some((
                vec![(CostMetric::Params, params), (CostMetric::Macs, macs)],
                scope,
            )),
        }
    }

    /// The costs it limits (none for a per-dimension budget).
    pub fn metrics(&self) -> Vec<CostMetric> {
        self.limits()
            .map_or_else(Vec::new, |(l, _)| l.into_iter().map(|(m, _)| m).collect())
    }

    /// The same kind of budget keeping `keep` instead: every fraction it names (both
    /// limits of a joint budget, each dimension of a per-dimension one) set to `keep`.
    pub fn with_keep(&self, keep: f64) -> Budget {
        match *self {
            Budget::PerDimension { .. } => Budget::PerDimension {
                attn: keep,
                mlp: keep,
                token: keep,
            },
            Budget::Model { metric, scope, .. } => Budget::Model {
                metric,
                keep,
                scope,
            },
            Budget::Joint { scope, .. } => Budget::Joint {
                params: keep,
                macs: keep,
                scope,
            },
        }
    }
}

impl std::fmt::Display for Budget {
    /// In words: `at most 70% of the parameters and 70% of the MACs of the whole model`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let of = |scope: &CostScope| match scope {
            CostScope::Model => "the whole model",
            CostScope::Transformer => "the transformer blocks",
        };
        let pct = |v: f64| format!("{}%", (1000.0 * v).round() / 10.0);
        match self {
            Budget::PerDimension { attn, mlp, token } => write!(
                f,
                "per dimension (ViT-Slim): {} of the attention gates, {} of the MLP gates, \
                 {} of the token gates",
                pct(*attn),
                pct(*mlp),
                pct(*token)
            ),
            Budget::Model {
                metric,
                keep,
                scope,
            } => write!(
                f,
                "at most {} of the {} of {}",
                pct(*keep),
                metric.name(),
                of(scope)
            ),
            Budget::Joint {
                params,
                macs,
                scope,
            } => write!(
                f,
                "at most {} of the parameters and {} of the MACs of {}",
                pct(*params),
                pct(*macs),
                of(scope)
            ),
        }
    }
}

const MODEL_BUDGET_FORMS: &str = "a model budget is `metric` with `keep`, or `params` \
     and/or `macs` fractions, or a `latency` fraction alone (not several forms)";

/// The TOML form of [`Budget`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum RawBudget {
    PerDimension {
        attn: f64,
        mlp: f64,
        token: f64,
    },
    Model {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<CostMetric>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        macs: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency: Option<f64>,
        #[serde(default)]
        scope: CostScope,
    },
}

impl TryFrom<RawBudget> for Budget {
    type Error = String;

    fn try_from(r: RawBudget) -> std::result::Result<Self, String> {
        Ok(match r {
            RawBudget::PerDimension { attn, mlp, token } => {
                Budget::PerDimension { attn, mlp, token }
            }
            RawBudget::Model {
                latency: Some(keep),
                metric: None,
                keep: None,
                params: None,
                macs: None,
                scope,
            } => Budget::Model {
                metric: CostMetric::Latency,
                keep,
                scope,
            },
            RawBudget::Model {
                metric,
                keep,
                params,
                macs,
                latency: None,
                scope,
            } => match (metric, keep, params, macs) {
                (Some(metric), Some(keep), None, None) => Budget::Model {
                    metric,
                    keep,
                    scope,
                },
                (None, None, Some(p), Some(m)) => Budget::Joint {
                    params: p,
                    macs: m,
                    scope,
                },
                (None, None, Some(keep), None) => Budget::Model {
                    metric: CostMetric::Params,
                    keep,
                    scope,
                },
                (None, None, None, Some(keep)) => Budget::Model {
                    metric: CostMetric::Macs,
                    keep,
                    scope,
                },
                _ => return Err(MODEL_BUDGET_FORMS.into()),
            },
            RawBudget::Model { .. } => return Err(MODEL_BUDGET_FORMS.into()),
        })
    }
}

impl From<Budget> for RawBudget {
    fn from(b: Budget) -> Self {
        match b {
            Budget::PerDimension { attn, mlp, token } => {
                RawBudget::PerDimension { attn, mlp, token }
            }
            Budget::Model {
                metric,
                keep,
                scope,
            } => RawBudget::Model {
                metric: Some(metric),
                keep: Some(keep),
                params: None,
                macs: None,
                latency: None,
                scope,
            },
            Budget::Joint {
                params,
                macs,
                scope,
            } => RawBudget::Model {
                metric: None,
                keep: None,
                params: Some(params),
                macs: Some(macs),
                latency: None,
                scope,
            },
        }
    }
}

/// Per-layer minimum kept sizes; 0 allows that dimension of a layer to vanish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Floors {
    /// Minimum attention dims (over all heads) per layer. Default 1.
    pub attn_dims: usize,
    /// Minimum MLP units per layer. Default 1.
    pub mlp_units: usize,
    /// Minimum tokens per layer. Default 1.
    pub tokens: usize,
}

impl Default for Floors {
    fn default() -> Self {
        Floors {
            attn_dims: 1,
            mlp_units: 1,
            tokens: 1,
        }
    }
}

/// The `[select]` table: a budget, floors and the hardware alignment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectConfig {
    /// The budget. Default: whole model, 70% of the MACs.
    pub budget: Budget,
    /// Per-layer floors.
    pub floors: Floors,
    /// Hardware alignment: with `align = m > 1`, every kept head of a layer keeps the same
    /// number of dims and every layer a number of MLP units, both multiples of `m` (or
    /// the full width), so that the sliced model runs dense GEMMs without padded heads.
    /// A model or joint budget is then refilled with whole groups of `m` as far as it
    /// allows. 0 or 1: off. Default 8.
    pub align: usize,
}

impl Default for SelectConfig {
    fn default() -> Self {
        SelectConfig {
            budget: Budget::Model {
                metric: CostMetric::Macs,
                keep: 0.7,
                scope: CostScope::Model,
            },
            floors: Floors::default(),
            align: 8,
        }
    }
}

fn fraction(key: &str, v: f64, allow_zero: bool) -> Result<()> {
    let ok = v.is_finite() && v <= 1.0 && (v > 0.0 || (allow_zero && v == 0.0));
    if ok {
        Ok(())
    } else {
        let range = if allow_zero { "[0, 1]" } else { "(0, 1]" };
        Err(Error::config(key, format!("must be in {range}, found {v}")))
    }
}

impl SelectConfig {
    /// Checks the budget fractions.
    pub fn validate(&self) -> Result<()> {
        match self.budget {
            Budget::PerDimension { attn, mlp, token } => {
                fraction("select.budget.attn", attn, true)?;
                fraction("select.budget.mlp", mlp, true)?;
                fraction("select.budget.token", token, true)
            }
            Budget::Model { keep, .. } => fraction("select.budget.keep", keep, false),
            Budget::Joint { params, macs, .. } => {
                fraction("select.budget.params", params, false)?;
                fraction("select.budget.macs", macs, false)
            }
        }
    }
}

/// Smallest kept gate magnitude per dimension (the effective threshold; absent when
/// nothing of that dimension is kept).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Attention gates.
    pub attn: Option<f64>,
    /// MLP gates.
    pub mlp: Option<f64>,
    /// Token gates (effective magnitudes).
    pub token: Option<f64>,
}

/// A searched subnet: the kept structure plus the budget it was made for and its cost.
/// Written as TOML (`subnet.toml`) by the search stage and read by compress and later runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetSpec {
    /// Trainable parameters of the subnet (slimseg-model counting conventions).
    pub params: u64,
    /// MACs per image of the subnet.
    pub macs: u64,
    /// Parameters of the full model.
    pub full_params: u64,
    /// MACs per image of the full model.
    pub full_macs: u64,
    /// The budget this subnet was selected for.
    pub budget: Budget,
    /// The floors used.
    pub floors: Floors,
    /// The alignment used (`[select] align`; 0: none).
    #[serde(default)]
    pub align: usize,
    /// Effective thresholds per dimension.
    pub thresholds: Thresholds,
    /// Kept head dims, MLP units and tokens per layer (indices into the full model).
    pub arch: SubnetArch,
}

impl SubnetSpec {
    /// Kept fraction of the parameters.
    pub fn params_fraction(&self) -> f64 {
        self.params as f64 / self.full_params.max(1) as f64
    }

    /// Kept fraction of the MACs.
    pub fn macs_fraction(&self) -> f64 {
        self.macs as f64 / self.full_macs.max(1) as f64
    }

    /// Checks the architecture against `cfg` and that the recorded costs are its counts.
    pub fn check(&self, cfg: &ModelConfig) -> Result<()> {
        let sub = count(cfg, Some(&self.arch))?;
        let full = count(cfg, None)?;
        let found = (self.params, self.macs, self.full_params, self.full_macs);
        let want = (sub.params(), sub.macs(), full.params(), full.macs());
        if found != want {
            return Err(Error::Input(format!(
                "subnet spec records (params, macs, full params, full macs) = {found:?} but \
                 its architecture counts {want:?}"
            )));
        }
        Ok(())
    }

    /// Serialises as TOML.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Parse {
            path: Default::default(),
            reason: e.to_string(),
        })
    }

    /// Parses TOML written by [`Self::to_toml_string`].
    pub fn from_toml_str(s: &str) -> Result<Self> {
        toml::from_str(s).map_err(|e| Error::Parse {
            path: Default::default(),
            reason: e.to_string(),
        })
    }

    /// Writes the spec as TOML, atomically.
    pub fn save_toml(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::error::write_atomic(path.as_ref(), self.to_toml_string()?.as_bytes())
    }

    /// Reads a spec TOML file.
    pub fn load_toml(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&s).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// One gate of one of the three dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Attn { l: usize, h: usize, d: usize },
    Mlp { l: usize, j: usize },
    Token { l: usize, t: usize },
}

impl Gate {
    fn layer(self) -> usize {
        match self {
            Gate::Attn { l, .. } | Gate::Mlp { l, .. } | Gate::Token { l, .. } => l,
        }
    }
}

/// Gate magnitudes checked against a model configuration.
struct Scores {
    layers: usize,
    heads: usize,
    head_dim: usize,
    mlp: usize,
    tokens: usize,
    attn: Vec<Vec<Vec<f64>>>,
    mlp_s: Vec<Vec<f64>>,
    /// Effective token magnitudes `max over l' >= l of |g[l'][t]|`.
    token_eff: Vec<Vec<f64>>,
}

fn check_finite(what: &str, v: f32) -> Result<f64> {
    if v.is_finite() {
        Ok((v as f64).abs())
    } else {
        Err(Error::Input(format!("{what} gate value is {v}")))
    }
}

impl Scores {
    fn new(cfg: &ModelConfig, g: &GateValues) -> Result<Self> {
        let (layers, heads, head_dim, mlp, tokens) = (
            cfg.layers,
            cfg.heads,
            cfg.head_dim(),
            cfg.mlp_dim,
            cfg.num_tokens(),
        );
        let shape_err = |what: &str, want: String| {
            Error::Input(format!(
                "gate values do not fit the model config: {what}, expected {want}"
            ))
        };
        if g.attn.len() != layers || g.mlp.len() != layers || g.token.len() != layers {
            return Err(shape_err(
                &format!(
                    "layers attn/mlp/token = {}/{}/{}",
                    g.attn.len(),
                    g.mlp.len(),
                    g.token.len()
                ),
                format!("{layers} each"),
            ));
        }
        let mut attn = Vec::with_capacity(layers);
        for (l, la) in g.attn.iter().enumerate() {
            if la.len() != heads || la.iter().any(|h| h.len() != head_dim) {
                return Err(shape_err(
                    &format!("layer {l} attention gates"),
                    format!("{heads} heads x {head_dim} dims"),
                ));
            }
            attn.push(
                la.iter()
                    .map(|h| h.iter().map(|&v| check_finite("attention", v)).collect())
                    .collect::<Result<Vec<Vec<f64>>>>()?,
            );
        }
        let mut mlp_s = Vec::with_capacity(layers);
        for (l, m) in g.mlp.iter().enumerate() {
            if m.len() != mlp {
                return Err(shape_err(
                    &format!("layer {l} has {} MLP gates", m.len()),
                    mlp.to_string(),
                ));
            }
            mlp_s.push(
                m.iter()
                    .map(|&v| check_finite("MLP", v))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let mut token_eff = vec![vec![0.0; tokens]; layers];
        for l in (0..layers).rev() {
            if g.token[l].len() != tokens {
                return Err(shape_err(
                    &format!("layer {l} has {} token gates", g.token[l].len()),
                    tokens.to_string(),
                ));
            }
            let deeper = (l + 1 < layers).then(|| token_eff[l + 1].clone());
            for (t, (eff, &g)) in token_eff[l].iter_mut().zip(&g.token[l]).enumerate() {
                let v = check_finite("token", g)?;
                *eff = deeper.as_ref().map_or(v, |d| v.max(d[t]));
            }
        }
        Ok(Scores {
            layers,
            heads,
            head_dim,
            mlp,
            tokens,
            attn,
            mlp_s,
            token_eff,
        })
    }

    fn score(&self, g: Gate) -> f64 {
        match g {
            Gate::Attn { l, h, d } => self.attn[l][h][d],
            Gate::Mlp { l, j } => self.mlp_s[l][j],
            Gate::Token { l, t } => self.token_eff[l][t],
        }
    }

    fn attn_gates(&self) -> Vec<Gate> {
        (0..self.layers)
            .flat_map(|l| {
                (0..self.heads)
                    .flat_map(move |h| (0..self.head_dim).map(move |d| Gate::Attn { l, h, d }))
            })
            .collect()
    }

    fn mlp_gates(&self) -> Vec<Gate> {
        (0..self.layers)
            .flat_map(|l| (0..self.mlp).map(move |j| Gate::Mlp { l, j }))
            .collect()
    }

    fn token_gates(&self) -> Vec<Gate> {
        (0..self.layers)
            .flat_map(|l| (0..self.tokens).map(move |t| Gate::Token { l, t }))
            .collect()
    }
}

/// Which gates are kept, as per-layer boolean masks.
struct Keep {
    attn: Vec<Vec<Vec<bool>>>,
    mlp: Vec<Vec<bool>>,
    token: Vec<Vec<bool>>,
}

impl Keep {
    fn new(s: &Scores, value: bool) -> Self {
        Keep {
            attn: vec![vec![vec![value; s.head_dim]; s.heads]; s.layers],
            mlp: vec![vec![value; s.mlp]; s.layers],
            token: vec![vec![value; s.tokens]; s.layers],
        }
    }

    fn set(&mut self, g: Gate, v: bool) {
        match g {
            Gate::Attn { l, h, d } => self.attn[l][h][d] = v,
            Gate::Mlp { l, j } => self.mlp[l][j] = v,
            Gate::Token { l, t } => self.token[l][t] = v,
        }
    }

    fn get(&self, g: Gate) -> bool {
        match g {
            Gate::Attn { l, h, d } => self.attn[l][h][d],
            Gate::Mlp { l, j } => self.mlp[l][j],
            Gate::Token { l, t } => self.token[l][t],
        }
    }

    fn arch(&self, cfg: &ModelConfig) -> SubnetArch {
        let idx = |m: &[bool]| -> Vec<usize> {
            m.iter()
                .enumerate()
                .filter_map(|(i, &k)| k.then_some(i))
                .collect()
        };
        SubnetArch {
            full: SubnetArch::full_dims(cfg),
            layers: (0..self.attn.len())
                .map(|l| LayerArch {
                    head_dims: self.attn[l].iter().map(|h| idx(h)).collect(),
                    mlp_units: idx(&self.mlp[l]),
                    tokens: idx(&self.token[l]),
                })
                .collect(),
        }
    }

    fn thresholds(&self, s: &Scores) -> Thresholds {
        let min_kept = |gates: Vec<Gate>| {
            gates
                .into_iter()
                .filter(|&g| self.get(g))
                .map(|g| s.score(g))
                .min_by(f64::total_cmp)
        };
        Thresholds {
            attn: min_kept(s.attn_gates()),
            mlp: min_kept(s.mlp_gates()),
            token: min_kept(s.token_gates()),
        }
    }
}

/// Ranking order "more important first": score descending, then lower layer, then the
/// gates' natural order (the order of the input vector, a stable sort keeps it).
fn by_importance_desc(s: &Scores) -> impl Fn(&Gate, &Gate) -> Ordering + '_ {
    move |a, b| {
        s.score(*b)
            .total_cmp(&s.score(*a))
            .then(a.layer().cmp(&b.layer()))
    }
}

/// Keeps exactly `round(frac * gates.len())` gates of one dimension, top-ranked, after
/// reserving `reserved` (the floors).
fn keep_top(
    s: &Scores,
    keep: &mut Keep,
    gates: Vec<Gate>,
    reserved: Vec<Gate>,
    frac: f64,
    name: &str,
) -> Result<()> {
    let total = gates.len();
    let k = (frac * total as f64).round() as usize;
    if k < reserved.len() {
        return Err(Error::Budget(format!(
            "keeping {frac} of the {name} gates ({k} of {total}) is below the floors, which \
             keep {} ({:.4}); reachable fractions are {:.4}..=1",
            reserved.len(),
            reserved.len() as f64 / total as f64,
            reserved.len() as f64 / total as f64,
        )));
    }
    for &g in &reserved {
        keep.set(g, true);
    }
    let mut rest: Vec<Gate> = gates.into_iter().filter(|&g| !keep.get(g)).collect();
    rest.sort_by(by_importance_desc(s));
    for &g in rest.iter().take(k - reserved.len()) {
        keep.set(g, true);
    }
    Ok(())
}

/// Floors reserved per layer: the top `floor` gates of each layer (attention, MLP).
fn reserve_per_layer(s: &Scores, gates: &[Gate], floor: usize) -> Vec<Gate> {
    let mut out = Vec::new();
    for l in 0..s.layers {
        let mut layer: Vec<Gate> = gates.iter().copied().filter(|g| g.layer() == l).collect();
        layer.sort_by(by_importance_desc(s));
        out.extend(layer.into_iter().take(floor));
    }
    out
}

/// Token floors: the top `floor` tokens of the last layer, kept in every layer (so that
/// the monotone sets keep at least `floor` tokens everywhere).
fn reserve_tokens(s: &Scores, floor: usize) -> Vec<Gate> {
    if s.layers == 0 {
        return Vec::new();
    }
    let last = s.layers - 1;
    let mut ts: Vec<usize> = (0..s.tokens).collect();
    ts.sort_by(|&a, &b| s.token_eff[last][b].total_cmp(&s.token_eff[last][a]));
    ts.truncate(floor);
    (0..s.layers)
        .flat_map(|l| ts.iter().map(move |&t| Gate::Token { l, t }))
        .collect()
}

/// Per-layer kept sizes of the three dimensions, for incremental costs.
#[derive(Debug, Clone, Copy)]
struct LayerWidth {
    attn: usize,
    mlp: usize,
    tokens: usize,
}

/// What costs are measured against: the model, and the latency table of a latency
/// budget.
#[derive(Clone, Copy)]
struct CostModel<'a> {
    cfg: &'a ModelConfig,
    table: Option<&'a LatencyTable>,
}

/// Nanoseconds, the unit latency costs are counted in.
fn ns(ms: f64) -> u64 {
    (ms * 1e6).round() as u64
}

impl CostModel<'_> {
    fn full_width(&self) -> LayerWidth {
        LayerWidth {
            attn: self.cfg.hidden,
            mlp: self.cfg.mlp_dim,
            tokens: self.cfg.num_tokens(),
        }
    }

    fn table(&self) -> Result<&LatencyTable> {
        self.table.ok_or_else(|| {
            Error::Budget(
                "a latency budget needs a latency table of the model on its device (run \
                 `slimseg profile`)"
                    .into(),
            )
        })
    }

    /// The cost of one layer of widths `w`. Latency needs the table ([`select_with`]
    /// checks that it is there before any cost is asked).
    fn layer(&self, w: LayerWidth, metric: CostMetric) -> u64 {
        let cfg = self.cfg;
        let b = || block_count(cfg.hidden, &[w.attn], w.mlp, w.tokens);
        match metric {
            CostMetric::Params => b().params,
            CostMetric::Macs => b().macs(),
            CostMetric::Latency => ns(self
                .table
                .expect("checked by select_with")
                .block(w.attn, w.mlp, w.tokens)),
        }
    }

    /// Cost of removing one gate from a layer of width `w` (what it controls there).
    fn marginal(&self, w: LayerWidth, g: Gate, metric: CostMetric) -> u64 {
        let mut less = w;
        match g {
            Gate::Attn { .. } => less.attn -= 1,
            Gate::Mlp { .. } => less.mlp -= 1,
            Gate::Token { .. } => less.tokens -= 1,
        }
        self.layer(w, metric) - self.layer(less, metric)
    }

    /// The full cost a model budget refers to.
    fn full(&self, metric: CostMetric, scope: CostScope) -> Result<u64> {
        self.cost(None, metric, scope)
    }

    /// The cost of a subnet architecture in the sense of a model budget.
    fn arch(&self, arch: &SubnetArch, metric: CostMetric, scope: CostScope) -> Result<u64> {
        self.cost(Some(arch), metric, scope)
    }

    /// The cost of the model with `arch` (`None`: full widths) in `scope`.
    fn cost(&self, arch: Option<&SubnetArch>, metric: CostMetric, scope: CostScope) -> Result<u64> {
        if metric == CostMetric::Latency {
            let fixed = ns(self.table()?.fixed_ms);
            let blocks: u64 = match arch {
                None => self.cfg.layers as u64 * self.layer(self.full_width(), metric),
                Some(a) => a
                    .layers
                    .iter()
                    .map(|l| {
                        let w = LayerWidth {
                            attn: l.attn_width(),
                            mlp: l.mlp_units.len(),
                            tokens: l.tokens.len(),
                        };
                        self.layer(w, metric)
                    })
                    .sum(),
            };
            return Ok(match scope {
                CostScope::Model => fixed + blocks,
                CostScope::Transformer => blocks,
            });
        }
        let c = count(self.cfg, arch)?;
        let (params, macs) = match scope {
            CostScope::Model => (c.params(), c.macs()),
            CostScope::Transformer => c.sum_prefix("transformer.encoder.layer."),
        };
        Ok(if metric == CostMetric::Params {
            params
        } else {
            macs
        })
    }
}

/// The largest cost one gate controls in the full model (the tolerance of model
/// budgets), for parameters and MACs (0 for latency, which needs a table).
pub fn max_gate_cost(cfg: &ModelConfig, metric: CostMetric) -> u64 {
    if metric == CostMetric::Latency {
        return 0;
    }
    let c = CostModel { cfg, table: None };
    let full = c.full_width();
    [
        Gate::Attn { l: 0, h: 0, d: 0 },
        Gate::Mlp { l: 0, j: 0 },
        Gate::Token { l: 0, t: 0 },
    ]
    .into_iter()
    .map(|g| c.marginal(full, g, metric))
    .max()
    .unwrap_or(0)
}

/// The MACs each gate of a dimension controls in the full model: `(attention dim, MLP
/// unit, token)`; the weights of cost-aware sparsity.
pub fn gate_macs(cfg: &ModelConfig) -> (u64, u64, u64) {
    let c = CostModel { cfg, table: None };
    let full = c.full_width();
    let m = |g| c.marginal(full, g, CostMetric::Macs);
    (
        m(Gate::Attn { l: 0, h: 0, d: 0 }),
        m(Gate::Mlp { l: 0, j: 0 }),
        m(Gate::Token { l: 0, t: 0 }),
    )
}

/// The full cost a model budget of `metric` and `scope` refers to (parameters or MACs;
/// latency needs [`full_cost_with`]).
pub fn full_cost(cfg: &ModelConfig, metric: CostMetric, scope: CostScope) -> Result<u64> {
    full_cost_with(cfg, metric, scope, None)
}

/// As [`full_cost`], latency (ns) predicted by `table`.
pub fn full_cost_with(
    cfg: &ModelConfig,
    metric: CostMetric,
    scope: CostScope,
    table: Option<&LatencyTable>,
) -> Result<u64> {
    CostModel { cfg, table }.full(metric, scope)
}

/// The cost of a subnet architecture in the sense of a model budget (parameters or
/// MACs; latency needs [`arch_cost_with`]).
pub fn arch_cost(
    cfg: &ModelConfig,
    arch: &SubnetArch,
    metric: CostMetric,
    scope: CostScope,
) -> Result<u64> {
    arch_cost_with(cfg, arch, metric, scope, None)
}

/// As [`arch_cost`], latency (ns) predicted by `table`.
pub fn arch_cost_with(
    cfg: &ModelConfig,
    arch: &SubnetArch,
    metric: CostMetric,
    scope: CostScope,
    table: Option<&LatencyTable>,
) -> Result<u64> {
    CostModel { cfg, table }.arch(arch, metric, scope)
}

fn select_model(
    c: CostModel<'_>,
    s: &Scores,
    floors: Floors,
    limits: &[(CostMetric, f64)],
    scope: CostScope,
) -> Result<Keep> {
    let full_w = c.full_width();
    // The ranking's cost of a gate: what it controls at full width. A latency table may
    // be flat there (a level where removing one unit saves no measurable time); such a
    // gate still ranks as costing the least, rather than never going.
    let rank_cost = |g: Gate, metric: CostMetric| match metric {
        CostMetric::Latency => c.marginal(full_w, g, metric).max(1),
        _ => c.marginal(full_w, g, metric),
    };
    struct Limit {
        metric: CostMetric,
        keep: f64,
        full: u64,
        target: u64,
        cost: u64,
    }
    let mut lim: Vec<Limit> = limits
        .iter()
        .map(|&(metric, keep)| {
            let full = c.full(metric, scope)?;
            Ok(Limit {
                metric,
                keep,
                full,
                target: (keep * full as f64).floor() as u64,
                cost: full,
            })
        })
        .collect::<Result<_>>()?;

    let mut widths = vec![full_w; s.layers];
    let mut keep = Keep::new(s, true);

    // One global ranking: magnitude per unit of controlled cost (each limit's cost as a
    // share of its full cost, summed), least important first.
    let mut ranked: Vec<(f64, Gate)> = s
        .attn_gates()
        .into_iter()
        .chain(s.mlp_gates())
        .chain(s.token_gates())
        .filter_map(|g| {
            // One limit: its cost itself (the ranking of a single-metric budget).
            let cost: f64 = match lim.as_slice() {
                [l] => rank_cost(g, l.metric) as f64,
                _ => lim
                    .iter()
                    .map(|l| rank_cost(g, l.metric) as f64 / l.full.max(1) as f64)
                    .sum(),
            };
            (cost > 0.0).then(|| (s.score(g) / cost, g))
        })
        .collect();
    // Ties: deeper layers first, so a token leaves layer l+1 before layer l.
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.layer().cmp(&a.1.layer())));

    let floor_ok = |w: &LayerWidth, g: Gate| match g {
        Gate::Attn { .. } => w.attn > floors.attn_dims,
        Gate::Mlp { .. } => w.mlp > floors.mlp_units,
        Gate::Token { .. } => w.tokens > floors.tokens,
    };
    for &(_, g) in &ranked {
        if lim.iter().all(|l| l.cost <= l.target) {
            break;
        }
        // A gate that lowers none of the costs still above their limit stays.
        if lim
            .iter()
            .all(|l| l.cost <= l.target || rank_cost(g, l.metric) == 0)
        {
            continue;
        }
        let l = g.layer();
        if !floor_ok(&widths[l], g) {
            continue;
        }
        if let Gate::Token { l, t } = g {
            if l + 1 < s.layers && keep.token[l + 1][t] {
                continue; // would break monotonicity
            }
        }
        let before = widths[l];
        match g {
            Gate::Attn { .. } => widths[l].attn -= 1,
            Gate::Mlp { .. } => widths[l].mlp -= 1,
            Gate::Token { .. } => widths[l].tokens -= 1,
        }
        for x in &mut lim {
            x.cost = x.cost - c.layer(before, x.metric) + c.layer(widths[l], x.metric);
        }
        keep.set(g, false);
    }
    if lim.iter().any(|l| l.cost > l.target) {
        let name = |m: CostMetric| {
            let part = match scope {
                CostScope::Model => "model",
                CostScope::Transformer => "transformer",
            };
            format!("{part} {}", m.name())
        };
        let asked: Vec<String> = lim
            .iter()
            .map(|l| {
                format!(
                    "{} of the {} ({} of {})",
                    l.keep,
                    name(l.metric),
                    l.target,
                    l.full
                )
            })
            .collect();
        // What the smallest subnet under the floors keeps, limit by limit.
        let reach: Vec<String> = lim
            .iter()
            .map(|l| {
                let f = smallest_cost(c, floors, scope, l.metric)? as f64 / l.full as f64;
                Ok(format!("{} {f:.4}..=1", name(l.metric)))
            })
            .collect::<Result<_>>()?;
        return Err(Error::Budget(format!(
            "keeping {} is not reachable: with floors {floors:?} the ranking stops at {}; \
             reachable fractions are {}",
            asked.join(" and "),
            lim.iter()
                .map(|l| format!(
                    "{:.4} of the {}",
                    l.cost as f64 / l.full as f64,
                    name(l.metric)
                ))
                .collect::<Vec<_>>()
                .join(" and "),
            reach.join(", ")
        )));
    }
    Ok(keep)
}

/// One step of the alignment's refill or trim: `m` more or fewer MLP units of a layer,
/// or `m` more or fewer dims in every kept head of a layer.
#[derive(Debug, Clone, Copy)]
enum Group {
    Mlp(usize),
    Attn(usize),
}

/// Kept widths of one layer under alignment: the kept heads, their common width and the
/// MLP units.
#[derive(Debug, Clone)]
struct Aligned {
    heads: Vec<usize>,
    width: usize,
    units: usize,
}

/// `n` rounded down to a multiple of `m`, at least `m`, at most `cap` (the full width,
/// which need not be a multiple).
fn round_width(n: usize, m: usize, cap: usize) -> usize {
    (n / m * m).max(m).min(cap)
}

/// The next width up or down from `w` in steps of `m` within `m..=cap`, `None` past
/// either end.
fn step_width(w: usize, m: usize, cap: usize, up: bool) -> Option<usize> {
    if up {
        (w < cap).then(|| (w / m * m + m).min(cap))
    } else {
        let down = if w % m == 0 {
            w.checked_sub(m)?
        } else {
            w / m * m
        };
        (down >= m).then_some(down)
    }
}

/// Aligns a selected subnet to multiples of `m` (see [`SelectConfig::align`]): per
/// layer, the heads that keep any dim keep their `w` most important dims each, `w` the
/// kept dims per head rounded down to a multiple of `m` but at least `m` (or the full
/// head), and the MLP keeps its most important units, their number rounded likewise (a
/// dimension that vanished stays empty; the floors stay met). With cost `limits`, the subnet is then trimmed by whole
/// groups, least important per unit of cost first, while it exceeds a limit, and refilled
/// by whole groups, most important per unit of cost first, while they fit.
fn align(
    c: CostModel<'_>,
    s: &Scores,
    keep: &mut Keep,
    m: usize,
    floors: Floors,
    limits: Option<(&[(CostMetric, f64)], CostScope)>,
) -> Result<()> {
    let top = |scores: &[f64], k: usize| -> Vec<bool> {
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let mut out = vec![false; scores.len()];
        for &i in idx.iter().take(k) {
            out[i] = true;
        }
        out
    };
    let mut layers: Vec<Aligned> = (0..s.layers)
        .map(|l| {
            let heads: Vec<usize> = (0..s.heads)
                .filter(|&h| keep.attn[l][h].iter().any(|&k| k))
                .collect();
            let dims: usize = keep.attn[l].iter().flatten().filter(|&&k| k).count();
            let units = keep.mlp[l].iter().filter(|&&k| k).count();
            let mut a = Aligned {
                width: if heads.is_empty() {
                    0
                } else {
                    round_width(dims / heads.len(), m, s.head_dim)
                },
                units: if units == 0 {
                    0
                } else {
                    round_width(units, m, s.mlp)
                },
                heads,
            };
            // Floors met by whole groups.
            while a.heads.len() * a.width < floors.attn_dims.min(s.heads * s.head_dim)
                && a.width < s.head_dim
            {
                a.width = step_width(a.width, m, s.head_dim, true).expect("below the cap");
            }
            while a.units < floors.mlp_units.min(s.mlp) {
                a.units = step_width(a.units, m, s.mlp, true).unwrap_or(s.mlp);
            }
            a
        })
        .collect();
    // Groups that change one layer, with the gate scores they add or remove.
    let sorted_desc = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| b.total_cmp(a));
        v
    };
    let mlp_sorted: Vec<Vec<f64>> = s.mlp_s.iter().map(|v| sorted_desc(v)).collect();
    let head_sorted: Vec<Vec<Vec<f64>>> = s
        .attn
        .iter()
        .map(|l| l.iter().map(|h| sorted_desc(h)).collect())
        .collect();
    let resized = |a: &Aligned, g: Group, up: bool| -> Option<(Aligned, f64)> {
        let mut b = a.clone();
        let value = match g {
            Group::Mlp(l) => {
                b.units = if a.units == 0 {
                    return None;
                } else {
                    step_width(a.units, m, s.mlp, up)?
                };
                if b.units < floors.mlp_units.min(s.mlp) {
                    return None;
                }
                let (lo, hi) = (a.units.min(b.units), a.units.max(b.units));
                mlp_sorted[l][lo..hi].iter().sum::<f64>()
            }
            Group::Attn(l) => {
                if a.heads.is_empty() {
                    return None;
                }
                b.width = step_width(a.width, m, s.head_dim, up)?;
                if b.heads.len() * b.width < floors.attn_dims.min(s.heads * s.head_dim) {
                    return None;
                }
                let (lo, hi) = (a.width.min(b.width), a.width.max(b.width));
                a.heads
                    .iter()
                    .map(|&h| head_sorted[l][h][lo..hi].iter().sum::<f64>())
                    .sum()
            }
        };
        Some((b, value))
    };
    if let Some((limits, scope)) = limits {
        let tokens: Vec<usize> = keep
            .token
            .iter()
            .map(|t| t.iter().filter(|&&k| k).count())
            .collect();
        let width = |l: usize, a: &Aligned| LayerWidth {
            attn: a.heads.len() * a.width,
            mlp: a.units,
            tokens: tokens[l],
        };
        let full_w = c.full_width();
        let lims: Vec<(CostMetric, u64, u64)> = limits
            .iter()
            .map(|&(metric, k)| {
                let full = c.full(metric, scope)?;
                Ok((metric, full, (k * full as f64).floor() as u64))
            })
            .collect::<Result<_>>()?;
        let costs = |layers: &[Aligned]| -> Vec<u64> {
            lims.iter()
                .map(|&(metric, full, _)| {
                    let saved: u64 = layers
                        .iter()
                        .enumerate()
                        .map(|(l, a)| c.layer(full_w, metric) - c.layer(width(l, a), metric))
                        .sum();
                    full - saved
                })
                .collect()
        };
        // Cost of a change as the selection ranks it: one limit in its own unit, several
        // as the sum of their shares of the full cost.
        let weight = |before: &[u64], after: &[u64]| -> f64 {
            let d = |i: usize| before[i].abs_diff(after[i]) as f64;
            match lims.as_slice() {
                [_] => d(0),
                _ => (0..lims.len())
                    .map(|i| d(i) / lims[i].1.max(1) as f64)
                    .sum(),
            }
        };
        let fits = |c: &[u64]| c.iter().zip(&lims).all(|(c, l)| *c <= l.2);
        let groups: Vec<Group> = (0..s.layers)
            .flat_map(|l| [Group::Mlp(l), Group::Attn(l)])
            .collect();
        let layer_of = |g: Group| match g {
            Group::Mlp(l) | Group::Attn(l) => l,
        };
        // Trim, then refill; each step takes the best group by score per unit of cost.
        for up in [false, true] {
            loop {
                let now = costs(&layers);
                if !up && fits(&now) {
                    break;
                }
                let mut best: Option<(f64, usize, Aligned)> = None;
                for &g in &groups {
                    let l = layer_of(g);
                    let Some((b, value)) = resized(&layers[l], g, up) else {
                        continue;
                    };
                    let mut next = layers.clone();
                    next[l] = b.clone();
                    let after = costs(&next);
                    if up && !fits(&after) {
                        continue;
                    }
                    let w = weight(&now, &after);
                    // A group that costs nothing: always worth adding back (a flat stretch
                    // of a latency table), never worth trimming.
                    let rank = match (w == 0.0, up) {
                        (true, true) => f64::INFINITY,
                        (true, false) => continue,
                        (false, true) => value / w,
                        (false, false) => -value / w,
                    };
                    if best.as_ref().is_none_or(|(r, _, _)| rank > *r) {
                        best = Some((rank, l, b));
                    }
                }
                match best {
                    Some((_, l, b)) => layers[l] = b,
                    None if up => break,
                    None => {
                        return Err(Error::Budget(format!(
                            "no subnet aligned to multiples of {m} meets the budget with \
                             floors {floors:?}; lower [select] align or the floors"
                        )));
                    }
                }
            }
        }
    }
    for (l, a) in layers.iter().enumerate() {
        for h in 0..s.heads {
            keep.attn[l][h] = if a.heads.contains(&h) {
                top(&s.attn[l][h], a.width)
            } else {
                vec![false; s.head_dim]
            };
        }
        keep.mlp[l] = top(&s.mlp_s[l], a.units);
    }
    Ok(())
}

/// The cost of `metric` (in `scope`) of the smallest subnet the floors allow.
fn smallest_cost(
    c: CostModel<'_>,
    floors: Floors,
    scope: CostScope,
    metric: CostMetric,
) -> Result<u64> {
    let cfg = c.cfg;
    let min_w = LayerWidth {
        attn: floors.attn_dims.min(cfg.hidden),
        mlp: floors.mlp_units.min(cfg.mlp_dim),
        tokens: floors.tokens.clamp(1, cfg.num_tokens()),
    };
    let per_block = c.layer(c.full_width(), metric) - c.layer(min_w, metric);
    Ok(c.full(metric, scope)? - per_block * cfg.layers as u64)
}

/// Selects the subnet that `config` asks for from the soft gate values of a searched
/// model with configuration `cfg` (a latency budget needs [`select_with`]).
pub fn select(cfg: &ModelConfig, gates: &GateValues, config: &SelectConfig) -> Result<SubnetSpec> {
    select_with(cfg, gates, config, None)
}

/// As [`select`], with the latency table a latency budget ranks and counts by.
pub fn select_with(
    cfg: &ModelConfig,
    gates: &GateValues,
    config: &SelectConfig,
    table: Option<&LatencyTable>,
) -> Result<SubnetSpec> {
    cfg.validate()?;
    config.validate()?;
    let c = CostModel { cfg, table };
    if config.budget.metrics().contains(&CostMetric::Latency) {
        c.table()?
            .check(cfg)
            .map_err(|e| Error::Budget(format!("latency budget: {e}")))?;
    }
    let s = Scores::new(cfg, gates)?;
    let floors = config.floors;
    // The ranked selection at `tighten` times the budget's fractions.
    let limits = config.budget.limits();
    let ranked = |tighten: f64| -> Result<Keep> {
        if let Some((lims, scope)) = &limits {
            let tightened: Vec<(CostMetric, f64)> =
                lims.iter().map(|&(m, k)| (m, k * tighten)).collect();
            return select_model(c, &s, floors, &tightened, *scope);
        }
        Ok(match config.budget {
            Budget::PerDimension { attn, mlp, token } => {
                let mut keep = Keep::new(&s, false);
                let ag = s.attn_gates();
                let reserved = reserve_per_layer(&s, &ag, floors.attn_dims);
                keep_top(&s, &mut keep, ag, reserved, attn, "attention")?;
                let mg = s.mlp_gates();
                let reserved = reserve_per_layer(&s, &mg, floors.mlp_units);
                keep_top(&s, &mut keep, mg, reserved, mlp, "MLP")?;
                let reserved = reserve_tokens(&s, floors.tokens.min(s.tokens));
                keep_top(&s, &mut keep, s.token_gates(), reserved, token, "token")?;
                keep
            }
            Budget::Model { .. } | Budget::Joint { .. } => unreachable!("limits above"),
        })
    };
    let mut keep = ranked(1.0)?;
    if config.align > 1 {
        let limits = limits.as_ref().map(|(l, s)| (l.as_slice(), *s));
        // Aligning rounds widths down, but the smallest group (`align` units) can exceed
        // what the ranking kept, and the trim neither removes heads nor tokens. When the
        // aligned subnet cannot be trimmed into the budget, the ranked selection starts
        // from a budget tightened in steps of 2% (down to half); the refill then grows
        // heads and MLPs back toward the real budget, the tightened tokens stay.
        for step in 0.. {
            let tighten = 1.0 - 0.02 * step as f64;
            let mut aligned = std::mem::replace(&mut keep, Keep::new(&s, false));
            match align(c, &s, &mut aligned, config.align, floors, limits) {
                Ok(()) => {
                    keep = aligned;
                    break;
                }
                Err(e) if step >= 25 => return Err(e),
                // A tightened budget below the floors: the alignment's own reason.
                Err(e) => keep = ranked(tighten - 0.02).map_err(|_| e)?,
            }
        }
    }
    let arch = keep.arch(cfg);
    let sub = count(cfg, Some(&arch))?;
    let full = count(cfg, None)?;
    Ok(SubnetSpec {
        params: sub.params(),
        macs: sub.macs(),
        full_params: full.params(),
        full_macs: full.macs(),
        budget: config.budget,
        floors,
        align: if config.align > 1 { config.align } else { 0 },
        thresholds: keep.thresholds(&s),
        arch,
    })
}

/// Whether every token keep-set is monotone with depth (kept in `l+1` implies kept in `l`).
pub fn tokens_monotone(arch: &SubnetArch) -> bool {
    arch.layers.windows(2).all(|w| {
        w[1].tokens
            .iter()
            .all(|t| w[0].tokens.binary_search(t).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_at_another_fraction_keeps_its_kind_and_scope() {
        let joint = Budget::Joint {
            params: 0.7,
            macs: 0.65,
            scope: CostScope::Transformer,
        };
        assert_eq!(
            joint.with_keep(0.5).to_string(),
            "at most 50% of the parameters and 50% of the MACs of the transformer blocks"
        );
        let model = Budget::Model {
            metric: CostMetric::Params,
            keep: 0.7,
            scope: CostScope::Model,
        };
        assert_eq!(
            model.with_keep(0.9).to_string(),
            "at most 90% of the parameters of the whole model"
        );
        let dims = Budget::PerDimension {
            attn: 0.6,
            mlp: 0.5,
            token: 0.8,
        };
        assert!(matches!(
            dims.with_keep(0.4),
            Budget::PerDimension {
                attn: 0.4,
                mlp: 0.4,
                token: 0.4
            }
        ));
    }

    #[test]
    fn budgets_read_as_words() {
        let joint = Budget::Joint {
            params: 0.7,
            macs: 0.65,
            scope: CostScope::Model,
        };
        assert_eq!(
            joint.to_string(),
            "at most 70% of the parameters and 65% of the MACs of the whole model"
        );
        let one = Budget::Model {
            metric: CostMetric::Macs,
            keep: 0.725,
            scope: CostScope::Transformer,
        };
        assert_eq!(
            one.to_string(),
            "at most 72.5% of the MACs of the transformer blocks"
        );
    }
}
