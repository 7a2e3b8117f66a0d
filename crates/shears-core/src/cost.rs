//! Cost model: parameters and multiply-accumulates (MACs) per node and in total, per sample.
//!
//! Two counting conventions, always named next to the number:
//! - `conv+linear`: only convolution and linear layers, bias excluded (the thop convention that
//!   FTWT and most CIFAR papers use; "FLOPs" in those papers are these MACs).
//! - `all-ops`: conv+linear plus one MAC per output element for BatchNorm (its affine), ReLU, Add
//!   (per extra operand) and Dropout-free ops, one per window element for pooling, one per input
//!   element for global average pooling, and one per output for biases (close to ptflops).
//!
//! Parameters count trainable tensors only (weights, biases, BN scale and shift), as PyTorch's
//! `sum(p.numel() for p in model.parameters())` does; running statistics are buffers.
//!
//! Each op's MAC rule lives in its file under [`crate::ops`]; this module only sums them.

use crate::error::Result;
use crate::graph::{Graph, Op};
use crate::shape::{Shapes, infer_shapes};
use serde::{Deserialize, Serialize};

/// Which operations a MAC count includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Convention {
    #[default]
    #[serde(rename = "conv+linear")]
    ConvLinear,
    #[serde(rename = "all-ops")]
    AllOps,
}

impl Convention {
    pub fn name(self) -> &'static str {
        match self {
            Convention::ConvLinear => "conv+linear",
            Convention::AllOps => "all-ops",
        }
    }
}

impl std::str::FromStr for Convention {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "conv+linear" | "conv-linear" => Ok(Convention::ConvLinear),
            "all-ops" | "all" => Ok(Convention::AllOps),
            _ => Err(format!(
                "unknown MACs convention `{s}` (use `conv+linear` or `all-ops`)"
            )),
        }
    }
}

/// Cost of one node, per sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCost {
    pub name: String,
    pub op: String,
    pub output_shape: Vec<usize>,
    pub params: u64,
    pub macs: u64,
}

/// Cost of a graph, per sample, under one convention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub convention: Convention,
    pub params: u64,
    pub macs: u64,
    pub nodes: Vec<NodeCost>,
}

/// Trainable parameter count of one op.
pub fn op_params(op: &Op) -> u64 {
    op.param_specs("_")
        .iter()
        .filter(|p| p.kind.is_trainable())
        .map(|p| p.shape.iter().product::<usize>() as u64)
        .sum()
}

/// MACs of one op under a convention, given its input shapes and output shape; the rule itself
/// is in the op's file.
pub fn op_macs(op: &Op, inputs: &[&Vec<usize>], output: &[usize], conv: Convention) -> u64 {
    op.macs(inputs, output, conv)
}

/// Cost of every node with precomputed shapes.
pub fn cost_with_shapes(graph: &Graph, shapes: &Shapes, convention: Convention) -> Cost {
    let nodes: Vec<NodeCost> = graph
        .nodes
        .iter()
        .map(|n| {
            let ins: Vec<&Vec<usize>> = n.inputs.iter().map(|i| shapes.get(i)).collect();
            let out = shapes.get(&n.name);
            NodeCost {
                name: n.name.clone(),
                op: n.op.kind_name().into(),
                output_shape: out.clone(),
                params: op_params(&n.op),
                macs: op_macs(&n.op, &ins, out, convention),
            }
        })
        .collect();
    Cost {
        convention,
        params: nodes.iter().map(|n| n.params).sum(),
        macs: nodes.iter().map(|n| n.macs).sum(),
        nodes,
    }
}

/// Infers shapes and counts params and MACs.
pub fn cost(graph: &Graph, convention: Convention) -> Result<Cost> {
    let shapes = infer_shapes(graph)?;
    Ok(cost_with_shapes(graph, &shapes, convention))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convention_parses_and_names() {
        assert_eq!("all-ops".parse::<Convention>().unwrap().name(), "all-ops");
        assert!(
            "flops"
                .parse::<Convention>()
                .unwrap_err()
                .contains("unknown MACs convention")
        );
    }
}
