//! NIfTI-1 reading and writing (`.nii` and `.nii.gz`), written for robustness:
//! every malformed input gives a typed [`DataError`] naming the file, never a panic.
//!
//! Arrays are held in C order with shape `[z, y, x]` (`[t, z, y, x]` for 4D): the file's
//! own voxel order, so one short-axis slice `data.index_axis(Axis(0), z)` is a contiguous
//! `[y, x]` image. Spacing and affines keep NIfTI's `(x, y, z)` order. Which axis is the
//! slice axis is decided in [`crate::orient`], from the geometry.
//!
//! Geometry follows the NIfTI-1 standard: [`NiftiHeader::affine`] prefers the qform
//! (method 2), then the sform (method 3), then `pixdim` alone. Spacing always comes from
//! `pixdim`, which is what the qform uses; ACDC's sform is known to be wrong. A qform
//! quaternion with `b^2 + c^2 + d^2 > 1` (beyond float32 rounding) is rejected, as
//! nibabel does: it describes no rotation.
//!
//! Memory is bounded and predictable: voxels are decoded from a stream (through the gzip
//! decoder when compressed) straight into the final element type, 1 MiB at a time, so a
//! read holds one copy of the volume (`f32` for images, `u8` for labels) and no copy of
//! the file; the voxel count the header declares is checked against [`max_voxels`]
//! (default [`DEFAULT_MAX_VOXELS`], set by `--max-voxels` or `SLIMSEG_MAX_VOXELS`)
//! before anything is allocated. NaN and infinite image voxels are an error
//! ([`NonFinite`]). The whole payload is always read, so truncation and a bad gzip
//! checksum are errors.
//!
//! ## Why slimseg has its own reader
//!
//! The design names the `nifti` crate (nifti-rs); it stays a dev-dependency as the
//! interoperability test (`tests/nifti.rs` reads our files with it). It is not the
//! reader because, on inputs slimseg must handle:
//! - `NiftiHeader::affine()` panics on `pixdim[0] = 0` (a qfac that nibabel and
//!   `nifti1_io` read as 1) and on negative spacings, in 0.17 and 0.18: a bad file
//!   would abort the process instead of giving an error;
//! - 0.18 ignores `vox_offset` when the extension flag is 0 and reads the padding
//!   between header and data as voxels;
//! - it prefers the sform, which on ACDC files is wrong (the qform carries the
//!   geometry).
//!
//! Reference: NIfTI-1 data format, <https://nifti.nimh.nih.gov/nifti-1/>.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use ndarray::{Array3, Array4, ArrayView3};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::fsutil::write_atomic;

/// Size of a NIfTI-1 header in bytes.
pub const HEADER_SIZE: usize = 348;
/// Default of [`max_voxels`]: 2^27 voxels (512 MiB as `f32`), far above an ACDC cine
/// sequence (about 256 x 256 x 10 x 30 = 2^24.3 voxels).
pub const DEFAULT_MAX_VOXELS: u64 = 1 << 27;

/// Environment variable that sets [`max_voxels`] when [`set_max_voxels`] was not called.
pub const MAX_VOXELS_ENV: &str = "SLIMSEG_MAX_VOXELS";

/// 0 = not set by [`set_max_voxels`].
static MAX_VOXELS: AtomicU64 = AtomicU64::new(0);

/// Sets the largest volume (in voxels, all dimensions multiplied) that the readers
/// accept, for the whole process. Readers check it against the header before they
/// allocate, so memory stays bounded by about `4 x limit` bytes per volume read.
pub fn set_max_voxels(limit: u64) {
    MAX_VOXELS.store(limit.max(1), Ordering::Relaxed);
}

/// The voxel limit of the readers: the value of [`set_max_voxels`], else the
/// `SLIMSEG_MAX_VOXELS` environment variable, else [`DEFAULT_MAX_VOXELS`].
pub fn max_voxels() -> u64 {
    match MAX_VOXELS.load(Ordering::Relaxed) {
        0 => std::env::var(MAX_VOXELS_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&v| v > 0)
            .unwrap_or(DEFAULT_MAX_VOXELS),
        n => n,
    }
}

/// NIfTI datatype codes supported by this reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NiftiType {
    /// `DT_UINT8` (2).
    U8,
    /// `DT_INT8` (256).
    I8,
    /// `DT_INT16` (4).
    I16,
    /// `DT_UINT16` (512).
    U16,
    /// `DT_INT32` (8).
    I32,
    /// `DT_UINT32` (768).
    U32,
    /// `DT_INT64` (1024).
    I64,
    /// `DT_UINT64` (1280).
    U64,
    /// `DT_FLOAT32` (16).
    F32,
    /// `DT_FLOAT64` (64).
    F64,
}

impl NiftiType {
    /// Maps a header `datatype` code to a supported type.
    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            2 => NiftiType::U8,
            256 => NiftiType::I8,
            4 => NiftiType::I16,
            512 => NiftiType::U16,
            8 => NiftiType::I32,
            768 => NiftiType::U32,
            1024 => NiftiType::I64,
            1280 => NiftiType::U64,
            16 => NiftiType::F32,
            64 => NiftiType::F64,
            _ => return None,
        })
    }

    /// The header `datatype` code.
    pub fn code(self) -> i16 {
        match self {
            NiftiType::U8 => 2,
            NiftiType::I8 => 256,
            NiftiType::I16 => 4,
            NiftiType::U16 => 512,
            NiftiType::I32 => 8,
            NiftiType::U32 => 768,
            NiftiType::I64 => 1024,
            NiftiType::U64 => 1280,
            NiftiType::F32 => 16,
            NiftiType::F64 => 64,
        }
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            NiftiType::U8 | NiftiType::I8 => 1,
            NiftiType::I16 | NiftiType::U16 => 2,
            NiftiType::I32 | NiftiType::U32 | NiftiType::F32 => 4,
            NiftiType::I64 | NiftiType::U64 | NiftiType::F64 => 8,
        }
    }

    /// Lower-case name as nibabel prints it (`uint8`, `int16`, `float32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            NiftiType::U8 => "uint8",
            NiftiType::I8 => "int8",
            NiftiType::I16 => "int16",
            NiftiType::U16 => "uint16",
            NiftiType::I32 => "int32",
            NiftiType::U32 => "uint32",
            NiftiType::I64 => "int64",
            NiftiType::U64 => "uint64",
            NiftiType::F32 => "float32",
            NiftiType::F64 => "float64",
        }
    }

    fn decode(self, bytes: &[u8], big_endian: bool) -> f64 {
        macro_rules! num {
            ($t:ty, $n:expr) => {{
                let mut b = [0u8; $n];
                b.copy_from_slice(&bytes[..$n]);
                if big_endian {
                    <$t>::from_be_bytes(b) as f64
                } else {
                    <$t>::from_le_bytes(b) as f64
                }
            }};
        }
        match self {
            NiftiType::U8 => bytes[0] as f64,
            NiftiType::I8 => bytes[0] as i8 as f64,
            NiftiType::I16 => num!(i16, 2),
            NiftiType::U16 => num!(u16, 2),
            NiftiType::I32 => num!(i32, 4),
            NiftiType::U32 => num!(u32, 4),
            NiftiType::I64 => num!(i64, 8),
            NiftiType::U64 => num!(u64, 8),
            NiftiType::F32 => num!(f32, 4),
            NiftiType::F64 => num!(f64, 8),
        }
    }
}

