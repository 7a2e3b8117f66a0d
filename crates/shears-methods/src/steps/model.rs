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

/// Whether `path` names an ONNX file (by its extension), which loads like a saved model.
pub fn is_onnx_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Whether `arch` names trained weights: a saved model directory or an ONNX file.
pub fn is_saved_model(arch: &str) -> bool {
    let path = Path::new(arch);
    is_model_dir(path) || is_onnx_file(path)
}

/// A saved model: a model directory, or an ONNX file imported on the fly.
pub fn load_saved(path: &Path) -> Result<Model> {
    if is_onnx_file(path) {
        return shears_onnx::import_onnx(path).map_err(|e| {
            crate::error::MethodError::Invalid(format!("cannot import {}: {e}", path.display()))
        });
    }
    load_model(path).with_context(|| format!("cannot load the model saved in {}", path.display()))
}

/// Builds a zoo model with fresh weights, or loads a saved one when `arch` is a directory or an
/// ONNX file.
/// Input shape and classes default to the data set's.
pub fn load_or_build(
    arch: &str,
    input: Option<&str>,
    classes: Option<usize>,
    data: Option<&DataSplits>,
    seed: u64,
) -> Result<Model> {
    let path = Path::new(arch);
    if is_model_dir(path) || is_onnx_file(path) {
        return load_saved(path);
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

/// Runs `model` in inference mode on `n` samples (`input` holds `[n, ...input shape]` in order);
/// returns the outputs in order and the width of one sample's output.
pub fn infer(rt: &Runtime, model: &Model, input: Vec<f32>, n: usize) -> Result<(Vec<f32>, usize)> {
    let mut exec = executor(rt, model, false)?;
    let x = exec.input_value(input, n)?;
    let y = exec.forward(x, shears_engine::Mode::Eval);
    let width = y.dims()[1];
    Ok((
        shears_engine::executor::to_vec(y.reshape([n * width])),
        width,
    ))
}
