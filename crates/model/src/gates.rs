//! Gates on the three searched transformer dimensions and the modes that apply them.
//!
//! Per block `l` (DESIGN.md, "Gates"):
//! - attention: `z_attn[l]` of shape `[heads, head_dim]`, init 1, multiplies q, k and v of
//!   head `h`, dimension `d`, after the projections (biases included);
//! - MLP: `z_mlp[l]` of shape `[mlp_dim]`, init 1, multiplies hidden unit `j` after GELU;
//! - tokens: scores `s[l]` of shape `[num_tokens]`, init 3, and gate
//!   `g[l][t] = tanh(s[l][t]) / tanh(3)`. The division by `tanh(3)` (≈ 0.995) makes the
//!   gate exactly 1 at initialisation, so soft gates at init give the ungated network as
//!   the design requires of all gates; `g` is 0 exactly when `tanh(s)` is, so removal is
//!   unchanged, and the sparsity term stays ViT-Slim's `sum |tanh s|`.
//!   Keys are weighted inside the softmax, `p_ij ∝ |g_j| exp(s_ij)` (computed with a
//!   max shift, never through `log g`), and the block's two residual updates of token `i`
//!   are scaled by `g_i`. A gate of exactly 0 therefore removes the token from the block.
//!   The key weight uses `|g_j|` so that probabilities stay non-negative if a score
//!   crosses zero during search; for the usual `g >= 0` and for binary masks it is `g_j`.
//!
//! Modes: [`GateMode::Off`] runs the plain network, [`GateMode::Soft`] the learnable
//! gates of a [`SoftGates`], [`GateMode::Hard`] binary masks from a [`SubnetArch`].

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::arch::SubnetArch;
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// How the transformer gates act in the forward pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum GateMode {
    /// No gates: the plain network.
    #[default]
    Off,
    /// The learnable gates of the attached [`SoftGates`] (search).
    Soft,
    /// Binary masks: entries kept by `arch` are 1, others 0; tokens not kept are removed
    /// from the block (token gate 0). With `scale_by_soft`, kept attention and MLP entries
    /// are multiplied by the attached soft gate values, which is what folding the gates
    /// into the weights gives (the compressed model); token gates stay binary.
    Hard {
        /// The kept structure, checked against the model config.
        arch: SubnetArch,
        /// Multiply kept attention/MLP entries by the soft gate values (needs soft gates).
        scale_by_soft: bool,
    },
}

/// Initial token score: `tanh(3) ≈ 0.995`.
pub const TOKEN_SCORE_INIT: f64 = 3.0;

/// Optimizer parameter group of the gate variables: [`SoftGates::new`] creates them in this
/// group, so a tch optimizer can give them their own learning rate and no weight decay
/// (`opt.set_lr_group(GATE_PARAM_GROUP, lr)`, `opt.set_weight_decay_group(GATE_PARAM_GROUP, 0.0)`).
/// Model weights stay in group 0.
pub const GATE_PARAM_GROUP: usize = 1;

/// Learnable gates of every block, stored as VarStore variables `attn.{l}`, `mlp.{l}` and
/// `token.{l}` under the path given to [`SoftGates::new`] (conventionally `gates`), in
/// parameter group [`GATE_PARAM_GROUP`].
#[derive(Debug)]
pub struct SoftGates {
    attn: Vec<Tensor>,
    mlp: Vec<Tensor>,
    token_scores: Vec<Tensor>,
}

/// Plain gate values of every block, for threshold selection and reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateValues {
    /// `attn[l][h][d]`: attention gate of block `l`, head `h`, dimension `d`.
    pub attn: Vec<Vec<Vec<f32>>>,
    /// `mlp[l][j]`: MLP gate of block `l`, hidden unit `j`.
    pub mlp: Vec<Vec<f32>>,
    /// `token[l][t]`: token gate `g = tanh(s) / tanh(3)` of block `l`, token `t`.
    pub token: Vec<Vec<f32>>,
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view(-1);
    Vec::<f32>::try_from(&t).expect("float tensor converts to Vec<f32>")
}

