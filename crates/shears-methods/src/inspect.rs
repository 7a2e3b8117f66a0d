//! What a model is made of, layer by layer (`shears inspect`, `Model.inspect()` in Python):
//! output shapes, params, MACs, direct and effective sparsity, and optionally its channel groups.

use crate::error::Result;
use crate::steps::structured::{GroupInfo, group_infos};
use serde::Serialize;
use shears_core::artifact::Model;
use shears_core::cost::{Convention, cost};
use shears_core::sparsity::sparsity_report;
use std::collections::HashMap;

/// One layer of an inspection.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub name: String,
    pub op: String,
    pub output_shape: Vec<usize>,
    pub params: u64,
    pub macs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_sparsity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_sparsity: Option<f64>,
}

/// A model's inspection.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub model: String,
    pub input: Vec<usize>,
    pub params: u64,
    pub macs: u64,
    pub macs_convention: &'static str,
    pub direct_sparsity: f64,
    pub effective_sparsity: f64,
    pub layers: Vec<Layer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<GroupInfo>>,
}

/// Inspects `model` (named `name` in the result), counting MACs by `convention`; `groups` adds
/// its channel groups.
pub fn inspect(
    model: &Model,
    name: &str,
    convention: Convention,
    groups: bool,
) -> Result<Inspection> {
    let c = cost(&model.graph, convention)?;
    let sp = sparsity_report(&model.graph, &model.masks)?;
    let by_tensor: HashMap<&str, (f64, f64)> = sp
        .layers
        .iter()
        .map(|l| (l.tensor.as_str(), (l.direct_sparsity, l.effective_sparsity)))
        .collect();
    let layers = c
        .nodes
        .iter()
        .map(|n| {
            let s = by_tensor
                .get(format!("{}.weight", n.name).as_str())
                .copied();
            Layer {
                name: n.name.clone(),
                op: n.op.clone(),
                output_shape: n.output_shape.clone(),
                params: n.params,
                macs: n.macs,
                direct_sparsity: s.map(|s| s.0),
                effective_sparsity: s.map(|s| s.1),
            }
        })
        .collect();
    Ok(Inspection {
        model: name.to_string(),
        input: model.graph.input.shape.clone(),
        params: c.params,
        macs: c.macs,
        macs_convention: convention.name(),
        direct_sparsity: sp.direct_sparsity,
        effective_sparsity: sp.effective_sparsity,
        layers,
        groups: if groups {
            Some(group_infos(&model.graph)?)
        } else {
            None
        },
    })
}
