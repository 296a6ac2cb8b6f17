//! Model configuration: the TransUNet R50-ViT-B/16 hybrid and its small `tiny` sibling.
//!
//! The configuration is plain data (serde, TOML) and is separate from construction: a
//! training configuration nests it as its `[model]` table. [`ModelConfig::validate`] checks
//! it once; the builders call it, so code past construction assumes valid values.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which pixel classification module sits between the decoder and the segmentation head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PixelHead {
    /// No module: the segmentation head classifies the last decoder feature (TransUNet).
    #[default]
    None,
    /// Direction-field module (DF-TransUNet / Cheng et al. 2020): predicts a 2-channel
    /// field, warps the features along it, fuses and classifies.
    DirectionField,
}

/// TransUNet configuration. Defaults are the official R50-ViT-B/16 values ([`Self::paper`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Input height and width in pixels (square); a multiple of 16. Default 224.
    pub img_size: usize,
    /// Number of output classes (background included). Default 4 (ACDC).
    pub num_classes: usize,
    /// Bottleneck units per ResNetV2 stage. Default `[3, 4, 9]` (R50 without its last stage).
    pub resnet_layers: [usize; 3],
    /// ResNetV2 root width in channels (64 x width factor). Default 64.
    pub resnet_width: usize,
    /// Groups of the ResNetV2 GroupNorms (the projection norms use one group per
    /// channel, as the official code does). Default 32.
    pub gn_groups: usize,
    /// Transformer width (token dimension). Default 768.
    pub hidden: usize,
    /// Number of transformer blocks. Default 12.
    pub layers: usize,
    /// Attention heads per block. Default 12 (head dim 64).
    pub heads: usize,
    /// MLP hidden units per block. Default 3072.
    pub mlp_dim: usize,
    /// Dropout after the position embeddings and inside the MLP. Default 0.1.
    pub dropout: f64,
    /// Dropout on the attention probabilities and the attention output. Default 0.0.
    pub attention_dropout: f64,
    /// Channels of the decoder's first 3x3 conv (`conv_more`). Default 512.
    pub decoder_head_channels: usize,
    /// Output channels of the four decoder blocks. Default `[256, 128, 64, 16]`.
    pub decoder_channels: [usize; 4],
    /// Number of ResNet skip connections used by the decoder (0 to 3). Default 3.
    pub n_skip: usize,
    /// Pixel classification module. Default `none`.
    pub pixel_head: PixelHead,
    /// Direction vectors with magnitude at most this many pixels do not warp features.
    /// Default 0.5.
    pub df_min_magnitude: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::paper()
    }
}

/// A file holding a model configuration as its `[model]` table (`configs/*.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfigFile {
    /// The model configuration.
    pub model: ModelConfig,
}

impl ModelConfig {
    /// Official TransUNet R50-ViT-B/16 at 224x224 with 4 classes (105,276,356 parameters
    /// without the pixel classification module, which is off here; `configs/paper.toml`
    /// turns it on: DFTransUnet).
    pub fn paper() -> Self {
        ModelConfig {
            img_size: 224,
            num_classes: 4,
            resnet_layers: [3, 4, 9],
            resnet_width: 64,
            gn_groups: 32,
            hidden: 768,
            layers: 12,
            heads: 12,
            mlp_dim: 3072,
            dropout: 0.1,
            attention_dropout: 0.0,
            decoder_head_channels: 512,
            decoder_channels: [256, 128, 64, 16],
            n_skip: 3,
            pixel_head: PixelHead::None,
            df_min_magnitude: 0.5,
        }
    }

    /// Same structure as [`Self::paper`] at a 96x96 input (6x6 token grid), scaled down
    /// for fast training steps at batch 8 on 2 CPU cores with the paper model's balance
    /// kept: the transformer blocks carry 59.6% of the MACs (paper: 59.5%). 2,058,060
    /// parameters. Like [`Self::paper`] it is the TransUNet network, without the pixel
    /// module; `configs/tiny.toml` turns the module on (DFTransUnet).
    pub fn tiny() -> Self {
        ModelConfig {
            img_size: 96,
            num_classes: 4,
            resnet_layers: [2, 2, 3],
            resnet_width: 8,
            gn_groups: 4,
            hidden: 192,
            layers: 4,
            heads: 6,
            mlp_dim: 768,
            dropout: 0.1,
            attention_dropout: 0.0,
            decoder_head_channels: 64,
            decoder_channels: [32, 16, 8, 8],
            n_skip: 3,
            pixel_head: PixelHead::None,
            df_min_magnitude: 0.5,
        }
    }

