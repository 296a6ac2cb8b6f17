//! Building blocks with the official PyTorch variable names: linear, plain and
//! weight-standardised convolutions, and the decoder's conv-BN-ReLU.
//!
//! A model prepared for inference (see [`crate::TransUnet::prepare_inference`]) keeps
//! derived weights beside the variables: standardised kernels, computed once instead of
//! at every forward pass, and on CPU its linears run as 1x1 convolutions on a
//! channels-last view of the tokens. That is the same product `x W^T + b`; libtorch
//! then computes it with oneDNN, which on the CPUs measured here (AMD EPYC, AVX-512)
//! runs about twice as fast at 196 tokens as the BLAS `addmm` behind `linear`
//! (`cargo run --release -p slimseg-model --example fast_paths`). Only the summation
//! order differs. Below about ten million multiply-accumulates per call (the tiny
//! preset at batch 1) oneDNN's overhead outweighs its speed: measured on 2 threads,
//! `[36, 192] x [192, 576]` took 56 us by `addmm` and 72 us by oneDNN, `[196, 384] x
//! [384, 384]` 302 us against 180 us, so smaller products keep `addmm`.
//!
//! The other way round, a prepared 1x1 convolution with at most 8 input or output
//! channels (the direction field's and the fusion's of the pixel module, the tiny
//! preset's bottleneck projections) runs as a matrix product on CPU: timed alternately
//! on 2 threads, `conv2d` took 5.3 ms for `[8, 8, 96, 96] -> 2` channels where the
//! product took 0.75 ms, 2-10x the product's time at the pixel module's other shapes
//! and 2.4x for a tiny bottleneck at batch 8; only that bottleneck at batch 1 was faster
//! as `conv2d` (10 against 16 us), which libtorch computes as a GEMM there anyway
//! (`cargo run --release -p slimseg-model --example pointwise`). In the tiny preset
//! with the pixel module, side by side, the forward pass took 0-5% less time at batch 1
//! and 4-16% less at batch 8; the paper preset, where only the direction field's
//! `16 -> 2` changes, stayed within noise.

use tch::nn::{self, Init, ModuleT};
use tch::{Kind, Tensor};

/// PyTorch's default init bound for a layer with `fan_in` inputs (kaiming uniform with
/// a = sqrt(5), which gives 1/sqrt(fan_in)); zero-sized layers get zeros.
fn default_init(fan_in: usize, numel: usize) -> Init {
    if fan_in == 0 || numel == 0 {
        Init::Const(0.0)
    } else {
        let bound = 1.0 / (fan_in as f64).sqrt();
        Init::Uniform {
            lo: -bound,
            up: bound,
        }
    }
}

/// Smallest product (multiply-accumulates) that runs through oneDNN (module docs).
const ONEDNN_MIN_MACS: i64 = 10_000_000;

/// Fully connected layer `y = x W^T + b` (`weight` `[out, in]`, `bias` `[out]`). Either
/// width may be zero, which a pruned block needs.
#[derive(Debug)]
pub(crate) struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
    /// Set by [`Linear::prepare`]: products of at least this many multiply-accumulates
    /// run as a oneDNN 1x1 convolution.
    pub(crate) onednn_from: Option<i64>,
}

impl Linear {
    pub fn new(p: &nn::Path, in_dim: usize, out_dim: usize) -> Self {
        let init = default_init(in_dim, in_dim * out_dim);
        Linear {
            weight: p.var("weight", &[out_dim as i64, in_dim as i64], init),
            bias: p.var("bias", &[out_dim as i64], default_init(in_dim, out_dim)),
            onednn_from: None,
        }
    }

    /// A layer of the given weights (not variables), as the fused q/k/v projection.
    pub fn from_tensors(weight: Tensor, bias: Tensor) -> Self {
        Linear {
            weight,
            bias,
            onednn_from: None,
        }
    }

    /// Inference fast path: on CPU the product runs through oneDNN (module docs). Layers
    /// with a zero width keep the plain product.
    pub fn prepare(&mut self, fast: bool) {
        let s = self.weight.size();
        let on = fast && self.weight.device() == tch::Device::Cpu && s[0] > 0 && s[1] > 0;
        self.onednn_from = on.then_some(ONEDNN_MIN_MACS);
    }

