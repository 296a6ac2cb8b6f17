//! The equivalence check: the full model under hard masks vs the physically sliced model,
//! on the same inputs (DESIGN.md: `hard` and the sliced model give the same output to
//! float tolerance).

use serde::{Deserialize, Serialize};
use slimseg_model::{GateMode, TransUnet};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::slice::Folding;

/// Result of [`check_equivalence`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EquivalenceReport {
    /// Images compared.
    pub batch: usize,
    /// Whether the hard masks were scaled by the soft gate values (folded compression).
    pub folded: bool,
    /// Largest absolute difference of the class logits.
    pub max_abs_diff: f64,
    /// Largest absolute logit of the compressed model (the scale of the comparison).
    pub logits_max_abs: f64,
    /// Largest absolute difference of the direction fields, when the model has the pixel
    /// classification module.
    pub direction_field_max_abs_diff: Option<f64>,
    /// Largest absolute logit difference between the full model without gates and the
    /// hard-masked one: how much the pruning changes the output. A `max_abs_diff` far
    /// below it shows the comparison is not vacuous.
    pub pruning_effect: f64,
}

impl EquivalenceReport {
    /// Whether every compared output differs by at most `tol`.
    pub fn within(&self, tol: f64) -> bool {
        self.max_abs_diff <= tol && self.direction_field_max_abs_diff.is_none_or(|d| d <= tol)
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_device(Device::Cpu).to_kind(Kind::Double);
    let b = b.to_device(Device::Cpu).to_kind(Kind::Double);
    (a - b).abs().max().double_value(&[])
}

/// Runs `full` under hard masks of `compressed`'s architecture (scaled by `full`'s soft
/// gates when `folding` is [`Folding::SoftGates`]) and `compressed` on `inputs`
/// (`[B, 1 | 3, S, S]`), both in eval mode without gradients, and reports the largest
/// absolute differences. `full`'s gate mode is restored afterwards.
pub fn check_equivalence(
    full: &mut TransUnet,
    compressed: &TransUnet,
    inputs: &Tensor,
    folding: Folding,
) -> Result<EquivalenceReport> {
    let arch = compressed
        .arch()
        .ok_or_else(|| {
            Error::Invalid("the compressed model must be a reduced model (new_reduced)".into())
        })?
        .clone();
    if full.arch().is_some() {
        return Err(Error::Invalid(
            "the reference model must be the full-width model".into(),
        ));
    }
    let folded = folding == Folding::SoftGates;
    let previous = full.gate_mode().clone();
    let _guard = tch::no_grad_guard();
    let xs = inputs.to_device(full.device());
    let run = |full: &mut TransUnet, mode: GateMode| {
        full.set_gate_mode(mode)?;
        Ok::<_, Error>(full.forward_t(&xs, false)?)
    };
    let unpruned = run(full, GateMode::Off);
    let reference = unpruned.and_then(|u| {
        let hard = run(
            full,
            GateMode::Hard {
                arch,
                scale_by_soft: folded,
            },
        )?;
        Ok((u, hard))
    });
    full.set_gate_mode(previous)?;
    let (unpruned, reference) = reference?;
    let sliced = compressed.forward_t(&inputs.to_device(compressed.device()), false)?;
    let direction_field_max_abs_diff = match (&reference.direction_field, &sliced.direction_field) {
        (Some(a), Some(b)) => Some(max_abs_diff(a, b)),
        _ => None,
    };
    Ok(EquivalenceReport {
        batch: inputs.size().first().copied().unwrap_or(0) as usize,
        folded,
        max_abs_diff: max_abs_diff(&reference.logits, &sliced.logits),
        logits_max_abs: sliced
            .logits
            .abs()
            .max()
            .to_kind(Kind::Double)
            .double_value(&[]),
        direction_field_max_abs_diff,
        pruning_effect: max_abs_diff(&unpruned.logits, &reference.logits),
    })
}
