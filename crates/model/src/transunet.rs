//! TransUNet (R50-ViT-B/16 hybrid encoder, cascaded upsampler) with gated transformer
//! dimensions and the optional pixel classification module.
//!
//! Structure and variable names follow the official PyTorch implementation
//! (Chen et al. 2021, github.com/Beckschen/TransUNet, `vit_seg_modeling.py`), so an
//! official `state_dict` maps one to one: `transformer.embeddings.hybrid_model.*`,
//! `transformer.embeddings.patch_embeddings.*`, `transformer.embeddings.position_embeddings`,
//! `transformer.encoder.layer.{l}.{attention_norm,attn.{query,key,value,out},ffn_norm,ffn.{fc1,fc2}}.*`,
//! `transformer.encoder.encoder_norm.*`, `decoder.conv_more.{0,1}.*`,
//! `decoder.blocks.{i}.conv{1,2}.{0,1}.*`, `segmentation_head.0.*`. The pixel module adds
//! `pixel_head.*`, soft gates live under `gates.*` (see [`SoftGates`]).

use tch::{Device, Kind, Tensor, nn};

use crate::arch::SubnetArch;
use crate::config::{ModelConfig, PixelHead};
use crate::decoder::{DecoderCup, SegmentationHead};
use crate::error::{Error, Result};
use crate::gates::{GateMode, HardMasks, SoftGates, layer_gates};
use crate::infer::{InferenceOptions, Precision};
use crate::pixel::DirectionFieldHead;
use crate::vit::Transformer;

/// What a forward pass returns.
#[derive(Debug)]
pub struct ModelOutput {
    /// Class logits, `[B, num_classes, S, S]`.
    pub logits: Tensor,
    /// Predicted direction field, `[B, 2, S, S]` (row, column), when the pixel
    /// classification module is on.
    pub direction_field: Option<Tensor>,
}

/// The TransUNet model. Build with [`TransUnet::new`] (full widths) or
/// [`TransUnet::new_reduced`] (widths of a [`SubnetArch`]), run with
/// [`TransUnet::forward_t`].
#[derive(Debug)]
pub struct TransUnet {
    cfg: ModelConfig,
    arch: Option<SubnetArch>,
    transformer: Transformer,
    decoder: DecoderCup,
    segmentation_head: SegmentationHead,
    pixel_head: Option<DirectionFieldHead>,
    soft_gates: Option<SoftGates>,
    hard_masks: Option<HardMasks>,
    mode: GateMode,
    /// Device and kind the model was prepared for inference on.
    prepared: Option<(Device, Kind)>,
}