/// A voxel type this crate can write.
pub trait NiftiElement: Copy + Send + Sync {
    /// The datatype written to the header.
    const TYPE: NiftiType;
    /// Appends the little-endian bytes of `self`.
    fn put_le(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $v:ident) => {
        impl NiftiElement for $t {
            const TYPE: NiftiType = NiftiType::$v;
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
element!(u8, U8);
element!(i16, I16);
element!(u16, U16);
element!(i32, I32);
element!(f32, F32);
element!(f64, F64);

/// All fields of a NIfTI-1 header, in file order. Field meanings are those of the
/// standard (`nifti1.h`); only the geometry helpers interpret them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NiftiHeader {
    /// `dim_info` (frequency/phase/slice dimensions).
    pub dim_info: u8,
    /// `dim[0]` = number of dimensions, `dim[1..]` extents.
    pub dim: [i16; 8],
    /// `intent_p1..p3`.
    pub intent_p: [f32; 3],
    /// `intent_code`.
    pub intent_code: i16,
    /// `datatype` code.
    pub datatype: i16,
    /// `bitpix`, bits per voxel.
    pub bitpix: i16,
    /// `slice_start`.
    pub slice_start: i16,
    /// `pixdim[0]` = qfac, `pixdim[1..4]` spacing in `xyzt_units` (mm), `pixdim[4]` time step.
    pub pixdim: [f32; 8],
    /// `vox_offset`: byte offset of the voxel data in a `.nii` file.
    pub vox_offset: f32,
    /// `scl_slope` (0 means no scaling).
    pub scl_slope: f32,
    /// `scl_inter`.
    pub scl_inter: f32,
    /// `slice_end`.
    pub slice_end: i16,
    /// `slice_code`.
    pub slice_code: u8,
    /// `xyzt_units` (2 = mm, 8 = s, 16 = ms).
    pub xyzt_units: u8,
    /// `cal_max` display maximum.
    pub cal_max: f32,
    /// `cal_min` display minimum.
    pub cal_min: f32,
    /// `slice_duration`.
    pub slice_duration: f32,
    /// `toffset`.
    pub toffset: f32,
    /// `descrip`, 80 bytes of text.
    pub descrip: String,
    /// `aux_file`, 24 bytes of text.
    pub aux_file: String,
    /// `qform_code` (0 unknown, 1 scanner, ...).
    pub qform_code: i16,
    /// `sform_code`.
    pub sform_code: i16,
    /// `quatern_b, quatern_c, quatern_d`.
    pub quatern: [f32; 3],
    /// `qoffset_x, qoffset_y, qoffset_z` in mm.
    pub qoffset: [f32; 3],
    /// `srow_x, srow_y, srow_z`: rows of the sform affine.
    pub srow: [[f32; 4]; 3],
    /// `intent_name`, 16 bytes of text.
    pub intent_name: String,
}

/// A 4x4 affine from voxel indices `(i, j, k, 1)` (x, y, z order) to world millimetres.
pub type Affine = [[f64; 4]; 4];

impl NiftiHeader {
    /// A header for a 3D volume of `shape` `[x, y, z]` with the given spacing (mm), an
    /// axis-aligned qform (code 1, scanner) and datatype `dtype`.
    pub fn new_3d(shape: [usize; 3], spacing: [f64; 3], dtype: NiftiType) -> Self {
        let mut h = NiftiHeader {
            dim_info: 0,
            dim: [3, 1, 1, 1, 1, 1, 1, 1],
            intent_p: [0.0; 3],
            intent_code: 0,
            datatype: dtype.code(),
            bitpix: (dtype.size() * 8) as i16,
            slice_start: 0,
            pixdim: [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            vox_offset: 352.0,
            scl_slope: 0.0,
            scl_inter: 0.0,
            slice_end: 0,
            slice_code: 0,
            xyzt_units: 2,
            cal_max: 0.0,
            cal_min: 0.0,
            slice_duration: 0.0,
            toffset: 0.0,
            descrip: String::new(),
            aux_file: String::new(),
            qform_code: 1,
            sform_code: 0,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [[0.0; 4]; 3],
            intent_name: String::new(),
        };
        for a in 0..3 {
            h.dim[a + 1] = shape[a] as i16;
            h.pixdim[a + 1] = spacing[a] as f32;
        }
        h
    }

    /// Parses a 348-byte header (either byte order). `path` is used in error messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<(Self, bool)> {
        let invalid = |reason: String| DataError::InvalidNifti {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() < HEADER_SIZE {
            return Err(DataError::TruncatedNifti {
                path: path.to_path_buf(),
                expected: HEADER_SIZE as u64,
                found: bytes.len() as u64,
            });
        }
        let le = i32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
        let be = i32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
        let big_endian = if le == 348 {
            false
        } else if be == 348 {
            true
        } else if le == 540 || be == 540 {
            return Err(invalid("NIfTI-2 headers are not supported".into()));
        } else {
            return Err(invalid(format!("sizeof_hdr is {le}, expected 348")));
        };
        let magic = &bytes[344..348];
        if magic == b"ni1\0" {
            return Err(invalid(
                "magic \"ni1\": a header of a .hdr/.img pair, whose voxels are in another \
                 file; only single-file .nii / .nii.gz is supported (convert the pair first)"
                    .into(),
            ));
        }
        if magic != b"n+1\0" {
            return Err(invalid(format!(
                "magic is {:?}, expected \"n+1\"",
                String::from_utf8_lossy(&magic[..3])
            )));
        }
        let r = Fields { bytes, big_endian };
        let mut dim = [0i16; 8];
        let mut pixdim = [0f32; 8];
        for i in 0..8 {
            dim[i] = r.i16(40 + 2 * i);
            pixdim[i] = r.f32(76 + 4 * i);
        }
        let srow = [
            [r.f32(280), r.f32(284), r.f32(288), r.f32(292)],
            [r.f32(296), r.f32(300), r.f32(304), r.f32(308)],
            [r.f32(312), r.f32(316), r.f32(320), r.f32(324)],
        ];
        let h = NiftiHeader {
            dim_info: bytes[39],
            dim,
            intent_p: [r.f32(56), r.f32(60), r.f32(64)],
            intent_code: r.i16(68),
            datatype: r.i16(70),
            bitpix: r.i16(72),
            slice_start: r.i16(74),
            pixdim,
            vox_offset: r.f32(108),
            scl_slope: r.f32(112),
            scl_inter: r.f32(116),
            slice_end: r.i16(120),
            slice_code: bytes[122],
            xyzt_units: bytes[123],
            cal_max: r.f32(124),
            cal_min: r.f32(128),
            slice_duration: r.f32(132),
            toffset: r.f32(136),
            descrip: text(&bytes[148..228]),
            aux_file: text(&bytes[228..252]),
            qform_code: r.i16(252),
            sform_code: r.i16(254),
            quatern: [r.f32(256), r.f32(260), r.f32(264)],
            qoffset: [r.f32(268), r.f32(272), r.f32(276)],
            srow,
            intent_name: text(&bytes[328..344]),
        };
        h.validate().map_err(invalid)?;
        Ok((h, big_endian))
    }

    /// Checks the fields the reader relies on; returns what is wrong.
    fn validate(&self) -> std::result::Result<(), String> {
        let nd = self.dim[0];
        if !(1..=7).contains(&nd) {
            return Err(format!("dim[0] is {nd}, expected 1..=7"));
        }
        for i in 1..=nd as usize {
            if self.dim[i] < 1 {
                return Err(format!("dim[{i}] is {}, expected >= 1", self.dim[i]));
            }
        }
        let ty = NiftiType::from_code(self.datatype)
            .ok_or_else(|| format!("unsupported datatype code {}", self.datatype))?;
        if self.bitpix as usize != ty.size() * 8 {
            return Err(format!(
                "bitpix is {} but datatype {} has {} bits",
                self.bitpix,
                ty.name(),
                ty.size() * 8
            ));
        }
        if !self.vox_offset.is_finite() || self.vox_offset < HEADER_SIZE as f32 {
            return Err(format!(
                "vox_offset is {}, expected >= 348",
                self.vox_offset
            ));
        }
        if self.vox_offset > (1u64 << 24) as f32 || self.vox_offset.fract() != 0.0 {
            return Err(format!(
                "vox_offset is {}, expected a whole byte offset below 16 MiB",
                self.vox_offset
            ));
        }
        if self.voxel_count() == u64::MAX {
            return Err(format!(
                "dimensions {:?} describe more voxels than can be counted",
                self.shape()
            ));
        }
        for a in 1..=(nd.min(3) as usize) {
            let p = self.pixdim[a];
            if !p.is_finite() || p == 0.0 {
                return Err(format!("pixdim[{a}] is {p}, expected a non-zero spacing"));
            }
        }
        if !self.scl_slope.is_finite() || !self.scl_inter.is_finite() {
            return Err("scl_slope/scl_inter are not finite".into());
        }
        if self.qform_code > 0 {
            if self
                .quatern
                .iter()
                .chain(&self.qoffset)
                .any(|v| !v.is_finite())
            {
                return Err("quatern_b/c/d or qoffset_x/y/z are not finite".into());
            }
            // As nibabel: b^2 + c^2 + d^2 may exceed 1 only by float32 rounding, else the
            // quaternion is not a rotation.
            let [b, c, d] = self.quatern.map(f64::from);
            let norm2 = b * b + c * c + d * d;
            if 1.0 - norm2 < -3.0 * f32::EPSILON as f64 {
                let [qb, qc, qd] = self.quatern;
                return Err(format!(
                    "quaternion (b, c, d) = ({qb}, {qc}, {qd}) has b^2 + c^2 + d^2 = \
                     {norm2:.7} > 1: not a unit quaternion, so the qform is not a rotation"
                ));
            }
        }
        if self.sform_code > 0 && self.srow.iter().flatten().any(|v| !v.is_finite()) {
            return Err("srow_x/y/z are not finite".into());
        }
        Ok(())
    }

    /// Serialises to 348 little-endian bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let mut w = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        w(0, &348i32.to_le_bytes());
        w(38, b"r"); // `regular`, as written by most tools
        w(39, &[self.dim_info]);
        for i in 0..8 {
            w(40 + 2 * i, &self.dim[i].to_le_bytes());
            w(76 + 4 * i, &self.pixdim[i].to_le_bytes());
        }
        for i in 0..3 {
            w(56 + 4 * i, &self.intent_p[i].to_le_bytes());
        }
        w(68, &self.intent_code.to_le_bytes());
        w(70, &self.datatype.to_le_bytes());
        w(72, &self.bitpix.to_le_bytes());
        w(74, &self.slice_start.to_le_bytes());
        w(108, &self.vox_offset.to_le_bytes());
        w(112, &self.scl_slope.to_le_bytes());
        w(116, &self.scl_inter.to_le_bytes());
        w(120, &self.slice_end.to_le_bytes());
        w(122, &[self.slice_code]);
        w(123, &[self.xyzt_units]);
        w(124, &self.cal_max.to_le_bytes());
        w(128, &self.cal_min.to_le_bytes());
        w(132, &self.slice_duration.to_le_bytes());
        w(136, &self.toffset.to_le_bytes());
        w(148, &fixed_text::<80>(&self.descrip));
        w(228, &fixed_text::<24>(&self.aux_file));
        w(252, &self.qform_code.to_le_bytes());
        w(254, &self.sform_code.to_le_bytes());
        for i in 0..3 {
            w(256 + 4 * i, &self.quatern[i].to_le_bytes());
            w(268 + 4 * i, &self.qoffset[i].to_le_bytes());
            for j in 0..4 {
                w(280 + 16 * i + 4 * j, &self.srow[i][j].to_le_bytes());
            }
        }
        w(328, &fixed_text::<16>(&self.intent_name));
        w(344, b"n+1\0");
        b
    }

    /// The voxel datatype, if supported.
    pub fn data_type(&self) -> Option<NiftiType> {
        NiftiType::from_code(self.datatype)
    }

    /// Extents of the used dimensions, NIfTI order (`[x, y, z, t, ...]`).
    pub fn shape(&self) -> Vec<usize> {
        let nd = self.dim[0].clamp(0, 7) as usize;
        (1..=nd).map(|i| self.dim[i].max(0) as usize).collect()
    }

    /// `[x, y, z]` extents, with 1 for missing dimensions.
    pub fn shape_xyz(&self) -> [usize; 3] {
        let s = self.shape();
        [0, 1, 2].map(|a| s.get(a).copied().unwrap_or(1))
    }

    /// Number of voxels (product of the used extents; `u64::MAX` if it overflows).
    pub fn voxel_count(&self) -> u64 {
        self.shape()
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .unwrap_or(u64::MAX)
    }

    fn voxel_bytes(&self) -> u64 {
        let size = self.data_type().map(|t| t.size() as u64).unwrap_or(0);
        self.voxel_count().saturating_mul(size)
    }

    /// Voxel spacing `[x, y, z]` in millimetres, from `pixdim` (absolute values; missing
    /// dimensions count 1). Converts metres and micrometres to mm per `xyzt_units`.
    pub fn spacing(&self) -> [f64; 3] {
        let scale = self.mm_per_unit();
        let nd = self.dim[0].clamp(0, 7) as usize;
        [1, 2, 3].map(|a| {
            if a <= nd {
                (self.pixdim[a] as f64).abs() * scale
            } else {
                1.0
            }
        })
    }

    /// Millimetres per spatial unit of `xyzt_units` (metres, mm or micrometres; mm when
    /// unset).
    fn mm_per_unit(&self) -> f64 {
        match self.xyzt_units & 0x07 {
            1 => 1000.0,
            3 => 0.001,
            _ => 1.0,
        }
    }

    /// Sets `pixdim[1..4]` to `spacing` (mm).
    pub fn set_spacing(&mut self, spacing: [f64; 3]) {
        for a in 0..3 {
            self.pixdim[a + 1] = spacing[a] as f32;
        }
    }

    /// The qform affine (NIfTI method 2), if `qform_code > 0`.
    pub fn qform_affine(&self) -> Option<Affine> {
        if self.qform_code <= 0 {
            return None;
        }
        let [b, c, d] = self.quatern.map(|v| v as f64);
        let mut a2 = 1.0 - (b * b + c * c + d * d);
        let (b, c, d) = if a2 < 1e-7 {
            // Numerically a 180-degree rotation: renormalise (b, c, d), a = 0 (nifti1_io).
            let n = (b * b + c * c + d * d).sqrt().max(f64::MIN_POSITIVE);
            a2 = 0.0;
            (b / n, c / n, d / n)
        } else {
            (b, c, d)
        };
        let a = a2.sqrt();
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let s = self.spacing();
        let scale = [s[0], s[1], qfac * s[2]];
        let mut m = identity();
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = r[i][j] * scale[j];
            }
            m[i][3] = self.qoffset[i] as f64;
        }
        Some(m)
    }

