//! Typed errors of the methods layer. Messages name the section, key or flag at fault; the binary
//! only adds context.

use std::path::PathBuf;

/// Everything that can go wrong while configuring or running a method.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    #[error(transparent)]
    Core(#[from] shears_core::CoreError),
    #[error(transparent)]
    Data(#[from] shears_data::DataError),
    #[error(transparent)]
    Engine(#[from] shears_engine::EngineError),
    /// A config value, option or request that cannot be honoured; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// A file that cannot be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file that does not parse.
    #[error("invalid config {}: {message}", path.display())]
    ConfigFile { path: PathBuf, message: String },
    /// Another process holds the run directory's lock: the run is going on elsewhere.
    #[error("{} is being run by another process (its lock {} is held); wait for it, or run elsewhere", dir.display(), lock.display())]
    RunBusy { dir: PathBuf, lock: PathBuf },
    /// The caller asked to stop (Ctrl-C in the Python binding), between two steps.
    #[error(
        "stopped on request; the run directory keeps its last checkpoint (resume continues it)"
    )]
    Cancelled,
    /// An error with what was being done when it happened.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<MethodError>,
    },
}

/// Result of the methods layer.
pub type Result<T, E = MethodError> = std::result::Result<T, E>;

/// Returns early with [`MethodError::Invalid`] built like `format!`.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::MethodError::Invalid(format!($($arg)*)))
    };
}

/// Adds what was being done to an error, as `anyhow::Context` does, but typed.
pub trait Context<T> {
    /// Wraps the error with a fixed context.
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// Wraps the error with a context built only on failure.
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<MethodError>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| MethodError::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| MethodError::Context {
            context: f().into(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| MethodError::Invalid(context.into()))
    }
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| MethodError::Invalid(f().into()))
    }
}

impl MethodError {
    /// An I/O error on `path` while doing `action` ("read", "write", "create").
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MethodError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
