//! Subnet architecture: what each transformer block keeps of the three searched dimensions.
//!
//! A [`SubnetArch`] lists, per block, the kept dimension indices of every attention head,
//! the kept MLP hidden units and the kept tokens, all as indices into the full model. The
//! same value serves two purposes:
//! - hard gating of the full model ([`crate::GateMode::Hard`]): binary masks built from
//!   the indices;
//! - building a physically smaller model ([`crate::TransUnet::new_reduced`]): widths are
//!   the index counts, tokens are gathered by index.
//!
//! It is serde data meant to be written as TOML (one `[[layers]]` table per block), so the
//! search stage can emit it and the compress stage and later runs can read it. Index lists
//! are written as compact range strings (`"0-63"`, `"0-7,9,12-15"`, `""` for none; see
//! [`format_indices`]); plain integer arrays are accepted when reading.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The full (unpruned) sizes a [`SubnetArch`] refers to; checked against the model config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullDims {
    /// Attention heads per block.
    pub heads: usize,
    /// Dimensions per head (`hidden / heads`); also fixes the softmax scale.
    pub head_dim: usize,
    /// MLP hidden units per block.
    pub mlp_dim: usize,
    /// Tokens of the full grid.
    pub num_tokens: usize,
}

/// What one transformer block keeps. All index lists are strictly ascending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerArch {
    /// For each head `h` (all `heads` of them, in order), the kept dimension indices
    /// within that head, in `0..head_dim`. An empty list removes the head.
    #[serde(with = "index_ranges::nested")]
    pub head_dims: Vec<Vec<usize>>,
    /// Kept MLP hidden units, in `0..mlp_dim`. Empty removes the MLP (its output bias stays).
    #[serde(with = "index_ranges")]
    pub mlp_units: Vec<usize>,
    /// Kept tokens, in `0..num_tokens` (row-major grid order). A token not kept passes
    /// through the block unchanged and is not attended to.
    #[serde(with = "index_ranges")]
    pub tokens: Vec<usize>,
}

impl LayerArch {
    /// A block that keeps everything.
    pub fn full(dims: &FullDims) -> Self {
        LayerArch {
            head_dims: vec![(0..dims.head_dim).collect(); dims.heads],
            mlp_units: (0..dims.mlp_dim).collect(),
            tokens: (0..dims.num_tokens).collect(),
        }
    }

    /// Kept dimensions per head (the reduced widths).
    pub fn head_widths(&self) -> Vec<usize> {
        self.head_dims.iter().map(Vec::len).collect()
    }

    /// Total kept attention dimensions (rows of the reduced q, k and v projections).
    pub fn attn_width(&self) -> usize {
        self.head_dims.iter().map(Vec::len).sum()
    }

    /// Flat indices `h * head_dim + d` of the kept attention dimensions, ascending.
    pub fn attn_flat_indices(&self, head_dim: usize) -> Vec<usize> {
        self.head_dims
            .iter()
            .enumerate()
            .flat_map(|(h, ds)| ds.iter().map(move |d| h * head_dim + d))
            .collect()
    }
}

/// Per-block kept structure of a subnet of a TransUNet (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetArch {
    /// Sizes of the full model the indices refer to.
    pub full: FullDims,
    /// One entry per transformer block, in order.
    pub layers: Vec<LayerArch>,
}

fn check_indices(what: &str, layer: usize, idx: &[usize], bound: usize) -> Result<()> {
    for w in idx.windows(2) {
        if w[0] >= w[1] {
            return Err(Error::Arch(format!(
                "layer {layer}: {what} indices must be strictly ascending, found {} then {}",
                w[0], w[1]
            )));
        }
    }
    if let Some(&last) = idx.last() {
        if last >= bound {
            return Err(Error::Arch(format!(
                "layer {layer}: {what} index {last} out of range 0..{bound}"
            )));
        }
    }
    Ok(())
}

impl SubnetArch {
    /// Full sizes of a model configuration.
    pub fn full_dims(cfg: &ModelConfig) -> FullDims {
        FullDims {
            heads: cfg.heads,
            head_dim: cfg.head_dim(),
            mlp_dim: cfg.mlp_dim,
            num_tokens: cfg.num_tokens(),
        }
    }

    /// The architecture that keeps everything (equals the unpruned model).
    pub fn full(cfg: &ModelConfig) -> Self {
        let full = Self::full_dims(cfg);
        SubnetArch {
            full,
            layers: vec![LayerArch::full(&full); cfg.layers],
        }
    }