    /// Sets the qform (quaternion, `qoffset`, `qfac` in `pixdim[0]` and the spacing in
    /// `pixdim[1..4]`) from a voxel-to-world affine whose 3x3 part is a rotation times a
    /// diagonal scale in mm (possibly with a reflection), as
    /// [`qform_affine`](Self::qform_affine) returns it: the spacing is stored in the
    /// header's own `xyzt_units`, the offset as given. `qform_code` becomes 1 if it was
    /// 0. This is the inverse of `qform_affine`, as in `nifti1_io`.
    pub fn set_qform(&mut self, m: &Affine) {
        let mut r = [[0.0f64; 3]; 3];
        let spacing = column_norms(m);
        for j in 0..3 {
            for i in 0..3 {
                r[i][j] = m[i][j] / spacing[j].max(f64::MIN_POSITIVE);
            }
        }
        let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
            - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
            + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
        let qfac = if det < 0.0 { -1.0 } else { 1.0 };
        for row in r.iter_mut() {
            row[2] *= qfac;
        }
        let (a, mut b, mut c, mut d);
        let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
        if trace > 0.5 {
            a = 0.5 * trace.sqrt();
            b = 0.25 * (r[2][1] - r[1][2]) / a;
            c = 0.25 * (r[0][2] - r[2][0]) / a;
            d = 0.25 * (r[1][0] - r[0][1]) / a;
        } else {
            let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
            let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
            let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
            if xd > 1.0 {
                b = 0.5 * xd.sqrt();
                c = 0.25 * (r[0][1] + r[1][0]) / b;
                d = 0.25 * (r[0][2] + r[2][0]) / b;
                a = 0.25 * (r[2][1] - r[1][2]) / b;
            } else if yd > 1.0 {
                c = 0.5 * yd.sqrt();
                b = 0.25 * (r[0][1] + r[1][0]) / c;
                d = 0.25 * (r[1][2] + r[2][1]) / c;
                a = 0.25 * (r[0][2] - r[2][0]) / c;
            } else {
                d = 0.5 * zd.sqrt();
                b = 0.25 * (r[0][2] + r[2][0]) / d;
                c = 0.25 * (r[1][2] + r[2][1]) / d;
                a = 0.25 * (r[1][0] - r[0][1]) / d;
            }
            if a < 0.0 {
                (b, c, d) = (-b, -c, -d);
            }
        }
        self.quatern = [b as f32, c as f32, d as f32];
        self.qoffset = [m[0][3] as f32, m[1][3] as f32, m[2][3] as f32];
        self.pixdim[0] = qfac as f32;
        let unit = self.mm_per_unit();
        for j in 0..3 {
            self.pixdim[j + 1] = (spacing[j] / unit) as f32;
        }
        if self.qform_code <= 0 {
            self.qform_code = 1;
        }
    }

