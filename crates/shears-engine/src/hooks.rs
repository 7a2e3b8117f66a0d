//! What a method adds to the training step, besides the task loss:
//!
//! - [`GradientEdit`]: edits a graph parameter's gradient before the optimiser step (masks,
//!   Network Slimming's `λ·sign(γ)` subgradient);
//! - [`LossTerm`]: a differentiable term added to the task loss before the backward pass (PAAM's
//!   score penalty, FTWT's mask-prediction loss), which may read the extra parameters;
//! - [`ExtraParams`]: trainable tensors that live outside the graph (attention networks, mask
//!   predictors), with their own optimiser, saved with every checkpoint and restored on resume.
//!
//! - [`DynamicGates`]: per-sample channel gates computed inside the forward pass from a node's
//!   input (FTWT's mask predictors, PAAM's score gates), which may read the extra parameters.

use crate::error::{EngineError, Result};
use crate::executor::{Executor, Value, to_vec};
use crate::optim::{Optimizer, OptimizerConfig};
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use ndarray::{ArrayD, IxDyn};
use shears_core::artifact::write_atomic;
use shears_core::weights::{Weights, weights_from_safetensors, weights_to_safetensors};
use std::path::Path;

/// Edits a parameter's gradient before the optimiser step (e.g. adds λ·sign(γ) for an L1
/// penalty on BN scales). Gets the inner (non-autodiff) parameter value and gradient.
pub trait GradientEdit {
    /// The edited gradient of graph parameter `param`.
    fn edit(&self, exec: &Executor, param: usize, value: &Tensor<1>, grad: Tensor<1>) -> Tensor<1>;
}

/// A differentiable term added to the task loss of every training step.
pub trait LossTerm {
    /// Short name for logs and metrics.
    fn name(&self) -> &str;
    /// The term's value as a one-element tensor on the executor's (autodiff) device, built from
    /// the executor's parameters and the extra parameters; `None` adds nothing this step.
    fn loss(&self, exec: &Executor, extra: Option<&ExtraParams>) -> Option<Tensor<1>>;
}

/// Channel gates computed per sample inside the forward pass. For every node it names, the
/// executor multiplies the node's output `[N, C, ...]` by the gate `[N, C]` computed from the
/// node's first input, so a gate is differentiable in whatever produced it.
pub trait DynamicGates {
    /// The nodes whose outputs are gated.
    fn gated_nodes(&self) -> Vec<String>;
    /// The gate `[N, C]` of `node`'s output for this batch; `input` is the node's first input.
    /// `None` leaves the output ungated for this batch.
    fn gate(&self, node: &str, input: &Value, extra: Option<&ExtraParams>) -> Option<Tensor<2>>;
}

/// Everything a method hooks into the training step. The default hooks nothing: plain training.
#[derive(Default)]
pub struct TrainHooks<'a> {
    /// Gradient edits, applied in order to every graph parameter's gradient.
    pub edits: Vec<&'a dyn GradientEdit>,
    /// Loss terms added to the cross-entropy.
    pub terms: Vec<&'a dyn LossTerm>,
    /// Trainable parameters outside the graph, stepped by their own optimiser.
    pub extra: Option<&'a mut ExtraParams>,
    /// Per-sample channel gates computed in the forward pass (they may read `extra`).
    pub gates: Option<&'a dyn DynamicGates>,
}

const EXTRA_FILE: &str = "extra.safetensors";
const EXTRA_OPTIMIZER_FILE: &str = "extra-optimizer.safetensors";

/// Named trainable tensors outside the graph with their own optimiser.
pub struct ExtraParams {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    /// Current values on the autodiff device, tracked for gradients.
    tensors: Vec<Tensor<1>>,
    /// The optimiser of these tensors only.
    pub opt: Optimizer,
    /// Fixed learning rate; `None` follows the phase's learning-rate schedule.
    pub lr: Option<f64>,
    device: Device,
}

impl ExtraParams {
    /// New parameters `(name, shape, initial values)` on `device` (an autodiff device to train).
    pub fn new(
        device: &Device,
        params: Vec<(String, Vec<usize>, Vec<f32>)>,
        optimizer: OptimizerConfig,
        lr: Option<f64>,
    ) -> Result<ExtraParams> {
        if let Some(lr) = lr
            && !(lr > 0.0 && lr.is_finite())
        {
            return Err(EngineError::invalid(
                "extra parameters",
                format!("lr must be a positive number, got {lr}"),
            ));
        }
        let mut names = Vec::new();
        let mut shapes = Vec::new();
        let mut tensors = Vec::new();
        for (name, shape, values) in params {
            let n: usize = shape.iter().product();
            if values.len() != n || names.contains(&name) {
                return Err(EngineError::invalid(
                    "extra parameters",
                    format!(
                        "`{name}` has {} values for shape {shape:?}, or its name is taken",
                        values.len()
                    ),
                ));
            }
            tensors.push(Self::track(
                Tensor::<1>::from_data(TensorData::new(values, [n]), device),
                device,
            ));
            names.push(name);
            shapes.push(shape);
        }
        let opt = Optimizer::new(optimizer, names.len())?;
        Ok(ExtraParams {
            names,
            shapes,
            tensors,
            opt,
            lr,
            device: device.clone(),
        })
    }

