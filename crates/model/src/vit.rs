//! The transformer half of the hybrid encoder: patch embedding of the ResNet feature,
//! position embeddings, pre-norm blocks (LayerNorm eps 1e-6, separate query/key/value/out
//! linears, MLP fc1-GELU-fc2) with the three gated dimensions, and the encoder norm.
//!
//! A block built from a [`LayerArch`] has physically reduced widths: q/k/v project to the
//! kept dimensions of each head, the MLP has the kept units, and only the kept tokens
//! enter the block (gathered, then scattered back into the full grid). The softmax scale
//! is always `1/sqrt(full head_dim)`.
//!
//! Prepared for inference with fast paths ([`Transformer::prepare`]), q, k and v come
//! from one GEMM of the concatenated weights, and attention without token weights runs
//! as libtorch's `scaled_dot_product_attention` (flash or memory-efficient kernels) on
//! CUDA, and on CPU where it pays: measured on 2 threads, it took 0.97 ms against 0.81
//! ms for matmul-softmax-matmul at batch 1 of the paper preset (12 heads, 196 tokens,
//! 64 dims) and 8.1 ms against 18.2 ms at batch 8, so on CPU it runs from
//! [`SDPA_CPU_MIN_MACS`] multiply-accumulates per call up.

use tch::{Kind, Tensor, nn};

use crate::arch::LayerArch;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::gates::{LayerGates, weighted_softmax};
use crate::layers::{Conv2d, LayerNorm, Linear};
use crate::resnet::ResNetV2;

/// Smallest attention (`B H N^2 d` multiply-accumulates of `Q K^T`) that runs as
/// `scaled_dot_product_attention` on CPU (module docs).
const SDPA_CPU_MIN_MACS: i64 = 100_000_000;

/// Multi-head self-attention with per-head widths.
#[derive(Debug)]
pub(crate) struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    /// q, k and v as one layer (weights concatenated), kept by [`Attention::prepare`].
    qkv: Option<Linear>,
    /// Attention runs as `scaled_dot_product_attention` where no token weights apply,
    /// on CPU from this many multiply-accumulates up.
    sdpa_from: Option<i64>,
    /// Kept dims of each head (all `head_dim` in the full model).
    head_widths: Vec<usize>,
    /// Heads of unequal kept widths run as one batch of heads zero-padded to the widest.
    padding: Option<HeadPadding>,
    scale: f64,
    dropout: f64,
}

/// Column maps between the concatenated kept head dims (`sum w_h` columns) and the
/// zero-padded heads (`heads x max w_h`). Zero dims leave `Q K^T` unchanged and give zero
/// output columns, which are dropped, so the result equals head-by-head attention.
#[derive(Debug)]
struct HeadPadding {
    /// Active heads (kept width > 0).
    heads: i64,
    /// Widest kept head.
    width: i64,
    /// For each padded column, its source column; `sum w_h` selects an appended zero.
    gather: Tensor,
    /// For each kept column, its position among the padded output columns.
    scatter: Tensor,
}

impl HeadPadding {
    /// The padding for `head_widths` with its maps on `device` (moved along in `pad` and
    /// `unpad` if the variables move), or `None` when the active heads are all equally
    /// wide.
    fn new(head_widths: &[usize], device: tch::Device) -> Option<Self> {
        let active: Vec<usize> = head_widths.iter().copied().filter(|&w| w > 0).collect();
        let width = *active.iter().max()?;
        if active.iter().all(|&w| w == width) {
            return None;
        }
        let total: usize = active.iter().sum();
        let (mut gather, mut scatter) = (Vec::new(), Vec::new());
        let mut off = 0;
        for (h, &w) in active.iter().enumerate() {
            gather.extend((0..width).map(|j| if j < w { off + j } else { total } as i64));
            scatter.extend((0..w).map(|j| (h * width + j) as i64));
            off += w;
        }
        Some(HeadPadding {
            heads: active.len() as i64,
            width: width as i64,
            gather: Tensor::from_slice(&gather).to_device(device),
            scatter: Tensor::from_slice(&scatter).to_device(device),
        })
    }

