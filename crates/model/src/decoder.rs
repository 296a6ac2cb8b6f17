//! Cascaded upsampler (`DecoderCup`) and segmentation head of TransUNet.

use tch::{Kind, Tensor, nn};

use crate::config::ModelConfig;
use crate::layers::{Conv2d, Conv2dReLU};

/// Bilinear x2 upsampling with `align_corners = true` (`nn.UpsamplingBilinear2d`).
pub(crate) fn upsample2(xs: &Tensor) -> Tensor {
    let s = xs.size();
    xs.upsample_bilinear2d([s[2] * 2, s[3] * 2], true, None, None)
}

/// One decoder block: upsample x2, concat the skip, two conv-BN-ReLU.
#[derive(Debug)]
struct DecoderBlock {
    conv1: Conv2dReLU,
    conv2: Conv2dReLU,
}

/// `conv_more` then four [`DecoderBlock`]s (`decoder.*` in the official state_dict).
#[derive(Debug)]
pub(crate) struct DecoderCup {
    conv_more: Conv2dReLU,
    blocks: Vec<DecoderBlock>,
    grid: i64,
}

impl DecoderCup {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let skips = cfg.skip_channels();
        let mut cin = cfg.decoder_head_channels;
        let bp = p / "blocks";
        let blocks = cfg
            .decoder_channels
            .iter()
            .zip(skips)
            .enumerate()
            .map(|(i, (&cout, skip))| {
                let b = &bp / i;
                let blk = DecoderBlock {
                    conv1: Conv2dReLU::new(&(&b / "conv1"), cin + skip, cout, 3, 1),
                    conv2: Conv2dReLU::new(&(&b / "conv2"), cout, cout, 3, 1),
                };
                cin = cout;
                blk
            })
            .collect();
        DecoderCup {
            conv_more: Conv2dReLU::new(
                &(p / "conv_more"),
                cfg.hidden,
                cfg.decoder_head_channels,
                3,
                1,
            ),
            blocks,
            grid: cfg.grid_size() as i64,
        }
    }

    /// Folds every BatchNorm into its convolution for inference in `kind`.
    pub fn prepare(&mut self, kind: Kind) {
        self.conv_more.prepare(kind);
        for blk in &mut self.blocks {
            blk.conv1.prepare(kind);
            blk.conv2.prepare(kind);
        }
    }

    /// # Shapes
    /// `hidden [B, N, C]`, skips deepest first -> `[B, decoder_channels[3], S, S]`
    pub fn forward_t(&self, hidden: &Tensor, skips: &[Tensor], train: bool) -> Tensor {
        // Batch as -1: a traced module takes any batch.
        let (_, _, c) = hidden.size3().expect("3-d hidden states");
        let x = hidden
            .permute([0, 2, 1])
            .contiguous()
            .view([-1, c, self.grid, self.grid]);
        let mut x = self.conv_more.forward_t(&x, train);
        for (i, blk) in self.blocks.iter().enumerate() {
            x = upsample2(&x);
            if let Some(skip) = skips.get(i).filter(|s| s.size()[1] > 0) {
                x = Tensor::cat(&[&x, skip], 1);
            }
            x = blk.conv2.forward_t(&blk.conv1.forward_t(&x, train), train);
        }
        x
    }
}

/// `segmentation_head.0`: 3x3 conv to class logits.
#[derive(Debug)]
pub(crate) struct SegmentationHead {
    conv: Conv2d,
}

impl SegmentationHead {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        SegmentationHead {
            conv: Conv2d::new(
                &(p / "0"),
                cfg.decoder_channels[3],
                cfg.num_classes,
                3,
                1,
                1,
                true,
            ),
        }
    }

    /// # Shapes
    /// `[B, C, S, S] -> [B, num_classes, S, S]`
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.conv.forward(xs)
    }

    /// The head's weight, whose kind and device are the model's.
    pub fn weight(&self) -> &Tensor {
        &self.conv.weight
    }
}
