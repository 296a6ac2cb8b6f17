//! Weights: strict safetensors save/load, import of an official TransUNet `state_dict`
//! and of the ImageNet-21k ViT checkpoint `R50+ViT-B_16.npz`.
//!
//! Strict loading means the file and the VarStore hold exactly the same names with the
//! same shapes; any difference is an error naming the tensor(s). Float tensors of another
//! precision are converted to the variable's kind; other dtypes are errors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn::VarStore};

use crate::config::ModelConfig;
use crate::error::{Error, Result, write_atomic};

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Model variables that received a value from the file.
    pub loaded: Vec<String>,
    /// File entries that were ignored (and why, in the entry's text).
    pub ignored: Vec<String>,
    /// Model variables the file does not cover (kept at their current values).
    pub not_in_file: Vec<String>,
}

fn first20(v: impl IntoIterator<Item = String>) -> Vec<String> {
    v.into_iter().take(20).collect()
}

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

/// Copies every `(name, variable, value)`, converting float precisions, after checking
/// all of them: nothing is copied unless every shape and dtype fits, so a bad file leaves
/// the model's values untouched. `shape_hint` is appended to a shape mismatch's reason.
fn assign_all(path: &Path, items: &[(&str, &Tensor, &Tensor)], shape_hint: &str) -> Result<()> {
    let bad = |name: &str, reason: String| Error::BadTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason,
    };
    for &(name, var, src) in items {
        if var.size() != src.size() {
            return Err(bad(
                name,
                format!(
                    "shape mismatch: model expects {:?}, file has {:?}{shape_hint}",
                    var.size(),
                    src.size()
                ),
            ));
        }
        if src.kind() != var.kind() && !(is_float(src.kind()) && is_float(var.kind())) {
            return Err(bad(
                name,
                format!(
                    "dtype mismatch: model expects {:?}, file has {:?}",
                    var.kind(),
                    src.kind()
                ),
            ));
        }
    }
    for &(_, var, src) in items {
        let mut dst = var.shallow_clone();
        tch::no_grad(|| dst.f_copy_(&src.to_kind(var.kind())))?;
    }
    Ok(())
}

/// Saves every variable of `vs` (parameters, BatchNorm statistics, gates if attached) to
/// a safetensors file, atomically.
pub fn save_safetensors(vs: &VarStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let vars: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    let named: Vec<(&str, &Tensor)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    write_atomic(path, |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))
}

fn not_found(path: &Path) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
    )
}

fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.exists() {
        return Err(not_found(path));
    }
    Tensor::read_safetensors(path).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads every array of an `.npz` file (as written by `numpy.savez`, zip64 entries
/// included) as `(key without .npy, tensor)` pairs, in file order.
pub fn read_npz(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(not_found(path));
    }
    Tensor::read_npz(path).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Loads a safetensors file into `vs`, strictly: the file must hold exactly the
/// variables of `vs`, with the same shapes. Nothing is copied unless all names match.
pub fn load_safetensors(vs: &VarStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let file: HashMap<String, Tensor> = read_safetensors(path)?.into_iter().collect();
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let missing: BTreeSet<String> = vars
        .keys()
        .filter(|k| !file.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingTensors {
            path: path.to_path_buf(),
            names: first20(missing),
        });
    }
    let unexpected: BTreeSet<String> = file
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        return Err(Error::UnexpectedTensors {
            path: path.to_path_buf(),
            names: first20(unexpected),
        });
    }
    let items: Vec<(&str, &Tensor, &Tensor)> = vars
        .iter()
        .map(|(name, var)| (name.as_str(), var, &file[name]))
        .collect();
    assign_all(path, &items, "")
}

/// Loads an official TransUNet `state_dict` converted to safetensors (see
/// `scripts/convert_transunet_pth.py`). A leading `module.` (DataParallel) is stripped
/// and `*.num_batches_tracked` entries are ignored; every other entry must be a model
/// variable with the same shape, and every model variable outside `pixel_head.` and
/// `gates.` (which official checkpoints lack) must be present.
pub fn load_official_state_dict(vs: &VarStore, path: impl AsRef<Path>) -> Result<ImportReport> {
    let path = path.as_ref();
    load_official_tensors(vs, path, read_safetensors(path)?)
}