    /// `[B, N, sum w_h]` -> `[B, N, heads, width]` with zeros in the padding.
    fn pad(&self, t: &Tensor) -> Tensor {
        // The batch size stays symbolic (-1, zeros_like), so that a traced module takes
        // any batch.
        let (_, n, _) = t.size3().expect("3-d q/k/v");
        let zero = t.narrow(2, 0, 1).zeros_like();
        Tensor::cat(&[t, &zero], 2)
            .index_select(2, &self.gather.to_device(t.device()))
            .view([-1, n, self.heads, self.width])
    }

    /// `[B, N, heads * width]` -> `[B, N, sum w_h]`.
    fn unpad(&self, t: &Tensor) -> Tensor {
        t.index_select(2, &self.scatter.to_device(t.device()))
    }
}

impl Attention {
    fn new(p: &nn::Path, cfg: &ModelConfig, head_widths: Vec<usize>) -> Self {
        let width: usize = head_widths.iter().sum();
        Attention {
            query: Linear::new(&(p / "query"), cfg.hidden, width),
            key: Linear::new(&(p / "key"), cfg.hidden, width),
            value: Linear::new(&(p / "value"), cfg.hidden, width),
            out: Linear::new(&(p / "out"), width, cfg.hidden),
            qkv: None,
            sdpa_from: None,
            padding: HeadPadding::new(&head_widths, p.device()),
            head_widths,
            scale: 1.0 / (cfg.head_dim() as f64).sqrt(),
            dropout: cfg.attention_dropout,
        }
    }

    /// Inference fast paths (module docs); the fused weights are cast to `kind`.
    fn prepare(&mut self, kind: Kind, fast: bool) {
        for layer in [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.out,
        ] {
            layer.prepare(fast);
        }
        self.sdpa_from = fast.then_some(SDPA_CPU_MIN_MACS);
        self.qkv = fast.then(|| {
            let _guard = tch::no_grad_guard();
            let cat = |f: fn(&Linear) -> &Tensor| {
                Tensor::cat(&[f(&self.query), f(&self.key), f(&self.value)], 0).to_kind(kind)
            };
            let mut fused = Linear::from_tensors(cat(|l| &l.weight), cat(|l| &l.bias));
            fused.prepare(fast);
            fused
        });
    }

    /// Attention of equal-width heads: `q, k, v [B, N, H, d]` -> `[B, N, H * d]`.
    fn heads_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        key_w: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let (_, n, h, d) = q.size4().expect("4-d q");
        let q = q.permute([0, 2, 1, 3]);
        let k = k.permute([0, 2, 3, 1]);
        let v = v.permute([0, 2, 1, 3]);
        let (b, _, _, _) = q.size4().expect("4-d q");
        let sdpa = self
            .sdpa_from
            .is_some_and(|m| q.device().is_cuda() || b * h * n * n * d >= m);
        if sdpa && key_w.is_none() && !train {
            let k = k.transpose(2, 3);
            return Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<&Tensor>,
                0.0,
                false,
                self.scale,
                false,
            )
            .permute([0, 2, 1, 3])
            .contiguous()
            .view([-1, n, h * d]);
        }
        let scores = q.matmul(&k) * self.scale;
        let probs = match key_w {
            Some(w) => weighted_softmax(&scores, w),
            None => scores.softmax(-1, scores.kind()),
        };
        let probs = probs.dropout(self.dropout, train);
        probs
            .matmul(&v)
            .permute([0, 2, 1, 3])
            .contiguous()
            .view([-1, n, h * d])
    }

    /// # Shapes
    /// `xs [B, N, hidden]`, gate `[heads, head_dim]` (full model only), key weights `[N]`
    /// -> `[B, N, hidden]`
    fn forward_t(
        &self,
        xs: &Tensor,
        gate: Option<&Tensor>,
        key_w: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let (_, n, _) = xs.size3().expect("3-d tokens");
        let (q, k, v) = match &self.qkv {
            Some(fused) => {
                let width: i64 = self.head_widths.iter().sum::<usize>() as i64;
                let mut parts = fused
                    .forward(xs)
                    .split_with_sizes([width; 3].as_slice(), -1)
                    .into_iter();
                let mut next = || parts.next().expect("three parts");
                (next(), next(), next())
            }
            None => (
                self.query.forward(xs),
                self.key.forward(xs),
                self.value.forward(xs),
            ),
        };
        let ctx = if let Some(p) = &self.padding {
            let ctx = self.heads_attention(&p.pad(&q), &p.pad(&k), &p.pad(&v), key_w, train);
            p.unpad(&ctx)
        } else {
            let active: Vec<usize> = self
                .head_widths
                .iter()
                .copied()
                .filter(|&w| w > 0)
                .collect();
            match active.first() {
                None => q, // [B, N, 0]
                Some(&d) => {
                    let (h, d) = (active.len() as i64, d as i64);
                    // Gates exist only on the full-width model, where every head is active,
                    // so `z [heads, head_dim]` broadcasts over `[B, N, heads, head_dim]`.
                    let gated = |t: Tensor| match gate {
                        Some(z) => t.view([-1, n, h, d]) * z,
                        None => t.view([-1, n, h, d]),
                    };
                    self.heads_attention(&gated(q), &gated(k), &gated(v), key_w, train)
                }
            }
        };
        self.out.forward(&ctx).dropout(self.dropout, train)
    }
}

