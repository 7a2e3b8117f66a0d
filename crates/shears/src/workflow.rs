//! The steps every command is made of: load data, build or load a model, train a phase with
//! checkpoints and resume, prune, evaluate. Commands compose these; none re-implements them.

use crate::config::{ExperimentConfig, TrainSection, parse_shape};
use crate::run_dir::{read_metrics, write_metrics};
use anyhow::{Context, Result, bail};
use shears_core::artifact::{Model, is_model_dir, load_model};
use shears_core::{Masks, init_weights, zoo};
use shears_data::{DataSplits, DatasetKind};
use shears_engine::checkpoint::{
    CheckpointState, has_checkpoint, load_checkpoint, restore_optimizer, save_checkpoint,
};
use shears_engine::device::device_by_name;
use shears_engine::train::GradientEdit;
use shears_engine::{EpochMetrics, Executor, Optimizer, evaluate, train};
use std::path::Path;

/// Environment variable that stops training right after the given epoch's checkpoint, as if
/// the process had been killed; used by the resume tests.
pub const INTERRUPT_ENV: &str = "SHEARS_INTERRUPT_AFTER_EPOCH";

/// Loads the configured data set.
pub fn load_data(cfg: &ExperimentConfig) -> Result<DataSplits> {
    let kind: DatasetKind = cfg
        .data
        .dataset
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let data = shears_data::load(kind, cfg.data.dir.as_deref())?;
    tracing::info!(
        "data `{}`: {} train / {} test samples of {:?}, {} classes",
        kind.name(),
        data.train.len(),
        data.test.len(),
        data.train.shape(),
        data.train.classes()
    );
    Ok(data)
}

/// Builds a zoo model with fresh weights, or loads a saved one when `arch` is a directory.
/// Input shape and classes default to the data set's.
pub fn load_or_build(
    arch: &str,
    input: Option<&str>,
    classes: Option<usize>,
    data: Option<&DataSplits>,
    seed: u64,
) -> Result<Model> {
    let path = Path::new(arch);
    if is_model_dir(path) {
        return load_model(path).with_context(|| format!("cannot load the model saved in {arch}"));
    }
    if path.is_dir() {
        bail!("{arch} is a directory but holds no saved model (graph.json + weights.safetensors)");
    }
    let input = match (input, data) {
        (Some(s), _) => parse_shape(s)?,
        (None, Some(d)) => d.train.shape().to_vec(),
        (None, None) => bail!("model `{arch}` needs an input shape (--input, e.g. 3x32x32)"),
    };
    let classes = match (classes, data) {
        (Some(c), _) => c,
        (None, Some(d)) => d.train.classes(),
        (None, None) => bail!("model `{arch}` needs a class count (--classes)"),
    };
    let graph = zoo::build(arch, &input, classes)?;
    let weights = init_weights(&graph, seed);
    Ok(Model {
        graph,
        weights,
        masks: Masks::new(),
    })
}

/// An executor on the configured device (autodiff when `training`).
pub fn executor(cfg: &ExperimentConfig, model: &Model, training: bool) -> Result<Executor> {
    let device = device_by_name(&cfg.device)?;
    let device = if training { device.autodiff() } else { device };
    device.seed(cfg.seed);
    Ok(Executor::new(
        &model.graph,
        &model.weights,
        &model.masks,
        &device,
    )?)
}

/// Where a training phase starts: a fresh executor and optimiser, or the state of the phase's
/// last checkpoint when resuming.
pub struct PhaseStart {
    pub exec: Executor,
    pub opt: Optimizer,
    /// Epochs already completed.
    pub start: usize,
    /// Metrics rows of the completed epochs.
    pub rows: Vec<EpochMetrics>,
    pub checkpoint: std::path::PathBuf,
    /// The masks of the model the phase trains.
    pub masks: Masks,
}

/// Prepares a phase in `dir`. With `resume`, continues from the phase's checkpoint; without it,
/// an existing checkpoint is an error (no silent restart).
pub fn start_phase(
    cfg: &ExperimentConfig,
    section: &TrainSection,
    model: Model,
    dir: &Path,
    resume: bool,
) -> Result<PhaseStart> {
    let ckpt = dir.join("checkpoint");
    let (model, start, saved_opt) = if has_checkpoint(&ckpt) {
        if !resume {
            bail!(
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
    let exec = executor(cfg, &model, true)?;
    let mut opt = Optimizer::new(section.optimizer.clone(), exec.params.len())?;
    if let Some((saved, state)) = &saved_opt {
        restore_optimizer(&exec, &mut opt, saved, state)?;
    }
    let rows: Vec<EpochMetrics> = read_metrics(dir)?
        .into_iter()
        .filter(|r| r.epoch <= start)
        .collect();
    std::fs::create_dir_all(dir)?;
    Ok(PhaseStart {
        exec,
        opt,
        start,
        rows,
        checkpoint: ckpt,
        masks: model.masks,
    })
}

/// Trains one phase in `dir` with a checkpoint every epoch. With `resume`, continues from the
/// phase's checkpoint; without it, an existing checkpoint is an error (no silent restart).
pub fn train_phase(
    cfg: &ExperimentConfig,
    section: &TrainSection,
    model: Model,
    data: &DataSplits,
    dir: &Path,
    resume: bool,
) -> Result<(Model, Vec<EpochMetrics>)> {
    train_phase_with(cfg, section, model, data, dir, resume, &[])
}

/// [`train_phase`] with gradient edits applied before every optimiser step (sparsity
/// regularisers such as Network Slimming's L1 on BatchNorm scales).
pub fn train_phase_with(
    cfg: &ExperimentConfig,
    section: &TrainSection,
    model: Model,
    data: &DataSplits,
    dir: &Path,
    resume: bool,
    edits: &[&dyn GradientEdit],
) -> Result<(Model, Vec<EpochMetrics>)> {
    let PhaseStart {
        mut exec,
        mut opt,
        start,
        mut rows,
        checkpoint: ckpt,
        masks,
    } = start_phase(cfg, section, model, dir, resume)?;
    let model_masks = masks;
    let engine_cfg = section.to_engine(cfg.seed);
    // Test hook: stop right after a checkpoint as if the process had been killed there.
    let interrupt_after: Option<usize> = std::env::var(INTERRUPT_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut on_epoch =
        |exec: &Executor, opt: &Optimizer, m: &EpochMetrics| -> shears_engine::Result<()> {
            rows.push(m.clone());
            write_metrics(dir, &rows)
                .map_err(|e| shears_engine::EngineError::invalid("metrics", format!("{e:#}")))?;
            let state = CheckpointState {
                epoch: m.epoch,
                optimizer_steps: opt.steps,
            };
            save_checkpoint(&ckpt, exec, opt, &state)?;
            if interrupt_after == Some(m.epoch) {
                return Err(shears_engine::EngineError::invalid(
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
        edits,
        &mut on_epoch,
    )?;
    let rows = read_metrics(dir)?;
    let trained = Model {
        graph: exec.graph().clone(),
        weights: exec.weights(),
        masks: model_masks,
    };
    Ok((trained, rows))
}

/// Test loss and accuracy of a model.
pub fn eval_model(
    cfg: &ExperimentConfig,
    model: &Model,
    data: &DataSplits,
    limit: Option<usize>,
) -> Result<(f64, f64)> {
    let mut exec = executor(cfg, model, false)?;
    Ok(evaluate(
        &mut exec,
        &data.test,
        &data.normalization,
        256,
        limit,
    )?)
}
