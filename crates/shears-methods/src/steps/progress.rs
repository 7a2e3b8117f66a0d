//! How a front end follows a run and stops it: the CLI draws bars, the Python binding drives tqdm
//! or `logging` and turns Ctrl-C into a stop between two steps.

pub use shears_engine::train::StepProgress;

/// Told of each stage and each training step; asked between steps whether to stop. Every
/// method has a default, so a front end implements only what it shows.
pub trait Progress: Send + Sync {
    /// A stage begins: `training`, `scoring and cutting`, `fine-tuning`, `measuring latency`...
    fn stage(&self, _name: &str) {}
    /// One training step finished.
    fn step(&self, _at: StepProgress) {}
    /// True stops the run at the next step boundary with [`crate::MethodError::Cancelled`]; the
    /// run directory keeps its last checkpoint, so `--resume` continues it.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports to no one and never stops.
pub struct Silent;

impl Progress for Silent {}
