//! Direction-field targets for the pixel classification module (Cheng et al., "Learning
//! Directional Feature Maps for Cardiac MRI Segmentation", MICCAI 2020).
//!
//! For every pixel p of a class region (label c > 0), let q be its nearest pixel outside
//! the region (label != c, exact Euclidean distance); the target is the unit vector
//! (p - q) / |p - q|, pointing from the boundary into the region. Background pixels, and
//! pixels of a class that fills the whole slice (no outside pixel), get (0, 0).
//!
//! Layout: `[2, H, W]`, channel 0 = row (y) component, channel 1 = column (x) component.
//! (`grid_sample` takes (x, y): swap the channels there.)

use ndarray::{Array2, Array3, ArrayView2, ArrayViewMut3};

use crate::acdc::NUM_CLASSES;
use crate::edt::nearest_feature_2d;

/// Direction field of a label slice `[H, W]`, shape `[2, H, W]` (see the module docs).
pub fn direction_field(labels: ArrayView2<'_, u8>) -> Array3<f32> {
    let (h, w) = labels.dim();
    let mut out = Array3::zeros((2, h, w));
    direction_field_into(labels, out.view_mut());
    out
}

/// Writes the direction field of `labels` into `out` (`[2, H, W]`), overwriting it.
pub fn direction_field_into(labels: ArrayView2<'_, u8>, mut out: ArrayViewMut3<'_, f32>) {
    let (h, w) = labels.dim();
    assert_eq!(
        out.dim(),
        (2, h, w),
        "direction field buffer must be [2, H, W]"
    );
    out.fill(0.0);
    for class in 1..NUM_CLASSES as u8 {
        if !labels.iter().any(|&v| v == class) {
            continue;
        }
        let outside: Array2<bool> = labels.mapv(|v| v != class);
        let nf = nearest_feature_2d(outside.view(), [1.0, 1.0]);
        for ((y, x), &v) in labels.indexed_iter() {
            if v != class {
                continue;
            }
            let (qy, qx) = nf.nearest[[y, x]];
            if qy == u32::MAX {
                continue;
            }
            let dy = y as f32 - qy as f32;
            let dx = x as f32 - qx as f32;
            let n = (dy * dy + dx * dx).sqrt();
            out[[0, y, x]] = dy / n;
            out[[1, y, x]] = dx / n;
        }
    }
}