    /// The sform affine (NIfTI method 3), if `sform_code > 0`.
    pub fn sform_affine(&self) -> Option<Affine> {
        if self.sform_code <= 0 {
            return None;
        }
        let mut m = identity();
        for i in 0..3 {
            for j in 0..4 {
                m[i][j] = self.srow[i][j] as f64;
            }
        }
        Some(m)
    }

    /// The voxel-to-world affine used by this crate: qform, else sform, else a diagonal of
    /// the spacing (method 1).
    pub fn affine(&self) -> Affine {
        self.qform_affine()
            .or_else(|| self.sform_affine())
            .unwrap_or_else(|| {
                let s = self.spacing();
                let mut m = identity();
                for (a, &v) in s.iter().enumerate() {
                    m[a][a] = v;
                }
                m
            })
    }

    /// Axis codes of the affine, as nibabel's `aff2axcodes` (e.g. `"LPS"`, `"RAS"`): for each
    /// voxel axis, the world direction it mostly points to.
    pub fn orientation(&self) -> String {
        let m = self.affine();
        let mut used = [false; 3];
        let mut out = String::new();
        for j in 0..3 {
            let mut best = None;
            for i in 0..3 {
                if used[i] {
                    continue;
                }
                let v = m[i][j];
                if best.is_none_or(|(_, bv): (usize, f64)| v.abs() > bv.abs()) {
                    best = Some((i, v));
                }
            }
            let (i, v) = best.unwrap_or((j, 1.0));
            used[i] = true;
            let code = match (i, v >= 0.0) {
                (0, true) => 'R',
                (0, false) => 'L',
                (1, true) => 'A',
                (1, false) => 'P',
                (2, true) => 'S',
                _ => 'I',
            };
            out.push(code);
        }
        out
    }
}