    /// Returns a named preset (`paper` or `tiny`).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "paper" => Ok(Self::paper()),
            "tiny" => Ok(Self::tiny()),
            other => Err(Error::config(
                "preset",
                format!("unknown preset `{other}`, expected `paper` or `tiny`"),
            )),
        }
    }

    /// Returns this configuration with another pixel classification module.
    pub fn with_pixel_head(mut self, pixel_head: PixelHead) -> Self {
        self.pixel_head = pixel_head;
        self
    }

    /// Checks every field and the relations between them.
    pub fn validate(&self) -> Result<()> {
        if self.img_size == 0 || self.img_size % 16 != 0 {
            return Err(Error::config(
                "img_size",
                format!("must be a positive multiple of 16, found {}", self.img_size),
            ));
        }
        if self.img_size < 32 {
            return Err(Error::config(
                "img_size",
                format!("must be at least 32, found {}", self.img_size),
            ));
        }
        if self.num_classes < 2 {
            return Err(Error::config(
                "num_classes",
                format!("must be at least 2, found {}", self.num_classes),
            ));
        }
        if self.resnet_layers.contains(&0) {
            return Err(Error::config(
                "resnet_layers",
                format!("every stage needs a unit, found {:?}", self.resnet_layers),
            ));
        }
        if self.gn_groups == 0 || self.resnet_width == 0 || self.resnet_width % self.gn_groups != 0
        {
            return Err(Error::config(
                "resnet_width",
                format!(
                    "must be a positive multiple of gn_groups ({}), found {}",
                    self.gn_groups, self.resnet_width
                ),
            ));
        }
        for (name, v) in [
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("mlp_dim", self.mlp_dim),
        ] {
            if v == 0 {
                return Err(Error::config(name, "must be positive, found 0"));
            }
        }
        if self.hidden % self.heads != 0 {
            return Err(Error::config(
                "heads",
                format!("must divide hidden ({}), found {}", self.hidden, self.heads),
            ));
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::config(name, format!("must be in [0, 1), found {p}")));
            }
        }
        if self.decoder_head_channels == 0 || self.decoder_channels.contains(&0) {
            return Err(Error::config(
                "decoder_channels",
                "channel counts must be positive",
            ));
        }
        if self.n_skip > 3 {
            return Err(Error::config(
                "n_skip",
                format!("must be at most 3, found {}", self.n_skip),
            ));
        }
        if !(self.df_min_magnitude >= 0.0 && self.df_min_magnitude.is_finite()) {
            return Err(Error::config(
                "df_min_magnitude",
                format!("must be finite and >= 0, found {}", self.df_min_magnitude),
            ));
        }
        Ok(())
    }

    /// Attention head dimension (`hidden / heads`).
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Side of the token grid (`img_size / 16`).
    pub fn grid_size(&self) -> usize {
        self.img_size / 16
    }

    /// Number of tokens (`grid_size^2`).
    pub fn num_tokens(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Channels of the ResNet feature fed to the patch embedding (`16 x resnet_width`).
    pub fn resnet_out_channels(&self) -> usize {
        self.resnet_width * 16
    }

    /// Skip channels of the four decoder blocks: `[8w, 4w, w, 0]` with `w = resnet_width`,
    /// zeroed beyond `n_skip` (the official `skip_channels` rule).
    pub fn skip_channels(&self) -> [usize; 4] {
        let w = self.resnet_width;
        let mut s = [w * 8, w * 4, w, 0];
        for c in s.iter_mut().skip(self.n_skip) {
            *c = 0;
        }
        s
    }

    /// Parses a TOML document whose `[model]` table is the configuration, and validates it.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let file: ModelConfigFile = toml::from_str(s).map_err(|e| Error::Toml {
            path: Default::default(),
            reason: e.to_string(),
        })?;
        file.model.validate()?;
        Ok(file.model)
    }

    /// Reads a TOML file whose `[model]` table is the configuration, and validates it.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file: ModelConfigFile = toml::from_str(&s).map_err(|e| Error::Toml {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        file.model.validate().map_err(|e| Error::Toml {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(file.model)
    }

    /// Serialises the configuration as a TOML document with a `[model]` table.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(&ModelConfigFile {
            model: self.clone(),
        })
        .map_err(|e| Error::Toml {
            path: Default::default(),
            reason: e.to_string(),
        })
    }

    /// Writes the configuration as a TOML file with a `[model]` table (atomically).
    pub fn save_toml(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let s = self.to_toml_string()?;
        crate::error::write_bytes_atomic(path, s.as_bytes())
    }
}
