//! The pipeline every method runs in: resolve the config, open the run directory (a finished
//! run is not re-run; an interrupted one resumes), load the data, run the method's stages,
//! write `result.json` last.

use crate::config::{ExperimentConfig, TrainSection};
use crate::error::MethodError;
use crate::error::Result;
use crate::registry::resolve;
use crate::report::Report;
use crate::run_dir::{
    FAILED_FILE, FailedRun, Opened, RunDir, RunLock, open_run, run_name, write_failed,
};
use crate::steps::Runtime;
use crate::steps::latency::LatencySettings;
use crate::steps::model::configured_model;
use shears_core::artifact::Model;
use shears_data::DataSplits;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How to run: where, and whether to resume or start over.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The run directory; `None` names one under `runs_dir` from the config.
    pub out: Option<PathBuf>,
    pub runs_dir: PathBuf,
    /// Continue an interrupted run from its checkpoints.
    pub resume: bool,
    /// Remove an existing run directory first.
    pub force: bool,
    /// The command reported in `result.json` (`run`, `slim`).
    pub command: &'static str,
}

/// What [`run`] did.
#[derive(Debug)]
// One per run: the size of the report does not matter.
#[allow(clippy::large_enum_variant)]
pub enum RunOutcome {
    /// The run had finished before; its `result.json` text.
    Finished { dir: PathBuf, result: String },
    /// The run ran now.
    Done(Report),
}

/// The fine-tuning phase of a config without `[finetune]`: one epoch of `[train]` at a tenth of
/// its learning rate.
pub fn default_finetune(train: &TrainSection) -> TrainSection {
    let mut f = train.clone();
    f.epochs = 1;
    f.lr = train.lr / 10.0;
    f
}

/// Sets the fine-tuning epochs (from the default phase when the config has none), as
/// `--finetune-epochs` does.
pub fn set_finetune_epochs(cfg: &mut ExperimentConfig, epochs: usize) {
    let mut f = cfg
        .finetune
        .clone()
        .unwrap_or_else(|| default_finetune(&cfg.train));
    f.epochs = epochs;
    cfg.finetune = Some(f);
}

/// Everything a method's stages see.
pub struct Pipeline<'a> {
    pub cfg: &'a ExperimentConfig,
    pub rt: Runtime,
    pub dir: &'a RunDir,
    pub data: &'a DataSplits,
    pub resume: bool,
    pub command: &'static str,
    /// The config has a `[finetune]` phase (pruning at initialisation fine-tunes only then:
    /// its main phase is `[train]`).
    pub explicit_finetune: bool,
    pub started: Instant,
}

impl Pipeline<'_> {
    /// The fine-tuning phase (the config's, or [`default_finetune`]).
    pub fn finetune(&self) -> TrainSection {
        self.cfg
            .finetune
            .clone()
            .unwrap_or_else(|| default_finetune(&self.cfg.train))
    }

    /// The configured model with its initial weights.
    pub fn initial(&self) -> Result<Model> {
        configured_model(self.cfg, Some(self.data))
    }

    /// Evaluate on the first N test samples only.
    pub fn test_limit(&self) -> Option<usize> {
        self.cfg.train.test_limit
    }

    /// How latency is measured, or `None` when it is switched off.
    pub fn latency(&self) -> Option<LatencySettings> {
        let l = self.cfg.latency.clone().unwrap_or_default();
        l.enabled.then_some(l)
    }
}

/// The run directory `cfg` gets under `runs_dir`: named from the method, its target, the seed
/// and the config hash, so that a finished run is found again by any later request for it.
pub fn run_path(cfg: &ExperimentConfig, runs_dir: &Path) -> Result<PathBuf> {
    let method = resolve(cfg)?;
    let (label, target) = method.label();
    Ok(runs_dir.join(run_name(&cfg.name, &label, target, cfg.seed, &cfg.hash())))
}

/// Runs `cfg`'s method through the pipeline in its run directory.
///
/// The directory is locked for the whole run ([`RunLock`]), so two processes asked for the same
/// run never write it at once: the second gets [`crate::MethodError::RunBusy`]. A run that fails
/// leaves `failed.json` with the error; trying it again removes that record first.
pub fn run(cfg: &ExperimentConfig, req: &RunRequest) -> Result<RunOutcome> {
    cfg.validate()?;
    let method = resolve(cfg)?;
    if let Some(t) = cfg.threads {
        shears_engine::device::set_threads(t)?;
    }
    let path = match &req.out {
        Some(p) => p.clone(),
        None => run_path(cfg, &req.runs_dir)?,
    };
    let _lock = RunLock::acquire(&path)?;
    let config = cfg.to_toml();
    let dir = match open_run(path, req.force, &config)? {
        Opened::Finished { dir, result } => {
            return Ok(RunOutcome::Finished {
                dir: dir.path,
                result,
            });
        }
        Opened::Fresh(dir) => dir,
    };
    let failed = dir.path.join(FAILED_FILE);
    if failed.exists() {
        std::fs::remove_file(&failed).map_err(|e| MethodError::io("remove", &failed, e))?;
    }
    dir.write_config(&config)?;
    let started = Instant::now();
    let outcome = run_stages(cfg, req, method.as_ref(), &dir, started);
    if let Err(e) = &outcome {
        // Best effort: the error itself is what the caller must see.
        let record = FailedRun {
            error: format!("{e}{}", source_chain(e)),
            seconds: started.elapsed().as_secs_f64(),
        };
        if let Err(w) = write_failed(&dir.path, &record) {
            tracing::warn!("could not record the failure: {w}");
        }
    }
    outcome
}

/// The causes of `e`, each as `: cause`, as anyhow's `{:#}` prints them.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(&format!(": {c}"));
        cur = c.source();
    }
    out
}

/// Loads the data and runs the method's stages in the opened run directory.
fn run_stages(
    cfg: &ExperimentConfig,
    req: &RunRequest,
    method: &dyn crate::registry::PreparedMethod,
    dir: &RunDir,
    started: Instant,
) -> Result<RunOutcome> {
    let data = crate::steps::data::load_configured(cfg)?;
    crate::steps::data::write_data_record(
        &dir.path,
        &crate::steps::data::DataSource::of(cfg),
        &data,
    )?;
    let explicit_finetune = cfg.finetune.is_some();
    let pipeline = Pipeline {
        cfg,
        rt: Runtime::of(cfg),
        dir,
        data: &data,
        resume: req.resume,
        command: req.command,
        explicit_finetune,
        started,
    };
    let report = method.run(&pipeline)?;
    dir.write_result(&report)?;
    Ok(RunOutcome::Done(report))
}
