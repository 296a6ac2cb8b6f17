//! Slicing a full-width TransUNet into the physically reduced model of a [`SubnetArch`].
//!
//! Per transformer block `l` (DESIGN.md, "Compress"):
//! - `attn.{query,key,value}.{weight,bias}`: the rows of the kept `(head, dim)` pairs, in
//!   the order of [`LayerArch::attn_flat_indices`]; with folding, row `h * head_dim + d`
//!   is multiplied by the attention gate `z_attn[l][h][d]` (the gate multiplies q, k and v
//!   after the projection, bias included, so scaling the row and its bias is exact);
//! - `attn.out.weight`: the columns of the kept pairs; `attn.out.bias` is kept whole, so a
//!   block whose heads all vanish still adds the output bias;
//! - `ffn.fc1.{weight,bias}`: the rows of the kept MLP units; `ffn.fc2.weight`: their
//!   columns, multiplied by the MLP gate `z_mlp[l][j]` with folding (the gate sits after
//!   GELU, right before fc2); `ffn.fc2.bias` is kept whole;
//! - tokens: nothing to slice; the reduced block gathers its kept tokens and scatters the
//!   result back (built by [`TransUnet::new_reduced`]). Token gates are binarised: a kept
//!   token has gate 1, a dropped one 0.
//!
//! Every other variable (ResNet, embeddings, norms, decoder, heads, BatchNorm statistics)
//! is copied unchanged; gate variables (`gates.*`) are not part of the compressed model.

use std::collections::{BTreeMap, HashMap};

use slimseg_model::{GateValues, LayerArch, ModelConfig, SubnetArch, TransUnet};
use tch::{Device, Tensor, nn};

use crate::error::{Error, Result};

/// Whether the kept soft gate values are folded into the sliced weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Folding {
    /// Plain slicing: the compressed model equals the full model under hard 0/1 masks
    /// (`GateMode::Hard { scale_by_soft: false }`).
    None,
    /// Fold the attached soft gates (attention into q/k/v rows, MLP into fc2 columns):
    /// the compressed model equals the searched model with the pruned entries removed
    /// (`GateMode::Hard { scale_by_soft: true }`). Fails if no soft gates are attached.
    #[default]
    SoftGates,
}

fn index(v: &[usize], device: Device) -> Tensor {
    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    Tensor::from_slice(&v).to_device(device)
}

fn expect_shape(name: &str, t: &Tensor, expected: &[i64]) -> Result<()> {
    if t.size() != expected {
        return Err(Error::Shape {
            name: name.to_string(),
            expected: expected.to_vec(),
            found: t.size(),
        });
    }
    Ok(())
}

/// Checks that gate values have the shapes of `cfg`: `attn[l]` is `heads x head_dim`,
/// `mlp[l]` has `mlp_dim` entries, one entry per block.
pub fn check_gate_values(gates: &GateValues, cfg: &ModelConfig) -> Result<()> {
    if gates.attn.len() != cfg.layers || gates.mlp.len() != cfg.layers {
        return Err(Error::Gates(format!(
            "expected gate values for {} blocks, found {} attention and {} MLP entries",
            cfg.layers,
            gates.attn.len(),
            gates.mlp.len()
        )));
    }
    for (l, (a, m)) in gates.attn.iter().zip(&gates.mlp).enumerate() {
        if a.len() != cfg.heads || a.iter().any(|h| h.len() != cfg.head_dim()) {
            return Err(Error::Gates(format!(
                "block {l}: attention gates must be {} heads x {} dims",
                cfg.heads,
                cfg.head_dim()
            )));
        }
        if m.len() != cfg.mlp_dim {
            return Err(Error::Gates(format!(
                "block {l}: expected {} MLP gates, found {}",
                cfg.mlp_dim,
                m.len()
            )));
        }
        if a.iter().flatten().chain(m).any(|v| !v.is_finite()) {
            return Err(Error::Gates(format!("block {l}: non-finite gate value")));
        }
    }
    Ok(())
}

