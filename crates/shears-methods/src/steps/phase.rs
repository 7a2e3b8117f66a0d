//! One training phase in a directory of its own: a checkpoint and a metrics row after every
//! epoch, and resume from the last checkpoint. Methods add their regularisers through
//! [`shears_engine::train::TrainHooks`] (gradient edits, loss terms, extra trainable parameters).

use super::Runtime;
use super::model::{executor, model_of};
use crate::config::TrainSection;
use crate::error::{Context, Result};
use crate::invalid;
use crate::run_dir::{read_metrics, write_metrics};
use shears_core::artifact::Model;
use shears_data::DataSplits;
use shears_engine::checkpoint::{
    CheckpointState, has_checkpoint, load_checkpoint, restore_optimizer, save_checkpoint,
};
use shears_engine::train::TrainHooks;
use shears_engine::{EngineError, EpochMetrics, Executor, Optimizer, train};
use std::path::{Path, PathBuf};

/// Environment variable that stops training right after the given epoch's checkpoint, as if
/// the process had been killed; used by the resume tests.
pub const INTERRUPT_ENV: &str = "SHEARS_INTERRUPT_AFTER_EPOCH";

/// Where a training phase starts: a fresh executor and optimiser, or the state of the phase's
/// last checkpoint when resuming.
pub struct PhaseStart {
    /// The executor, on an autodiff device.
    pub exec: Executor,
    /// The optimiser of the graph's parameters.
    pub opt: Optimizer,
    /// Epochs already completed.
    pub start: usize,
    /// Metrics rows of the completed epochs.
    pub rows: Vec<EpochMetrics>,
    /// The phase's checkpoint directory.
    pub checkpoint: PathBuf,
}

/// Prepares a phase in `dir`. With `resume`, continues from the phase's checkpoint; without it,
/// an existing checkpoint is an error (no silent restart).
pub fn start_phase(
    rt: &Runtime,
    section: &TrainSection,
    model: Model,
    dir: &Path,
    resume: bool,
) -> Result<PhaseStart> {
    let ckpt = dir.join("checkpoint");
    let (model, start, saved_opt) = if has_checkpoint(&ckpt) {
        if !resume {
            invalid!(
                "{} holds a checkpoint of an interrupted run: pass --resume to continue it, or --force to start over",
                dir.display()
            );
        }
        let (m, state, opt) = load_checkpoint(&ckpt).context("cannot resume")?;
        tracing::info!("resuming {} after epoch {}", dir.display(), state.epoch);
        (m, state.epoch, Some((opt, state)))
    } else {
        (model, 0, None)
    };
    let exec = executor(rt, &model, true)?;
    let mut opt = Optimizer::new(section.optimizer.clone(), exec.params.len())?;
    if let Some((saved, state)) = &saved_opt {
        restore_optimizer(&exec, &mut opt, saved, state)?;
    }
    let rows: Vec<EpochMetrics> = read_metrics(dir)?
        .into_iter()
        .filter(|r| r.epoch <= start)
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| crate::MethodError::io("create", dir, e))?;
    Ok(PhaseStart {
        exec,
        opt,
        start,
        rows,
        checkpoint: ckpt,
    })
}

/// Saves the phase's state after `epoch`: the executor, the optimiser and the hooks' extra
/// parameters with their optimiser.
pub fn save_phase(
    ckpt: &Path,
    exec: &Executor,
    opt: &Optimizer,
    hooks: &TrainHooks<'_>,
    epoch: usize,
) -> shears_engine::Result<()> {
    let state = CheckpointState {
        epoch,
        optimizer_steps: opt.steps,
    };
    save_checkpoint(ckpt, exec, opt, &state)?;
    if let Some(extra) = &hooks.extra {
        extra.save(ckpt)?;
    }
    Ok(())
}

/// Trains one phase in `dir` with a checkpoint every epoch and no method hooks.
pub fn train_phase(
    rt: &Runtime,
    section: &TrainSection,
    model: Model,
    data: &DataSplits,
    dir: &Path,
    resume: bool,
) -> Result<(Model, Vec<EpochMetrics>)> {
    train_phase_with(
        rt,
        section,
        model,
        data,
        dir,
        resume,
        &mut TrainHooks::default(),
    )
}

/// [`train_phase`] with a method's hooks: gradient edits before every optimiser step, loss terms
/// added to the task loss, and extra trainable parameters (saved in the checkpoint and restored
/// on resume).
pub fn train_phase_with(
    rt: &Runtime,
    section: &TrainSection,
    model: Model,
    data: &DataSplits,
    dir: &Path,
    resume: bool,
    hooks: &mut TrainHooks<'_>,
) -> Result<(Model, Vec<EpochMetrics>)> {
    let PhaseStart {
        mut exec,
        mut opt,
        start,
        mut rows,
        checkpoint: ckpt,
    } = start_phase(rt, section, model, dir, resume)?;
    if start > 0
        && let Some(extra) = hooks.extra.as_deref_mut()
    {
        extra.restore(&ckpt)?;
    }
    let engine_cfg = section.to_engine(rt.seed);
    // Test hook: stop right after a checkpoint as if the process had been killed there.
    let interrupt_after: Option<usize> = std::env::var(INTERRUPT_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut on_epoch = |exec: &Executor,
                        opt: &Optimizer,
                        hooks: &TrainHooks<'_>,
                        m: &EpochMetrics|
     -> shears_engine::Result<()> {
        rows.push(m.clone());
        write_metrics(dir, &rows).map_err(|e| EngineError::invalid("metrics", e.to_string()))?;
        save_phase(&ckpt, exec, opt, hooks, m.epoch)?;
        if interrupt_after == Some(m.epoch) {
            return Err(EngineError::invalid(
                "run",
                format!(
                    "interrupted after epoch {} ({INTERRUPT_ENV} is set)",
                    m.epoch
                ),
            ));
        }
        Ok(())
    };
    train(
        &mut exec,
        data,
        &engine_cfg,
        &mut opt,
        start,
        hooks,
        &mut on_epoch,
    )?;
    let rows = read_metrics(dir)?;
    Ok((model_of(&exec), rows))
}
