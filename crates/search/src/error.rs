//! Errors of slimseg-search.

use std::path::PathBuf;

/// Result alias used across slimseg-search.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when configuring, training, evaluating or selecting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or inconsistent with another one.
    #[error("invalid config: key `{key}`: {reason}")]
    Config {
        /// Dotted key of the offending value (`train.lr`, `search.w_attn`, ...).
        key: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A TOML or JSON file could not be parsed or written.
    #[error("{path}: {reason}")]
    Parse {
        /// File concerned (empty for in-memory strings).
        path: PathBuf,
        /// Parser message (names the unknown or malformed key).
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A checkpoint is missing, torn or does not belong to this run.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// Checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A budget cannot be met; the message says what is reachable.
    #[error("unreachable budget: {0}")]
    Budget(String),
    /// Inputs do not fit together (gate values vs model config, empty datasets, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// Training diverged (non-finite loss).
    #[error("training diverged at epoch {epoch}, iteration {iteration}: loss is {loss}")]
    Diverged {
        /// Epoch (0-based).
        epoch: usize,
        /// Global iteration (0-based).
        iteration: usize,
        /// The offending loss value.
        loss: f64,
    },
    /// An error of the model crate.
    #[error(transparent)]
    Model(#[from] slimseg_model::Error),
    /// An error of the data crate.
    #[error(transparent)]
    Data(#[from] slimseg_data::DataError),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    pub(crate) fn config(key: &str, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    slimseg_data::write_atomic(path, bytes).map_err(Error::from)
}
