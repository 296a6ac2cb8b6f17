//! Errors of slimseg-model.

use std::path::PathBuf;

/// Result alias used across slimseg-model.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when configuring, building, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or inconsistent with another one.
    #[error("invalid model config: field `{field}`: {reason}")]
    Config {
        /// Name of the offending field (`hidden`, `decoder_channels`, ...).
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A subnet architecture does not fit the model configuration.
    #[error("invalid subnet architecture: {0}")]
    Arch(String),
    /// A gate mode cannot be used with this model (for example soft gates on a reduced model).
    #[error("gate mode error: {0}")]
    Gates(String),
    /// A tensor has a different shape than expected.
    #[error("shape mismatch for tensor `{name}`: expected {expected:?}, found {found:?}")]
    Shape {
        /// Tensor (variable or checkpoint entry) name.
        name: String,
        /// Expected shape.
        expected: Vec<i64>,
        /// Shape found.
        found: Vec<i64>,
    },
    /// A weights file lacks tensors the model needs.
    #[error("{path}: missing tensors {names:?}")]
    MissingTensors {
        /// File read.
        path: PathBuf,
        /// Names the model needs but the file lacks (at most the first 20).
        names: Vec<String>,
    },
    /// A weights file has tensors the model does not know (strict loading).
    #[error("{path}: unexpected tensors {names:?}")]
    UnexpectedTensors {
        /// File read.
        path: PathBuf,
        /// Names in the file unknown to the model (at most the first 20).
        names: Vec<String>,
    },
    /// A weights file entry has a shape or dtype that does not fit the model variable.
    #[error("{path}: tensor `{name}`: {reason}")]
    BadTensor {
        /// File read.
        path: PathBuf,
        /// Entry name.
        name: String,
        /// What is wrong (expected and found).
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
    /// A TOML file could not be parsed or written.
    #[error("{path}: {reason}")]
    Toml {
        /// File concerned (empty for in-memory strings).
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// A weights file could not be parsed (not a zip/npz/safetensors file, bad header).
    #[error("{path}: {reason}")]
    Format {
        /// File concerned.
        path: PathBuf,
        /// What the reader reported.
        reason: String,
    },
    /// An input tensor or array has the wrong shape or values.
    #[error("invalid input: {0}")]
    Input(String),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    pub(crate) fn config(field: &str, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.to_string(),
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

/// Writes `path` atomically: `write` fills a temporary file in the same directory, which is
/// then renamed onto `path`, so readers never see a half-written file.
pub(crate) fn write_atomic(
    path: &std::path::Path,
    write: impl FnOnce(&std::path::Path) -> Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Input(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, then a
/// rename), so readers see the old file or the whole new one, never a partial write.
pub fn write_bytes_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
    })
}