    /// # Shapes
    /// `[.., in] -> [.., out]`
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let mut shape = xs.size();
        let (out, inp) = self.weight.size2().expect("2-d linear weight");
        let rows = shape[..shape.len() - 1].iter().product::<i64>();
        if self.onednn_from.is_none_or(|m| rows * inp * out < m) {
            return xs.linear(&self.weight, Some(&self.bias));
        }
        // `[rows, in]` memory is an NHWC image `[1, 1, rows, in]`: the permute below is
        // a channels-last `[1, in, 1, rows]` view, and so is the convolution's output.
        // The leading sizes stay symbolic (-1), so that a traced module takes any batch.
        let image = xs.reshape([1, 1, -1, inp]).permute([0, 3, 1, 2]);
        let y = image.conv2d(
            &self.weight.view([out, inp, 1, 1]),
            Some(&self.bias),
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        );
        *shape.last_mut().expect("non-scalar input") = out;
        shape[0] = -1;
        y.permute([0, 2, 3, 1]).reshape(shape.as_slice())
    }
}

/// Widest narrow side of a 1x1 convolution that the fast path runs as a matrix product
/// (module docs).
const MATMUL_MAX_NARROW_CHANNELS: i64 = 8;

/// 2D convolution with optional bias (`nn.Conv2d`).
#[derive(Debug)]
pub(crate) struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: i64,
    pub padding: i64,
    /// Set by [`Conv2d::prepare`]: the convolution runs as a matrix product.
    matmul: bool,
}

/// `xs` convolved with `weight` (`[cout, cin, k, k]`) and `bias`; with `matmul` (a 1x1
/// kernel, stride 1, no padding) as the product `W [cout, cin] x [B, cin, H * W]`,
/// which is the same sum in another order.
fn convolve(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: i64,
    padding: i64,
    matmul: bool,
) -> Tensor {
    if !matmul {
        return xs.conv2d(weight, bias, [stride; 2], [padding; 2], [1, 1], 1);
    }
    let (_, cin, h, w) = xs.size4().expect("4-d convolution input");
    let cout = weight.size()[0];
    // The batch stays symbolic (-1), so that a traced module takes any batch.
    let y = weight
        .view([cout, cin])
        .matmul(&xs.reshape([-1, cin, h * w]));
    let y = match bias {
        Some(b) => y + b.view([cout, 1]),
        None => y,
    };
    y.view([-1, cout, h, w])
}

impl Conv2d {
    pub fn new(
        p: &nn::Path,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Self {
        let fan_in = cin * k * k;
        let weight = p.var(
            "weight",
            &[cout as i64, cin as i64, k as i64, k as i64],
            default_init(fan_in, fan_in * cout),
        );
        let bias = bias.then(|| p.var("bias", &[cout as i64], default_init(fan_in, cout)));
        Conv2d {
            weight,
            bias,
            stride: stride as i64,
            padding: padding as i64,
            matmul: false,
        }
    }

    /// Inference fast path: on CPU a 1x1 convolution (stride 1, no padding) with at most
    /// [`MATMUL_MAX_NARROW_CHANNELS`] input or output channels runs as a matrix product
    /// (module docs).
    pub fn prepare(&mut self, fast: bool) {
        let s = self.weight.size();
        self.matmul = fast
            && self.weight.device() == tch::Device::Cpu
            && s[2..] == [1, 1]
            && self.stride == 1
            && self.padding == 0
            && (1..=MATMUL_MAX_NARROW_CHANNELS).contains(&s[0].min(s[1]));
    }

    /// `xs` convolved with this layer's geometry and the given `weight` and `bias` (a
    /// standardised or folded kernel of the same shape).
    fn apply(&self, xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        convolve(xs, weight, bias, self.stride, self.padding, self.matmul)
    }

    /// # Shapes
    /// `[B, cin, H, W] -> [B, cout, H', W']`
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.apply(xs, &self.weight, self.bias.as_ref())
    }
}