/// Why two headers do not describe the same voxel grid in the world, or `None` when they
/// do: extents, spacing (relative 1e-4), axis directions (cosines within 1e-3) and
/// origin (within a tenth of the smallest spacing) are compared, all from the affines
/// the reader uses (qform first). A header with neither qform nor sform places its grid
/// nowhere (label maps are often saved so), so then only extents and spacing count.
pub fn geometry_difference(a: &NiftiHeader, b: &NiftiHeader) -> Option<String> {
    if a.shape_xyz() != b.shape_xyz() {
        return Some(format!(
            "extents (x, y, z) {:?} vs {:?}",
            a.shape_xyz(),
            b.shape_xyz()
        ));
    }
    let (ma, mb) = (a.affine(), b.affine());
    let (sa, sb) = (column_norms(&ma), column_norms(&mb));
    for j in 0..3 {
        if (sa[j] - sb[j]).abs() > 1e-4 * sa[j].max(sb[j]) {
            return Some(format!(
                "spacing {:.4} x {:.4} x {:.4} mm vs {:.4} x {:.4} x {:.4} mm",
                sa[0], sa[1], sa[2], sb[0], sb[1], sb[2]
            ));
        }
    }
    let placed = |h: &NiftiHeader| h.qform_code > 0 || h.sform_code > 0;
    if !placed(a) || !placed(b) {
        return None;
    }
    for j in 0..3 {
        let cos = (0..3).map(|i| ma[i][j] * mb[i][j]).sum::<f64>() / (sa[j] * sb[j]);
        if cos.is_nan() || cos <= 1.0 - 1e-3 {
            let axis = ["x", "y", "z"][j];
            let dir = |m: &Affine, s: f64| [0, 1, 2].map(|i| m[i][j] / s);
            return Some(format!(
                "direction of voxel axis {axis}: {:.4?} vs {:.4?}",
                dir(&ma, sa[j]),
                dir(&mb, sb[j])
            ));
        }
    }
    let shift = (0..3)
        .map(|i| (ma[i][3] - mb[i][3]).powi(2))
        .sum::<f64>()
        .sqrt();
    let tolerance = 0.1 * sa.iter().cloned().fold(f64::INFINITY, f64::min);
    if shift.is_nan() || shift > tolerance {
        return Some(format!(
            "origin ({:.3}, {:.3}, {:.3}) mm vs ({:.3}, {:.3}, {:.3}) mm, {shift:.3} mm apart",
            ma[0][3], ma[1][3], ma[2][3], mb[0][3], mb[1][3], mb[2][3]
        ));
    }
    None
}

/// The lengths of an affine's three voxel-axis columns: the spacing in mm it implies.
pub fn column_norms(m: &Affine) -> [f64; 3] {
    [0, 1, 2].map(|j| (0..3).map(|i| m[i][j] * m[i][j]).sum::<f64>().sqrt())
}

fn identity() -> Affine {
    let mut m = [[0.0; 4]; 4];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    m
}

struct Fields<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl Fields<'_> {
    fn i16(&self, off: usize) -> i16 {
        let b = [self.bytes[off], self.bytes[off + 1]];
        if self.big_endian {
            i16::from_be_bytes(b)
        } else {
            i16::from_le_bytes(b)
        }
    }
    fn f32(&self, off: usize) -> f32 {
        let b: [u8; 4] = self.bytes[off..off + 4].try_into().expect("4 bytes");
        if self.big_endian {
            f32::from_be_bytes(b)
        } else {
            f32::from_le_bytes(b)
        }
    }
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn fixed_text<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    // Keep one byte for the terminating NUL and cut on a char boundary.
    let mut end = s.len().min(N - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

/// A 3D volume with its header; `data` has shape `[z, y, x]`.
#[derive(Debug, Clone)]
pub struct Volume<T> {
    /// Voxels, C order, shape `[z, y, x]`.
    pub data: Array3<T>,
    /// The header read from (or to be written to) the file.
    pub header: NiftiHeader,
    /// The file it came from (empty for volumes built in memory).
    pub path: PathBuf,
}

impl<T> Volume<T> {
    /// Spacing `[x, y, z]` in mm (see [`NiftiHeader::spacing`]).
    pub fn spacing(&self) -> [f64; 3] {
        self.header.spacing()
    }
    /// Spacing in the array's axis order `[z, y, x]`, for metrics on `data`.
    pub fn spacing_zyx(&self) -> [f64; 3] {
        let s = self.header.spacing();
        [s[2], s[1], s[0]]
    }
    /// The voxel-to-world affine (see [`NiftiHeader::affine`]).
    pub fn affine(&self) -> Affine {
        self.header.affine()
    }
    /// `[x, y, z]` extents.
    pub fn shape_xyz(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[2], s[1], s[0]]
    }
}

/// A 4D cine volume; `data` has shape `[t, z, y, x]`.
#[derive(Debug, Clone)]
pub struct Volume4 {
    /// Voxels, C order, shape `[t, z, y, x]`.
    pub data: Array4<f32>,
    /// The header.
    pub header: NiftiHeader,
    /// The file it came from.
    pub path: PathBuf,
}

/// What `slimseg volume-info` prints about one file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// The file.
    pub path: PathBuf,
    /// Extents in NIfTI order (`[x, y, z, t...]`).
    pub shape: Vec<usize>,
    /// Voxel datatype name (`int16`, `uint8`, ...).
    pub datatype: String,
    /// Spacing `[x, y, z]` in mm.
    pub spacing: [f64; 3],
    /// Time step (`pixdim[4]`) when the image has a 4th dimension.
    pub time_step: Option<f64>,
    /// `qform_code`.
    pub qform_code: i16,
    /// `sform_code`.
    pub sform_code: i16,
    /// The affine used (qform first).
    pub affine: Affine,
    /// The sform affine when present, to show how it differs.
    pub sform: Option<Affine>,
    /// Axis codes such as `"LPS"`.
    pub orientation: String,
    /// `descrip`.
    pub description: String,
    /// Size of the file on disk in bytes.
    pub file_bytes: u64,
    /// Number of voxels (all dimensions).
    pub voxels: u64,
    /// Whether every voxel was read and decoded (so the file is complete and its gzip
    /// checksum right); false for a volume above [`max_voxels`], whose voxels are not
    /// read.
    pub payload_read: bool,
    /// Voxels that are NaN or infinite.
    pub non_finite: u64,
    /// Smallest and largest finite voxel value (after scaling); `None` if none is finite.
    pub range: Option<[f64; 2]>,
}

