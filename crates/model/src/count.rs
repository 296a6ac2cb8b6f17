//! Analytic parameter and MAC counts, per layer and total, for full and reduced models.
//!
//! Convention (DESIGN.md, "Counting conventions"): one MAC is one multiply-accumulate of a
//! convolution, a linear layer or a matmul; the attention matmuls (`Q K^T` and
//! `P V`) are included; norms, activations, softmax, pooling, upsampling, warping and
//! biases cost no MACs. FLOPs = 2 x MACs. Parameters are the trainable tensors of the
//! deployed model (BatchNorm running statistics and gates excluded). MACs are per image
//! (batch 1).

use serde::{Deserialize, Serialize};

use crate::arch::SubnetArch;
use crate::config::{ModelConfig, PixelHead};
use crate::error::Result;

/// Parameters and MACs of one named part of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerCount {
    /// Variable-name prefix of the part (`transformer.encoder.layer.3`, `decoder.blocks.0`).
    pub name: String,
    /// Trainable parameters.
    pub params: u64,
    /// Multiply-accumulates per image.
    pub macs: u64,
}

/// Counts of a whole model, part by part in forward order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCount {
    /// The parts, in forward order; their sums are the totals.
    pub layers: Vec<LayerCount>,
}

impl ModelCount {
    /// Total trainable parameters.
    pub fn params(&self) -> u64 {
        self.layers.iter().map(|l| l.params).sum()
    }

    /// Total MACs per image.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }

    /// Total FLOPs per image (2 x MACs).
    pub fn flops(&self) -> u64 {
        2 * self.macs()
    }

    /// Parameters and MACs of the parts whose name starts with `prefix`.
    pub fn sum_prefix(&self, prefix: &str) -> (u64, u64) {
        self.layers
            .iter()
            .filter(|l| l.name.starts_with(prefix))
            .fold((0, 0), |(p, m), l| (p + l.params, m + l.macs))
    }
}

/// Parameters and MACs of one transformer block with the given kept widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCount {
    /// Trainable parameters (two LayerNorms, q/k/v/out, fc1/fc2).
    pub params: u64,
    /// MACs of the projections and the MLP.
    pub linear_macs: u64,
    /// MACs of `Q K^T` and `P V`.
    pub attention_matmul_macs: u64,
}

impl BlockCount {
    /// All MACs of the block.
    pub fn macs(&self) -> u64 {
        self.linear_macs + self.attention_matmul_macs
    }
}

/// Counts one transformer block of width `hidden` with `head_widths[h]` kept dims in
/// head `h`, `mlp_units` kept MLP units and `tokens` tokens processed.
pub fn block_count(
    hidden: usize,
    head_widths: &[usize],
    mlp_units: usize,
    tokens: usize,
) -> BlockCount {
    let (c, a, u, n) = (
        hidden as u64,
        head_widths.iter().sum::<usize>() as u64,
        mlp_units as u64,
        tokens as u64,
    );
    let params = 4 * c + 3 * (c * a + a) + (a * c + c) + (c * u + u) + (u * c + c);
    BlockCount {
        params,
        linear_macs: n * (4 * c * a + 2 * c * u),
        attention_matmul_macs: head_widths.iter().map(|&w| 2 * n * n * w as u64).sum(),
    }
}

fn conv_out(side: u64, k: u64, stride: u64, pad: u64) -> u64 {
    (side + 2 * pad - k) / stride + 1
}

/// Counts the model of `cfg`, at full width (`arch = None`) or with the kept widths and
/// tokens of `arch` (which is checked against `cfg`).
pub fn count(cfg: &ModelConfig, arch: Option<&SubnetArch>) -> Result<ModelCount> {
    cfg.validate()?;
    if let Some(a) = arch {
        a.check(cfg)?;
    }
    let mut layers = Vec::new();
    let mut push =
        |name: String, params: u64, macs: u64| layers.push(LayerCount { name, params, macs });
    let s = cfg.img_size as u64;
    let w = cfg.resnet_width as u64;
    let hybrid = "transformer.embeddings.hybrid_model";

    // Root: StdConv 7x7/2 (no bias) + GroupNorm, then max-pool 3x3/2.
    let root_side = conv_out(s, 7, 2, 3);
    push(
        format!("{hybrid}.root"),
        3 * w * 49 + 2 * w,
        root_side * root_side * 3 * w * 49,
    );
    let mut side = conv_out(root_side, 3, 2, 0);

    let plan = [
        (w, w * 4, w, 1u64),
        (w * 4, w * 8, w * 2, 2),
        (w * 8, w * 16, w * 4, 2),
    ];
    for (stage, (&(cin0, cout, cmid, stride0), units)) in
        plan.iter().zip(cfg.resnet_layers).enumerate()
    {
        let (mut params, mut macs) = (0u64, 0u64);
        for u in 0..units {
            let (cin, stride) = if u == 0 { (cin0, stride0) } else { (cout, 1) };
            let out = conv_out(side, 3, stride, 1);
            params += cin * cmid + 9 * cmid * cmid + cmid * cout + 2 * (2 * cmid) + 2 * cout;
            macs += side * side * cin * cmid + out * out * (9 * cmid * cmid + cmid * cout);
            if stride != 1 || cin != cout {
                params += cin * cout + 2 * cout;
                macs += out * out * cin * cout;
            }
            side = out;
        }
        push(format!("{hybrid}.body.block{}", stage + 1), params, macs);
    }

    let c = cfg.hidden as u64;
    let n = cfg.num_tokens() as u64;
    let g = cfg.grid_size() as u64;
    let r = cfg.resnet_out_channels() as u64;
    push(
        "transformer.embeddings.patch_embeddings".into(),
        r * c + c,
        g * g * r * c,
    );
    push(
        "transformer.embeddings.position_embeddings".into(),
        n * c,
        0,
    );

    for l in 0..cfg.layers {
        let b = match arch {
            None => block_count(
                cfg.hidden,
                &vec![cfg.head_dim(); cfg.heads],
                cfg.mlp_dim,
                cfg.num_tokens(),
            ),
            Some(a) => {
                let la = &a.layers[l];
                block_count(
                    cfg.hidden,
                    &la.head_widths(),
                    la.mlp_units.len(),
                    la.tokens.len(),
                )
            }
        };
        push(format!("transformer.encoder.layer.{l}"), b.params, b.macs());
    }
    push("transformer.encoder.encoder_norm".into(), 2 * c, 0);

    let head = cfg.decoder_head_channels as u64;
    push(
        "decoder.conv_more".into(),
        9 * c * head + 2 * head,
        g * g * 9 * c * head,
    );
    let mut cin = head;
    let mut side = g;
    for (i, (&cout, skip)) in cfg
        .decoder_channels
        .iter()
        .zip(cfg.skip_channels())
        .enumerate()
    {
        let (cout, skip) = (cout as u64, skip as u64);
        side *= 2;
        let params = 9 * (cin + skip) * cout + 2 * cout + 9 * cout * cout + 2 * cout;
        let macs = side * side * 9 * ((cin + skip) * cout + cout * cout);
        push(format!("decoder.blocks.{i}"), params, macs);
        cin = cout;
    }
    if cfg.pixel_head == PixelHead::DirectionField {
        push(
            "pixel_head".into(),
            2 * cin + 2 + 2 * cin * cin + 2 * cin,
            s * s * (2 * cin + 2 * cin * cin),
        );
    }
    let k = cfg.num_classes as u64;
    push(
        "segmentation_head".into(),
        9 * cin * k + k,
        s * s * 9 * cin * k,
    );
    Ok(ModelCount { layers })
}
