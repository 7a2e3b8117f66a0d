//! The steps every method is made of. A method composes these; none re-implements them.
//!
//! - [`data`]: load the configured data set.
//! - [`baseline`]: the dense baseline, trained once per runs directory and shared.
//! - [`model`]: build a zoo model or load a saved one; executors; the model an executor holds.
//! - [`phase`]: one training phase with a checkpoint every epoch and resume, with the method's
//!   loss terms, gradient edits and extra trainable parameters.
//! - [`eval`]: test accuracy, of a model or of a model with channels gated off.
//! - [`unstructured`]: scores -> masks to a direct or effective target, rewinding, schedules.
//! - [`structured`]: importance -> cut -> compact -> gated-equals-compacted check -> report.
//! - [`latency`]: measured dense-against-compacted latency.
//! - [`rounding`]: runtime-aware cuts: `round_to = "auto"` and latency targets, timed where
//!   the model will run.
//! - [`context`]: what a method's stages see in the pipeline.
//! - [`cut`]: the structured cut every structured method ends with, and its report.
//! - [`progress`]: how a front end follows a run and stops it between steps.

pub mod baseline;
pub mod channel_mask;
pub mod context;
pub mod cut;
pub mod data;
pub mod eval;
pub mod latency;
pub mod model;
pub mod phase;
pub mod progress;
pub mod rounding;
pub mod structured;
pub mod unstructured;

pub use progress::{Progress, Silent};
use std::sync::Arc;

/// Where a step runs: the device and the seed of the run, and who is told how it goes (and may
/// ask it to stop). Everything else a step needs is in its own arguments, so a front end never
/// builds a whole experiment config to call one.
#[derive(Clone)]
pub struct Runtime {
    /// `flex` (CPU), or `cuda` / `wgpu` when built with those features.
    pub device: String,
    /// Seeds the device (initialisation, dropout) and the loaders.
    pub seed: u64,
    /// Told of every stage and training step; asked between steps whether to stop.
    pub progress: Arc<dyn Progress>,
}

impl Runtime {
    /// A runtime that reports to no one.
    pub fn new(device: impl Into<String>, seed: u64) -> Runtime {
        Runtime {
            device: device.into(),
            seed,
            progress: Arc::new(Silent),
        }
    }

    /// The runtime of an experiment config.
    pub fn of(cfg: &crate::config::ExperimentConfig) -> Runtime {
        Runtime::new(cfg.device.clone(), cfg.seed)
    }

    /// The same runtime reporting to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Runtime {
        self.progress = progress;
        self
    }

    /// Announces a stage, after checking that the caller has not asked to stop.
    pub fn stage(&self, name: &str) -> crate::error::Result<()> {
        self.check_cancelled()?;
        self.progress.stage(name);
        Ok(())
    }

    /// [`crate::MethodError::Cancelled`] when the caller asked to stop.
    pub fn check_cancelled(&self) -> crate::error::Result<()> {
        if self.progress.cancelled() {
            return Err(crate::MethodError::Cancelled);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("device", &self.device)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Runtime {
    /// Two runtimes run a step alike when device and seed agree; who watches does not matter.
    fn eq(&self, other: &Runtime) -> bool {
        self.device == other.device && self.seed == other.seed
    }
}