/// Loads an official TransUNet checkpoint as `torch.save` writes it (`.pth`, read by
/// [`crate::pth::read_pth`], no Python), with the rules of [`load_official_state_dict`].
pub fn load_official_pth(vs: &VarStore, path: impl AsRef<Path>) -> Result<ImportReport> {
    let path = path.as_ref();
    let tensors = crate::pth::read_pth(path)?
        .into_iter()
        .map(|(n, t)| {
            let t = if t.is_floating_point() {
                t.to_kind(tch::Kind::Float)
            } else {
                t
            };
            (n, t)
        })
        .collect();
    load_official_tensors(vs, path, tensors)
}

/// The checks and copies of [`load_official_state_dict`] on tensors read from `path`.
fn load_official_tensors(
    vs: &VarStore,
    path: &Path,
    tensors: Vec<(String, Tensor)>,
) -> Result<ImportReport> {
    let vars = vs.variables();
    let mut report = ImportReport::default();
    let mut file = BTreeMap::new();
    for (name, t) in tensors {
        let key = name.strip_prefix("module.").unwrap_or(&name).to_string();
        if key.ends_with(".num_batches_tracked") {
            report
                .ignored
                .push(format!("{name} (BatchNorm step counter)"));
            continue;
        }
        file.insert(key, t);
    }
    let unexpected: Vec<String> = file
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        return Err(Error::UnexpectedTensors {
            path: path.to_path_buf(),
            names: first20(unexpected),
        });
    }
    let optional = |k: &str| k.starts_with("pixel_head.") || k.starts_with("gates.");
    let missing: Vec<String> = vars
        .keys()
        .filter(|k| !file.contains_key(*k) && !optional(k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let mut m = missing;
        m.sort();
        return Err(Error::MissingTensors {
            path: path.to_path_buf(),
            names: first20(m),
        });
    }
    let items: Vec<(&str, &Tensor, &Tensor)> = file
        .iter()
        .map(|(name, src)| (name.as_str(), &vars[name], src))
        .collect();
    assign_all(path, &items, "")?;
    report.loaded = file.keys().cloned().collect();
    report.not_in_file = vars
        .keys()
        .filter(|k| !file.contains_key(*k))
        .cloned()
        .collect();
    report.not_in_file.sort();
    Ok(report)
}

/// Resizes ViT position embeddings to `n_new` tokens as the official `load_from` does:
/// a leading class token is dropped, and a differing square grid is zoomed with linear
/// interpolation (scipy `zoom(order=1)`, i.e. corner-aligned bilinear).
///
/// # Shapes
/// `[1, n_old, C] -> [1, n_new, C]` (`n_old = g^2` or `g^2 + 1`, `n_new` a square)
pub fn resize_position_embeddings(posemb: &Tensor, n_new: usize) -> Result<Tensor> {
    let size = posemb.size();
    let bad = || Error::Shape {
        name: "Transformer/posembed_input/pos_embedding".into(),
        expected: vec![1, n_new as i64, -1],
        found: size.clone(),
    };
    if size.len() != 3 || size[0] != 1 {
        return Err(bad());
    }
    let (n_old, c) = (size[1] as usize, size[2]);
    let isqrt = |n: usize| {
        let r = (n as f64).sqrt().round() as usize;
        (r * r == n).then_some(r)
    };
    if n_old == n_new {
        return Ok(posemb.shallow_clone());
    }
    let grid = if isqrt(n_old).is_some() && isqrt(n_old - 1).is_none() {
        posemb.shallow_clone()
    } else {
        posemb.narrow(1, 1, n_old as i64 - 1)
    };
    let gs_old = isqrt(grid.size()[1] as usize).ok_or_else(bad)? as i64;
    let gs_new = isqrt(n_new).ok_or_else(bad)? as i64;
    if gs_old == gs_new {
        return Ok(grid);
    }
    let img = grid
        .view([1, gs_old, gs_old, c])
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float);
    let zoomed = img.upsample_bilinear2d([gs_new, gs_new], true, None, None);
    Ok(zoomed
        .permute([0, 2, 3, 1])
        .reshape([1, gs_new * gs_new, c])
        .to_kind(posemb.kind()))
}

/// The entries of an npz checkpoint being imported, with the names used so far.
struct NpzEntries<'a> {
    path: &'a Path,
    file: HashMap<String, Tensor>,
    used: BTreeSet<String>,
}

