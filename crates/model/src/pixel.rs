//! Pixel classification module: direction-field head with feature warping and fusion
//! (Cheng et al., "Learning Directional Feature Maps for Cardiac MRI Segmentation",
//! MICCAI 2020; the pixel-level classification of DF-TransUNet).
//!
//! From the last decoder feature `F`, a 1x1 conv predicts a 2-channel direction field
//! `D` (channel 0: row / y offset, channel 1: column / x offset, in pixels, pointing from
//! a region's boundary to its interior like the training targets). `F` is resampled at
//! `p + D(p)` (bilinear `grid_sample`, border padding, `align_corners = true`) where
//! `|D(p)| > df_min_magnitude`, and at `p` elsewhere; `[F, warped F]` is fused by a 1x1
//! conv-BN-ReLU back to the width of `F` and classified by the segmentation head.

use tch::{Kind, Tensor, nn};

use crate::config::ModelConfig;
use crate::layers::{Conv2d, Conv2dReLU};

/// Direction-field module (`pixel_head.direction`, `pixel_head.fuse.{0,1}`).
#[derive(Debug)]
pub(crate) struct DirectionFieldHead {
    direction: Conv2d,
    fuse: Conv2dReLU,
    min_magnitude: f64,
}

impl DirectionFieldHead {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let c = cfg.decoder_channels[3];
        DirectionFieldHead {
            direction: Conv2d::new(&(p / "direction"), c, 2, 1, 1, 0, true),
            fuse: Conv2dReLU::new(&(p / "fuse"), 2 * c, c, 1, 0),
            min_magnitude: cfg.df_min_magnitude,
        }
    }

    /// Folds the fusion's BatchNorm into its convolution for inference in `kind`; both
    /// convolutions take their fast paths.
    pub fn prepare(&mut self, kind: Kind) {
        self.direction.prepare(true);
        self.fuse.prepare(kind);
    }

    /// # Shapes
    /// `[B, C, H, W] -> (fused [B, C, H, W], field [B, 2, H, W])`
    pub fn forward_t(&self, feat: &Tensor, train: bool) -> (Tensor, Tensor) {
        let field = self.direction.forward(feat);
        let warped = warp(feat, &field, self.min_magnitude);
        let fused = self
            .fuse
            .forward_t(&Tensor::cat(&[feat, &warped], 1), train);
        (fused, field)
    }
}

/// Samples `feat` at `p + field(p)` where `|field(p)| > min_magnitude`, at `p` elsewhere.
///
/// # Shapes
/// `feat [B, C, H, W]`, `field [B, 2, H, W]` (row, column offsets) -> `[B, C, H, W]`
pub fn warp(feat: &Tensor, field: &Tensor, min_magnitude: f64) -> Tensor {
    let (_, _, h, w) = feat.size4().expect("4-d features");
    let opts = (field.kind(), field.device());
    let magnitude = field
        .square()
        .sum_dim_intlist([1i64].as_slice(), true, field.kind())
        .sqrt();
    let keep = magnitude.gt(min_magnitude).to_kind(field.kind()).detach();
    let offset = field * keep;
    let rows = Tensor::arange(h, opts).view([1, h, 1]);
    let cols = Tensor::arange(w, opts).view([1, 1, w]);
    let y = offset.select(1, 0) + rows;
    let x = offset.select(1, 1) + cols;
    // Normalised coordinates for align_corners = true: -1 is pixel 0, +1 is pixel side-1.
    let norm = |v: Tensor, side: i64| {
        if side > 1 {
            v * (2.0 / (side - 1) as f64) - 1.0
        } else {
            v * 0.0
        }
    };
    let grid = Tensor::stack(&[norm(x, w), norm(y, h)], 3);
    let grid = if grid.kind() != feat.kind() {
        grid.to_kind(feat.kind())
    } else {
        grid
    };
    feat.grid_sampler_2d(&grid, 0, 1, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn feat() -> Tensor {
        Tensor::arange(2 * 5 * 6, (Kind::Float, Device::Cpu)).view([1, 2, 5, 6])
    }

    fn field(dy: f64, dx: f64) -> Tensor {
        let f = Tensor::zeros([1, 2, 5, 6], (Kind::Float, Device::Cpu));
        let _ = f.narrow(1, 0, 1).fill_(dy);
        let _ = f.narrow(1, 1, 1).fill_(dx);
        f
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn zero_and_small_fields_do_not_warp() {
        let f = feat();
        assert!(max_diff(&warp(&f, &field(0.0, 0.0), 0.5), &f) < 1e-5);
        // Magnitude 0.5 is not above the threshold: no warp.
        assert!(max_diff(&warp(&f, &field(0.3, 0.4), 0.5), &f) < 1e-5);
    }

    #[test]
    fn unit_fields_shift_rows_and_columns() {
        let f = feat();
        // Row offset +1: pixel (r, c) takes the feature of (r + 1, c); the last row clamps.
        let down = warp(&f, &field(1.0, 0.0), 0.5);
        let want = Tensor::cat(&[f.narrow(2, 1, 4), f.narrow(2, 4, 1)], 2);
        assert!(max_diff(&down, &want) < 1e-4);
        // Column offset -1: pixel (r, c) takes (r, c - 1); the first column clamps.
        let left = warp(&f, &field(0.0, -1.0), 0.5);
        let want = Tensor::cat(&[f.narrow(3, 0, 1), f.narrow(3, 0, 5)], 3);
        assert!(max_diff(&left, &want) < 1e-4);
    }
}