impl TransUnet {
    /// Builds the full-width model with its variables under `p` (pass `vs.root()` for the
    /// official names). Gates are off.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Result<Self> {
        Self::build(p, cfg, None)
    }

    /// Builds a physically reduced model: per block, q/k/v/out sized by the kept dims of
    /// each head, the MLP by the kept units, and only the kept tokens processed. Variable
    /// names are the official ones (with smaller shapes). Gates cannot be attached.
    pub fn new_reduced(p: &nn::Path, cfg: &ModelConfig, arch: &SubnetArch) -> Result<Self> {
        arch.check(cfg)?;
        Self::build(p, cfg, Some(arch.clone()))
    }

    fn build(p: &nn::Path, cfg: &ModelConfig, arch: Option<SubnetArch>) -> Result<Self> {
        cfg.validate()?;
        Ok(TransUnet {
            transformer: Transformer::new(
                &(p / "transformer"),
                cfg,
                arch.as_ref().map(|a| a.layers.as_slice()),
            ),
            decoder: DecoderCup::new(&(p / "decoder"), cfg),
            segmentation_head: SegmentationHead::new(&(p / "segmentation_head"), cfg),
            pixel_head: (cfg.pixel_head == PixelHead::DirectionField)
                .then(|| DirectionFieldHead::new(&(p / "pixel_head"), cfg)),
            cfg: cfg.clone(),
            arch,
            soft_gates: None,
            hard_masks: None,
            mode: GateMode::Off,
            prepared: None,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The reduced architecture this model was built with (`None`: full widths).
    pub fn arch(&self) -> Option<&SubnetArch> {
        self.arch.as_ref()
    }

    /// Device of the model's variables (follows `VarStore::set_device`).
    pub fn device(&self) -> Device {
        self.segmentation_head.weight().device()
    }

    /// Floating-point kind of the model's variables (follows `VarStore::double()` etc.).
    pub fn kind(&self) -> Kind {
        self.segmentation_head.weight().kind()
    }

    /// Creates the learnable gates under `p` (conventionally `vs.root() / "gates"`) at
    /// their initial values and returns them; the gate mode is unchanged. Fails on a
    /// reduced model or if gates are already attached.
    pub fn attach_soft_gates(&mut self, p: &nn::Path) -> Result<&SoftGates> {
        if self.arch.is_some() {
            return Err(Error::Gates(
                "gates act on the full-width model; this model is reduced".into(),
            ));
        }
        if self.soft_gates.is_some() {
            return Err(Error::Gates("soft gates are already attached".into()));
        }
        Ok(self.soft_gates.insert(SoftGates::new(p, &self.cfg)))
    }

    /// The attached soft gates, if any.
    pub fn soft_gates(&self) -> Option<&SoftGates> {
        self.soft_gates.as_ref()
    }

    /// The current gate mode.
    pub fn gate_mode(&self) -> &GateMode {
        &self.mode
    }

    /// Switches the gate mode. `Soft` needs attached soft gates; `Hard` checks its
    /// architecture against the config (and needs soft gates with `scale_by_soft`).
    /// Gates other than `Off` need the full-width model.
    pub fn set_gate_mode(&mut self, mode: GateMode) -> Result<()> {
        if self.arch.is_some() && mode != GateMode::Off {
            return Err(Error::Gates(
                "gates act on the full-width model; this model is reduced".into(),
            ));
        }
        let needs_soft = matches!(
            mode,
            GateMode::Soft
                | GateMode::Hard {
                    scale_by_soft: true,
                    ..
                }
        );
        if needs_soft && self.soft_gates.is_none() {
            return Err(Error::Gates(format!(
                "{mode:?} needs soft gates; call attach_soft_gates first"
            )));
        }
        self.hard_masks = match &mode {
            GateMode::Hard { arch, .. } => Some(HardMasks::new(arch, &self.cfg, self.device())?),
            _ => None,
        };
        self.mode = mode;
        Ok(())
    }

    /// Prepares the model for inference only, once its weights are loaded and it is on its
    /// device: the ResNet kernels are standardised once, the variables of `vs` (which
    /// must hold this model's) are cast to `opts.precision`, and with `opts.fast` q/k/v
    /// run as one fused GEMM, attention as `scaled_dot_product_attention`, on CPU the
    /// linears through oneDNN and 1x1 convolutions of at most 8 input or output channels
    /// as matrix products, and the decoder's and pixel module's BatchNorms are folded
    /// into their convolutions. Without `fast`, at fp32, the outputs are bit-identical
    /// to the unprepared model's.
    ///
    /// Afterwards the model refuses to train and to run after its device or kind
    /// changed. Lower precision needs the gates off (a sliced or full model, not a masked
    /// one). Half precision (`fp16`) runs on CUDA only.
    pub fn prepare_inference(
        &mut self,
        vs: &mut nn::VarStore,
        opts: InferenceOptions,
    ) -> Result<()> {
        if self.prepared.is_some() {
            return Err(Error::Input(
                "the model is already prepared for inference".into(),
            ));
        }
        let kind = opts.precision.kind();
        if opts.precision != Precision::Fp32 && self.mode != GateMode::Off {
            return Err(Error::Input(format!(
                "precision {} needs a model without gates; this one runs with {} gates",
                opts.precision,
                if self.mode == GateMode::Soft {
                    "soft"
                } else {
                    "hard"
                }
            )));
        }
        if opts.precision == Precision::Fp16 && self.device() == Device::Cpu {
            return Err(Error::Input(
                "precision fp16 runs on CUDA only; use bf16 on the CPU".into(),
            ));
        }
        // Checked before anything changes, so that a refusal leaves the model as it was.
        let head = self.segmentation_head.weight().data_ptr();
        if !vs.variables().values().any(|v| v.data_ptr() == head) {
            return Err(Error::Input(
                "the variable store does not hold this model's weights".into(),
            ));
        }
        self.transformer.prepare(kind, opts.fast);
        if opts.fast {
            self.decoder.prepare(kind);
            if let Some(head) = &mut self.pixel_head {
                head.prepare(kind);
            }
        }
        opts.precision.cast(vs);
        self.prepared = Some((self.device(), kind));
        Ok(())
    }

    /// Whether [`TransUnet::prepare_inference`] was called.
    pub fn is_prepared(&self) -> bool {
        self.prepared.is_some()
    }

    /// Runs the model. A 1-channel input is repeated to 3 channels; the input is moved to
    /// the model's device and kind if needed.
    ///
    /// # Shapes
    /// `[B, 1 | 3, S, S]` with `S = img_size` -> logits `[B, num_classes, S, S]`,
    /// direction field `[B, 2, S, S]`
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<ModelOutput> {
        if let Some((device, kind)) = self.prepared {
            if train {
                return Err(Error::Input(
                    "a model prepared for inference cannot train".into(),
                ));
            }
            if (device, kind) != (self.device(), self.kind()) {
                return Err(Error::Input(format!(
                    "the model was prepared for inference on {device:?} in {kind:?} and has \
                     since moved to {:?} in {:?}; prepare it again from its weights",
                    self.device(),
                    self.kind()
                )));
            }
        }
        let size = xs.size();
        let s = self.cfg.img_size as i64;
        if size.len() != 4 || !(size[1] == 1 || size[1] == 3) || size[2] != s || size[3] != s {
            return Err(Error::Shape {
                name: "input".into(),
                expected: vec![-1, 3, s, s],
                found: size,
            });
        }
        let xs = xs.to_device(self.device()).to_kind(self.kind());
        let xs = if size[1] == 1 {
            xs.repeat([1, 3, 1, 1])
        } else {
            xs
        };
        let (hidden, skips) = self.transformer.forward_t(
            &xs,
            |l| {
                layer_gates(
                    &self.mode,
                    self.soft_gates.as_ref(),
                    self.hard_masks.as_ref(),
                    l,
                    self.device(),
                )
            },
            train,
        )?;
        let feat = self.decoder.forward_t(&hidden, &skips, train);
        Ok(match &self.pixel_head {
            None => ModelOutput {
                logits: self.segmentation_head.forward(&feat),
                direction_field: None,
            },
            Some(head) => {
                let (fused, field) = head.forward_t(&feat, train);
                ModelOutput {
                    logits: self.segmentation_head.forward(&fused),
                    direction_field: Some(field),
                }
            }
        })
    }
}
