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

use ndarray::{Array2, Array3, ArrayView2, ArrayViewMut3, s};

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
    // Bounding box of each class.
    let mut bbox = [(usize::MAX, 0usize, usize::MAX, 0usize); NUM_CLASSES];
    for ((y, x), &v) in labels.indexed_iter() {
        if let Some(b) = bbox.get_mut(v as usize) {
            *b = (b.0.min(y), b.1.max(y), b.2.min(x), b.3.max(x));
        }
    }
    for class in 1..NUM_CLASSES as u8 {
        let (y0, y1, x0, x1) = bbox[class as usize];
        if y0 == usize::MAX {
            continue;
        }
        // The nearest outside pixel of a region pixel lies in the region's bounding box
        // grown by one pixel: projecting any farther outside pixel onto that box gives a
        // closer pixel that is also outside. So the transform runs on that crop only.
        let (y0, x0) = (y0.saturating_sub(1), x0.saturating_sub(1));
        let (y1, x1) = ((y1 + 1).min(h - 1), (x1 + 1).min(w - 1));
        let crop = labels.slice(s![y0..=y1, x0..=x1]);
        let outside: Array2<bool> = crop.mapv(|v| v != class);
        let nf = nearest_feature_2d(outside.view(), [1.0, 1.0]);
        for ((cy, cx), &v) in crop.indexed_iter() {
            if v != class {
                continue;
            }
            let (qy, qx) = nf.nearest[[cy, cx]];
            if qy == u32::MAX {
                continue;
            }
            let dy = cy as f32 - qy as f32;
            let dx = cx as f32 - qx as f32;
            let n = (dy * dy + dx * dx).sqrt();
            out[[0, y0 + cy, x0 + cx]] = dy / n;
            out[[1, y0 + cy, x0 + cx]] = dx / n;
        }
    }
}
