//! The compressed model on disk: a directory holding
//! - `model.toml`: the [`Manifest`] — format tag, the model configuration (`[model]`, as
//!   in `configs/*.toml`), a `[summary]` of parameters and MACs, and the kept architecture
//!   (`[arch.full]` plus one `[[arch.layers]]` table per block: kept dims per head, kept
//!   MLP units, kept tokens);
//! - `weights.safetensors`: the reduced weights under the official variable names.
//!
//! Both files are written atomically (temporary file + rename), the weights first, so a
//! directory whose manifest exists always has complete weights. Loading needs neither the
//! original model nor the search spec.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use slimseg_model::{ModelConfig, SubnetArch, TransUnet, count};
use tch::{Device, nn};

use crate::error::{Error, Result};
use crate::slice::CompressedModel;

/// File name of the manifest inside a compressed-model directory.
pub const MANIFEST_FILE: &str = "model.toml";
/// File name of the weights inside a compressed-model directory.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// Format tag written to and required in the manifest.
pub const FORMAT: &str = "slimseg-compressed/1";

/// Sizes of the compressed model next to the full one (DESIGN.md counting conventions;
/// MACs per image). Informational: loading does not depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Trainable parameters of the compressed model.
    pub params: u64,
    /// MACs per image of the compressed model.
    pub macs: u64,
    /// Trainable parameters of the full model of the same config.
    pub full_params: u64,
    /// MACs per image of the full model.
    pub full_macs: u64,
}

impl Summary {
    /// Counts `arch` and the full model of `cfg` analytically.
    pub fn new(cfg: &ModelConfig, arch: &SubnetArch) -> Result<Self> {
        let reduced = count::count(cfg, Some(arch))?;
        let full = count::count(cfg, None)?;
        Ok(Summary {
            params: reduced.params(),
            macs: reduced.macs(),
            full_params: full.params(),
            full_macs: full.macs(),
        })
    }

    /// Fraction of parameters removed, in `[0, 1]`.
    pub fn param_reduction(&self) -> f64 {
        1.0 - self.params as f64 / self.full_params.max(1) as f64
    }

    /// Fraction of MACs removed, in `[0, 1]`.
    pub fn mac_reduction(&self) -> f64 {
        1.0 - self.macs as f64 / self.full_macs.max(1) as f64
    }
}

/// Contents of `model.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must equal [`FORMAT`].
    pub format: String,
    /// The model configuration (full widths; the kept widths come from `arch`).
    pub model: ModelConfig,
    /// Parameter and MAC counts.
    pub summary: Summary,
    /// What every transformer block keeps.
    pub arch: SubnetArch,
}

impl Manifest {
    /// The manifest of a compressed model of `cfg` with `arch`.
    pub fn new(cfg: &ModelConfig, arch: &SubnetArch) -> Result<Self> {
        Ok(Manifest {
            format: FORMAT.to_string(),
            model: cfg.clone(),
            summary: Summary::new(cfg, arch)?,
            arch: arch.clone(),
        })
    }

    /// Serialises as TOML.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Manifest {
            path: PathBuf::new(),
            reason: e.to_string(),
        })
    }

    /// Parses and checks a manifest: format tag, valid config, architecture that fits it.
    /// `path` only names the source in errors.
    pub fn from_toml_str(s: &str, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        let m: Manifest = toml::from_str(s).map_err(|e| bad(e.to_string()))?;
        if m.format != FORMAT {
            return Err(bad(format!(
                "format `{}` is not supported, expected `{FORMAT}`",
                m.format
            )));
        }
        m.model
            .validate()
            .map_err(|e| bad(format!("[model]: {e}")))?;
        m.arch
            .check(&m.model)
            .map_err(|e| bad(format!("[arch]: {e}")))?;
        Ok(m)
    }

    /// Reads and checks `dir/model.toml`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(MANIFEST_FILE);
        let s = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_toml_str(&s, &path)
    }
}

impl CompressedModel {
    /// Writes the compressed model to directory `dir` (created if missing): weights first,
    /// then the manifest, each atomically.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<Manifest> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let manifest = Manifest::new(self.config(), self.arch())?;
        slimseg_model::weights::save_safetensors(&self.vs, dir.join(WEIGHTS_FILE))?;
        slimseg_model::error::write_bytes_atomic(
            &dir.join(MANIFEST_FILE),
            manifest.to_toml_string()?.as_bytes(),
        )?;
        Ok(manifest)
    }

    /// Loads a compressed model from directory `dir` onto `device`: builds the reduced
    /// network from the manifest and loads the weights strictly (every variable present,
    /// nothing extra, same shapes; a wrong shape names the tensor and both shapes). The
    /// variables are trainable, ready for fine-tuning.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let manifest = Manifest::load(dir)?;
        let vs = nn::VarStore::new(device);
        let model = TransUnet::new_reduced(&vs.root(), &manifest.model, &manifest.arch)?;
        slimseg_model::weights::load_safetensors(&vs, dir.join(WEIGHTS_FILE))?;
        Ok(CompressedModel { vs, model })
    }
}
