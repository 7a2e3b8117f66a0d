//! Pruning a given network in one shot, with no training before the cut (`shears prune`,
//! `shears.prune` in Python): a zoo model at its initialisation, a saved (e.g. trained) one, an
//! ONNX file, or a model already in memory. Unstructured methods save the masked model and
//! report direct and effective sparsity; structured ones compact, optionally fine-tune, and
//! report sizes, accuracy and measured latency. A run directory is written either way
//! (`result.json` last).

use crate::config::TrainSection;
use crate::error::{Context, MethodError, Result};
use crate::invalid;
use crate::method::MethodKind;
use crate::registry::find;
use crate::report::{Report, StructuredReport, UnstructuredPruneReport};
use crate::run_dir::{RunDir, RunLock, claim, is_within, run_name};
use crate::steps::Runtime;
use crate::steps::cut::{CutRequest, cut_and_report};
use crate::steps::data::{DataSource, known_model_input, load_data_shaped};
use crate::steps::latency::LatencySettings;
use crate::steps::model::{executor, is_saved_model, load_or_build};
use crate::steps::structured::{Spelling, StructuredOptions, StructuredSpec};
use crate::steps::unstructured::{UnstructuredSpec, prune as prune_weights};
use shears_core::artifact::{Model, save_model};
use shears_core::sparsity::{Allocation, TargetKind};
use shears_data::DataSplits;
use shears_engine::device::device_by_name;
use shears_engine::scores::{GRASP_TEMPERATURE, SYNFLOW_ROUNDS};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The network a one-shot prune starts from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A zoo name (fresh weights), a model directory or an `.onnx` file.
    Named(String),
    /// A model already loaded (the Python binding's `shears.Model`), with the name reports use;
    /// `saved` is false for a zoo model with fresh weights.
    Loaded {
        name: String,
        model: Model,
        saved: bool,
    },
}

impl ModelSource {
    /// The name reports and run directories use.
    pub fn name(&self) -> &str {
        match self {
            ModelSource::Named(n) => n,
            ModelSource::Loaded { name, .. } => name,
        }
    }

    /// True for a trained or imported model, false for a zoo model at its initialisation.
    fn saved(&self) -> bool {
        match self {
            ModelSource::Named(n) => is_saved_model(n),
            ModelSource::Loaded { saved, .. } => *saved,
        }
    }
}

/// The unstructured settings of a one-shot prune.
#[derive(Debug, Clone)]
pub struct UnstructuredSettings {
    /// One global ranking, or a layer quota.
    pub allocation: Allocation,
    pub target_kind: TargetKind,
    /// Also remove the unpruned weights that lie on no input→output path.
    pub apply_effective: bool,
    /// Let a layer lose every weight (off by default: a collapsed layer disconnects the network).
    pub allow_collapse: bool,
    pub synflow_rounds: usize,
    pub grasp_temperature: f64,
}

impl Default for UnstructuredSettings {
    fn default() -> Self {
        UnstructuredSettings {
            allocation: Allocation::Global,
            target_kind: TargetKind::Direct,
            apply_effective: false,
            allow_collapse: false,
            synflow_rounds: SYNFLOW_ROUNDS,
            grasp_temperature: GRASP_TEMPERATURE,
        }
    }
}

/// Everything a one-shot prune needs: what `shears prune`'s flags and `shears.prune`'s keyword
/// arguments say. [`PruneRequest::new`] gives the CLI's defaults.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    pub model: ModelSource,
    /// Per-sample input shape (`3x32x32`) and classes of a zoo model built without data.
    pub input: Option<String>,
    pub classes: Option<usize>,
    /// A registered method (`shears inspect --methods`).
    pub method: String,
    /// Unstructured target: the sparsity in [0, 1), or a compression >= 1 (one of them).
    pub sparsity: Option<f64>,
    pub compression: Option<f64>,
    pub unstructured: UnstructuredSettings,
    /// Structured target and selection (`channel_ratio`, `macs_reduction`, `round_to`, ...).
    pub structured: StructuredOptions,
    /// Training batches that data-dependent scores (SNIP, GraSP, Taylor) average over.
    pub score_batches: usize,
    pub score_batch_size: usize,
    /// Evaluate (and fine-tune) on data; false prunes without any data unless the score needs it.
    pub evaluate: bool,
    /// Fine-tuning of a structured method's compacted model (0 epochs: none).
    pub finetune: TrainSection,
    pub latency: LatencySettings,
    /// Also save the dense model with the removed channels zeroed here.
    pub save_masked: Option<PathBuf>,
    /// The data set (default: the embedded Fashion-MNIST subset) and its folder.
    pub dataset: Option<String>,
    pub data: Option<PathBuf>,
    pub seed: u64,
    pub device: String,
    /// The run directory; `None` names one under `runs_dir`.
    pub out: Option<PathBuf>,
    pub runs_dir: PathBuf,
    /// Replace a run directory that holds another command's result or a saved model.
    pub force: bool,
    /// How errors spell the options: `--macs-reduction` for the CLI, `macs_reduction` for
    /// keyword arguments.
    pub spelling: Spelling,
}

