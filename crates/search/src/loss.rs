//! Losses: segmentation (0.5 CE + 0.5 Dice, TransUNet's form), the direction-field loss of
//! the pixel classification module, and the L1 sparsity of the soft gates.

use slimseg_model::{ModelConfig, SoftGates};
use tch::{Kind, Reduction, Tensor};

use crate::config::{SearchConfig, SparsityKind};
use crate::select::gate_macs;

/// Smoothing term of TransUNet's `DiceLoss`.
pub const DICE_SMOOTH: f64 = 1e-5;

/// Mean cross-entropy of logits against class indices.
///
/// # Shapes
/// `logits [B, K, H, W]` (any float kind, computed in f32), `labels [B, H, W]` (int64) -> `[]`
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
        labels,
        None,
        Reduction::Mean,
        -100,
        0.0,
    )
}

/// TransUNet's softmax Dice loss: per class `k` (background included), with softmax
/// probabilities `p` and one-hot target `t` summed over the batch and pixels,
/// `1 - (2 sum(p t) + e) / (sum(p^2) + sum(t^2) + e)`, averaged over the classes,
/// `e =` [`DICE_SMOOTH`].
///
/// # Shapes
/// `logits [B, K, H, W]`, `labels [B, H, W]` (int64) -> `[]`
pub fn dice_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    let k = logits.size()[1];
    let p = logits.to_kind(Kind::Float).softmax(1, Kind::Float);
    let t = labels.one_hot(k).permute([0, 3, 1, 2]).to_kind(Kind::Float);
    let dims = [0i64, 2, 3];
    let inter = (&p * &t).sum_dim_intlist(dims.as_slice(), false, Kind::Float);
    let z = (&p * &p).sum_dim_intlist(dims.as_slice(), false, Kind::Float);
    let y = (&t * &t).sum_dim_intlist(dims.as_slice(), false, Kind::Float);
    let dice = (inter * 2.0 + DICE_SMOOTH) / (z + y + DICE_SMOOTH);
    let one_minus: Tensor = 1.0 - dice;
    one_minus.mean(Kind::Float)
}

/// The segmentation loss `0.5 CE + 0.5 Dice`.
pub fn segmentation_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    cross_entropy(logits, labels) * 0.5 + dice_loss(logits, labels) * 0.5
}

/// Direction-field loss: mean over pixels of the squared L2 distance between the
/// predicted and the target field (Cheng et al. 2020's L2 term).
///
/// # Shapes
/// `pred [B, 2, H, W]`, `target [B, 2, H, W]` -> `[]`
pub fn direction_loss(pred: &Tensor, target: &Tensor) -> Tensor {
    (pred.to_kind(Kind::Float) - target)
        .square()
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .mean(Kind::Float)
}

/// Per-gate factors of the sparsity term for each dimension: `(attention, MLP, token)`.
pub fn sparsity_factors(cfg: &ModelConfig, search: &SearchConfig) -> (f64, f64, f64) {
    match search.sparsity {
        SparsityKind::VitSlim => (search.w_attn, search.w_mlp, search.w_patch),
        SparsityKind::CostAware => {
            let (a, m, t) = gate_macs(cfg);
            let (na, nm, nt) = (
                (cfg.layers * cfg.hidden) as f64,
                (cfg.layers * cfg.mlp_dim) as f64,
                (cfg.layers * cfg.num_tokens()) as f64,
            );
            let mean = (a as f64 * na + m as f64 * nm + t as f64 * nt) / (na + nm + nt);
            let f = |c: u64| search.cost_weight * c as f64 / mean.max(1.0);
            (f(a), f(m), f(t))
        }
    }
}

/// The three L1 sums of the gates, `(sum|z_attn|, sum|z_mlp|, sum|tanh s|)`, as scalar
/// tensors (differentiable).
pub fn gate_l1(gates: &SoftGates) -> (Tensor, Tensor, Tensor) {
    (gates.l1_attn(), gates.l1_mlp(), gates.l1_token())
}

/// The sparsity term `f_attn sum|z_attn| + f_mlp sum|z_mlp| + f_token sum|tanh s|` with
/// the factors of [`sparsity_factors`].
pub fn sparsity_loss(gates: &SoftGates, factors: (f64, f64, f64)) -> Tensor {
    let (a, m, t) = gate_l1(gates);
    a * factors.0 + m * factors.1 + t * factors.2
}