    /// Checks the architecture against a model configuration: same full sizes, one entry
    /// per block, one index list per head, indices ascending and in range.
    pub fn check(&self, cfg: &ModelConfig) -> Result<()> {
        let want = Self::full_dims(cfg);
        if self.full != want {
            return Err(Error::Arch(format!(
                "full sizes {:?} do not match the model config {:?}",
                self.full, want
            )));
        }
        if self.layers.len() != cfg.layers {
            return Err(Error::Arch(format!(
                "expected {} layers, found {}",
                cfg.layers,
                self.layers.len()
            )));
        }
        for (l, la) in self.layers.iter().enumerate() {
            if la.head_dims.len() != want.heads {
                return Err(Error::Arch(format!(
                    "layer {l}: expected {} head index lists, found {}",
                    want.heads,
                    la.head_dims.len()
                )));
            }
            for (h, ds) in la.head_dims.iter().enumerate() {
                check_indices(&format!("head {h} dim"), l, ds, want.head_dim)?;
            }
            check_indices("MLP unit", l, &la.mlp_units, want.mlp_dim)?;
            check_indices("token", l, &la.tokens, want.num_tokens)?;
        }
        Ok(())
    }

    /// Whether every block keeps everything.
    pub fn is_full(&self) -> bool {
        self.layers
            .iter()
            .all(|l| *l == LayerArch::full(&self.full))
    }

    /// Fraction of attention dims, MLP units and tokens kept over all blocks, in that order.
    pub fn kept_fractions(&self) -> (f64, f64, f64) {
        let n = self.layers.len().max(1) as f64;
        let a: usize = self.layers.iter().map(LayerArch::attn_width).sum();
        let m: usize = self.layers.iter().map(|l| l.mlp_units.len()).sum();
        let t: usize = self.layers.iter().map(|l| l.tokens.len()).sum();
        let f = &self.full;
        (
            a as f64 / (n * (f.heads * f.head_dim).max(1) as f64),
            m as f64 / (n * f.mlp_dim.max(1) as f64),
            t as f64 / (n * f.num_tokens.max(1) as f64),
        )
    }

    /// Serialises as TOML (a `[full]` table and one `[[layers]]` table per block).
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Toml {
            path: Default::default(),
            reason: e.to_string(),
        })
    }

    /// Parses TOML written by [`Self::to_toml_string`] (not checked against a config).
    pub fn from_toml_str(s: &str) -> Result<Self> {
        toml::from_str(s).map_err(|e| Error::Toml {
            path: Default::default(),
            reason: e.to_string(),
        })
    }

    /// Writes the architecture as TOML (atomically).
    pub fn save_toml(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let s = self.to_toml_string()?;
        crate::error::write_bytes_atomic(path, s.as_bytes())
    }

    /// Reads an architecture TOML file (not checked against a config).
    pub fn load_toml(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&s).map_err(|e| Error::Toml {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// Formats ascending indices compactly: runs of three or more as `a-b`, others singly,
/// comma-separated (`[0, 1, 2, 3, 5, 7, 8]` -> `"0-3,5,7,8"`; empty -> `""`).
pub fn format_indices(idx: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && idx[j + 1] == idx[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{}-{}", idx[i], idx[j]));
        } else {
            parts.extend(idx[i..=j].iter().map(usize::to_string));
        }
        i = j + 1;
    }
    parts.join(",")
}

/// Parses what [`format_indices`] writes (`"0-3,5"`; spaces allowed). Order is kept as
/// written; [`SubnetArch::check`] enforces ascending indices.
pub fn parse_indices(s: &str) -> std::result::Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad index `{t}` in `{s}`"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("descending range `{part}` in `{s}`"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

/// Serde adapter: index lists as range strings, integer arrays also accepted on input.
mod index_ranges {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        List(Vec<usize>),
    }

    impl Repr {
        fn into_indices<E: serde::de::Error>(self) -> Result<Vec<usize>, E> {
            match self {
                Repr::Text(t) => super::parse_indices(&t).map_err(E::custom),
                Repr::List(v) => Ok(v),
            }
        }
    }

    pub fn serialize<S: Serializer>(v: &[usize], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_indices(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
        Repr::deserialize(d)?.into_indices()
    }

    pub mod nested {
        use serde::ser::SerializeSeq;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &[Vec<usize>], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for inner in v {
                seq.serialize_element(&super::super::format_indices(inner))?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<usize>>, D::Error> {
            Vec::<super::Repr>::deserialize(d)?
                .into_iter()
                .map(super::Repr::into_indices)
                .collect()
        }
    }
}