/// MLP `fc1 - GELU - (gate) - dropout - fc2 - dropout`.
#[derive(Debug)]
pub(crate) struct Mlp {
    fc1: Linear,
    fc2: Linear,
    dropout: f64,
}

impl Mlp {
    fn new(p: &nn::Path, cfg: &ModelConfig, units: usize) -> Self {
        Mlp {
            fc1: Linear::new(&(p / "fc1"), cfg.hidden, units),
            fc2: Linear::new(&(p / "fc2"), units, cfg.hidden),
            dropout: cfg.dropout,
        }
    }

    fn prepare(&mut self, fast: bool) {
        self.fc1.prepare(fast);
        self.fc2.prepare(fast);
    }

    /// # Shapes
    /// `[B, N, hidden]`, gate `[mlp_dim]` -> `[B, N, hidden]`
    fn forward_t(&self, xs: &Tensor, gate: Option<&Tensor>, train: bool) -> Tensor {
        let h = self.fc1.forward(xs).gelu("none");
        let h = match gate {
            Some(z) => h * z,
            None => h,
        };
        self.fc2
            .forward(&h.dropout(self.dropout, train))
            .dropout(self.dropout, train)
    }
}

/// Pre-norm transformer block (`Block` in the official code).
#[derive(Debug)]
pub(crate) struct Block {
    attention_norm: LayerNorm,
    attn: Attention,
    ffn_norm: LayerNorm,
    ffn: Mlp,
    /// Kept token indices of a reduced block; `None` when every token is kept.
    kept_tokens: Option<Tensor>,
}

impl Block {
    pub(crate) fn new(p: &nn::Path, cfg: &ModelConfig, arch: Option<&LayerArch>) -> Self {
        let (widths, units, kept_tokens) = match arch {
            None => (vec![cfg.head_dim(); cfg.heads], cfg.mlp_dim, None),
            Some(a) => {
                let tokens = (a.tokens.len() != cfg.num_tokens()).then(|| {
                    let idx: Vec<i64> = a.tokens.iter().map(|&t| t as i64).collect();
                    Tensor::from_slice(&idx).to_device(p.device())
                });
                (a.head_widths(), a.mlp_units.len(), tokens)
            }
        };
        Block {
            attention_norm: LayerNorm::new(&(p / "attention_norm"), cfg.hidden, 1e-6),
            attn: Attention::new(&(p / "attn"), cfg, widths),
            ffn_norm: LayerNorm::new(&(p / "ffn_norm"), cfg.hidden, 1e-6),
            ffn: Mlp::new(&(p / "ffn"), cfg, units),
            kept_tokens,
        }
    }

    pub(crate) fn prepare(&mut self, kind: Kind, fast: bool) {
        self.attn.prepare(kind, fast);
        self.ffn.prepare(fast);
    }

    /// The block on the tokens it sees, with optional token gates `g [N]`.
    fn forward_tokens(&self, xs: &Tensor, gates: &LayerGates, train: bool) -> Tensor {
        let g = gates.token.as_ref();
        let key_w = g.map(Tensor::abs);
        let a = self.attn.forward_t(
            &self.attention_norm.forward(xs),
            gates.attn.as_ref(),
            key_w.as_ref(),
            train,
        );
        let g3 = g.map(|g| g.view([1, -1, 1]));
        let xs = match &g3 {
            Some(g) => xs + a * g,
            None => xs + a,
        };
        let m = self
            .ffn
            .forward_t(&self.ffn_norm.forward(&xs), gates.mlp.as_ref(), train);
        match &g3 {
            Some(g) => xs + m * g,
            None => xs + m,
        }
    }

