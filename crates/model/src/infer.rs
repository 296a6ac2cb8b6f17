//! Volume inference with the TransUNet test protocol: each slice of a `[D, H, W]` volume
//! is resized to the model's input size, slices are run in batches, the per-pixel argmax
//! is taken and resized back to `H x W` with nearest-neighbour sampling.
//!
//! The official code resizes with `scipy.ndimage.zoom` (order 3 for the image, order 0
//! for the prediction), whose coordinate map is corner-aligned (`out i <- in i (in-1)/(out-1)`).
//! Here the image goes through `upsample_bicubic2d` with `align_corners = true` (the
//! same coordinate map; bicubic convolution instead of scipy's cubic B-spline, so values
//! differ slightly), and the labels through exact corner-aligned nearest sampling
//! (`round(i (in-1)/(out-1))`), which is what order 0 computes.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::transunet::TransUnet;

/// Corner-aligned nearest indices from `out` samples back into `inp` samples.
fn nearest_indices(inp: usize, out: usize) -> Vec<i64> {
    if out <= 1 || inp <= 1 {
        return vec![0; out];
    }
    let r = (inp - 1) as f64 / (out - 1) as f64;
    (0..out)
        .map(|i| ((i as f64 * r).round() as i64).min(inp as i64 - 1))
        .collect()
}

/// Resizes `[B, C, h, w]` images to `size x size`, bicubic, corner-aligned.
pub fn resize_bicubic(xs: &Tensor, size: usize) -> Tensor {
    let s = xs.size();
    if s[2] == size as i64 && s[3] == size as i64 {
        return xs.shallow_clone();
    }
    xs.upsample_bicubic2d([size as i64, size as i64], true, None, None)
}

/// Resizes `[B, h, w]` label maps to `out_h x out_w`, nearest, corner-aligned.
pub fn resize_nearest_labels(labels: &Tensor, out_h: usize, out_w: usize) -> Tensor {
    let s = labels.size();
    let dev = labels.device();
    let rows = Tensor::from_slice(&nearest_indices(s[1] as usize, out_h)).to_device(dev);
    let cols = Tensor::from_slice(&nearest_indices(s[2] as usize, out_w)).to_device(dev);
    labels.index_select(1, &rows).index_select(2, &cols)
}

/// Predicts a label volume `[D, H, W]` from an intensity volume `[D, H, W]` (already
/// normalised the way the model was trained), `batch_size` slices at a time, in eval
/// mode without gradients. Slices are resized with [`resize_bicubic`]. Labels are class
/// indices `0..num_classes`.
pub fn predict_volume(
    model: &TransUnet,
    volume: ArrayView3<'_, f32>,
    batch_size: usize,
) -> Result<Array3<u8>> {
    let (_, h, w) = volume.dim();
    let size = model.config().img_size;
    predict_batches(model, volume, batch_size, |chunk| {
        let n = chunk.dim().0;
        let data: Vec<f32> = chunk.iter().copied().collect();
        let xs = Tensor::from_slice(&data)
            .view([n as i64, 1, h as i64, w as i64])
            .to_device(model.device());
        Ok(resize_bicubic(&xs, size))
    })
}