/// Weight-standardised convolution (BiT's `StdConv2d`, no bias): the kernel of each
/// output channel is normalised to zero mean and unit variance (biased, eps 1e-5)
/// before convolving.
#[derive(Debug)]
pub(crate) struct StdConv2d {
    pub conv: Conv2d,
    /// The standardised kernel, kept by [`StdConv2d::prepare`] for inference.
    standardized: Option<Tensor>,
}

impl StdConv2d {
    pub fn new(
        p: &nn::Path,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        StdConv2d {
            conv: Conv2d::new(p, cin, cout, k, stride, padding, false),
            standardized: None,
        }
    }

    fn standardize(w: &Tensor) -> Tensor {
        let (var, mean) = w.var_mean_correction([1i64, 2, 3].as_slice(), 0, true);
        (w - mean) / (var + 1e-5).sqrt()
    }

    /// Keeps the kernel standardised once, from the current weights in their own kind,
    /// then cast to `kind` (the precision the model is about to run in).
    /// With `fast`, the convolution's fast path too ([`Conv2d::prepare`]).
    pub fn prepare(&mut self, kind: Kind, fast: bool) {
        let _guard = tch::no_grad_guard();
        self.standardized = Some(Self::standardize(&self.conv.weight).to_kind(kind));
        self.conv.prepare(fast);
    }

    /// # Shapes
    /// `[B, cin, H, W] -> [B, cout, H', W']`
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let computed;
        let w = match &self.standardized {
            Some(w) => w,
            None => {
                computed = Self::standardize(&self.conv.weight);
                &computed
            }
        };
        self.conv.apply(xs, w, None)
    }
}

/// GroupNorm with affine `weight`/`bias`.
#[derive(Debug)]
pub(crate) struct GroupNorm {
    pub groups: i64,
    pub eps: f64,
    pub weight: Tensor,
    pub bias: Tensor,
}

