//! Checkpoints: the model, the optimiser state and the epoch reached, written atomically so an
//! interrupted run resumes exactly where the last finished epoch left it.

use crate::error::{EngineError, Result};
use crate::executor::{Executor, to_vec};
use crate::optim::Optimizer;
use burn::tensor::{Tensor, TensorData};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};
use shears_core::artifact::{Model, load_model, save_model, write_atomic};
use shears_core::weights::{Weights, weights_from_safetensors, weights_to_safetensors};
use std::path::Path;

const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";

/// Progress recorded with a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    /// Epochs completed.
    pub epoch: usize,
    pub optimizer_steps: u64,
}

/// Saves model, optimiser state and progress into `dir`. `state.json` goes last: a checkpoint
/// without it is incomplete and is not resumed from.
pub fn save_checkpoint(
    dir: &Path,
    exec: &Executor,
    opt: &Optimizer,
    state: &CheckpointState,
) -> Result<()> {
    save_model(dir, &exec.model())?;
    let mut tensors = Weights::new();
    for (i, info) in exec.infos.iter().enumerate() {
        for (prefix, buf) in [("first", &opt.first[i]), ("second", &opt.second[i])] {
            if let Some(t) = buf {
                let v = to_vec(t.clone());
                let n = v.len();
                tensors.insert(
                    format!("{prefix}/{}", info.name),
                    ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-d"),
                );
            }
        }
    }
    write_atomic(
        &dir.join(OPTIMIZER_FILE),
        &weights_to_safetensors(&tensors)?,
    )?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    write_atomic(&dir.join(STATE_FILE), json.as_bytes())?;
    Ok(())
}

/// True when `dir` holds a complete checkpoint.
pub fn has_checkpoint(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

/// Loads a checkpoint: the model, and a function that restores optimiser state into `opt`.
pub fn load_checkpoint(dir: &Path) -> Result<(Model, CheckpointState, Weights)> {
    let model = load_model(dir)?;
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| shears_core::CoreError::io(&state_path, e))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| {
        EngineError::invalid("checkpoint", format!("{}: {e}", state_path.display()))
    })?;
    let opt_path = dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&opt_path).map_err(|e| shears_core::CoreError::io(&opt_path, e))?;
    let opt_state = weights_from_safetensors(&bytes, &opt_path)?;
    Ok((model, state, opt_state))
}

/// Puts saved optimiser buffers back, by parameter name.
pub fn restore_optimizer(
    exec: &Executor,
    opt: &mut Optimizer,
    saved: &Weights,
    state: &CheckpointState,
) -> Result<()> {
    for (i, info) in exec.infos.iter().enumerate() {
        for (prefix, slot) in [("first", &mut opt.first[i]), ("second", &mut opt.second[i])] {
            if let Some(a) = saved.get(&format!("{prefix}/{}", info.name)) {
                let v: Vec<f32> = a.iter().copied().collect();
                let n = v.len();
                let expected: usize = info.shape.iter().product();
                if n != expected {
                    return Err(EngineError::invalid(
                        "checkpoint",
                        format!(
                            "optimizer state for `{}` has {n} values, expected {expected}",
                            info.name
                        ),
                    ));
                }
                *slot =
                    Some(Tensor::<1>::from_data(TensorData::new(v, [n]), exec.device()).inner());
            }
        }
    }
    opt.steps = state.optimizer_steps;
    Ok(())
}
