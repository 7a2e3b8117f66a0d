//! The pipeline every method runs in: resolve the config, open the run directory (a finished
//! run is not re-run; an interrupted one resumes), load the data, run the method's stages,
//! write `result.json` last.

use crate::config::{ExperimentConfig, TrainSection};
use crate::error::Result;
use crate::registry::resolve;
use crate::report::Report;
use crate::run_dir::{Opened, RunDir, open_run, run_name};
use crate::steps::Runtime;
use crate::steps::latency::LatencySettings;
use crate::steps::model::configured_model;
use shears_core::artifact::Model;
use shears_data::DataSplits;
use std::path::PathBuf;
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

/// Runs `cfg`'s method through the pipeline in its run directory.
pub fn run(cfg: &ExperimentConfig, req: &RunRequest) -> Result<RunOutcome> {
    cfg.validate()?;
    let method = resolve(cfg)?;
    if let Some(t) = cfg.threads {
        shears_engine::device::set_threads(t)?;
    }
    let (label, target) = method.label();
    let name = run_name(&cfg.name, &label, target, cfg.seed, &cfg.hash());
    let path = req.out.clone().unwrap_or_else(|| req.runs_dir.join(name));
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
    dir.write_config(&config)?;
    let started = Instant::now();
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
        dir: &dir,
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
