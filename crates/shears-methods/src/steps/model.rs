//! Models: a zoo model with fresh weights or a saved one, executors on the run's device, and the
//! model an executor holds after training.

use super::Runtime;
use crate::config::parse_shape;
use crate::error::{Context, Result};
use crate::invalid;
use shears_core::artifact::{Model, is_model_dir, load_model};
use shears_core::{Masks, init_weights, zoo};
use shears_data::DataSplits;
use shears_engine::Executor;
use shears_engine::device::device_by_name;
use std::path::Path;

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
        invalid!(
            "{arch} is a directory but holds no saved model (graph.json + weights.safetensors)"
        );
    }
    let input = match (input, data) {
        (Some(s), _) => parse_shape(s)?,
        (None, Some(d)) => d.train.shape().to_vec(),
        (None, None) => invalid!("model `{arch}` needs an input shape (--input, e.g. 3x32x32)"),
    };
    let classes = match (classes, data) {
        (Some(c), _) => c,
        (None, Some(d)) => d.train.classes(),
        (None, None) => invalid!("model `{arch}` needs a class count (--classes)"),
    };
    let graph = zoo::build(arch, &input, classes)?;
    let weights = init_weights(&graph, seed);
    Ok(Model {
        graph,
        weights,
        masks: Masks::new(),
    })
}

/// The model of an experiment config.
pub fn configured_model(
    cfg: &crate::config::ExperimentConfig,
    data: Option<&DataSplits>,
) -> Result<Model> {
    load_or_build(
        &cfg.model.arch,
        cfg.model.input.as_deref(),
        cfg.model.classes,
        data,
        cfg.seed,
    )
}

/// An executor on the runtime's device (autodiff when `training`), seeded with the run's seed.
pub fn executor(rt: &Runtime, model: &Model, training: bool) -> Result<Executor> {
    let device = device_by_name(&rt.device)?;
    let device = if training { device.autodiff() } else { device };
    device.seed(rt.seed);
    Ok(Executor::new(
        &model.graph,
        &model.weights,
        &model.masks,
        &device,
    )?)
}
