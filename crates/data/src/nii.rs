//! NIfTI-1 reading and writing (`.nii` and `.nii.gz`), written for robustness:
//! every malformed input gives a typed [`DataError`] naming the file, never a panic.
//!
//! Arrays are held in C order with shape `[z, y, x]` (`[t, z, y, x]` for 4D): the file's
//! own voxel order, so one short-axis slice `data.index_axis(Axis(0), z)` is a contiguous
//! `[y, x]` image. Spacing and affines keep NIfTI's `(x, y, z)` order.
//!
//! Geometry follows the NIfTI-1 standard: [`NiftiHeader::affine`] prefers the qform
//! (method 2), then the sform (method 3), then `pixdim` alone. Spacing always comes from
//! `pixdim`, which is what the qform uses; ACDC's sform is known to be wrong.
//!
//! Reference: NIfTI-1 data format, <https://nifti.nimh.nih.gov/nifti-1/>.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use ndarray::{Array3, Array4, ArrayView3};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::fsutil::write_atomic;

/// Size of a NIfTI-1 header in bytes.
pub const HEADER_SIZE: usize = 348;
/// Largest voxel payload accepted (bytes, after decompression); larger headers are rejected
/// as corrupt rather than attempted.
pub const MAX_VOXEL_BYTES: u64 = 1 << 32;

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
        if magic != b"n+1\0" && magic != b"ni1\0" {
            return Err(invalid(format!(
                "magic is {:?}, expected \"n+1\" (or \"ni1\")",
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
        if self.voxel_bytes() > MAX_VOXEL_BYTES {
            return Err(format!(
                "dimensions {:?} describe {} bytes of voxels, more than the {} accepted",
                self.shape(),
                self.voxel_bytes(),
                MAX_VOXEL_BYTES
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

    /// Number of voxels (product of the used extents).
    pub fn voxel_count(&self) -> u64 {
        self.shape().iter().map(|&d| d as u64).product()
    }

    fn voxel_bytes(&self) -> u64 {
        let size = self.data_type().map(|t| t.size() as u64).unwrap_or(0);
        self.voxel_count().saturating_mul(size)
    }

    /// Voxel spacing `[x, y, z]` in millimetres, from `pixdim` (absolute values; missing
    /// dimensions count 1). Converts metres and micrometres to mm per `xyzt_units`.
    pub fn spacing(&self) -> [f64; 3] {
        let scale = match self.xyzt_units & 0x07 {
            1 => 1000.0,
            3 => 0.001,
            _ => 1.0,
        };
        let nd = self.dim[0].clamp(0, 7) as usize;
        [1, 2, 3].map(|a| {
            if a <= nd {
                (self.pixdim[a] as f64).abs() * scale
            } else {
                1.0
            }
        })
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
        write!(f, "file size:   {} bytes", self.file_bytes)
    }
}

/// Reads the raw bytes (decompressed when gzip) needed for header + voxels.
fn read_payload(path: &Path) -> Result<(NiftiHeader, bool, Vec<u8>)> {
    let raw = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let gz = raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b;
    if gz {
        let mut dec = MultiGzDecoder::new(&raw[..]);
        let mut bytes = Vec::with_capacity(HEADER_SIZE);
        gz_read(&mut dec, &mut bytes, HEADER_SIZE as u64, path)?;
        let (h, be) = NiftiHeader::parse(&bytes, path)?;
        let need = h.vox_offset as u64 + h.voxel_bytes();
        gz_read(&mut dec, &mut bytes, need - HEADER_SIZE as u64, path)?;
        check_len(&bytes, need, path)?;
        // Drain the rest of the stream so that the gzip CRC is verified.
        let drained = std::io::copy(&mut (&mut dec).take(MAX_TRAILING), &mut std::io::sink());
        if let Err(e) = drained {
            return Err(DataError::CorruptGzip {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
        Ok((h, be, bytes))
    } else {
        let (h, be) = NiftiHeader::parse(&raw, path)?;
        let need = h.vox_offset as u64 + h.voxel_bytes();
        check_len(&raw, need, path)?;
        Ok((h, be, raw))
    }
}

/// Trailing bytes after the voxel data that are decompressed (and discarded) to reach
/// the gzip checksum.
const MAX_TRAILING: u64 = 1 << 26;

fn gz_read(dec: &mut impl Read, out: &mut Vec<u8>, n: u64, path: &Path) -> Result<()> {
    match dec.take(n).read_to_end(out) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) => Err(DataError::CorruptGzip {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn check_len(bytes: &[u8], need: u64, path: &Path) -> Result<()> {
    if (bytes.len() as u64) < need {
        return Err(DataError::TruncatedNifti {
            path: path.to_path_buf(),
            expected: need,
            found: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Decodes all voxels as f64 (scaled by `scl_slope`/`scl_inter` when the slope is set),
/// in file order.
fn decode_all(h: &NiftiHeader, big_endian: bool, bytes: &[u8]) -> Vec<f64> {
    let ty = h.data_type().expect("validated header");
    let start = h.vox_offset as usize;
    let n = h.voxel_count() as usize;
    let size = ty.size();
    let data = &bytes[start..start + n * size];
    let scaled = h.scl_slope != 0.0 && !(h.scl_slope == 1.0 && h.scl_inter == 0.0);
    let (m, c) = (h.scl_slope as f64, h.scl_inter as f64);
    data.chunks_exact(size)
        .map(|b| {
            let v = ty.decode(b, big_endian);
            if scaled { v * m + c } else { v }
        })
        .collect()
}

/// Reads only the header of a `.nii` / `.nii.gz` file.
pub fn read_header(path: &Path) -> Result<NiftiHeader> {
    let f = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut head = Vec::with_capacity(HEADER_SIZE);
    let mut magic = [0u8; 2];
    let mut f = std::io::BufReader::new(f);
    let n = f.read(&mut magic).map_err(|e| DataError::io(path, e))?;
    let chained = std::io::Cursor::new(magic[..n].to_vec()).chain(f);
    if n == 2 && magic == [0x1f, 0x8b] {
        let mut dec = MultiGzDecoder::new(chained);
        gz_read(&mut dec, &mut head, HEADER_SIZE as u64, path)?;
    } else {
        chained
            .take(HEADER_SIZE as u64)
            .read_to_end(&mut head)
            .map_err(|e| DataError::io(path, e))?;
    }
    Ok(NiftiHeader::parse(&head, path)?.0)
}

/// Header summary for display (`slimseg volume-info`).
pub fn volume_info(path: &Path) -> Result<VolumeInfo> {
    let h = read_header(path)?;
    let file_bytes = fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len();
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

/// Reads a 3D image as f32 (any supported datatype, scaled by `scl_slope`).
pub fn read_volume(path: &Path) -> Result<Volume<f32>> {
    let (h, be, bytes) = read_payload(path)?;
    let [x, y, z] = require_spatial_3d(&h, path)?;
    let values: Vec<f32> = decode_all(&h, be, &bytes)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let data = Array3::from_shape_vec((z, y, x), values).expect("size checked by the header");
    Ok(Volume {
        data,
        header: h,
        path: path.to_path_buf(),
    })
}

/// Reads a 3D label volume: every voxel must be an integer in `0..=3`.
pub fn read_labels(path: &Path) -> Result<Volume<u8>> {
    let (h, be, bytes) = read_payload(path)?;
    let [x, y, z] = require_spatial_3d(&h, path)?;
    let values = decode_all(&h, be, &bytes);
    let mut out = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        if !(v.fract() == 0.0 && (0.0..=3.0).contains(&v)) {
            return Err(DataError::InvalidLabel {
                path: path.to_path_buf(),
                value: v,
                x: i % x,
                y: (i / x) % y,
                z: i / (x * y),
            });
        }
        out.push(v as u8);
    }
    let data = Array3::from_shape_vec((z, y, x), out).expect("size checked by the header");
    Ok(Volume {
        data,
        header: h,
        path: path.to_path_buf(),
    })
}

/// Reads a 4D cine volume (`[x, y, z, t]` in the file) as `[t, z, y, x]` f32.
pub fn read_volume_4d(path: &Path) -> Result<Volume4> {
    let (h, be, bytes) = read_payload(path)?;
    let s = h.shape();
    if s.len() > 4 && s[4..].iter().any(|&d| d != 1) {
        return Err(DataError::InvalidNifti {
            path: path.to_path_buf(),
            reason: format!("expected at most 4 dimensions, found shape {s:?}"),
        });
    }
    let [x, y, z] = h.shape_xyz();
    let t = s.get(3).copied().unwrap_or(1);
    let values: Vec<f32> = decode_all(&h, be, &bytes)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let data = Array4::from_shape_vec((t, z, y, x), values).expect("size checked by the header");
    Ok(Volume4 {
        data,
        header: h,
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
