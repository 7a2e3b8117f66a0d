//! One training phase in a directory of its own: a checkpoint and a metrics row after every
//! epoch, and resume from the last checkpoint. Methods add their regularisers through
//! [`shears_engine::train::TrainHooks`] (gradient edits, loss terms, extra trainable parameters).

use super::Runtime;
use super::model::executor;
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
use shears_engine::{EngineError, EpochMetrics, Executor, ExtraParams, Optimizer, train_observed};
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
/// parameters with their optimiser. The checkpoint is written whole into a fresh directory that
/// then replaces the old one, so a kill at any moment leaves either the previous complete
/// checkpoint or none (the phase then starts over), never one torn across two epochs.
pub fn save_phase(
    ckpt: &Path,
    exec: &Executor,
    opt: &Optimizer,
    hooks: &TrainHooks<'_>,
    epoch: usize,
) -> shears_engine::Result<()> {
    let io = |e: std::io::Error| shears_core::CoreError::io(ckpt, e);
    let fresh = ckpt.with_extension("new");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(io)?;
    }
    let state = CheckpointState {
        epoch,
        optimizer_steps: opt.steps,
    };
    if let Some(extra) = &hooks.extra {
        extra.save(&fresh)?;
    }
    save_checkpoint(&fresh, exec, opt, &state)?;
    if ckpt.exists() {
        std::fs::remove_dir_all(ckpt).map_err(io)?;
    }
    std::fs::rename(&fresh, ckpt).map_err(io)?;
    Ok(())
}

/// A phase whose result is kept as a model in `cache` (a stage of a multi-stage method): the
/// cached model (and the phase's metrics) when it exists, else the phase trained in `dir` and
/// saved there. Zero epochs return `model` unchanged (and cache it).
#[allow(clippy::too_many_arguments)]
pub fn cached_phase(
    rt: &Runtime,
    section: &TrainSection,
    model: Model,
    data: &DataSplits,
    dir: &Path,
    cache: &Path,
    resume: bool,
    hooks: &mut TrainHooks<'_>,
) -> Result<(Model, Vec<EpochMetrics>)> {
    if shears_core::artifact::is_model_dir(cache) {
        return Ok((
            shears_core::artifact::load_model(cache)?,
            read_metrics(dir)?,
        ));
    }
    let (trained, rows) = if section.epochs == 0 {
        (model, Vec::new())
    } else {
        train_phase_with(rt, section, model, data, dir, resume, hooks)?
    };
    shears_core::artifact::save_model(cache, &trained)?;
    Ok((trained, rows))
}

