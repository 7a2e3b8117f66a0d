//! Test accuracy of a model, and of a dense model with channels gated off.

use super::Runtime;
use super::model::executor;
use crate::error::Result;
use shears_core::artifact::Model;
use shears_core::structured::{ChannelSelection, selection_gates};
use shears_data::DataSplits;
use shears_engine::evaluate;

/// Test loss and accuracy of a model (on the first `limit` test samples when given).
pub fn eval_model(
    rt: &Runtime,
    model: &Model,
    data: &DataSplits,
    limit: Option<usize>,
) -> Result<(f64, f64)> {
    let mut exec = executor(rt, model, false)?;
    Ok(evaluate(
        &mut exec,
        &data.test,
        &data.normalization,
        256,
        limit,
    )?)
}

/// Accuracy of the dense model with the removed channels gated to zero in the engine: what a
/// correct compaction must reproduce exactly.
pub fn gated_accuracy(
    rt: &Runtime,
    dense: &Model,
    selection: &ChannelSelection,
    data: &DataSplits,
    limit: Option<usize>,
) -> Result<f64> {
    let gates = selection_gates(&dense.graph, selection)?;
    let mut exec = executor(rt, dense, false)?;
    for (value, gate) in &gates {
        if *value != dense.graph.input.name {
            exec.set_gate(value, Some(gate))?;
        }
    }
    let (_, acc) = evaluate(&mut exec, &data.test, &data.normalization, 256, limit)?;
    Ok(acc)
}
