//! Filter pruning in the pipeline: train the dense network, score every channel group by a
//! filter criterion (L1, L2, BatchNorm scale, random, first-order Taylor), cut to a channel,
//! params or MACs target (or a global percentile), compact, check the compacted network against
//! the gated one, fine-tune, and report sizes, accuracy at every stage and measured latency.

use crate::config::ExperimentConfig;
use crate::config::TrainSection;
use crate::error::{MethodError, Result};
use crate::pipeline::Pipeline;
use crate::registry::PreparedMethod;
use crate::report::{Report, StructuredReport, version};
use crate::run_dir::RunDir;
use crate::steps::Runtime;
use crate::steps::latency::LatencySettings;
use crate::steps::structured::{
    CutContext, Importance, Outcome, Selected, Spelling, StructuredOptions, StructuredSpec,
    compact_finetune, cut_compact_finetune,
};
use shears_core::artifact::Model;
use shears_data::DataSplits;
use std::path::Path;
use std::time::Instant;

/// The criterion a method scores channels by when it cuts a given network in one shot, or
/// `None` for a method that must train first (MaskSparsity): `shears prune` takes only the
/// first kind; `shears run` takes both.
pub fn default_importance(method: &str) -> Option<Importance> {
    match method {
        "l1-filter" => Some(Importance::L1),
        "l2-filter" => Some(Importance::L2),
        "bn-scale" | "slimming" => Some(Importance::BnScale),
        "random-filter" => Some(Importance::Random),
        "taylor" => Some(Importance::Taylor),
        _ => None,
    }
}

/// [`default_importance`] of a registered filter method.
fn importance_of(method: &str) -> Result<Importance> {
    default_importance(method).ok_or_else(|| {
        MethodError::Invalid(format!("`{method}` is not a one-shot structured method"))
    })
}

/// A filter method with its checked spec.
pub struct Prepared {
    spec: StructuredSpec,
}

/// Registry hook: `[method] name = "l1-filter"` with the keys of [`StructuredOptions`].
pub fn prepare(
    name: &str,
    keys: &toml::Table,
    cfg: &ExperimentConfig,
) -> Result<Box<dyn PreparedMethod>> {
    let opts: StructuredOptions = keys.clone().try_into().map_err(|e: toml::de::Error| {
        MethodError::Invalid(format!("[method] of `{name}`: {}", e.message()))
    })?;
    let spec = StructuredSpec::resolve(name, importance_of(name)?, &opts, cfg.seed, Spelling::Key)?;
    Ok(Box::new(Prepared { spec }))
}

/// The dense baseline: the configured model (a zoo model, or a saved one) trained for
/// `[train] epochs` (0 keeps it as it is), once: it is kept in `dense/`, so a resumed run does
/// not retrain it, and shared with the other runs of its runs directory that train the same
/// one ([`crate::steps::baseline`]). Every method that starts from a trained network starts
/// here.
pub fn dense_baseline(p: &Pipeline<'_>) -> Result<Model> {
    crate::steps::baseline::dense_baseline(p)
}

/// Where one structured cut runs, outside any pipeline (`shears prune` on a given model).
pub struct CutRequest<'a> {
    pub rt: &'a Runtime,
    pub data: Option<&'a DataSplits>,
    pub test_limit: Option<usize>,
    pub dir: &'a RunDir,
    pub finetune: Option<TrainSection>,
    pub latency: Option<&'a LatencySettings>,
    pub save_masked: Option<&'a Path>,
    pub command: &'static str,
    /// The model's name in the report.
    pub model_name: String,
    pub dataset: Option<String>,
    /// Hash of the run's config, for the report.
    pub config_hash: Option<String>,
}

/// Cuts, compacts, fine-tunes and measures `dense` as `spec` says (or as `selected` says when
/// the channels were chosen already), and reports. `resume` continues an interrupted
/// fine-tuning; `started` is when the run began.
pub fn cut_and_report(
    req: &CutRequest<'_>,
    dense: &Model,
    spec: &StructuredSpec,
    selected: Option<Selected>,
    resume: bool,
    started: Instant,
) -> Result<StructuredReport> {
    let ctx = CutContext {
        rt: req.rt,
        data: req.data,
        test_limit: req.test_limit,
        dir: req.dir,
        resume,
        finetune: req.finetune.clone(),
        latency: req.latency,
        save_masked: req.save_masked,
    };
    let outcome = match selected {
        Some(sel) => compact_finetune(&ctx, dense, sel)?,
        None => cut_compact_finetune(&ctx, dense, spec)?,
    };
    let Outcome {
        selected,
        sizes,
        accuracy,
        latency,
    } = outcome;
    let l = req.latency.cloned().unwrap_or_default();
    Ok(StructuredReport {
        version: version(),
        command: req.command,
        run_dir: req.dir.path.display().to_string(),
        pruned_dir: req.dir.phase("pruned").display().to_string(),
        model: req.model_name.clone(),
        dataset: req.dataset.clone(),
        seed: req.rt.seed,
        config_hash: req.config_hash.clone(),
        spec: spec.clone(),
        threshold: selected.threshold,
        sizes,
        accuracy,
        finetune_epochs: req.finetune.as_ref().map_or(0, |f| f.epochs),
        slimming: None,
        masksparsity: None,
        paam: None,
        latency_warmup: l.warmup,
        latency_repeats: l.repeats,
        latency_rounds: l.rounds,
        latency,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The pipeline's cut: the run's data, fine-tuning and latency settings; `selected` as in
/// [`cut_and_report`].
pub fn pipeline_cut(
    p: &Pipeline<'_>,
    dense: &Model,
    spec: &StructuredSpec,
    selected: Option<Selected>,
) -> Result<StructuredReport> {
    let latency = p.latency();
    let req = CutRequest {
        rt: &p.rt,
        data: Some(p.data),
        test_limit: p.test_limit(),
        dir: p.dir,
        finetune: Some(p.finetune()),
        latency: latency.as_ref(),
        save_masked: None,
        command: p.command,
        model_name: p.cfg.model.arch.clone(),
        dataset: Some(p.cfg.data.dataset.clone()),
        config_hash: Some(p.cfg.hash()),
    };
    cut_and_report(&req, dense, spec, selected, p.resume, p.started)
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
