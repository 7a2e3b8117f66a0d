//! Filter pruning in the pipeline: train the dense network, score every channel group by a
//! filter criterion (L1, L2, BatchNorm scale, random, first-order Taylor), cut to a channel,
//! params or MACs target (or a global percentile), compact, check the compacted network against
//! the gated one, fine-tune, and report sizes, accuracy at every stage and measured latency.

use crate::config::ExperimentConfig;
use crate::error::{MethodError, Result};
use crate::method::{MethodEntry, PreparedMethod};
use crate::report::Report;
use crate::steps::baseline::dense_baseline;
use crate::steps::context::Pipeline;
use crate::steps::cut::pipeline_cut;
use crate::steps::structured::{Spelling, StructuredOptions, StructuredSpec};

/// A filter method with its checked spec.
pub struct Prepared {
    spec: StructuredSpec,
}

/// Registry hook: `[method] name = "l1-filter"` with the keys of [`StructuredOptions`]; the
/// entry names the criterion.
pub fn prepare(
    entry: &MethodEntry,
    keys: &toml::Table,
    cfg: &ExperimentConfig,
) -> Result<Box<dyn PreparedMethod>> {
    let name = entry.name;
    let opts: StructuredOptions = keys.clone().try_into().map_err(|e: toml::de::Error| {
        MethodError::Invalid(format!("[method] of `{name}`: {}", e.message()))
    })?;
    let Some(importance) = entry.one_shot else {
        crate::invalid!("`{name}` is not a one-shot structured method");
    };
    let spec = StructuredSpec::resolve(name, importance, &opts, cfg.seed, Spelling::Key)?;
    Ok(Box::new(Prepared { spec }))
}

impl PreparedMethod for Prepared {
    fn label(&self) -> (String, Option<f64>) {
        (
            format!("{}-{}", self.spec.method, self.spec.cut_label()),
            None,
        )
    }

    fn run(&self, p: &Pipeline<'_>) -> Result<Report> {
        let dense = dense_baseline(p)?;
        Ok(Report::Structured(pipeline_cut(
            p, &dense, &self.spec, None,
        )?))
    }
}
