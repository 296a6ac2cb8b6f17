//! SGD (momentum, L2 weight decay) and AdamW over named variables in parameter groups,
//! with their state exposed as named tensors so that a checkpoint can hold it and a
//! resumed run continues bit for bit. (tch's optimisers keep their state inside
//! libtorch, out of reach of a checkpoint.)

use std::collections::HashMap;

use tch::{Kind, Tensor};

use crate::config::OptimizerKind;
use crate::error::{Error, Result};

/// Learning rate and weight decay of one group of variables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSettings {
    /// Base learning rate (scaled by the schedule at each step).
    pub lr: f64,
    /// Weight decay (L2 for SGD, decoupled for AdamW).
    pub weight_decay: f64,
}

/// Hyper-parameters shared by all groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerSettings {
    /// SGD or AdamW.
    pub kind: OptimizerKind,
    /// SGD momentum.
    pub momentum: f64,
    /// AdamW betas.
    pub betas: [f64; 2],
    /// AdamW epsilon.
    pub eps: f64,
}

struct Param {
    name: String,
    var: Tensor,
    group: usize,
    /// SGD: momentum buffer; AdamW: first moment.
    buf1: Tensor,
    /// AdamW: second moment (undefined for SGD).
    buf2: Option<Tensor>,
}

/// An optimiser over named variables, each in one group.
pub struct Optimizer {
    settings: OptimizerSettings,
    groups: Vec<GroupSettings>,
    params: Vec<Param>,
    steps: u64,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("settings", &self.settings)
            .field("groups", &self.groups)
            .field("params", &self.params.len())
            .field("steps", &self.steps)
            .finish()
    }
}

impl Optimizer {
    /// Creates the optimiser; `params` are `(name, variable, group index)`, names unique.
    pub fn new(
        settings: OptimizerSettings,
        groups: Vec<GroupSettings>,
        params: Vec<(String, Tensor, usize)>,
    ) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        let params = params
            .into_iter()
            .map(|(name, var, group)| {
                if group >= groups.len() {
                    return Err(Error::Input(format!(
                        "variable `{name}` is in group {group}, but there are {} groups",
                        groups.len()
                    )));
                }
                if !seen.insert(name.clone()) {
                    return Err(Error::Input(format!("variable `{name}` given twice")));
                }
                let buf1 = var.zeros_like().detach();
                let buf2 =
                    (settings.kind == OptimizerKind::Adamw).then(|| var.zeros_like().detach());
                Ok(Param {
                    name,
                    var,
                    group,
                    buf1,
                    buf2,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Optimizer {
            settings,
            groups,
            params,
            steps: 0,
        })
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Clears the gradients of every variable.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.var.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// The gradients that exist, for inspection (AMP unscaling, finiteness checks).
    pub fn grads(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|p| p.var.grad())
            .filter(Tensor::defined)
            .collect()
    }

    /// One update with every group's learning rate multiplied by `lr_scale` (the schedule).
    pub fn step(&mut self, lr_scale: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        let s = self.settings;
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            let grad = p.var.grad();
            if !grad.defined() {
                continue;
            }
            let grp = self.groups[p.group];
            let lr = grp.lr * lr_scale;
            match s.kind {
                OptimizerKind::Sgd => {
                    let g = if grp.weight_decay != 0.0 {
                        &grad + &p.var * grp.weight_decay
                    } else {
                        grad
                    };
                    let _ = p.buf1.g_mul_scalar_(s.momentum).g_add_(&g);
                    let _ = p.var.g_sub_(&(&p.buf1 * lr));
                }
                OptimizerKind::Adamw => {
                    let [b1, b2] = s.betas;
                    if grp.weight_decay != 0.0 {
                        let _ = p.var.g_mul_scalar_(1.0 - lr * grp.weight_decay);
                    }
                    let v = p.buf2.as_mut().expect("AdamW keeps a second moment");
                    let _ = p.buf1.g_mul_scalar_(b1).g_add_(&(&grad * (1.0 - b1)));
                    let _ = v.g_mul_scalar_(b2).g_add_(&(grad.square() * (1.0 - b2)));
                    let bc1 = 1.0 - b1.powi(t);
                    let bc2 = 1.0 - b2.powi(t);
                    let denom = (v.sqrt() / bc2.sqrt()) + s.eps;
                    let _ = p.var.g_sub_(&(&p.buf1 / denom * (lr / bc1)));
                }
            }
        }
    }

    /// The optimiser state as named tensors (`momentum.<var>` or `exp_avg.<var>` and
    /// `exp_avg_sq.<var>`) on the CPU; the step count is kept by the caller.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for p in &self.params {
            let cpu = |t: &Tensor| t.detach().to_device(tch::Device::Cpu).contiguous();
            match &p.buf2 {
                None => out.push((format!("momentum.{}", p.name), cpu(&p.buf1))),
                Some(v) => {
                    out.push((format!("exp_avg.{}", p.name), cpu(&p.buf1)));
                    out.push((format!("exp_avg_sq.{}", p.name), cpu(v)));
                }
            }
        }
        out
    }

    /// Restores the state written by [`Self::state_tensors`] and the step count.
    pub fn load_state(&mut self, mut tensors: HashMap<String, Tensor>, steps: u64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let mut take = |key: String, like: &Tensor| -> Result<Tensor> {
            let t = tensors
                .remove(&key)
                .ok_or_else(|| Error::Input(format!("optimizer state lacks `{key}`")))?;
            if t.size() != like.size() {
                return Err(Error::Input(format!(
                    "optimizer state `{key}` has shape {:?}, the variable {:?}",
                    t.size(),
                    like.size()
                )));
            }
            Ok(t.to_kind(like.kind()).to_device(like.device()))
        };
        for p in &mut self.params {
            match &mut p.buf2 {
                None => {
                    let t = take(format!("momentum.{}", p.name), &p.buf1)?;
                    p.buf1.copy_(&t);
                }
                Some(v) => {
                    let t = take(format!("exp_avg.{}", p.name), &p.buf1)?;
                    p.buf1.copy_(&t);
                    let t = take(format!("exp_avg_sq.{}", p.name), v)?;
                    v.copy_(&t);
                }
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::Input(format!(
                "optimizer state has `{extra}`, which belongs to no variable"
            )));
        }
        self.steps = steps;
        Ok(())
    }
}

/// Whether every gradient is finite (used by AMP loss scaling).
pub fn grads_finite(grads: &[Tensor]) -> bool {
    grads
        .iter()
        .all(|g| g.isfinite().all().to_kind(Kind::Int64).int64_value(&[]) == 1)
}
