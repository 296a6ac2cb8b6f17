//! Typed errors of slimseg-data. Every variant that concerns a file names it.

use std::path::PathBuf;

use thiserror::Error;

/// Result alias used across slimseg-data.
pub type Result<T> = std::result::Result<T, DataError>;

/// Everything that can go wrong while reading, writing or processing ACDC data.
#[derive(Debug, Error)]
pub enum DataError {
    /// An operating-system level IO failure on a file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable NIfTI-1 image (bad magic, header fields out of range, ...).
    #[error("{}: not a valid NIfTI-1 file: {reason}", path.display())]
    InvalidNifti {
        /// The offending file.
        path: PathBuf,
        /// What was expected and what was found.
        reason: String,
    },
    /// The file ends before the header or the voxel data is complete.
    #[error("{}: truncated NIfTI file: expected {expected} bytes, found {found}", path.display())]
    TruncatedNifti {
        /// The offending file.
        path: PathBuf,
        /// Bytes needed (header + extensions + voxel data), after decompression.
        expected: u64,
        /// Bytes actually available.
        found: u64,
    },
    /// A `.gz` stream that cannot be decompressed.
    #[error("{}: corrupt gzip stream: {reason}", path.display())]
    CorruptGzip {
        /// The offending file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// A volume with more voxels than the configured limit (checked before allocating).
    #[error(
        "{}: volume of shape {shape:?} has {voxels} voxels, more than the limit of {limit}; \
         raise it with --max-voxels or SLIMSEG_MAX_VOXELS if the file is genuine",
        path.display()
    )]
    TooManyVoxels {
        /// The offending file.
        path: PathBuf,
        /// Extents in NIfTI order.
        shape: Vec<usize>,
        /// Voxels the header describes.
        voxels: u64,
        /// The limit in force.
        limit: u64,
    },
    /// An image with NaN or infinite voxels, which would blank it through normalisation.
    #[error(
        "{}: {count} of {total} voxels are not finite (NaN or infinite), the first at \
         (x={x}, y={y}, z={z}{}); such voxels would blank the image through intensity \
         normalisation",
        path.display(),
        if *t > 0 { format!(", t={t}") } else { String::new() }
    )]
    NonFiniteVoxels {
        /// The offending file.
        path: PathBuf,
        /// Number of NaN or infinite voxels.
        count: u64,
        /// Number of voxels in all.
        total: u64,
        /// Column of the first one.
        x: usize,
        /// Row of the first one.
        y: usize,
        /// Slice of the first one.
        z: usize,
        /// Frame of the first one (0 for 3D images).
        t: usize,
    },
    /// A malformed ACDC `Info.cfg`.
    #[error("{}: {reason}", path.display())]
    InvalidInfo {
        /// The offending Info.cfg.
        path: PathBuf,
        /// What is wrong, with the line number where one applies.
        reason: String,
    },
    /// A label volume with a value outside 0..=3 or a non-integer value.
    #[error("{}: invalid label {value} at voxel (x={x}, y={y}, z={z}); expected an integer in 0..=3", path.display())]
    InvalidLabel {
        /// The label file.
        path: PathBuf,
        /// The value found.
        value: f64,
        /// Column index.
        x: usize,
        /// Row index.
        y: usize,
        /// Slice index.
        z: usize,
    },
    /// Two volumes that must share a grid do not.
    #[error("{}: shape {found:?} (x, y, z) differs from {expected:?} of {}", path.display(), reference.display())]
    ShapeMismatch {
        /// The file whose shape is wrong.
        path: PathBuf,
        /// The file it must match.
        reference: PathBuf,
        /// Expected (x, y, z) extent.
        expected: [usize; 3],
        /// Found (x, y, z) extent.
        found: [usize; 3],
    },
    /// Two volumes that must share a grid differ in spacing, direction or origin.
    #[error("{}: geometry differs from {}: {reason}", path.display(), reference.display())]
    GeometryMismatch {
        /// The file whose geometry is wrong.
        path: PathBuf,
        /// The file it must match.
        reference: PathBuf,
        /// What differs, with both values.
        reason: String,
    },
    /// The ACDC directory tree does not have the expected layout.
    #[error("{}: {reason}", path.display())]
    Layout {
        /// The directory or file where the problem was found.
        path: PathBuf,
        /// What was expected and what was found.
        reason: String,
    },
    /// A malformed split file or an inconsistent split.
    #[error("{}: {reason}", path.display())]
    InvalidSplit {
        /// The split file (or `<builtin>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An argument out of range (configuration, array shapes, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl DataError {
    /// Wraps an IO error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