impl SoftGates {
    /// Creates the gates of `cfg` at their initial values (attention and MLP 1, token
    /// scores [`TOKEN_SCORE_INIT`]) as trainable variables under `p`.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let p = &p.set_group(GATE_PARAM_GROUP);
        let (h, dh, m, n) = (
            cfg.heads as i64,
            cfg.head_dim() as i64,
            cfg.mlp_dim as i64,
            cfg.num_tokens() as i64,
        );
        let pa = p / "attn";
        let pm = p / "mlp";
        let pt = p / "token";
        SoftGates {
            attn: (0..cfg.layers)
                .map(|l| pa.var(&l.to_string(), &[h, dh], nn::Init::Const(1.0)))
                .collect(),
            mlp: (0..cfg.layers)
                .map(|l| pm.var(&l.to_string(), &[m], nn::Init::Const(1.0)))
                .collect(),
            token_scores: (0..cfg.layers)
                .map(|l| pt.var(&l.to_string(), &[n], nn::Init::Const(TOKEN_SCORE_INIT)))
                .collect(),
        }
    }

    /// Number of blocks.
    pub fn layers(&self) -> usize {
        self.attn.len()
    }

    /// Attention gate `z_attn[l]`, `[heads, head_dim]`.
    pub fn attn(&self, l: usize) -> &Tensor {
        &self.attn[l]
    }

    /// MLP gate `z_mlp[l]`, `[mlp_dim]`.
    pub fn mlp(&self, l: usize) -> &Tensor {
        &self.mlp[l]
    }

    /// Token scores `s[l]`, `[num_tokens]` (the learnable variable).
    pub fn token_scores(&self, l: usize) -> &Tensor {
        &self.token_scores[l]
    }

    /// Token gates `g[l] = tanh(s[l]) / tanh(TOKEN_SCORE_INIT)`, `[num_tokens]` (1 at init).
    pub fn token_gates(&self, l: usize) -> Tensor {
        self.token_scores[l].tanh() / TOKEN_SCORE_INIT.tanh()
    }

    /// `sum_l sum_{h,d} |z_attn[l][h][d]|` (scalar tensor, differentiable).
    pub fn l1_attn(&self) -> Tensor {
        Tensor::stack(
            &self
                .attn
                .iter()
                .map(|z| z.abs().sum(Kind::Float))
                .collect::<Vec<_>>(),
            0,
        )
        .sum(Kind::Float)
    }

    /// `sum_l sum_j |z_mlp[l][j]|` (scalar tensor, differentiable).
    pub fn l1_mlp(&self) -> Tensor {
        Tensor::stack(
            &self
                .mlp
                .iter()
                .map(|z| z.abs().sum(Kind::Float))
                .collect::<Vec<_>>(),
            0,
        )
        .sum(Kind::Float)
    }

    /// `sum_l sum_t |tanh s[l][t]|` (scalar tensor, differentiable).
    pub fn l1_token(&self) -> Tensor {
        Tensor::stack(
            &self
                .token_scores
                .iter()
                .map(|s| s.tanh().abs().sum(Kind::Float))
                .collect::<Vec<_>>(),
            0,
        )
        .sum(Kind::Float)
    }

    /// Every gate variable (attention, MLP, token scores), for an optimizer group of its own.
    pub fn variables(&self) -> Vec<Tensor> {
        self.attn
            .iter()
            .chain(&self.mlp)
            .chain(&self.token_scores)
            .map(Tensor::shallow_clone)
            .collect()
    }

    /// Current gate values as plain numbers (token gates as used in the forward,
    /// `tanh(s) / tanh(3)`).
    pub fn values(&self) -> GateValues {
        GateValues {
            attn: self
                .attn
                .iter()
                .map(|z| {
                    let dh = z.size()[1] as usize;
                    to_vec(z).chunks(dh.max(1)).map(<[f32]>::to_vec).collect()
                })
                .collect(),
            mlp: self.mlp.iter().map(to_vec).collect(),
            token: (0..self.token_scores.len())
                .map(|l| to_vec(&self.token_gates(l)))
                .collect(),
        }
    }
}

/// Binary masks of a [`SubnetArch`] on a device.
#[derive(Debug)]
pub(crate) struct HardMasks {
    pub attn: Vec<Tensor>,
    pub mlp: Vec<Tensor>,
    pub token: Vec<Tensor>,
}

fn mask(len: usize, keep: impl IntoIterator<Item = usize>, device: Device) -> Tensor {
    let mut m = vec![0f32; len];
    for i in keep {
        m[i] = 1.0;
    }
    Tensor::from_slice(&m).to_device(device)
}

impl HardMasks {
    pub fn new(arch: &SubnetArch, cfg: &ModelConfig, device: Device) -> Result<Self> {
        arch.check(cfg)?;
        let f = &arch.full;
        Ok(HardMasks {
            attn: arch
                .layers
                .iter()
                .map(|l| {
                    mask(
                        f.heads * f.head_dim,
                        l.attn_flat_indices(f.head_dim),
                        device,
                    )
                    .view([f.heads as i64, f.head_dim as i64])
                })
                .collect(),
            mlp: arch
                .layers
                .iter()
                .map(|l| mask(f.mlp_dim, l.mlp_units.iter().copied(), device))
                .collect(),
            token: arch
                .layers
                .iter()
                .map(|l| mask(f.num_tokens, l.tokens.iter().copied(), device))
                .collect(),
        })
    }
}