impl std::fmt::Display for VolumeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "file:        {}", self.path.display())?;
        writeln!(f, "shape:       {:?}", self.shape)?;
        writeln!(f, "datatype:    {}", self.datatype)?;
        writeln!(
            f,
            "spacing:     {:.4} x {:.4} x {:.4} mm",
            self.spacing[0], self.spacing[1], self.spacing[2]
        )?;
        if let Some(t) = self.time_step {
            writeln!(f, "time step:   {t}")?;
        }
        writeln!(
            f,
            "orientation: {} (qform_code {}, sform_code {})",
            self.orientation, self.qform_code, self.sform_code
        )?;
        writeln!(f, "affine:")?;
        for row in &self.affine[..3] {
            writeln!(
                f,
                "  [{:9.4} {:9.4} {:9.4} {:10.4}]",
                row[0], row[1], row[2], row[3]
            )?;
        }
        if !self.description.is_empty() {
            writeln!(f, "descrip:     {}", self.description)?;
        }
        writeln!(f, "file size:   {} bytes", self.file_bytes)?;
        if !self.payload_read {
            return write!(
                f,
                "voxels:      {}, not read (above the limit of {})",
                self.voxels,
                max_voxels()
            );
        }
        write!(f, "voxels:      {} read", self.voxels)?;
        if let Some([lo, hi]) = self.range {
            write!(f, ", range {lo} .. {hi}")?;
        }
        if self.non_finite > 0 {
            write!(f, ", {} non-finite (NaN or infinite)", self.non_finite)?;
        }
        Ok(())
    }
}

/// An opened NIfTI file positioned at its first voxel: the header, and a stream of the
/// (decompressed) bytes that follow. Voxels are decoded from this stream chunk by chunk,
/// so reading never holds the file, or the decompressed payload, in memory as a whole.
struct Payload {
    header: NiftiHeader,
    big_endian: bool,
    gz: bool,
    stream: Box<dyn Read>,
    path: PathBuf,
}

/// Bytes decoded per step when streaming voxels (a multiple of every voxel size).
const CHUNK: usize = 1 << 20;

/// Trailing bytes after the voxel data that are decompressed (and discarded) to reach
/// the gzip checksum.
const MAX_TRAILING: u64 = 1 << 26;

impl Payload {
    fn open(path: &Path) -> Result<Self> {
        let (mut stream, gz) = open_stream(path)?;
        let mut head = [0u8; HEADER_SIZE];
        let got = read_full(&mut stream, &mut head).map_err(|e| stream_error(path, gz, e))?;
        let (header, big_endian) = NiftiHeader::parse(&head[..got], path)?;
        // Skip the extensions (vox_offset is validated to lie below 16 MiB).
        let skip = header.vox_offset as u64 - HEADER_SIZE as u64;
        let skipped = std::io::copy(&mut (&mut stream).take(skip), &mut std::io::sink())
            .map_err(|e| stream_error(path, gz, e))?;
        if skipped < skip {
            return Err(DataError::TruncatedNifti {
                path: path.to_path_buf(),
                expected: (header.vox_offset as u64).saturating_add(header.voxel_bytes()),
                found: HEADER_SIZE as u64 + skipped,
            });
        }
        Ok(Payload {
            header,
            big_endian,
            gz,
            stream,
            path: path.to_path_buf(),
        })
    }

    /// Fails, before anything is allocated, when the volume has more voxels than
    /// [`max_voxels`] allows.
    fn check_limit(&self) -> Result<usize> {
        let voxels = self.header.voxel_count();
        let limit = max_voxels();
        if voxels > limit {
            return Err(DataError::TooManyVoxels {
                path: self.path.clone(),
                shape: self.header.shape(),
                voxels,
                limit,
            });
        }
        usize::try_from(voxels).map_err(|_| DataError::TooManyVoxels {
            path: self.path.clone(),
            shape: self.header.shape(),
            voxels,
            limit: usize::MAX as u64,
        })
    }

    /// Streams every voxel, in file order, through `visit(index, value)`; values are
    /// scaled by `scl_slope`/`scl_inter` when the slope is set. Fails when the file ends
    /// early; for gzip files the rest of the stream is read so its checksum is verified.
    fn for_each_voxel(&mut self, mut visit: impl FnMut(usize, f64) -> Result<()>) -> Result<()> {
        let h = &self.header;
        let ty = h.data_type().expect("validated header");
        let size = ty.size();
        let total = h.voxel_bytes();
        let scaled = h.scl_slope != 0.0 && !(h.scl_slope == 1.0 && h.scl_inter == 0.0);
        let (m, c) = (h.scl_slope as f64, h.scl_inter as f64);
        let mut buf = vec![0u8; CHUNK.min(total as usize).max(size)];
        let (mut done, mut index) = (0u64, 0usize);
        while done < total {
            let want = (total - done).min(buf.len() as u64) as usize;
            let got = read_full(&mut self.stream, &mut buf[..want])
                .map_err(|e| stream_error(&self.path, self.gz, e))?;
            done += got as u64;
            for b in buf[..got - got % size].chunks_exact(size) {
                let v = ty.decode(b, self.big_endian);
                visit(index, if scaled { v * m + c } else { v })?;
                index += 1;
            }
            if got < want {
                return Err(DataError::TruncatedNifti {
                    path: self.path.clone(),
                    expected: (h.vox_offset as u64).saturating_add(total),
                    found: h.vox_offset as u64 + done,
                });
            }
        }
        if self.gz {
            std::io::copy(
                &mut (&mut self.stream).take(MAX_TRAILING),
                &mut std::io::sink(),
            )
            .map_err(|e| stream_error(&self.path, true, e))?;
        }
        Ok(())
    }

