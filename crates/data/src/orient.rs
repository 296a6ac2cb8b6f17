//! Slice orientation: which voxel axis of a volume is the through-plane (slice) axis, and
//! one canonical order of its voxels in which every consumer (training, evaluation,
//! prediction) sees it.
//!
//! The model segments 2D short-axis slices, so it must cut a volume along the axis the
//! stack was acquired on, whatever order the file stores its axes in. NIfTI says nothing
//! about which axis that is; slimseg finds it from the geometry:
//!
//! - **Through-plane axis**: the voxel axis whose spacing (the affine's column norm) is
//!   at least 1.2 times both others: ACDC slices lie 5-10 mm apart, in-plane pixels are
//!   1.3-1.7 mm. When no axis stands out so (isotropic or thin-slice volumes), the file's
//!   third axis, the NIfTI convention for stacks. A single-slice volume's slice axis is
//!   its axis of extent 1. The slice axis becomes the last axis.
//! - **In-plane axes**, by [`OrientationPolicy`]:
//!   - `stored` (the default, as nnU-Net's spacing-based transpose): the two other axes
//!     keep their order and direction in the file. A file with its slices on the third
//!     axis is used exactly as stored, so the anatomy keeps the orientation the scanner
//!     gave it in voxel space, which is consistent across patients.
//!   - `world` (as MONAI's `Orientation("RAS")`): each in-plane axis is matched to the
//!     world axis it points along most, greedily as nibabel's `io_orientation` does; the
//!     one matched to the lower world axis (R < A < S) becomes `x`, and each is reversed
//!     if needed to point to +R, +A or +S; the slice axis is reversed when its dominant
//!     world component is negative. The canonical order then depends only on the world
//!     directions of the axes, so any copy of a volume with its axes permuted or reversed
//!     (and its affine changed to match) has the same canonical voxels, bit for bit.
//!     The price: patients whose in-plane axes point along other world axes are turned
//!     or mirrored relative to the others in voxel space.
//!
//! No rule can do both: a file and its copy with one in-plane axis reversed both store
//! their slices last, so a rule that keeps every such file as stored cannot give them
//! the same voxels. Under `stored`, copies with the slice axis moved (keeping the
//! in-plane order) or reversed get the same labels; under `world`, every permuted or
//! reversed copy does.

use std::path::Path;

use ndarray::{Array3, ArrayView3, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::nii::{Affine, NiftiHeader, Volume, column_norms};

/// How the two in-plane axes of a volume are ordered (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrientationPolicy {
    /// In-plane axes in the file's order and direction; only the slice axis moves last.
    #[default]
    Stored,
    /// In-plane axes ordered and directed by the world axes they point along (RAS+).
    World,
}

/// How much larger than both others a spacing must be to mark the slice axis.
const SLICE_RATIO: f64 = 1.2;

/// How a file's voxel axes map to the canonical slice order: canonical NIfTI axis `c`
/// (0 = x, 1 = y, 2 = z, the slice axis) is file axis `perm[c]`, reversed when `flip[c]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceOrientation {
    /// File axis (NIfTI order, 0 = x) that becomes canonical axis `c`.
    pub perm: [usize; 3],
    /// Whether canonical axis `c` runs opposite to its file axis.
    pub flip: [bool; 3],
}

impl SliceOrientation {
    /// The orientation that changes nothing.
    pub const IDENTITY: SliceOrientation = SliceOrientation {
        perm: [0, 1, 2],
        flip: [false; 3],
    };