impl NpzEntries<'_> {
    fn bad(&self, key: &str, reason: String) -> Error {
        Error::BadTensor {
            path: self.path.to_path_buf(),
            name: key.to_string(),
            reason,
        }
    }

    /// The entry `key` as stored.
    fn get(&mut self, key: &str) -> Result<Tensor> {
        self.used.insert(key.to_string());
        self.file
            .get(key)
            .map(Tensor::shallow_clone)
            .ok_or_else(|| Error::MissingTensors {
                path: self.path.to_path_buf(),
                names: vec![key.to_string()],
            })
    }

    /// The entry `key`, which must have `rank` dimensions.
    fn with_rank(&mut self, key: &str, rank: usize) -> Result<Tensor> {
        let t = self.get(key)?;
        if t.dim() != rank {
            return Err(self.bad(
                key,
                format!("expected {rank} dimensions, file has shape {:?}", t.size()),
            ));
        }
        Ok(t)
    }

    /// A conv kernel, HWIO in the file, OIHW in the model.
    fn conv(&mut self, key: &str) -> Result<Tensor> {
        Ok(self.with_rank(key, 4)?.permute([3, 2, 0, 1]).contiguous())
    }

    /// A norm scale or a bias, flattened.
    fn vector(&mut self, key: &str) -> Result<Tensor> {
        Ok(self.get(key)?.reshape([-1]))
    }

    /// A dense kernel, `[in, out]` in the file, `[out, in]` in the model.
    fn dense_kernel(&mut self, key: &str) -> Result<Tensor> {
        Ok(self.with_rank(key, 2)?.tr().contiguous())
    }

    /// An attention kernel (`[C, heads, head_dim]` or `[heads, head_dim, C]`) as the
    /// `[C, C]` weight of a linear layer of width `c`.
    fn attention_kernel(&mut self, key: &str, c: i64) -> Result<Tensor> {
        let t = self.get(key)?;
        if t.numel() as i64 != c * c {
            return Err(self.bad(
                key,
                format!(
                    "shape {:?} does not hold a [{c}, {c}] kernel (hidden {c})",
                    t.size()
                ),
            ));
        }
        Ok(t.reshape([c, c]).tr().contiguous())
    }
}

