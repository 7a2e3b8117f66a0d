//! The pruning methods of shears as a library, for the CLI and for any other front end (a sweep
//! runner, a notebook binding): no argument parsing, typed errors.
//!
//! - [`config`]: the experiment config, one shape for every method (`[method] name = ...`).
//! - [`registry`]: every method by name, with its kind and a one-line description.
//! - [`methods`]: one module per method, each a short pipeline over [`steps`].
//! - [`steps`]: what methods share (train phase with resume, unstructured and structured steps,
//!   evaluation, latency).
//! - [`pipeline`]: train -> method -> fine-tune -> report in a run directory ([`run_dir`]).
//! - [`oneshot`]: prune a given network with no training before the cut (`shears prune`).
//! - [`front`]: the one front door: a [`Request`] in, a [`Report`] out, progress through a
//!   callback; the CLI and the Python binding call only this to run a method.
//! - [`method`]: what a method is to the rest (its kind, registry entry, prepared form).
//!
//! Layers, each using only those below it (`tests/layering.rs` checks the `use` lines):
//! `error` < `config`, `run_dir` < `report`, `steps` < `method` < `methods` < `registry` <
//! `pipeline`, `oneshot`, `sweep` < `front`. No method uses another.

pub mod config;
pub mod error;
pub mod front;
pub mod inspect;
pub mod method;
pub mod methods;
pub mod oneshot;
pub mod pipeline;
pub mod registry;
pub mod report;
pub mod run_dir;
pub mod steps;
pub mod sweep;

pub use config::{ExperimentConfig, MethodSection, TrainSection};
pub use error::{Context, MethodError, Result};
pub use front::{Request, execute};
pub use method::{MethodEntry, MethodKind};
pub use oneshot::{ModelSource, PruneRequest};
pub use pipeline::{Pipeline, RunOutcome, RunRequest, run};
pub use registry::METHODS;
pub use report::Report;
pub use steps::{Progress, Runtime};
