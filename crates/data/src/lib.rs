//! slimseg-data: everything slimseg needs from cardiac MRI data, without libtorch.
//!
//! - [`nii`]: NIfTI-1 read/write (`.nii`, `.nii.gz`), geometry from pixdim/qform, labels
//!   written with the source image's header so they overlay it in viewers.
//! - [`orient`]: the through-plane axis of a volume (from its affine and spacing) and the
//!   canonical slice order every stage sees, with the map back to the file's grid.
//! - [`acdc`]: the ACDC layout (patients, `Info.cfg`, ED/ES frames, ground truth) and a
//!   whole-tree check.
//! - [`split`]: the TransUNet/Swin-Unet default split, k-fold and explicit split files.
//! - [`pipeline`]: the 2D protocol: per-volume normalisation, slices, cubic/nearest resize
//!   to the model size and back, TransUNet augmentation, deterministic parallel batches as
//!   contiguous `f32`/`i64` buffers.
//! - [`synth`]: a synthetic ACDC-format cohort (short-axis stacks with LV, myocardium and
//!   RV that vary by patient, phase and slice).
//! - [`metrics`]: Dice and HD95 per class (medpy semantics, mm or voxels) with the
//!   `transunet` and `strict` empty-mask conventions.
//! - [`edt`]: exact Euclidean distance transforms (Felzenszwalb-Huttenlocher), anisotropic,
//!   with nearest-point indices in 2D.
//! - [`direction`]: direction-field targets for the pixel classification module.
//! - [`viz`]: PNG rendering of a slice and its mask.
//!
//! Array conventions: volumes are `[z, y, x]` in C order (one short-axis slice is a
//! contiguous `[y, x]` image); spacings given to metrics are in the same axis order.

// Grid code indexes several arrays with the same loop variable, as the formulas do.
#![allow(clippy::needless_range_loop)]

pub mod acdc;
pub mod direction;
pub mod edt;
pub mod error;
mod fsutil;
pub mod metrics;
pub mod nii;
pub mod orient;
pub mod pipeline;
pub mod split;
pub mod synth;
pub mod viz;

pub use acdc::{AcdcDataset, AcdcFrame, AcdcPatient, Group, PatientInfo, Phase, Subset};
pub use error::{DataError, Result};
pub use fsutil::{staging_sibling, write_atomic};