/// The gates one block applies in a forward pass (`None`: that dimension is not gated).
#[derive(Debug, Default)]
pub(crate) struct LayerGates {
    /// `[heads, head_dim]`
    pub attn: Option<Tensor>,
    /// `[mlp_dim]`
    pub mlp: Option<Tensor>,
    /// `[num_tokens]`, the gate values `g` (not scores).
    pub token: Option<Tensor>,
}

/// Gates of block `l` under `mode`.
pub(crate) fn layer_gates(
    mode: &GateMode,
    soft: Option<&SoftGates>,
    hard: Option<&HardMasks>,
    l: usize,
    device: Device,
) -> Result<LayerGates> {
    match mode {
        GateMode::Off => Ok(LayerGates::default()),
        GateMode::Soft => {
            let s =
                soft.ok_or_else(|| Error::Gates("soft mode needs attached soft gates".into()))?;
            Ok(LayerGates {
                attn: Some(s.attn(l).shallow_clone()),
                mlp: Some(s.mlp(l).shallow_clone()),
                token: Some(s.token_gates(l)),
            })
        }
        GateMode::Hard { scale_by_soft, .. } => {
            let h = hard.ok_or_else(|| Error::Gates("hard mode without masks".into()))?;
            // Masks were made on the device of `set_gate_mode`; follow a moved VarStore.
            let (ma, mm, mt) = (
                h.attn[l].to_device(device),
                h.mlp[l].to_device(device),
                h.token[l].to_device(device),
            );
            let (attn, mlp) = if *scale_by_soft {
                let s = soft.ok_or_else(|| {
                    Error::Gates("hard mode with scale_by_soft needs attached soft gates".into())
                })?;
                (ma * s.attn(l), mm * s.mlp(l))
            } else {
                (ma, mm)
            };
            Ok(LayerGates {
                attn: Some(attn),
                mlp: Some(mlp),
                token: Some(mt),
            })
        }
    }
}

/// Softmax over the last dimension with non-negative key weights `w`:
/// `p_ij = w_j exp(s_ij) / sum_k w_k exp(s_ik)`.
///
/// Computed with the row maximum over keys of non-zero weight subtracted (the shift
/// cancels, so it is detached), exponents clamped at 0 so that zero-weight keys with
/// larger scores cannot overflow, and the denominator kept positive so that a row whose
/// keys all have weight 0 gives zeros instead of NaN.
///
/// # Shapes
/// `scores [.., Nq, Nk]`, `w [Nk]` -> `[.., Nq, Nk]`
pub(crate) fn weighted_softmax(scores: &Tensor, w: &Tensor) -> Tensor {
    let zero_w = w.eq(0.0);
    let masked = scores.masked_fill(&zero_w, f64::NEG_INFINITY);
    let m = masked.amax([-1i64].as_slice(), true).detach();
    let m = m.masked_fill(&m.isinf(), 0.0);
    let e = (scores - m).clamp_max(0.0).exp() * w;
    let denom = e
        .sum_dim_intlist([-1i64].as_slice(), true, e.kind())
        .clamp_min(f32::MIN_POSITIVE as f64);
    e / denom
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_softmax_with_zero_weights_equals_softmax_over_kept_keys() {
        // Large scores on removed keys must neither overflow nor leak probability.
        let scores = Tensor::from_slice(&[1.0e4f32, 2.0, -1.0, 3.0, 5.0e3, 0.5]).view([2, 3]);
        let w = Tensor::from_slice(&[0.0f32, 1.0, 1.0]);
        let p = weighted_softmax(&scores, &w);
        assert!(bool::try_from(p.isfinite().all()).unwrap());
        let kept = scores.narrow(1, 1, 2).softmax(-1, Kind::Float);
        let diff = (p.narrow(1, 1, 2) - kept).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "diff {diff}");
        assert_eq!(
            p.narrow(1, 0, 1).abs().sum(Kind::Float).double_value(&[]),
            0.0
        );
    }

    #[test]
    fn weighted_softmax_scales_keys_by_weight() {
        let scores = Tensor::from_slice(&[0.3f32, -0.2, 1.1]).view([1, 3]);
        let w = Tensor::from_slice(&[0.5f32, 1.0, 0.25]);
        let p = weighted_softmax(&scores, &w);
        let e = scores.exp() * &w;
        let want = &e / e.sum(Kind::Float);
        assert!((p - want).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn all_zero_weights_give_zeros_not_nan() {
        let scores = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]);
        let p = weighted_softmax(&scores, &Tensor::zeros([2], (Kind::Float, Device::Cpu)));
        assert_eq!(p.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
}