    /// Finds the through-plane axis and the canonical in-plane order of a 3D volume with
    /// header `h` under `policy` (see the module docs); `path` names the file in errors.
    pub fn of(h: &NiftiHeader, path: &Path, policy: OrientationPolicy) -> Result<Self> {
        let a = h.affine();
        let spacing = column_norms(&a);
        if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(DataError::InvalidNifti {
                path: path.to_path_buf(),
                reason: format!("the affine has degenerate voxel axes (spacings {spacing:?})"),
            });
        }
        // A single slice: its axis of extent 1 is the slice axis, whatever its spacing
        // (2D files have no third spacing at all).
        let xyz = h.shape_xyz();
        let single: Vec<usize> = (0..3).filter(|&j| xyz[j] == 1).collect();
        let widest = (0..3)
            .max_by(|&p, &q| spacing[p].total_cmp(&spacing[q]))
            .expect("three axes");
        let clearly_widest = (0..3)
            .filter(|&j| j != widest)
            .all(|j| spacing[widest] >= SLICE_RATIO * spacing[j]);
        let slice = match single.last() {
            Some(&j) => j,
            None if clearly_widest => widest,
            None => 2,
        };
        let inplane: Vec<usize> = (0..3).filter(|&j| j != slice).collect();
        if policy == OrientationPolicy::Stored {
            return Ok(SliceOrientation {
                perm: [inplane[0], inplane[1], slice],
                flip: [false; 3],
            });
        }
        let unit = |j: usize| [a[0][j], a[1][j], a[2][j]].map(|v| v / spacing[j]);
        // Greedy matching of the two in-plane axes to world axes, strongest first.
        let mut best = (0usize, 0usize, -1.0f64);
        for (i, &j) in inplane.iter().enumerate() {
            for w in 0..3 {
                let v = unit(j)[w].abs();
                if v > best.2 {
                    best = (i, w, v);
                }
            }
        }
        let (first, world_first) = (best.0, best.1);
        let other = inplane[1 - first];
        let world_other = (0..3)
            .filter(|&w| w != world_first)
            .max_by(|&p, &q| unit(other)[p].abs().total_cmp(&unit(other)[q].abs()))
            .expect("two world axes remain");
        let mut matched = [(inplane[first], world_first), (other, world_other)];
        matched.sort_by_key(|&(_, w)| w);
        let dominant = |j: usize| {
            let u = unit(j);
            (0..3)
                .max_by(|&p, &q| u[p].abs().total_cmp(&u[q].abs()))
                .expect("three components")
        };
        let perm = [matched[0].0, matched[1].0, slice];
        let world = [matched[0].1, matched[1].1, dominant(slice)];
        let flip = [0, 1, 2].map(|c| unit(perm[c])[world[c]] < 0.0);
        Ok(SliceOrientation { perm, flip })
    }

    /// True when the canonical order is the file's own.
    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }

    /// The file's through-plane axis (NIfTI order: 0 = x, 1 = y, 2 = z).
    pub fn slice_axis(&self) -> usize {
        self.perm[2]
    }

    /// In words, e.g. `file axes (z, x, y) as (x, y, slices), x reversed`.
    pub fn describe(&self) -> String {
        const NAMES: [&str; 3] = ["x", "y", "z"];
        let mut s = format!(
            "file axes ({}, {}, {}) as (x, y, slices)",
            NAMES[self.perm[0]], NAMES[self.perm[1]], NAMES[self.perm[2]]
        );
        let reversed: Vec<&str> = (0..3)
            .filter(|&c| self.flip[c])
            .map(|c| NAMES[self.perm[c]])
            .collect();
        if !reversed.is_empty() {
            s.push_str(&format!(", {} reversed", reversed.join(" and ")));
        }
        s
    }

    /// Canonical array axis `i` is file array axis `array_perm()[i]` (array axis `2 - c`
    /// holds NIfTI axis `c`).
    fn array_perm(&self) -> [usize; 3] {
        [2 - self.perm[2], 2 - self.perm[1], 2 - self.perm[0]]
    }

    /// The voxels of a file-order array `[z, y, x]` in canonical order `[z', y', x']`.
    pub fn to_canonical<T: Clone>(&self, data: ArrayView3<'_, T>) -> Array3<T> {
        let mut v = data.permuted_axes(self.array_perm());
        for c in 0..3 {
            if self.flip[c] {
                v.invert_axis(Axis(2 - c));
            }
        }
        v.as_standard_layout().into_owned()
    }

    /// The inverse of [`to_canonical`](Self::to_canonical): a canonical-order array back
    /// in the file's order.
    pub fn from_canonical<T: Clone>(&self, data: ArrayView3<'_, T>) -> Array3<T> {
        let mut v = data;
        for c in 0..3 {
            if self.flip[c] {
                v.invert_axis(Axis(2 - c));
            }
        }
        let mut q = [0usize; 3];
        for (i, &pi) in self.array_perm().iter().enumerate() {
            q[pi] = i;
        }
        v.permuted_axes(q).as_standard_layout().into_owned()
    }

    /// The affine of the canonical grid, given the file's affine and `[x, y, z]` extents.
    pub fn canonical_affine(&self, a: &Affine, xyz: [usize; 3]) -> Affine {
        let mut out = *a;
        for i in 0..3 {
            out[i][3] = a[i][3];
            for c in 0..3 {
                let f = self.perm[c];
                let sign = if self.flip[c] { -1.0 } else { 1.0 };
                out[i][c] = sign * a[i][f];
                if self.flip[c] {
                    out[i][3] += a[i][f] * (xyz[f] as f64 - 1.0);
                }
            }
        }
        out
    }

    /// The header of the canonical volume: extents, spacing, qform and sform permuted
    /// to match, so that it still maps every voxel to the same world point.
    pub fn canonical_header(&self, h: &NiftiHeader) -> NiftiHeader {
        let xyz = h.shape_xyz();
        let mut out = h.clone();
        for c in 0..3 {
            out.dim[c + 1] = h.dim[self.perm[c] + 1];
            out.pixdim[c + 1] = h.pixdim[self.perm[c] + 1];
        }
        if let Some(q) = h.qform_affine() {
            out.set_qform(&self.canonical_affine(&q, xyz));
        }
        if let Some(s) = h.sform_affine() {
            let s = self.canonical_affine(&s, xyz);
            for i in 0..3 {
                for j in 0..4 {
                    out.srow[i][j] = s[i][j] as f32;
                }
            }
        }
        out
    }
}

impl<T: Clone> Volume<T> {
    /// This volume in canonical slice order under `policy` (see [`SliceOrientation`]),
    /// with a header that describes the new grid, and the orientation that maps results
    /// back.
    pub fn into_slice_order(
        self,
        policy: OrientationPolicy,
    ) -> Result<(Volume<T>, SliceOrientation)> {
        let o = SliceOrientation::of(&self.header, &self.path, policy)?;
        Ok((self.reoriented(&o), o))
    }

    /// This volume reordered by `o` (computed for this volume or one on the same grid).
    pub fn reoriented(self, o: &SliceOrientation) -> Volume<T> {
        if o.is_identity() {
            return self;
        }
        Volume {
            data: o.to_canonical(self.data.view()),
            header: o.canonical_header(&self.header),
            path: self.path,
        }
    }
}