    /// # Shapes
    /// `[B, N, hidden] -> [B, N, hidden]` (N: full token grid)
    pub(crate) fn forward_t(&self, xs: &Tensor, gates: &LayerGates, train: bool) -> Tensor {
        match &self.kept_tokens {
            None => self.forward_tokens(xs, gates, train),
            Some(idx) if idx.numel() == 0 => xs.shallow_clone(),
            Some(idx) => {
                // The index was made on the build device; follow a moved VarStore.
                let idx = idx.to_device(xs.device());
                let kept = xs.index_select(1, &idx);
                let y = self.forward_tokens(&kept, gates, train);
                xs.index_copy(1, &idx, &y)
            }
        }
    }
}

/// Patch embedding of the ResNet feature plus position embeddings.
#[derive(Debug)]
pub(crate) struct Embeddings {
    hybrid_model: ResNetV2,
    patch_embeddings: Conv2d,
    position_embeddings: Tensor,
    dropout: f64,
}

impl Embeddings {
    fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        Embeddings {
            hybrid_model: ResNetV2::new(&(p / "hybrid_model"), cfg),
            patch_embeddings: Conv2d::new(
                &(p / "patch_embeddings"),
                cfg.resnet_out_channels(),
                cfg.hidden,
                1,
                1,
                0,
                true,
            ),
            position_embeddings: p.var(
                "position_embeddings",
                &[1, cfg.num_tokens() as i64, cfg.hidden as i64],
                nn::Init::Const(0.0),
            ),
            dropout: cfg.dropout,
        }
    }

    /// # Shapes
    /// `[B, 3, S, S] -> ([B, N, hidden], skips)`
    fn forward_t(&self, xs: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        let (x, features) = self.hybrid_model.forward(xs);
        let x = self
            .patch_embeddings
            .forward(&x)
            .flatten(2, 3)
            .transpose(1, 2);
        (
            (x + &self.position_embeddings).dropout(self.dropout, train),
            features,
        )
    }
}

/// Embeddings, blocks and encoder norm (`transformer.*` in the official state_dict).
#[derive(Debug)]
pub(crate) struct Transformer {
    embeddings: Embeddings,
    layers: Vec<Block>,
    encoder_norm: LayerNorm,
}

impl Transformer {
    pub fn new(p: &nn::Path, cfg: &ModelConfig, arch: Option<&[LayerArch]>) -> Self {
        let enc = p / "encoder";
        let layer = &enc / "layer";
        Transformer {
            embeddings: Embeddings::new(&(p / "embeddings"), cfg),
            layers: (0..cfg.layers)
                .map(|l| Block::new(&(&layer / l), cfg, arch.map(|a| &a[l])))
                .collect(),
            encoder_norm: LayerNorm::new(&(&enc / "encoder_norm"), cfg.hidden, 1e-6),
        }
    }

    /// Prepares the encoder for inference in `kind`: standardised ResNet kernels, and
    /// with `fast` the fused and oneDNN paths (module docs) and the convolutions' fast
    /// paths.
    pub fn prepare(&mut self, kind: Kind, fast: bool) {
        self.embeddings.hybrid_model.prepare(kind, fast);
        self.embeddings.patch_embeddings.prepare(fast);
        for block in &mut self.layers {
            block.prepare(kind, fast);
        }
    }

    /// Runs the encoder; `gates(l)` yields the gates of block `l`.
    ///
    /// # Shapes
    /// `[B, 3, S, S] -> ([B, N, hidden], skips)`
    pub fn forward_t(
        &self,
        xs: &Tensor,
        gates: impl Fn(usize) -> Result<LayerGates>,
        train: bool,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let (mut x, features) = self.embeddings.forward_t(xs, train);
        for (l, block) in self.layers.iter().enumerate() {
            x = block.forward_t(&x, &gates(l)?, train);
        }
        Ok((self.encoder_norm.forward(&x), features))
    }
}

