//! The structured cut every structured method ends with, in a pipeline or outside one (`shears
//! prune`): cut (or take the channels a method chose), compact, check, fine-tune, measure, and
//! report.

use crate::config::TrainSection;
use crate::error::Result;
use crate::report::{StructuredReport, version};
use crate::run_dir::RunDir;
use crate::steps::Runtime;
use crate::steps::context::Pipeline;
use crate::steps::latency::LatencySettings;
use crate::steps::structured::{
    CutContext, Outcome, Selected, StructuredSpec, compact_finetune, cut_compact_finetune,
};
use shears_core::artifact::Model;
use shears_data::DataSplits;
use std::path::Path;
use std::time::Instant;

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
        onnxruntime,
    } = outcome;
    let l = req.latency.cloned().unwrap_or_default();
    let Selected {
        threshold,
        rounding,
        latency_search,
        ..
    } = selected;
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
        threshold,
        rounding,
        latency_search,
        sizes,
        accuracy,
        finetune_epochs: req.finetune.as_ref().map_or(0, |f| f.epochs),
        details: None,
        latency_warmup: l.warmup,
        latency_repeats: l.repeats,
        latency_rounds: l.rounds,
        latency,
        latency_notes: onnxruntime
            .as_ref()
            .map(|o| o.1.clone())
            .unwrap_or_default(),
        onnxruntime: onnxruntime.map(|o| o.0),
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