/// The extra parameters (and buffers) of a finished phase's last epoch, kept in `keep` next to
/// the phase's model: restored from there, or the first time from the checkpoint of the phase
/// trained in `phase_dir` (which holds them after its last epoch) and then saved in `keep`. A
/// phase of zero epochs leaves `extra` as it is.
pub fn finished_extra(
    extra: &mut ExtraParams,
    keep: &Path,
    phase_dir: &Path,
    epochs: usize,
) -> Result<()> {
    let saved = ["extra.safetensors", "extra-optimizer.safetensors"]
        .iter()
        .all(|f| keep.join(f).is_file());
    if saved {
        extra.restore(keep)?;
        return Ok(());
    }
    let ckpt = phase_dir.join("checkpoint");
    if epochs > 0 {
        if !ckpt.is_dir() {
            invalid!(
                "{} has a trained network but neither the parameters trained with it ({}) nor the checkpoint they are in: start the run over with --force",
                phase_dir.parent().unwrap_or(phase_dir).display(),
                keep.display()
            );
        }
        extra.restore(&ckpt)?;
    }
    extra.save(keep)?;
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
    rt.stage(&format!(
        "training ({})",
        dir.file_name().map_or("".into(), |n| n.to_string_lossy())
    ))?;
    let on_step = |at: shears_engine::StepProgress| {
        rt.progress.step(at);
        if rt.progress.cancelled() {
            return Err(EngineError::Cancelled);
        }
        Ok(())
    };
    train_observed(
        &mut exec,
        data,
        &engine_cfg,
        &mut opt,
        start,
        hooks,
        &mut on_epoch,
        &on_step,
    )
    .map_err(|e| match e {
        EngineError::Cancelled => crate::MethodError::Cancelled,
        e => e.into(),
    })?;
    let rows = read_metrics(dir)?;
    Ok((exec.model(), rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shears_core::GraphBuilder;
    use shears_core::{Masks, init_weights};
    use shears_data::Dataset;
    use shears_engine::burn::tensor::{Device, Tensor};
    use shears_engine::{ExtraParams, LossTerm, OptimizerConfig, Schedule};

    fn model() -> Model {
        let mut b = GraphBuilder::new("t", &[1, 4, 4]);
        let x = b.input();
        let f = b.flatten("flat", &x);
        let y = b.linear("fc", &f, 3, true);
        let graph = b.finish(&y);
        let weights = init_weights(&graph, 0);
        Model {
            graph,
            weights,
            masks: Masks::new(),
        }
    }

    fn data() -> DataSplits {
        let n = 12;
        let images: Vec<u8> = (0..n * 16).map(|i| ((i * 53) % 256) as u8).collect();
        let labels: Vec<u16> = (0..n).map(|i| (i % 3) as u16).collect();
        let train = Dataset::new("t/train", images.clone(), [1, 4, 4], labels.clone(), 3).unwrap();
        let test = Dataset::new("t/test", images, [1, 4, 4], labels, 3).unwrap();
        DataSplits::with_train_stats(train, test).unwrap()
    }

    /// (p - 3)² on an extra parameter, plus p times the first logit weight, so the extra
    /// parameter and the graph's weights move together.
    struct Coupled;
    impl LossTerm for Coupled {
        fn name(&self) -> &str {
            "coupled"
        }
        fn loss(
            &self,
            exec: &Executor,
            extra: Option<&ExtraParams>,
            _: shears_engine::StepInfo,
        ) -> Option<Tensor<1>> {
            let p = extra?.get("p")?;
            let w = exec.params[exec.param_index("fc.weight")?].clone();
            Some(p.clone().sub_scalar(3.0).powi_scalar(2).sum() + (p * w.slice(0..1)).sum())
        }
    }

    fn extra() -> ExtraParams {
        let sgd = OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        };
        ExtraParams::new(
            &Device::flex().autodiff(),
            vec![("p".into(), vec![1], vec![0.0])],
            sgd,
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_resumed_phase_restores_the_extra_parameters_and_their_momentum() {
        let rt = Runtime::new("flex", 0);
        let section = |epochs| TrainSection {
            epochs,
            batch_size: 4,
            lr: 0.05,
            schedule: Schedule::Constant,
            ..TrainSection::default()
        };
        let tmp = tempfile::tempdir().unwrap();
        let d = data();
        let mut full = extra();
        let (whole, _) = train_phase_with(
            &rt,
            &section(2),
            model(),
            &d,
            &tmp.path().join("full"),
            false,
            &mut TrainHooks {
                terms: vec![&Coupled],
                extra: Some(&mut full),
                ..TrainHooks::default()
            },
        )
        .unwrap();
        // One epoch, then a new process would resume: new extra parameters at their initial
        // values, restored from the checkpoint.
        let dir = tmp.path().join("split");
        let mut first = extra();
        train_phase_with(
            &rt,
            &section(1),
            model(),
            &d,
            &dir,
            false,
            &mut TrainHooks {
                terms: vec![&Coupled],
                extra: Some(&mut first),
                ..TrainHooks::default()
            },
        )
        .unwrap();
        let mut resumed = extra();
        let (split, _) = train_phase_with(
            &rt,
            &section(2),
            model(),
            &d,
            &dir,
            true,
            &mut TrainHooks {
                terms: vec![&Coupled],
                extra: Some(&mut resumed),
                ..TrainHooks::default()
            },
        )
        .unwrap();
        assert_ne!(full.values()["p"][[0]], 0.0);
        assert_eq!(resumed.values(), full.values());
        assert_eq!(split.weights, whole.weights);
    }
}