/// As [`predict_volume`], with the slice resize supplied by the caller: `resize(slice,
/// size)` must return the `size x size` image (`size = img_size`), e.g. the data
/// pipeline's own cubic resize so that test slices are resized exactly as training slices
/// were. Predictions are resized back with corner-aligned nearest sampling.
pub fn predict_volume_with<F>(
    model: &TransUnet,
    volume: ArrayView3<'_, f32>,
    batch_size: usize,
    resize: F,
) -> Result<Array3<u8>>
where
    F: Fn(ArrayView2<'_, f32>, usize) -> Array2<f32>,
{
    let size = model.config().img_size;
    predict_batches(model, volume, batch_size, |chunk| {
        let n = chunk.dim().0;
        let mut data = Vec::with_capacity(n * size * size);
        for slice in chunk.outer_iter() {
            let r = resize(slice, size);
            if r.dim() != (size, size) {
                return Err(Error::Input(format!(
                    "resize returned {:?}, expected ({size}, {size})",
                    r.dim()
                )));
            }
            data.extend(r.iter().copied());
        }
        Ok(Tensor::from_slice(&data)
            .view([n as i64, 1, size as i64, size as i64])
            .to_device(model.device()))
    })
}

/// Runs `model` on batches made by `make_batch(chunk of slices) -> [n, 1, S, S]` and
/// writes the argmax, resized back to `H x W`, into the label volume.
fn predict_batches<F>(
    model: &TransUnet,
    volume: ArrayView3<'_, f32>,
    batch_size: usize,
    mut make_batch: F,
) -> Result<Array3<u8>>
where
    F: FnMut(ArrayView3<'_, f32>) -> Result<Tensor>,
{
    let (d, h, w) = volume.dim();
    if h == 0 || w == 0 {
        return Err(Error::Input(format!(
            "volume slices must be non-empty, found {h}x{w}"
        )));
    }
    if batch_size == 0 {
        return Err(Error::Input("batch_size must be positive".into()));
    }
    let classes = model.config().num_classes;
    if classes > 256 {
        return Err(Error::Input(format!(
            "{classes} classes do not fit u8 labels"
        )));
    }
    let mut out = Array3::<u8>::zeros((d, h, w));
    let _guard = tch::no_grad_guard();
    let mut start = 0;
    while start < d {
        let n = batch_size.min(d - start);
        let xs = make_batch(volume.slice(ndarray::s![start..start + n, .., ..]))?;
        let logits = model.forward_t(&xs, false)?.logits;
        let pred = logits.argmax(1, false);
        let pred = resize_nearest_labels(&pred, h, w)
            .to_kind(Kind::Uint8)
            .to_device(Device::Cpu)
            .contiguous();
        let flat = Vec::<u8>::try_from(&pred.view(-1))?;
        let mut dst = out.slice_mut(ndarray::s![start..start + n, .., ..]);
        for (o, v) in dst.iter_mut().zip(flat) {
            *o = v;
        }
        start += n;
    }
    Ok(out)
}

/// Floating-point precision of an inference-only model
/// ([`TransUnet::prepare_inference`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats, as the model trains.
    #[default]
    Fp32,
    /// bfloat16 weights and activations (CPU with AVX-512 BF16, CUDA).
    Bf16,
    /// IEEE half precision (CUDA only).
    Fp16,
}

impl Precision {
    /// Every precision, in the order of the report.
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Bf16, Precision::Fp16];

    /// The tensor kind of weights and activations.
    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
            Precision::Fp16 => Kind::Half,
        }
    }

    /// Casts the floating-point variables of `vs` to this precision (fp32 leaves them).
    pub fn cast(self, vs: &mut tch::nn::VarStore) {
        match self {
            Precision::Fp32 => {}
            Precision::Bf16 => vs.bfloat16(),
            Precision::Fp16 => vs.half(),
        }
    }

    /// The name used on the command line and in records (`fp32`, `bf16`, `fp16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                Error::Input(format!(
                    "unknown precision `{s}`, expected fp32, bf16 or fp16"
                ))
            })
    }
}

/// How [`TransUnet::prepare_inference`] readies a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceOptions {
    /// Precision of weights and activations.
    pub precision: Precision,
    /// Fused q/k/v, `scaled_dot_product_attention`, BatchNorms folded into their
    /// convolutions and, on CPU, oneDNN linears and narrow 1x1 convolutions as matrix
    /// products ([`crate::TransUnet::prepare_inference`]). Off, an fp32 model computes
    /// exactly what it computes in training.
    pub fast: bool,
}

impl Default for InferenceOptions {
    fn default() -> Self {
        InferenceOptions {
            precision: Precision::Fp32,
            fast: true,
        }
    }
}