    fn track(t: Tensor<1>, device: &Device) -> Tensor<1> {
        if device.is_autodiff() {
            t.require_grad()
        } else {
            t
        }
    }

    /// The names, in creation order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The shape parameter `name` was created with.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(&self.shapes[i])
    }

    /// The current value of `name` (flat, tracked for gradients on an autodiff device).
    pub fn get(&self, name: &str) -> Option<Tensor<1>> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(self.tensors[i].clone())
    }

    /// One optimiser step from the gradients of a backward pass; `phase_lr` is used when no
    /// fixed learning rate was set. Parameters the loss did not reach are left unchanged.
    pub fn step(&mut self, grads: &Gradients, phase_lr: f64) {
        let lr = self.lr.unwrap_or(phase_lr);
        for i in 0..self.tensors.len() {
            let Some(g) = self.tensors[i].grad(grads) else {
                continue;
            };
            let value = self.tensors[i].clone().inner();
            let new = self.opt.update(i, value, g, lr);
            self.tensors[i] = Self::track(
                if self.device.is_autodiff() {
                    new.autodiff()
                } else {
                    new
                },
                &self.device,
            );
        }
        self.opt.finish_step();
    }

    /// The current values, by name, in their shapes.
    pub fn values(&self) -> Weights {
        let mut out = Weights::new();
        for (i, name) in self.names.iter().enumerate() {
            let v = to_vec(self.tensors[i].clone().inner());
            out.insert(
                name.clone(),
                ArrayD::from_shape_vec(IxDyn(&self.shapes[i]), v).expect("shape checked at creation"),
            );
        }
        out
    }

    /// Writes values and optimiser state into checkpoint directory `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| shears_core::CoreError::io(dir, e))?;
        write_atomic(&dir.join(EXTRA_FILE), &weights_to_safetensors(&self.values())?)?;
        let mut state = Weights::new();
        for (i, name) in self.names.iter().enumerate() {
            for (prefix, buf) in [("first", &self.opt.first[i]), ("second", &self.opt.second[i])] {
                if let Some(t) = buf {
                    let v = to_vec(t.clone());
                    let n = v.len();
                    state.insert(
                        format!("{prefix}/{name}"),
                        ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-d"),
                    );
                }
            }
        }
        let mut steps = Weights::new();
        steps.insert(
            "steps".into(),
            ArrayD::from_shape_vec(IxDyn(&[1]), vec![self.opt.steps as f32]).expect("1-d"),
        );
        state.extend(steps);
        write_atomic(
            &dir.join(EXTRA_OPTIMIZER_FILE),
            &weights_to_safetensors(&state)?,
        )?;
        Ok(())
    }

    /// Restores values and optimiser state saved by [`ExtraParams::save`] in `dir`; every
    /// parameter must be there with its shape.
    pub fn restore(&mut self, dir: &Path) -> Result<()> {
        let read = |file: &str| -> Result<Weights> {
            let path = dir.join(file);
            let bytes = std::fs::read(&path).map_err(|e| shears_core::CoreError::io(&path, e))?;
            Ok(weights_from_safetensors(&bytes, &path)?)
        };
        let values = read(EXTRA_FILE)?;
        let state = read(EXTRA_OPTIMIZER_FILE)?;
        for i in 0..self.names.len() {
            let name = &self.names[i];
            let a = values.get(name).ok_or_else(|| {
                EngineError::invalid(
                    "checkpoint",
                    format!("extra parameter `{name}` is missing from {}", dir.display()),
                )
            })?;
            if a.shape() != self.shapes[i].as_slice() {
                return Err(EngineError::invalid(
                    "checkpoint",
                    format!(
                        "extra parameter `{name}` has shape {:?}, expected {:?}",
                        a.shape(),
                        self.shapes[i]
                    ),
                ));
            }
            let v: Vec<f32> = a.iter().copied().collect();
            let n = v.len();
            self.tensors[i] = Self::track(
                Tensor::<1>::from_data(TensorData::new(v, [n]), &self.device),
                &self.device,
            );
            for (prefix, slot) in [
                ("first", &mut self.opt.first[i]),
                ("second", &mut self.opt.second[i]),
            ] {
                *slot = state.get(&format!("{prefix}/{name}")).map(|a| {
                    let v: Vec<f32> = a.iter().copied().collect();
                    let n = v.len();
                    Tensor::<1>::from_data(TensorData::new(v, [n]), &self.device).inner()
                });
            }
        }
        self.opt.steps = state
            .get("steps")
            .and_then(|a| a.iter().next().copied())
            .unwrap_or(0.0) as u64;
        Ok(())
    }
}
