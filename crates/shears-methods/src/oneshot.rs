//! Pruning a given network in one shot, with no training before the cut (`shears prune`): a zoo
//! model at its initialisation or a saved (e.g. trained) one. Unstructured methods save the
//! masked model and report direct and effective sparsity; structured ones compact, optionally
//! fine-tune, and report sizes, accuracy and measured latency. A run directory is written either
//! way (`result.json` last).

use crate::config::TrainSection;
use crate::error::{Context, MethodError, Result};
use crate::methods::filter::{CutRequest, cut_and_report};
use crate::report::StructuredReport;
use crate::run_dir::{RunDir, run_name};
use crate::steps::Runtime;
use crate::steps::data::{DataSource, write_data_record};
use crate::steps::latency::LatencySettings;
use crate::steps::model::executor;
use crate::steps::structured::StructuredSpec;
use crate::steps::unstructured::{UnstructuredSpec, prune};
use serde::Serialize;
use shears_core::artifact::{Model, save_model};
use shears_core::sparsity::SparsityReport;
use shears_data::DataSplits;
use shears_engine::device::device_by_name;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The network to prune and where the run goes.
pub struct OneShot<'a> {
    /// The model as the user named it (zoo name or directory), for reports and run names.
    pub model_name: &'a str,
    pub model: Model,
    /// True for a saved model, false for a zoo model at its initialisation.
    pub saved: bool,
    /// Data to score (SNIP, GraSP, Taylor), evaluate and fine-tune on; `None` for neither.
    pub data: Option<&'a DataSplits>,
    /// Where `data` came from, recorded with it in the run directory.
    pub data_source: Option<DataSource>,
    pub rt: Runtime,
    /// The run directory; `None` names one under `runs_dir`.
    pub out: Option<PathBuf>,
    pub runs_dir: PathBuf,
}

impl OneShot<'_> {
    fn dir(&self, method: &str, target: Option<f64>, hash: &str) -> Result<RunDir> {
        let base = Path::new(self.model_name)
            .file_name()
            .map_or(self.model_name.to_string(), |s| s.to_string_lossy().into());
        let name = run_name(&base, method, target, self.rt.seed, hash);
        RunDir::new(self.out.clone().unwrap_or_else(|| self.runs_dir.join(name)))
    }

    /// Records the data set and its normalisation in the run directory, when there are data.
    fn record_data(&self, dir: &RunDir) -> Result<()> {
        match (self.data, &self.data_source) {
            (Some(data), Some(source)) => write_data_record(&dir.path, source, data),
            _ => Ok(()),
        }
    }
}

/// The report of an unstructured one-shot prune.
#[derive(Debug, Clone, Serialize)]
pub struct UnstructuredPruneReport {
    pub model: String,
    /// `init` for a zoo model with fresh weights, `saved` for a loaded model.
    pub pruned_at: &'static str,
    pub method: String,
    pub allocation: String,
    pub target_kind: String,
    /// Target sparsity.
    pub target: f64,
    pub target_compression: f64,
    pub apply_effective: bool,
    pub seed: u64,
    /// Effective-sparsity evaluations of the target search.
    pub evaluations: usize,
    pub seconds: f64,
    pub run_dir: String,
    #[serde(flatten)]
    pub report: SparsityReport,
}

/// Prunes `job.model` as `spec` says, saves the masked model and its report.
pub fn prune_unstructured(
    job: &OneShot<'_>,
    spec: &UnstructuredSpec,
) -> Result<UnstructuredPruneReport> {
    let started = Instant::now();
    let device = device_by_name(&job.rt.device)?;
    let pruned = prune(&job.model, spec, job.data, &device)?;
    let dir = job.dir(
        &format!("{}-{}", spec.method, spec.allocation_name()),
        Some(spec.target),
        spec.kind.name(),
    )?;
    save_model(&dir.path, &pruned.model)?;
    job.record_data(&dir)?;
    let report = UnstructuredPruneReport {
        model: job.model_name.to_string(),
        pruned_at: if job.saved { "saved" } else { "init" },
        method: spec.method.name().into(),
        allocation: spec.allocation_name(),
        target_kind: spec.kind.name().into(),
        target: spec.target,
        target_compression: 1.0 / (1.0 - spec.target),
        apply_effective: spec.apply_effective,
        seed: spec.seed,
        evaluations: pruned.evaluations,
        seconds: started.elapsed().as_secs_f64(),
        run_dir: dir.path.display().to_string(),
        report: pruned.report,
    };
    dir.write_result(&report)?;
    Ok(report)
}

/// What a structured one-shot prune does after the cut.
pub struct AfterCut<'a> {
    /// Fine-tuning of the compacted model (0 epochs: none).
    pub finetune: TrainSection,
    pub latency: &'a LatencySettings,
    /// Also save the dense model with the removed channels zeroed here.
    pub save_masked: Option<&'a Path>,
    /// The data set's name for the report.
    pub dataset: Option<String>,
}

/// Cuts `job.model` as `spec` says, compacts, fine-tunes if asked, measures and reports.
pub fn prune_structured(
    job: &OneShot<'_>,
    spec: &StructuredSpec,
    after: &AfterCut<'_>,
) -> Result<StructuredReport> {
    let started = Instant::now();
    if let Some(d) = job.data {
        let probe = executor(&job.rt, &job.model, false)?;
        shears_engine::train::check_data_fits(&probe, &d.test)
            .context("pass --no-eval to prune without evaluating on data")?;
    }
    let dir = job.dir(
        &format!("{}-{}", spec.method, spec.cut_label()),
        None,
        &spec.hash(),
    )?;
    // A one-shot prune always starts over: a fine-tuning checkpoint left by an earlier run of
    // another selection must not be resumed into this one.
    let stale = dir.phase("finetune");
    if stale.exists() {
        std::fs::remove_dir_all(&stale).map_err(|e| MethodError::io("clear", &stale, e))?;
    }
    let req = CutRequest {
        rt: &job.rt,
        data: job.data,
        test_limit: after.finetune.test_limit,
        dir: &dir,
        finetune: Some(after.finetune.clone()),
        latency: after.latency.enabled.then_some(after.latency),
        save_masked: after.save_masked,
        command: "prune",
        model_name: job.model_name.to_string(),
        dataset: job.data.and(after.dataset.clone()),
        config_hash: None,
    };
    let report = cut_and_report(&req, &job.model, spec, None, false, started)?;
    job.record_data(&dir)?;
    dir.write_result(&report)?;
    Ok(report)
}
