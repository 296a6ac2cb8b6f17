//! Errors of slimseg-compress.

use std::path::PathBuf;

/// Result alias used across slimseg-compress.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when slicing, saving, loading, checking or timing a
/// compressed model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the model crate (config, architecture, weights file, forward pass).
    /// A weights file entry of the wrong shape arrives here as the model crate's
    /// `BadTensor`, which names the tensor and both shapes.
    #[error(transparent)]
    Model(#[from] slimseg_model::Error),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A source tensor does not have the shape the slicing expects.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// Variable name (official TransUNet name).
        name: String,
        /// Shape expected from the model config.
        expected: Vec<i64>,
        /// Shape found.
        found: Vec<i64>,
    },
    /// The full model lacks a variable that the compressed model needs.
    #[error("the full model has no variable `{0}` (was it built under `vs.root()`?)")]
    MissingVariable(String),
    /// Gate values are missing or do not fit the model configuration.
    #[error("gates: {0}")]
    Gates(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A compressed-model manifest could not be parsed, written or does not fit.
    #[error("{path}: {reason}")]
    Manifest {
        /// File concerned (empty for in-memory strings).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Invalid arguments (benchmark options, MAC targets, inputs).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
