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

/// MACs of one op under a convention, given its input shapes and output shape.
pub fn op_macs(op: &Op, inputs: &[&Vec<usize>], output: &[usize], conv: Convention) -> u64 {
    let numel = |s: &[usize]| s.iter().product::<usize>() as u64;
    let out = numel(output);
    let all = conv == Convention::AllOps;
    match *op {
        Op::Conv2d {
            in_channels,
            kernel,
            groups,
            bias,
            ..
        } => {
            let per_output = (in_channels / groups) as u64 * (kernel[0] * kernel[1]) as u64;
            out * per_output + if all && bias { out } else { 0 }
        }
        Op::Linear {
            in_features,
            out_features,
            bias,
        } => {
            (in_features * out_features) as u64 + if all && bias { out_features as u64 } else { 0 }
        }
        _ if !all => 0,
        Op::BatchNorm { .. } | Op::Relu => out,
        Op::MaxPool { kernel, .. } | Op::AvgPool { kernel, .. } => {
            out * (kernel[0] * kernel[1]) as u64
        }
        Op::GlobalAvgPool => numel(inputs[0]),
        Op::Add => out * (inputs.len() as u64 - 1),
        Op::Flatten | Op::Concat | Op::Dropout { .. } => 0,
    }
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
    use crate::builder::GraphBuilder;

    fn single(
        op_builder: impl FnOnce(&mut GraphBuilder, &str) -> String,
        input: &[usize],
    ) -> (Cost, Cost) {
        let mut b = GraphBuilder::new("t", input);
        let x = b.input();
        let y = op_builder(&mut b, &x);
        let g = b.finish(&y);
        (
            cost(&g, Convention::ConvLinear).unwrap(),
            cost(&g, Convention::AllOps).unwrap(),
        )
    }

    #[test]
    fn conv_cost() {
        // 3->8, 3x3, pad 1 on 3x10x10: out 8x10x10; MACs = 800 * 27; params 8*27 + 8 bias.
        let (cl, all) = single(|b, x| b.conv2d_bias("c", x, 8, 3, 1, 1), &[3, 10, 10]);
        assert_eq!(cl.params, 8 * 27 + 8);
        assert_eq!(cl.macs, 800 * 27);
        assert_eq!(all.macs, 800 * 27 + 800);
    }

    #[test]
    fn grouped_and_depthwise_conv_cost() {
        let (cl, _) = single(
            |b, x| b.conv2d_full("c", x, 8, [3, 3], [1, 1], [1, 1], [1, 1], 2, false),
            &[4, 5, 5],
        );
        assert_eq!(cl.params, 8 * 2 * 9);
        assert_eq!(cl.macs, 8 * 25 * 2 * 9);
        let (cl, _) = single(|b, x| b.depthwise("d", x, 3, 2, 1), &[6, 8, 8]);
        assert_eq!(cl.params, 6 * 9);
        assert_eq!(cl.macs, 6 * 16 * 9);
    }

    #[test]
    fn linear_cost() {
        let (cl, all) = single(|b, x| b.linear("l", x, 10, true), &[20]);
        assert_eq!(cl.params, 210);
        assert_eq!(cl.macs, 200);
        assert_eq!(all.macs, 210);
    }

    #[test]
    fn batchnorm_relu_pool_costs() {
        let (cl, all) = single(|b, x| b.batchnorm("bn", x), &[4, 3, 3]);
        assert_eq!((cl.params, cl.macs, all.macs), (8, 0, 36));
        let (_, all) = single(|b, x| b.relu("r", x), &[4, 3, 3]);
        assert_eq!((all.params, all.macs), (0, 36));
        let (_, all) = single(|b, x| b.maxpool("m", x, 2, 2, 0), &[4, 4, 4]);
        assert_eq!(all.macs, 16 * 4);
        let (_, all) = single(|b, x| b.avgpool("a", x, 3, 1, 1), &[1, 4, 4]);
        assert_eq!(all.macs, 16 * 9);
        let (_, all) = single(|b, x| b.global_avg_pool("g", x), &[4, 5, 5]);
        assert_eq!(all.macs, 100);
        let (_, all) = single(|b, x| b.flatten("f", x), &[4, 5, 5]);
        assert_eq!(all.macs, 0);
        let (_, all) = single(|b, x| b.dropout("d", x, 0.1), &[7]);
        assert_eq!(all.macs, 0);
    }

    #[test]
    fn add_and_concat_costs() {
        let (_, all) = single(|b, x| b.add("s", &[x, x, x]), &[2, 3, 3]);
        assert_eq!(all.macs, 18 * 2);
        let (cl, all) = single(|b, x| b.concat("c", &[x, x]), &[2, 3, 3]);
        assert_eq!((cl.macs, all.macs, all.params), (0, 0, 0));
    }

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
