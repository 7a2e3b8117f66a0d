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

pub mod config;
pub mod error;
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
pub use pipeline::{Pipeline, RunOutcome, RunRequest, run};
pub use registry::{METHODS, MethodEntry, MethodKind};
pub use report::Report;
pub use steps::Runtime;