impl GroupNorm {
    pub fn new(p: &nn::Path, groups: usize, channels: usize, eps: f64) -> Self {
        GroupNorm {
            groups: groups as i64,
            eps,
            weight: p.var("weight", &[channels as i64], Init::Const(1.0)),
            bias: p.var("bias", &[channels as i64], Init::Const(0.0)),
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        xs.group_norm(
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// LayerNorm over the last dimension.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(p: &nn::Path, dim: usize, eps: f64) -> Self {
        LayerNorm {
            weight: p.var("weight", &[dim as i64], Init::Const(1.0)),
            bias: p.var("bias", &[dim as i64], Init::Const(0.0)),
            eps,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let d = *self.weight.size().last().expect("layer norm weight is 1-d");
        xs.layer_norm(
            [d].as_slice(),
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// The decoder's `Conv2dReLU`: `0` conv (no bias), `1` BatchNorm, ReLU.
#[derive(Debug)]
pub(crate) struct Conv2dReLU {
    pub conv: Conv2d,
    pub bn: nn::BatchNorm,
    /// The BatchNorm folded into the convolution, `(weight, bias)`, kept by
    /// [`Conv2dReLU::prepare`] for inference.
    folded: Option<(Tensor, Tensor)>,
}

/// BatchNorm epsilon of [`Conv2dReLU`] (PyTorch's default).
const BN_EPS: f64 = 1e-5;

impl Conv2dReLU {
    pub fn new(p: &nn::Path, cin: usize, cout: usize, k: usize, padding: usize) -> Self {
        let bn = nn::BatchNormConfig {
            eps: BN_EPS,
            ..Default::default()
        };
        Conv2dReLU {
            conv: Conv2d::new(&(p / "0"), cin, cout, k, 1, padding, false),
            bn: nn::batch_norm2d(p / "1", cout as i64, bn),
            folded: None,
        }
    }

    /// Folds the eval-mode BatchNorm, `gamma (y - mean) / sqrt(var + eps) + beta` per
    /// channel, into the convolution's weight and a bias, from the current weights in
    /// their own kind, then cast to `kind`: one op fewer per call, equal up to rounding.
    /// The convolution takes its fast path too ([`Conv2d::prepare`]).
    pub fn prepare(&mut self, kind: Kind) {
        let _guard = tch::no_grad_guard();
        let (Some(gamma), Some(beta)) = (&self.bn.ws, &self.bn.bs) else {
            return;
        };
        let scale = gamma / (&self.bn.running_var + BN_EPS).sqrt();
        let weight = &self.conv.weight * scale.view([-1, 1, 1, 1]);
        let bias = beta - &self.bn.running_mean * &scale;
        self.folded = Some((weight.to_kind(kind), bias.to_kind(kind)));
        self.conv.prepare(true);
    }

    /// # Shapes
    /// `[B, cin, H, W] -> [B, cout, H, W]`
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match (&self.folded, train) {
            (Some((w, b)), false) => self.conv.apply(xs, w, Some(b)).relu(),
            _ => self.bn.forward_t(&self.conv.forward(xs), train).relu(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Conv2d, Conv2dReLU, Linear};
    use tch::{Device, Kind, Tensor, nn};

    #[test]
    fn narrow_pointwise_convolutions_run_as_an_equal_matrix_product() {
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root();
        let opts = (Kind::Float, Device::Cpu);
        let max_diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        // (cin, cout, kernel, stride, padding, bias): which take the product.
        for (cin, cout, k, stride, pad, bias, product) in [
            (8, 2, 1, 1, 0, true, true),
            (32, 8, 1, 1, 0, false, true),
            (16, 16, 1, 1, 0, true, false),
            (8, 8, 3, 1, 1, true, false),
            (8, 32, 1, 2, 0, false, false),
        ] {
            let name = format!("c{cin}_{cout}_{k}_{stride}");
            let mut conv = Conv2d::new(&(&p / name.as_str()), cin, cout, k, stride, pad, bias);
            for b in [1, 3] {
                let xs = Tensor::randn([b, cin as i64, 9, 7], opts);
                conv.prepare(false);
                let want = conv.forward(&xs);
                conv.prepare(true);
                assert_eq!(conv.matmul, product, "{cin}->{cout} k{k} s{stride}");
                let got = conv.forward(&xs);
                assert_eq!(got.size(), want.size());
                assert!(max_diff(&got, &want) < 1e-5, "{cin}->{cout}: {got:?}");
            }
        }
        // The folded conv-BN-ReLU takes it too, with the folded weights.
        let mut fused = Conv2dReLU::new(&(&p / "fuse"), 16, 8, 1, 0);
        tch::no_grad(|| {
            let bn = &mut fused.bn;
            bn.running_mean.copy_(&(bn.running_mean.randn_like() * 0.5));
            bn.running_var.copy_(&(bn.running_var.rand_like() + 0.5));
            for t in [bn.ws.as_mut(), bn.bs.as_mut()].into_iter().flatten() {
                t.copy_(&t.randn_like());
            }
        });
        let xs = Tensor::randn([2, 16, 5, 5], opts);
        let want = fused.forward_t(&xs, false);
        fused.prepare(Kind::Float);
        assert!(fused.conv.matmul);
        assert!(max_diff(&fused.forward_t(&xs, false), &want) < 1e-5);
    }

    #[test]
    fn onednn_linear_equals_the_plain_product_for_any_leading_shape() {
        tch::manual_seed(1);
        let opts = (Kind::Float, Device::Cpu);
        let mut fast = Linear::from_tensors(Tensor::randn([7, 5], opts), Tensor::randn([7], opts));
        let plain = Linear::from_tensors(fast.weight.copy(), fast.bias.copy());
        fast.prepare(true);
        assert_eq!(fast.onednn_from, Some(super::ONEDNN_MIN_MACS));
        // Every product through oneDNN, however small.
        fast.onednn_from = Some(0);
        for shape in [vec![5], vec![3, 5], vec![2, 3, 5], vec![2, 1, 4, 5]] {
            let xs = Tensor::randn(shape.as_slice(), opts);
            let (a, b) = (plain.forward(&xs), fast.forward(&xs));
            assert_eq!(a.size(), b.size());
            let d = (&a - &b).abs().max().double_value(&[]);
            assert!(d < 1e-5, "{shape:?}: differ by {d:e}");
        }
        // A zero width keeps the plain product.
        let mut empty = Linear::from_tensors(Tensor::zeros([0, 5], opts), Tensor::zeros([0], opts));
        empty.prepare(true);
        assert!(empty.onednn_from.is_none());
    }
}