/// Imports the ImageNet-21k `R50+ViT-B_16.npz` (or any npz with the same key scheme)
/// into a full-width model built with `cfg` under `vs.root()`.
///
/// Mapping (as the official `load_from`): `conv_root/kernel` -> `root.conv.weight`,
/// `gn_root/{scale,bias}` -> `root.gn.{weight,bias}`, `block{s}/unit{u}/{conv1,conv2,conv3,
/// conv_proj}/kernel` -> `body.block{s}.unit{u}.{conv1,conv2,conv3,downsample}.weight`,
/// `.../{gn1,gn2,gn3,gn_proj}/{scale,bias}` -> the GroupNorms, `embedding/{kernel,bias}`
/// -> `patch_embeddings`, `Transformer/posembed_input/pos_embedding` -> resized
/// `position_embeddings`, `Transformer/encoderblock_{l}/LayerNorm_{0,2}` ->
/// `attention_norm`/`ffn_norm`, `.../MultiHeadDotProductAttention_1/{query,key,value,out}`
/// -> `attn.*` (kernels reshaped to `[C, C]` and transposed), `.../MlpBlock_3/Dense_{0,1}`
/// -> `ffn.fc{1,2}` (transposed), `Transformer/encoder_norm` -> `encoder_norm`. Conv
/// kernels go from HWIO to OIHW. The decoder, segmentation head, pixel module and gates
/// are not in the file and keep their values. Entries of the classifier (`cls`, `head`,
/// `pre_logits`) are ignored.
pub fn import_vit_npz(
    vs: &VarStore,
    cfg: &ModelConfig,
    path: impl AsRef<Path>,
) -> Result<ImportReport> {
    let path = path.as_ref();
    cfg.validate()?;
    let mut src = NpzEntries {
        path,
        file: read_npz(path)?.into_iter().collect(),
        used: BTreeSet::new(),
    };
    let vars = vs.variables();
    let mut report = ImportReport::default();
    let mut pairs: Vec<(String, Tensor)> = Vec::new();

    let hy = "transformer.embeddings.hybrid_model";
    pairs.push((
        format!("{hy}.root.conv.weight"),
        src.conv("conv_root/kernel")?,
    ));
    pairs.push((format!("{hy}.root.gn.weight"), src.vector("gn_root/scale")?));
    pairs.push((format!("{hy}.root.gn.bias"), src.vector("gn_root/bias")?));
    for (s, &units) in cfg.resnet_layers.iter().enumerate() {
        for u in 1..=units {
            let from = format!("block{}/unit{u}", s + 1);
            let dst = format!("{hy}.body.block{}.unit{u}", s + 1);
            for conv in ["conv1", "conv2", "conv3"] {
                pairs.push((
                    format!("{dst}.{conv}.weight"),
                    src.conv(&format!("{from}/{conv}/kernel"))?,
                ));
            }
            for gn in ["gn1", "gn2", "gn3"] {
                pairs.push((
                    format!("{dst}.{gn}.weight"),
                    src.vector(&format!("{from}/{gn}/scale"))?,
                ));
                pairs.push((
                    format!("{dst}.{gn}.bias"),
                    src.vector(&format!("{from}/{gn}/bias"))?,
                ));
            }
            if vars.contains_key(&format!("{dst}.downsample.weight")) {
                pairs.push((
                    format!("{dst}.downsample.weight"),
                    src.conv(&format!("{from}/conv_proj/kernel"))?,
                ));
                pairs.push((
                    format!("{dst}.gn_proj.weight"),
                    src.vector(&format!("{from}/gn_proj/scale"))?,
                ));
                pairs.push((
                    format!("{dst}.gn_proj.bias"),
                    src.vector(&format!("{from}/gn_proj/bias"))?,
                ));
            }
        }
    }
    let emb = "transformer.embeddings";
    pairs.push((
        format!("{emb}.patch_embeddings.weight"),
        src.conv("embedding/kernel")?,
    ));
    pairs.push((
        format!("{emb}.patch_embeddings.bias"),
        src.vector("embedding/bias")?,
    ));
    let posemb = src.get("Transformer/posembed_input/pos_embedding")?;
    pairs.push((
        format!("{emb}.position_embeddings"),
        resize_position_embeddings(&posemb, cfg.num_tokens())?,
    ));
    let c = cfg.hidden as i64;
    for l in 0..cfg.layers {
        let from = format!("Transformer/encoderblock_{l}");
        let dst = format!("transformer.encoder.layer.{l}");
        for (ln, to) in [
            ("LayerNorm_0", "attention_norm"),
            ("LayerNorm_2", "ffn_norm"),
        ] {
            pairs.push((
                format!("{dst}.{to}.weight"),
                src.vector(&format!("{from}/{ln}/scale"))?,
            ));
            pairs.push((
                format!("{dst}.{to}.bias"),
                src.vector(&format!("{from}/{ln}/bias"))?,
            ));
        }
        let att = format!("{from}/MultiHeadDotProductAttention_1");
        for name in ["query", "key", "value", "out"] {
            pairs.push((
                format!("{dst}.attn.{name}.weight"),
                src.attention_kernel(&format!("{att}/{name}/kernel"), c)?,
            ));
            pairs.push((
                format!("{dst}.attn.{name}.bias"),
                src.vector(&format!("{att}/{name}/bias"))?,
            ));
        }
        for (dense, fc) in [("Dense_0", "fc1"), ("Dense_1", "fc2")] {
            pairs.push((
                format!("{dst}.ffn.{fc}.weight"),
                src.dense_kernel(&format!("{from}/MlpBlock_3/{dense}/kernel"))?,
            ));
            pairs.push((
                format!("{dst}.ffn.{fc}.bias"),
                src.vector(&format!("{from}/MlpBlock_3/{dense}/bias"))?,
            ));
        }
    }
    pairs.push((
        "transformer.encoder.encoder_norm.weight".into(),
        src.vector("Transformer/encoder_norm/scale")?,
    ));
    pairs.push((
        "transformer.encoder.encoder_norm.bias".into(),
        src.vector("Transformer/encoder_norm/bias")?,
    ));

    let mut items = Vec::with_capacity(pairs.len());
    for (name, value) in &pairs {
        let var = vars.get(name).ok_or_else(|| {
            Error::Input(format!("model has no variable `{name}`; import_vit_npz needs a full-width model built under vs.root()"))
        })?;
        items.push((name.as_str(), var, value));
    }
    assign_all(
        path,
        &items,
        " (the file is R50+ViT-B/16; the model's [model] table must match its widths)",
    )?;
    report.loaded = pairs.iter().map(|(name, _)| name.clone()).collect();
    let mut ignored: Vec<String> = src
        .file
        .keys()
        .filter(|k| !src.used.contains(*k))
        .map(|k| format!("{k} (not used by TransUNet)"))
        .collect();
    ignored.sort();
    report.ignored = ignored;
    let loaded: BTreeSet<&String> = report.loaded.iter().collect();
    let mut rest: Vec<String> = vars
        .keys()
        .filter(|k| !loaded.contains(k))
        .cloned()
        .collect();
    rest.sort();
    report.not_in_file = rest;
    Ok(report)
}