impl PruneRequest {
    /// A request with the CLI's defaults: no fine-tuning, latency measured, runs under `runs/`.
    pub fn new(model: ModelSource, method: impl Into<String>) -> PruneRequest {
        PruneRequest {
            model,
            input: None,
            classes: None,
            method: method.into(),
            sparsity: None,
            compression: None,
            unstructured: UnstructuredSettings::default(),
            structured: StructuredOptions::default(),
            score_batches: 10,
            score_batch_size: 128,
            evaluate: true,
            finetune: TrainSection {
                epochs: 0,
                lr: 0.01,
                ..TrainSection::default()
            },
            latency: LatencySettings::default(),
            save_masked: None,
            dataset: None,
            data: None,
            seed: 0,
            device: "flex".into(),
            out: None,
            runs_dir: PathBuf::from("runs"),
            force: false,
            spelling: Spelling::Flag,
        }
    }

    fn dataset_name(&self) -> &str {
        self.dataset.as_deref().unwrap_or("fashion-mnist-subset")
    }

    /// The target sparsity from `sparsity` or `compression`.
    fn target_sparsity(&self) -> Result<f64> {
        match (self.sparsity, self.compression) {
            (Some(s), None) => {
                if !(0.0..1.0).contains(&s) {
                    invalid!(
                        "{} must be in [0, 1), got {s}",
                        self.spelling.name("sparsity")
                    );
                }
                Ok(s)
            }
            (None, Some(c)) => {
                if !c.is_finite() || c < 1.0 {
                    invalid!(
                        "{} must be a finite number >= 1, got {c}",
                        self.spelling.name("compression")
                    );
                }
                Ok(1.0 - 1.0 / c)
            }
            _ => invalid!(
                "give exactly one of {} and {}",
                self.spelling.name("sparsity"),
                self.spelling.name("compression")
            ),
        }
    }

    /// The data the request names, shaped for its model.
    fn load_data(&self) -> Result<DataSplits> {
        let model_input = || match &self.model {
            ModelSource::Named(n) => known_model_input(n, self.input.as_deref()),
            ModelSource::Loaded { model, .. } => Ok(Some(model.graph.input.shape.clone())),
        };
        load_data_shaped(self.dataset_name(), self.data.as_deref(), model_input)
    }

    /// The model to prune: loaded, saved, or a zoo model with fresh weights shaped by the data
    /// when there are data (else by `input`/`classes`, defaulting to the embedded data set's).
    fn load_model(&self, data: Option<&DataSplits>) -> Result<Model> {
        let name = match &self.model {
            ModelSource::Loaded { model, .. } => return Ok(model.clone()),
            ModelSource::Named(n) => n,
        };
        match data {
            Some(d) => load_or_build(
                name,
                self.input.as_deref(),
                self.classes,
                Some(d),
                self.seed,
            ),
            None => load_or_build(
                name,
                Some(self.input.as_deref().unwrap_or("1x28x28")),
                Some(self.classes.unwrap_or(10)),
                None,
                self.seed,
            ),
        }
    }

    fn runtime(&self, rt: &Runtime) -> Runtime {
        Runtime {
            device: self.device.clone(),
            seed: self.seed,
            progress: rt.progress.clone(),
        }
    }

    fn data_source(&self) -> DataSource {
        DataSource {
            dataset: self.dataset_name().to_string(),
            dir: self.data.clone(),
        }
    }

    /// The run directory, claimed for this prune (see [`claim`]): the lock is held while the
    /// guard lives. A directory inside the model being read is refused.
    fn run_dir(&self, method: &str, target: Option<f64>, hash: &str) -> Result<(RunDir, RunLock)> {
        let name = self.model.name();
        let base = Path::new(name)
            .file_name()
            .map_or(name.to_string(), |s| s.to_string_lossy().into());
        let run = run_name(&base, method, target, self.seed, hash);
        let path = self.out.clone().unwrap_or_else(|| self.runs_dir.join(run));
        if let ModelSource::Named(n) = &self.model
            && Path::new(n).is_dir()
            && is_within(&path, Path::new(n))
        {
            invalid!(
                "the run directory {} is inside the model being pruned ({n}): writing there would overwrite it; choose another --out",
                path.display()
            );
        }
        let lock = claim(&path, "prune", self.force)?;
        Ok((RunDir::new(path)?, lock))
    }
}

/// Prunes the request's model with its method; the runtime's progress is told of each stage.
pub fn prune(req: &PruneRequest, rt: &Runtime) -> Result<Report> {
    match find(&req.method)?.kind {
        MethodKind::Structured => Ok(Report::Structured(prune_structured(req, rt)?)),
        MethodKind::Dynamic => invalid!(
            "`{}` trains per-input gates from a trained model over many epochs: run it with `shears run` and a [method] name = \"{}\" config",
            req.method,
            req.method
        ),
        MethodKind::Unstructured => Ok(Report::OneShot(prune_unstructured(req, rt)?)),
    }
}