#[cfg(test)]
mod tests {
    use super::{Attention, HeadPadding};
    use crate::config::ModelConfig;
    use tch::{Device, Kind, Tensor, nn};

    /// Attention of `widths` as it trains and prepared with the fast paths (same weights).
    fn attention_pair(widths: &[usize]) -> (Attention, Attention, nn::VarStore) {
        let cfg = ModelConfig::tiny();
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let plain = Attention::new(&vs.root(), &cfg, widths.to_vec());
        let mut vs2 = nn::VarStore::new(Device::Cpu);
        let mut fast = Attention::new(&vs2.root(), &cfg, widths.to_vec());
        vs2.copy(&vs).unwrap();
        fast.prepare(Kind::Float, true);
        assert!(fast.qkv.is_some() && fast.sdpa_from.is_some());
        // Every product through oneDNN and SDPA, however small.
        fast.sdpa_from = Some(0);
        for l in [fast.qkv.as_mut().unwrap(), &mut fast.out] {
            assert!(l.onednn_from.is_some());
            l.onednn_from = Some(0);
        }
        (plain, fast, vs2)
    }

    fn assert_close(a: &Tensor, b: &Tensor) {
        let scale = a.abs().max().double_value(&[]);
        let d = (a - b).abs().max().double_value(&[]);
        assert!(scale > 0.1, "outputs too small to compare ({scale:e})");
        assert!(d <= 1e-5 * scale, "differ by {d:e} at scale {scale:e}");
    }

    #[test]
    fn fused_qkv_and_sdpa_equal_three_projections_and_softmax() {
        let cfg = ModelConfig::tiny();
        let (d, n) = (cfg.head_dim(), cfg.num_tokens() as i64);
        // No head keeps its full width: the softmax scale must stay that of the full head.
        let unequal: Vec<usize> = (0..cfg.heads)
            .map(|h| [d / 2, 0, 3, d / 4][h % 4])
            .collect();
        let _g = tch::no_grad_guard();
        for widths in [vec![d; cfg.heads], unequal] {
            let (plain, fast, _vs) = attention_pair(&widths);
            let xs = Tensor::randn([2, n, cfg.hidden as i64], (Kind::Float, Device::Cpu));
            // Plain attention, and the manual softmax with token weights, which SDPA
            // cannot take, on the fused projection.
            let w = Tensor::rand([n], (Kind::Float, Device::Cpu));
            for key_w in [None, Some(&w)] {
                let a = plain.forward_t(&xs, None, key_w, false);
                let b = fast.forward_t(&xs, None, key_w, false);
                assert_close(&a, &b);
            }
        }
        // Head-dim gates on the full model multiply the fused projection's parts.
        let (plain, fast, _vs) = attention_pair(&vec![d; cfg.heads]);
        let gate = Tensor::rand([cfg.heads as i64, d as i64], (Kind::Float, Device::Cpu));
        let xs = Tensor::randn([1, n, cfg.hidden as i64], (Kind::Float, Device::Cpu));
        let a = plain.forward_t(&xs, Some(&gate), None, false);
        let b = fast.forward_t(&xs, Some(&gate), None, false);
        assert_close(&a, &b);
    }

    #[test]
    fn head_padding_maps_kept_columns_to_zero_padded_heads_and_back() {
        assert!(HeadPadding::new(&[3, 3, 0, 3], Device::Cpu).is_none());
        assert!(HeadPadding::new(&[0, 0], Device::Cpu).is_none());
        // Heads of widths 2, 0 (dropped) and 3: padded to 2 heads of 3.
        let p = HeadPadding::new(&[2, 0, 3], Device::Cpu).unwrap();
        assert_eq!((p.heads, p.width), (2, 3));
        let x = Tensor::from_slice(&[1f32, 2., 3., 4., 5.]).view([1, 1, 5]);
        let padded = p.pad(&x);
        assert_eq!(padded.size(), [1, 1, 2, 3]);
        let want = Tensor::from_slice(&[1f32, 2., 0., 3., 4., 5.]).view([1, 1, 2, 3]);
        assert!(padded.equal(&want));
        let back = p.unpad(&padded.view([1, 1, 6]));
        assert!(back.equal(&x.to_kind(Kind::Float)));
    }
}