/// Gate values of the kept entries of block `l`, as tensors on `device`: attention gates
/// in the order of the kept flat indices, MLP gates in the order of the kept units.
fn kept_gates(g: &GateValues, l: usize, la: &LayerArch, device: Device) -> (Tensor, Tensor) {
    let attn: Vec<f32> = la
        .head_dims
        .iter()
        .enumerate()
        .flat_map(|(h, ds)| ds.iter().map(move |&d| g.attn[l][h][d]))
        .collect();
    let mlp: Vec<f32> = la.mlp_units.iter().map(|&j| g.mlp[l][j]).collect();
    (
        Tensor::from_slice(&attn).to_device(device),
        Tensor::from_slice(&mlp).to_device(device),
    )
}

/// The value of one compressed-model variable, from the full model's variable of the same
/// name. `gates`: kept gate values to fold, already checked.
fn slice_one(
    name: &str,
    src: &Tensor,
    cfg: &ModelConfig,
    arch: &SubnetArch,
    gates: Option<&GateValues>,
) -> Result<Tensor> {
    let Some(rest) = name.strip_prefix("transformer.encoder.layer.") else {
        return Ok(src.detach().copy());
    };
    let (l, param) = rest
        .split_once('.')
        .and_then(|(l, p)| Some((l.parse::<usize>().ok()?, p)))
        .filter(|&(l, _)| l < arch.layers.len())
        .ok_or_else(|| Error::MissingVariable(name.to_string()))?;
    let la = &arch.layers[l];
    let device = src.device();
    let (c, a, m) = (
        cfg.hidden as i64,
        (cfg.heads * cfg.head_dim()) as i64,
        cfg.mlp_dim as i64,
    );
    let attn_idx = || index(&la.attn_flat_indices(arch.full.head_dim), device);
    let unit_idx = || index(&la.mlp_units, device);
    let folded = gates.map(|g| kept_gates(g, l, la, device));
    let kind = src.kind();
    let src = src.detach();
    Ok(match param {
        "attn.query.weight" | "attn.key.weight" | "attn.value.weight" => {
            expect_shape(name, &src, &[a, c])?;
            let rows = src.index_select(0, &attn_idx());
            match &folded {
                Some((za, _)) => rows * za.to_kind(kind).view([-1, 1]),
                None => rows,
            }
        }
        "attn.query.bias" | "attn.key.bias" | "attn.value.bias" => {
            expect_shape(name, &src, &[a])?;
            let rows = src.index_select(0, &attn_idx());
            match &folded {
                Some((za, _)) => rows * za.to_kind(kind),
                None => rows,
            }
        }
        "attn.out.weight" => {
            expect_shape(name, &src, &[c, a])?;
            src.index_select(1, &attn_idx())
        }
        "ffn.fc1.weight" => {
            expect_shape(name, &src, &[m, c])?;
            src.index_select(0, &unit_idx())
        }
        "ffn.fc1.bias" => {
            expect_shape(name, &src, &[m])?;
            src.index_select(0, &unit_idx())
        }
        "ffn.fc2.weight" => {
            expect_shape(name, &src, &[c, m])?;
            let cols = src.index_select(1, &unit_idx());
            match &folded {
                Some((_, zm)) => cols * zm.to_kind(kind).view([1, -1]),
                None => cols,
            }
        }
        _ => src.copy(),
    })
}

/// Slices the variables of a full-width model (`full`: name -> tensor, official names as
/// in `VarStore::variables()`) into those of the reduced model of `arch`, folding `gates`
/// when given (see the module docs). Gate variables (`gates.*`) are skipped. The result
/// holds exactly the variables of `TransUnet::new_reduced(cfg, arch)`.
pub fn slice_state(
    cfg: &ModelConfig,
    full: &HashMap<String, Tensor>,
    arch: &SubnetArch,
    gates: Option<&GateValues>,
) -> Result<BTreeMap<String, Tensor>> {
    cfg.validate()?;
    arch.check(cfg)?;
    if let Some(g) = gates {
        check_gate_values(g, cfg)?;
    }
    let _guard = tch::no_grad_guard();
    full.iter()
        .filter(|(name, _)| !name.starts_with("gates."))
        .map(|(name, src)| Ok((name.clone(), slice_one(name, src, cfg, arch, gates)?)))
        .collect()
}

/// A compressed (physically reduced) TransUNet with its variables.
///
/// `model` is a [`TransUnet`] built by [`TransUnet::new_reduced`]; `vs` holds its
/// variables as ordinary trainable variables, so the training engine can fine-tune it like
/// any other model.
#[derive(Debug)]
pub struct CompressedModel {
    /// The variables (official names, reduced shapes), trainable.
    pub vs: nn::VarStore,
    /// The reduced network; its architecture is `model.arch()`.
    pub model: TransUnet,
}

