//! The pipeline every method runs in: resolve the config, open the run directory (a finished
//! run is not re-run; an interrupted one resumes), load the data, run the method's stages,
//! write `result.json` last.

use crate::config::ExperimentConfig;
use crate::error::MethodError;
use crate::error::Result;
use crate::method::PreparedMethod;
use crate::registry::resolve;
use crate::report::Report;
use crate::run_dir::{
    FAILED_FILE, FailedRun, Opened, RunDir, claim, open_run, run_name, write_failed,
};
pub use crate::steps::context::Pipeline;
use crate::steps::{Progress, Runtime, Silent};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    run_with(cfg, req, Arc::new(Silent))
}

/// [`run`], telling `progress` of every stage and training step (it may stop the run between
/// two steps).
pub fn run_with(
    cfg: &ExperimentConfig,
    req: &RunRequest,
    progress: Arc<dyn Progress>,
) -> Result<RunOutcome> {
    cfg.validate()?;
    let method = resolve(cfg)?;
    if let Some(t) = cfg.threads {
        shears_engine::device::set_threads(t)?;
    }
    let path = match &req.out {
        Some(p) => p.clone(),
        None => run_path(cfg, &req.runs_dir)?,
    };
    let _lock = claim(&path, req.command, req.force)?;
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
    let rt = Runtime::of(cfg).with_progress(progress);
    let outcome = run_stages(cfg, rt, req, method.as_ref(), &dir, started);
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
    rt: Runtime,
    req: &RunRequest,
    method: &dyn PreparedMethod,
    dir: &RunDir,
    started: Instant,
) -> Result<RunOutcome> {
    rt.stage("loading data")?;
    let data = crate::steps::data::load_configured(cfg)?;
    crate::steps::data::write_data_record(
        &dir.path,
        &crate::steps::data::DataSource::of(cfg),
        &data,
    )?;
    let explicit_finetune = cfg.finetune.is_some();
    let pipeline = Pipeline {
        cfg,
        rt,
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
