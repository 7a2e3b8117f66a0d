//! What a method is to the rest of shears: its kind, its registry entry, and the prepared form
//! the pipeline runs. Methods implement [`PreparedMethod`]; the registry lists [`MethodEntry`]s;
//! neither knows the other's modules.

use crate::config::ExperimentConfig;
use crate::error::Result;
use crate::report::Report;
use crate::steps::context::Pipeline;
use crate::steps::structured::Importance;

/// What a method removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// Individual weights (masks); the network keeps its shape.
    Unstructured,
    /// Whole channels; the network is compacted into a smaller dense one.
    Structured,
    /// Channels gated per input by trained predictors; the network keeps its weights.
    Dynamic,
}

impl MethodKind {
    /// `unstructured`, `structured` or `dynamic`.
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Unstructured => "unstructured",
            MethodKind::Structured => "structured",
            MethodKind::Dynamic => "dynamic",
        }
    }
}

/// A method whose keys were checked: what the pipeline runs.
pub trait PreparedMethod {
    /// Method and target for the run directory's name, e.g. (`magnitude`, Some(0.8)).
    fn label(&self) -> (String, Option<f64>);
    /// Runs the method's stages in the pipeline's run directory.
    fn run(&self, pipeline: &Pipeline<'_>) -> Result<Report>;
}

/// Checks a method's `[method]` keys and prepares it.
pub type PrepareFn =
    fn(&MethodEntry, &toml::Table, &ExperimentConfig) -> Result<Box<dyn PreparedMethod>>;

/// One registry entry.
pub struct MethodEntry {
    /// The name `[method] name` and `--method` take.
    pub name: &'static str,
    pub kind: MethodKind,
    /// One line for help texts and listings.
    pub description: &'static str,
    /// Checks the keys and prepares the method.
    pub prepare: PrepareFn,
    /// The criterion it ranks channels by when it cuts a given network with no training
    /// before (`shears prune`); `None` for a method that must train first (MaskSparsity, PAAM)
    /// and for unstructured and dynamic methods.
    pub one_shot: Option<Importance>,
}