/// Prunes weights to the target, saves the masked model and its sparsity report.
fn prune_unstructured(req: &PruneRequest, rt: &Runtime) -> Result<UnstructuredPruneReport> {
    let u = &req.unstructured;
    let mut spec = UnstructuredSpec::new(
        req.method.parse()?,
        u.allocation,
        u.target_kind,
        req.target_sparsity()?,
        req.seed,
    )?;
    spec.apply_effective = u.apply_effective;
    spec.keep_one_per_layer = !u.allow_collapse;
    spec.score_batches = req.score_batches;
    spec.score_batch_size = req.score_batch_size;
    spec.synflow_rounds = u.synflow_rounds;
    spec.grasp_temperature = u.grasp_temperature;
    let rt = req.runtime(rt);
    let data = if spec.method.needs_data() || req.dataset.is_some() {
        rt.stage("loading data")?;
        Some(req.load_data()?)
    } else {
        None
    };
    let model = req.load_model(data.as_ref())?;
    // Timed from here, as `shears prune` always timed: loading is not pruning.
    let started = Instant::now();
    let device = device_by_name(&rt.device)?;
    rt.stage("scoring and masking")?;
    let pruned = prune_weights(&model, &spec, data.as_ref(), &device)?;
    let (dir, _lock) = req.run_dir(
        &format!("{}-{}", spec.method, spec.allocation_name()),
        Some(spec.target),
        spec.kind.name(),
    )?;
    save_model(&dir.path, &pruned.model)?;
    if let Some(d) = &data {
        crate::steps::data::write_data_record(&dir.path, &req.data_source(), d)?;
    }
    let report = UnstructuredPruneReport {
        command: "prune",
        model: req.model.name().to_string(),
        pruned_at: if req.model.saved() { "saved" } else { "init" },
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

/// Cuts channels to the target, compacts, fine-tunes if asked, measures and reports.
fn prune_structured(req: &PruneRequest, rt: &Runtime) -> Result<StructuredReport> {
    if req.sparsity.is_some() || req.compression.is_some() {
        let n = |k: &str| req.spelling.name(k);
        invalid!(
            "{} and {} apply to unstructured methods; `{}` takes {}, {}, {}, {} or {}",
            n("sparsity"),
            n("compression"),
            req.method,
            n("channel_ratio"),
            n("params_reduction"),
            n("macs_reduction"),
            n("latency_reduction"),
            n("percentile")
        );
    }
    let Some(importance) = find(&req.method)?.one_shot else {
        invalid!(
            "`{}` trains before it cuts (a mask, then sparsity training): run it with `shears run --config` and `[method] name = \"{}\"`",
            req.method,
            req.method
        );
    };
    let options = StructuredOptions {
        score_batches: req.score_batches,
        score_batch_size: req.score_batch_size,
        ..req.structured.clone()
    };
    let spec = StructuredSpec::resolve(&req.method, importance, &options, req.seed, req.spelling)?;
    if !req.evaluate && req.finetune.epochs > 0 {
        invalid!(
            "{} needs data to train and evaluate on; {}",
            req.spelling.name("finetune_epochs"),
            match req.spelling {
                Spelling::Keyword => "give data=",
                _ => "drop --no-eval",
            }
        );
    }
    req.finetune.validate("finetune")?;
    if req.latency.enabled {
        req.latency.validate()?;
    }
    let rt = req.runtime(rt);
    let data = if req.evaluate || spec.needs_data() {
        rt.stage("loading data")?;
        Some(req.load_data()?)
    } else {
        None
    };
    let model = req.load_model(data.as_ref())?;
    let started = Instant::now();
    if let Some(d) = &data {
        let probe = executor(&rt, &model, false)?;
        shears_engine::train::check_data_fits(&probe, &d.test)
            .context("pass --no-eval to prune without evaluating on data")?;
    }
    let (dir, _lock) = req.run_dir(
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
    let cut = CutRequest {
        rt: &rt,
        data: data.as_ref(),
        test_limit: req.finetune.test_limit,
        dir: &dir,
        finetune: Some(req.finetune.clone()),
        latency: req.latency.enabled.then_some(&req.latency),
        save_masked: req.save_masked.as_deref(),
        command: "prune",
        model_name: req.model.name().to_string(),
        dataset: data.as_ref().map(|_| req.dataset_name().to_string()),
        config_hash: None,
    };
    let report = cut_and_report(&cut, &model, &spec, None, false, started)?;
    if let Some(d) = &data {
        crate::steps::data::write_data_record(&dir.path, &req.data_source(), d)?;
    }
    dir.write_result(&report)?;
    Ok(report)
}
