//! Typed errors of the framework-free core.

use std::path::PathBuf;

/// Everything that can go wrong in `shears-core`; each variant names what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("graph is invalid: {0}")]
    InvalidGraph(String),
    #[error("node `{node}`: {message}")]
    Shape { node: String, message: String },
    #[error("tensor `{name}`: {message}")]
    Tensor { name: String, message: String },
    #[error("unknown model `{0}` (known: {1})")]
    UnknownModel(String, String),
    #[error("invalid value for {what}: {message}")]
    InvalidValue { what: String, message: String },
    /// A fraction (sparsity, reduction, ratio) outside its range; `what` names the option.
    #[error("{what} must be in {range}, got {value}")]
    OutOfRange {
        what: String,
        value: f64,
        range: &'static str,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CoreError {
    pub fn shape(node: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::Shape {
            node: node.into(),
            message: message.into(),
        }
    }
    pub fn tensor(name: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::Tensor {
            name: name.into(),
            message: message.into(),
        }
    }
    pub fn value(what: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::InvalidValue {
            what: what.into(),
            message: message.into(),
        }
    }
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        CoreError::File {
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
