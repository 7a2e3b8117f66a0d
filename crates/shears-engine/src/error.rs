//! Typed errors of the engine.

/// Everything that can go wrong while executing or training a graph.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The caller asked to stop (Ctrl-C in a front end), between two steps.
    #[error("stopped on request")]
    Cancelled,
    #[error(transparent)]
    Core(#[from] shears_core::CoreError),
    #[error(transparent)]
    Data(#[from] shears_data::DataError),
    #[error(
        "training diverged: the loss became {value} at epoch {epoch}, step {step} (try a lower learning rate)"
    )]
    Diverged {
        epoch: usize,
        step: usize,
        value: f32,
    },
    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },
    #[error(
        "device `{0}` is not available in this build (rebuild with `--features {0}`), or unknown (use flex, cuda or wgpu)"
    )]
    Device(String),
    #[error("the data do not fit the model: {0}")]
    DataMismatch(String),
}

impl EngineError {
    pub fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::Invalid {
            what: what.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