    /// Decodes every voxel into a vector of the final element type; at most
    /// [`max_voxels`] elements are allocated, once.
    fn decode<T>(&mut self, mut map: impl FnMut(usize, f64) -> Result<T>) -> Result<Vec<T>> {
        let n = self.check_limit()?;
        let mut out = Vec::with_capacity(n);
        self.for_each_voxel(|i, v| {
            out.push(map(i, v)?);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A read error of the (possibly decompressed) stream: a gzip decoding failure is a
/// corrupt file, anything else an IO error.
fn stream_error(path: &Path, gz: bool, e: std::io::Error) -> DataError {
    if gz {
        DataError::CorruptGzip {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    } else {
        DataError::io(path, e)
    }
}

/// Opens a file for reading, through a gzip decoder when it starts with the gzip magic;
/// returns the stream and whether it is compressed.
fn open_stream(path: &Path) -> Result<(Box<dyn Read>, bool)> {
    let f = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut f = std::io::BufReader::with_capacity(1 << 16, f);
    let mut magic = [0u8; 2];
    let n = read_full(&mut f, &mut magic).map_err(|e| DataError::io(path, e))?;
    let gz = n == 2 && magic == [0x1f, 0x8b];
    let chained = std::io::Cursor::new(magic[..n].to_vec()).chain(f);
    Ok(if gz {
        (Box::new(MultiGzDecoder::new(chained)), true)
    } else {
        (Box::new(chained), false)
    })
}

/// Reads only the header of a `.nii` / `.nii.gz` file (the voxels are not read, so
/// neither truncation nor the gzip checksum is checked).
pub fn read_header(path: &Path) -> Result<NiftiHeader> {
    let (mut stream, gz) = open_stream(path)?;
    let mut head = [0u8; HEADER_SIZE];
    let got = read_full(&mut stream, &mut head).map_err(|e| stream_error(path, gz, e))?;
    Ok(NiftiHeader::parse(&head[..got], path)?.0)
}

/// Header summary for display (`slimseg volume-info`). The whole payload is read (in
/// chunks, never held in memory) so that a truncated file or a bad gzip checksum is an
/// error, and the voxel range and the number of non-finite voxels are reported; a volume
/// above [`max_voxels`] is not read, and [`VolumeInfo::payload_read`] says so.
pub fn volume_info(path: &Path) -> Result<VolumeInfo> {
    let mut payload = Payload::open(path)?;
    let h = payload.header.clone();
    let file_bytes = fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len();
    let (mut non_finite, mut lo, mut hi) = (0u64, f64::INFINITY, f64::NEG_INFINITY);
    // Above the voxel limit the payload is not decompressed (a small file may inflate
    // without end); the info says so.
    let payload_read = payload.check_limit().is_ok();
    if payload_read {
        payload.for_each_voxel(|_, v| {
            let v = v as f32 as f64;
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            } else {
                non_finite += 1;
            }
            Ok(())
        })?;
    }
    Ok(VolumeInfo {
        path: path.to_path_buf(),
        shape: h.shape(),
        datatype: h.data_type().map(|t| t.name()).unwrap_or("?").to_string(),
        spacing: h.spacing(),
        time_step: (h.dim[0] >= 4).then_some(h.pixdim[4] as f64),
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        affine: h.affine(),
        sform: h.sform_affine(),
        orientation: h.orientation(),
        description: h.descrip.clone(),
        file_bytes,
        voxels: h.voxel_count(),
        payload_read,
        non_finite,
        range: (lo <= hi).then_some([lo, hi]),
    })
}

fn require_spatial_3d(h: &NiftiHeader, path: &Path) -> Result<[usize; 3]> {
    let s = h.shape();
    if s.iter().skip(3).any(|&d| d != 1) {
        return Err(DataError::InvalidNifti {
            path: path.to_path_buf(),
            reason: format!("expected a 3D volume, found shape {s:?}"),
        });
    }
    Ok(h.shape_xyz())
}

/// What to do with NaN and infinite voxels of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinite {
    /// Refuse the file ([`DataError::NonFiniteVoxels`]): the default, since one such voxel
    /// blanks the whole volume through intensity normalisation.
    #[default]
    Reject,
    /// Replace each by the smallest finite intensity of the volume (background).
    ReplaceWithMin,
}

/// Position `(x, y, z)` of the `i`-th voxel in file order of an `[x, y, z, ...]` grid;
/// for 4D grids, `z` counts slices of all frames before it (see [`voxel_xyzt`]).
fn voxel_xyz(i: usize, [x, y, _]: [usize; 3]) -> (usize, usize, usize) {
    (i % x, (i / x) % y, i / (x * y))
}

/// Position `(x, y, z, t)` of the `i`-th voxel in file order of an `[x, y, z, t]` grid.
fn voxel_xyzt(i: usize, [x, y, z]: [usize; 3]) -> (usize, usize, usize, usize) {
    let (x, y, zt) = voxel_xyz(i, [x, y, z]);
    (x, y, zt % z.max(1), zt / z.max(1))
}

/// Applies `policy` to the non-finite values of `values` (file order, grid `xyz`);
/// returns how many were replaced.
fn handle_non_finite(
    values: &mut [f32],
    xyz: [usize; 3],
    policy: NonFinite,
    path: &Path,
) -> Result<u64> {
    let mut count = 0u64;
    let mut first = None;
    let mut min = f32::INFINITY;
    for (i, &v) in values.iter().enumerate() {
        if v.is_finite() {
            min = min.min(v);
        } else {
            count += 1;
            first.get_or_insert(i);
        }
    }
    let Some(first) = first else { return Ok(0) };
    if policy == NonFinite::Reject || !min.is_finite() {
        let (x, y, z, t) = voxel_xyzt(first, xyz);
        return Err(DataError::NonFiniteVoxels {
            path: path.to_path_buf(),
            count,
            total: values.len() as u64,
            x,
            y,
            z,
            t,
        });
    }
    for v in values.iter_mut().filter(|v| !v.is_finite()) {
        *v = min;
    }
    Ok(count)
}

/// Reads a 3D image as f32 (any supported datatype, scaled by `scl_slope`). NaN or
/// infinite voxels are an error ([`NonFinite::Reject`]).
pub fn read_volume(path: &Path) -> Result<Volume<f32>> {
    read_volume_with(path, NonFinite::Reject).map(|(v, _)| v)
}

/// [`read_volume`] with a choice for non-finite voxels; also returns how many were
/// replaced. Memory: one `f32` per voxel plus a 1 MiB buffer; the voxel count is checked
/// against [`max_voxels`] before anything is allocated.
pub fn read_volume_with(path: &Path, non_finite: NonFinite) -> Result<(Volume<f32>, u64)> {
    let mut payload = Payload::open(path)?;
    let [x, y, z] = require_spatial_3d(&payload.header, path)?;
    let mut values = payload.decode(|_, v| Ok(v as f32))?;
    let replaced = handle_non_finite(&mut values, [x, y, z], non_finite, path)?;
    let data = Array3::from_shape_vec((z, y, x), values).expect("size checked by the header");
    let volume = Volume {
        data,
        header: payload.header,
        path: path.to_path_buf(),
    };
    Ok((volume, replaced))
}

/// Reads a 3D label volume: every voxel must be an integer in `0..=3`. Memory: one byte
/// per voxel plus a 1 MiB buffer.
pub fn read_labels(path: &Path) -> Result<Volume<u8>> {
    let mut payload = Payload::open(path)?;
    let xyz = require_spatial_3d(&payload.header, path)?;
    let [x, y, z] = xyz;
    let out = payload.decode(|i, v| {
        if v.fract() == 0.0 && (0.0..=3.0).contains(&v) {
            Ok(v as u8)
        } else {
            let (x, y, z) = voxel_xyz(i, xyz);
            Err(DataError::InvalidLabel {
                path: path.to_path_buf(),
                value: v,
                x,
                y,
                z,
            })
        }
    })?;
    let data = Array3::from_shape_vec((z, y, x), out).expect("size checked by the header");
    Ok(Volume {
        data,
        header: payload.header,
        path: path.to_path_buf(),
    })
}

/// Reads a 4D cine volume (`[x, y, z, t]` in the file) as `[t, z, y, x]` f32; NaN or
/// infinite voxels are an error.
pub fn read_volume_4d(path: &Path) -> Result<Volume4> {
    let mut payload = Payload::open(path)?;
    let h = &payload.header;
    let s = h.shape();
    if s.len() > 4 && s[4..].iter().any(|&d| d != 1) {
        return Err(DataError::InvalidNifti {
            path: path.to_path_buf(),
            reason: format!("expected at most 4 dimensions, found shape {s:?}"),
        });
    }
    let [x, y, z] = h.shape_xyz();
    let t = s.get(3).copied().unwrap_or(1);
    let mut values = payload.decode(|_, v| Ok(v as f32))?;
    handle_non_finite(&mut values, [x, y, z], NonFinite::Reject, path)?;
    let data = Array4::from_shape_vec((t, z, y, x), values).expect("size checked by the header");
    Ok(Volume4 {
        data,
        header: payload.header,
        path: path.to_path_buf(),
    })
}

/// gzip compression level used when writing `.nii.gz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GzLevel {
    /// Level 1: fastest (used by the synthetic cohort).
    Fast,
    /// Level 6: zlib's default.
    Default,
}

/// Streams header + voxels (little endian) into `sink` through a small buffer, so no
/// second full-size copy of the volume is made.
fn put_voxels<T: NiftiElement, W: Write>(
    sink: &mut W,
    header: &NiftiHeader,
    voxels: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    sink.write_all(&header.to_bytes())?;
    sink.write_all(&[0u8; 4])?; // no extensions
    let mut chunk = Vec::with_capacity(1 << 16);
    for v in voxels {
        v.put_le(&mut chunk);
        if chunk.len() >= (1 << 16) - 8 {
            sink.write_all(&chunk)?;
            chunk.clear();
        }
    }
    sink.write_all(&chunk)
}

fn encode<T: NiftiElement>(
    header: &NiftiHeader,
    voxels: impl Iterator<Item = T>,
    n: usize,
    path: &Path,
    level: GzLevel,
) -> Result<()> {
    let gz = path
        .file_name()
        .map(|f| f.to_string_lossy().ends_with(".gz"))
        .unwrap_or(false);
    let bytes = 352 + n * T::TYPE.size();
    let io = |e| DataError::io(path, e);
    if gz {
        let lvl = match level {
            GzLevel::Fast => Compression::fast(),
            GzLevel::Default => Compression::default(),
        };
        // GzEncoder writes mtime 0, so the output is a pure function of the input.
        let mut enc = GzEncoder::new(Vec::with_capacity(bytes * 3 / 4), lvl);
        put_voxels(&mut enc, header, voxels).map_err(io)?;
        write_atomic(path, &enc.finish().map_err(io)?)
    } else {
        let mut raw = Vec::with_capacity(bytes);
        put_voxels(&mut raw, header, voxels).map_err(io)?;
        write_atomic(path, &raw)
    }
}

fn header_for<T: NiftiElement>(reference: &NiftiHeader, dims: &[usize]) -> Result<NiftiHeader> {
    let mut h = reference.clone();
    if dims.iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(DataError::InvalidArgument(format!(
            "cannot write a NIfTI volume of shape {dims:?}: extents must be 1..=32767"
        )));
    }
    h.dim = [1; 8];
    h.dim[0] = dims.len() as i16;
    for (i, &d) in dims.iter().enumerate() {
        h.dim[i + 1] = d as i16;
    }
    h.datatype = T::TYPE.code();
    h.bitpix = (T::TYPE.size() * 8) as i16;
    h.vox_offset = 352.0;
    h.scl_slope = 1.0;
    h.scl_inter = 0.0;
    Ok(h)
}

/// Writes a 3D volume (`data` shape `[z, y, x]`) with the geometry of `reference`
/// (affine, spacing, orientation, units, description); datatype, extents and scaling
/// are set from `data`. `.gz` paths are gzip-compressed. The write is atomic.
pub fn write_volume<T: NiftiElement>(
    path: &Path,
    data: ArrayView3<'_, T>,
    reference: &NiftiHeader,
    level: GzLevel,
) -> Result<()> {
    let (z, y, x) = data.dim();
    let mut h = header_for::<T>(reference, &[x, y, z])?;
    if h.pixdim[3] == 0.0 {
        h.pixdim[3] = 1.0;
    }
    encode(&h, data.iter().copied(), x * y * z, path, level)
}

/// Writes a label volume (`[z, y, x]`, values 0..=3) so that it overlays `source`, the
/// image it segments, in ITK-SNAP / 3D Slicer / nibabel: the source header's qform,
/// sform, spacing and units are kept; datatype becomes uint8 and the display range 0..3.
/// Fails when the label grid differs from the source's.
pub fn write_labels_like(
    path: &Path,
    labels: ArrayView3<'_, u8>,
    source: &NiftiHeader,
) -> Result<()> {
    let (z, y, x) = labels.dim();
    if source.shape_xyz() != [x, y, z] {
        return Err(DataError::InvalidArgument(format!(
            "{}: labels of shape (x, y, z) = {:?} do not match the source image shape {:?}",
            path.display(),
            [x, y, z],
            source.shape_xyz()
        )));
    }
    if let Some((i, &v)) = labels.iter().enumerate().find(|&(_, &v)| v > 3) {
        return Err(DataError::InvalidLabel {
            path: path.to_path_buf(),
            value: v as f64,
            x: i % x,
            y: (i / x) % y,
            z: i / (x * y),
        });
    }
    let mut h = header_for::<u8>(source, &[x, y, z])?;
    h.cal_min = 0.0;
    h.cal_max = 3.0;
    encode(
        &h,
        labels.iter().copied(),
        x * y * z,
        path,
        GzLevel::Default,
    )
}

/// Writes a 4D volume (`data` shape `[t, z, y, x]`) with the geometry of `reference`;
/// `time_step` goes to `pixdim[4]`.
pub fn write_volume_4d<T: NiftiElement>(
    path: &Path,
    data: ndarray::ArrayView4<'_, T>,
    reference: &NiftiHeader,
    time_step: f32,
    level: GzLevel,
) -> Result<()> {
    let (t, z, y, x) = data.dim();
    let mut h = header_for::<T>(reference, &[x, y, z, t])?;
    h.pixdim[4] = time_step;
    encode(&h, data.iter().copied(), x * y * z * t, path, level)
}

/// `path` with `.nii.gz` replaced by `suffix` (helper for sibling files).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
        .unwrap_or(&name);
    path.with_file_name(format!("{stem}{suffix}"))
}