impl CompressedModel {
    /// Builds the reduced model of `arch` on `device` and fills it from a sliced state
    /// (as returned by [`slice_state`]). The state must hold exactly the model's
    /// variables with the same shapes; a mismatch names the tensor and both shapes.
    pub fn from_state(
        cfg: &ModelConfig,
        arch: &SubnetArch,
        state: &BTreeMap<String, Tensor>,
        device: Device,
    ) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let model = TransUnet::new_reduced(&vs.root(), cfg, arch)?;
        let vars = vs.variables();
        if let Some(name) = vars.keys().find(|k| !state.contains_key(*k)) {
            return Err(Error::MissingVariable(name.clone()));
        }
        if let Some(name) = state.keys().find(|k| !vars.contains_key(*k)) {
            return Err(Error::Invalid(format!(
                "sliced state has a variable `{name}` the compressed model lacks"
            )));
        }
        let _guard = tch::no_grad_guard();
        for (name, var) in &vars {
            let src = &state[name];
            expect_shape(name, src, &var.size())?;
            var.shallow_clone().f_copy_(&src.to_kind(var.kind()))?;
        }
        Ok(CompressedModel { vs, model })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// The kept architecture.
    pub fn arch(&self) -> &SubnetArch {
        self.model
            .arch()
            .expect("a compressed model is always built with new_reduced")
    }

    /// Number of trainable parameters (every trainable variable; BatchNorm statistics
    /// excluded), which equals the analytic count of the architecture.
    pub fn num_params(&self) -> u64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as u64)
            .sum()
    }

    /// Splits into the variable store and the model (for the training engine).
    pub fn into_parts(self) -> (nn::VarStore, TransUnet) {
        (self.vs, self.model)
    }
}

/// Slices the searched model `full` (whose variables live in `full_vs`, built under
/// `full_vs.root()`) into the compressed model of `arch` on `device`.
///
/// With [`Folding::SoftGates`] the soft gates attached to `full` are folded into the kept
/// weights; it is an error if none are attached. With [`Folding::None`] the kept weights
/// are copied unchanged.
pub fn compress(
    full: &TransUnet,
    full_vs: &nn::VarStore,
    arch: &SubnetArch,
    folding: Folding,
    device: Device,
) -> Result<CompressedModel> {
    if full.arch().is_some() {
        return Err(Error::Invalid(
            "compress needs the full-width model, this one is already reduced".into(),
        ));
    }
    let gates = match folding {
        Folding::None => None,
        Folding::SoftGates => Some(
            full.soft_gates()
                .ok_or_else(|| {
                    Error::Gates(
                        "folding needs the soft gates of the searched model; none are attached \
                         (use Folding::None to slice without folding)"
                            .into(),
                    )
                })?
                .values(),
        ),
    };
    let cfg = full.config();
    let state = slice_state(cfg, &full_vs.variables(), arch, gates.as_ref())?;
    CompressedModel::from_state(cfg, arch, &state, device)
}

/// Compresses a searched checkpoint file (safetensors written by
/// `slimseg_model::weights::save_safetensors`) without a model in memory: builds the full
/// model of `cfg` on the CPU, attaches soft gates when the file holds `gates.*` tensors,
/// loads the file strictly and slices it. With [`Folding::SoftGates`] a file without gates
/// is an error.
pub fn compress_checkpoint(
    cfg: &ModelConfig,
    weights: impl AsRef<std::path::Path>,
    arch: &SubnetArch,
    folding: Folding,
    device: Device,
) -> Result<CompressedModel> {
    let weights = weights.as_ref();
    let has_gates = Tensor::read_safetensors(weights)
        .map_err(|e| match std::fs::metadata(weights) {
            Err(io) => Error::io(weights, io),
            Ok(_) => Error::Torch(e),
        })?
        .iter()
        .any(|(k, _)| k.starts_with("gates."));
    let vs = nn::VarStore::new(Device::Cpu);
    let mut full = TransUnet::new(&vs.root(), cfg)?;
    if has_gates {
        full.attach_soft_gates(&(vs.root() / "gates"))?;
    }
    slimseg_model::weights::load_safetensors(&vs, weights)?;
    compress(&full, &vs, arch, folding, device)
}
