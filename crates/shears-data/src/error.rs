//! Typed errors of the data crate.

use std::path::PathBuf;

/// Everything that can go wrong while finding, reading or batching a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file exists but its content is wrong (bad magic, truncated, corrupt gzip, bad label).
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An image file and its label file disagree on the number of samples.
    #[error(
        "{images} holds {n_images} images but {labels} holds {n_labels} labels; \
         they must describe the same samples"
    )]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },
    /// A data set's files were not found in any searched place.
    #[error("{dataset} not found; looked in: {}; {hint}", display_paths(.looked))]
    NotFound {
        dataset: String,
        looked: Vec<PathBuf>,
        hint: String,
    },
    /// A data-set name that is not one of the known kinds.
    #[error("unknown dataset `{name}` (known: {known})")]
    UnknownDataset { name: String, known: String },
    /// A loader or normalisation setting that cannot work.
    #[error("invalid {what}: {message}")]
    InvalidConfig { what: String, message: String },
}

/// Result alias of the data crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// A content error in `path`.
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::File {
            path: path.into(),
            message: message.into(),
        }
    }
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
    /// An unusable setting of `what`.
    pub fn config(what: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::InvalidConfig {
            what: what.into(),
            message: message.into(),
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(nowhere)".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
