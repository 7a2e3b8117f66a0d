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

pub mod baseline;
pub mod channel_mask;
pub mod data;
pub mod eval;
pub mod latency;
pub mod model;
pub mod phase;
pub mod structured;
pub mod unstructured;

/// Where a step runs: the device and the seed of the run. Everything else a step needs is in
/// its own arguments, so a front end never builds a whole experiment config to call one.
#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    /// `flex` (CPU), or `cuda` / `wgpu` when built with those features.
    pub device: String,
    /// Seeds the device (initialisation, dropout) and the loaders.
    pub seed: u64,
}

impl Runtime {
    /// The runtime of an experiment config.
    pub fn of(cfg: &crate::config::ExperimentConfig) -> Runtime {
        Runtime {
            device: cfg.device.clone(),
            seed: cfg.seed,
        }
    }
}
