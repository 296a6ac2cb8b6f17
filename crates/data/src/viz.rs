//! PNG rendering of a slice next to its mask overlay (for reports and figures).

use std::path::Path;

use ndarray::ArrayView2;

use crate::error::{DataError, Result};
use crate::fsutil::write_atomic;

/// Overlay colours of labels 1 (RV), 2 (MYO), 3 (LV).
pub const LABEL_COLORS: [[u8; 3]; 3] = [[230, 60, 60], [60, 200, 80], [70, 120, 240]];

/// Renders `[image | image with label overlay]` as RGB bytes (`height x 2*width x 3`).
/// The image is windowed to its 1st-99th percentile range.
pub fn slice_with_mask_rgb(
    image: ArrayView2<'_, f32>,
    labels: ArrayView2<'_, u8>,
) -> Result<(usize, usize, Vec<u8>)> {
    if image.dim() != labels.dim() {
        return Err(DataError::InvalidArgument(format!(
            "image {:?} and labels {:?} differ in shape",
            image.dim(),
            labels.dim()
        )));
    }
    let (h, w) = image.dim();
    let mut vals: Vec<f32> = image.iter().copied().filter(|v| v.is_finite()).collect();
    vals.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        vals.get(((vals.len().saturating_sub(1)) as f64 * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let (lo, hi) = (pick(0.01), pick(0.99));
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    let out_w = 2 * w;
    let mut rgb = vec![0u8; h * out_w * 3];
    for ((y, x), &v) in image.indexed_iter() {
        let g = ((v - lo) * scale).clamp(0.0, 255.0) as u8;
        let left = (y * out_w + x) * 3;
        rgb[left..left + 3].copy_from_slice(&[g, g, g]);
        let right = (y * out_w + w + x) * 3;
        let l = labels[[y, x]];
        let px = if (1..=3).contains(&l) {
            let c = LABEL_COLORS[l as usize - 1];
            [0, 1, 2].map(|i| ((g as u16 * 2 + c[i] as u16 * 3) / 5) as u8)
        } else {
            [g, g, g]
        };
        rgb[right..right + 3].copy_from_slice(&px);
    }
    Ok((h, out_w, rgb))
}

/// Writes [`slice_with_mask_rgb`] as a PNG file (atomically).
pub fn write_slice_png(
    path: &Path,
    image: ArrayView2<'_, f32>,
    labels: ArrayView2<'_, u8>,
) -> Result<()> {
    let (h, w, rgb) = slice_with_mask_rgb(image, labels)?;
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| {
            DataError::InvalidArgument(format!("{}: PNG header: {e}", path.display()))
        })?;
        writer.write_image_data(&rgb).map_err(|e| {
            DataError::InvalidArgument(format!("{}: PNG data: {e}", path.display()))
        })?;
    }
    write_atomic(path, &buf)
}
