//! The one front door of the library: a [`Request`] in, a [`Report`] out, progress through a
//! callback. `shears run`, `shears prune` and the Python binding all call [`execute`]; nothing
//! else in a front end decides which pipeline a request takes.

use crate::config::ExperimentConfig;
use crate::error::Result;
use crate::oneshot::{PruneRequest, prune};
use crate::pipeline::{RunOutcome, RunRequest, run_with};
use crate::steps::{Progress, Runtime, Silent};
use std::sync::Arc;

pub use crate::report::Report;

/// What a front end asks for.
#[derive(Debug, Clone)]
pub enum Request {
    /// A method's whole pipeline from an experiment config (`shears run`, `shears.run`):
    /// train, prune, fine-tune, measure, in a run directory that resumes.
    Run {
        config: ExperimentConfig,
        run: RunRequest,
    },
    /// A one-shot prune of a given network (`shears prune`, `shears.prune`).
    Prune(PruneRequest),
}

/// Runs `request`, telling `progress` of every stage and training step and stopping between
/// steps when it asks to ([`crate::MethodError::Cancelled`]).
pub fn execute(request: &Request, progress: Arc<dyn Progress>) -> Result<RunOutcome> {
    match request {
        Request::Run { config, run } => run_with(config, run, progress),
        Request::Prune(p) => {
            let rt = Runtime::new(p.device.clone(), p.seed).with_progress(progress);
            Ok(RunOutcome::Done(prune(p, &rt)?))
        }
    }
}

/// [`execute`] with no one watching.
pub fn execute_silently(request: &Request) -> Result<RunOutcome> {
    execute(request, Arc::new(Silent))
}
