//! A per-channel affine `y = x * scale[c] + shift[c]` with stored tensors: what an imported
//! network's arithmetic with constants becomes (ConvNeXt's layer scale `gamma * x`, a
//! normalisation `(x - mean) / std` inside the model, a `Mul`, `Add`, `Sub` or `Div` by a
//! per-channel or scalar constant).
//!
//! It passes channels through, and its two tensors are sliced with the channels it scales.
//! The tensors are `[C,1,1]` on maps (so they broadcast in ONNX as written) and `[C]` on vectors.

use super::RefCall;
use super::{
    Arity, ChannelAxis, ChannelFlow, OnnxNode, Op, OpRules, ParamKind, ParamSpec,
    output_channel_axes, param,
};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::Affine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAffine {
    pub channels: usize,
    /// Applied to a `[C,H,W]` map (tensors `[C,1,1]`), else to a `[C]` vector (tensors `[C]`).
    pub map: bool,
}

impl ChannelAffine {
    fn shape(&self) -> Vec<usize> {
        if self.map {
            vec![self.channels, 1, 1]
        } else {
            vec![self.channels]
        }
    }
}

impl OpRules for ChannelAffine {
    fn name(&self) -> &'static str {
        "affine"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        vec![
            param(node, "scale", self.shape(), ParamKind::Scale),
            param(node, "shift", self.shape(), ParamKind::Shift),
        ]
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let s = ins[0];
        let fits = s.first() == Some(&self.channels) && (s.len() == 3) == self.map;
        if !fits {
            return Err(CoreError::shape(
                &node.name,
                format!(
                    "a per-channel affine of {} channels on a {} does not fit {:?}",
                    self.channels,
                    if self.map { "map" } else { "vector" },
                    s
                ),
            ));
        }
        Ok(s.clone())
    }

    /// One MAC per output element under `all-ops`, none under `conv+linear`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => out.iter().product::<usize>() as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PassThrough
    }

    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        output_channel_axes(self.param_specs(node))
    }

    fn compacted(&self, _node: &str, _in_channels: usize, out_channels: usize) -> Result<Op> {
        Ok(Op::Affine(ChannelAffine {
            channels: out_channels,
            map: self.map,
        }))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let name = &node.name;
        let scale = call.params.get(&format!("{name}.scale"))?;
        let shift = call.params.get(&format!("{name}.shift"))?;
        Ok(x * &*scale + &*shift)
    }

    fn onnx(&self, node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut mul = OnnxNode::new("Mul", vec![]);
        mul.params = vec![format!("{node}.scale")];
        let mut add = OnnxNode::new("Add", vec![]);
        add.params = vec![format!("{node}.shift")];
        vec![mul, add]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::shape::infer_shapes;

    #[test]
    fn affine_rules() {
        let mut b = GraphBuilder::new("t", &[4, 3, 3]);
        let x = b.input();
        let y = b.affine("a", &x);
        let g = b.finish(&y);
        assert_eq!(infer_shapes(&g).unwrap().get("a"), &vec![4, 3, 3]);
        let op = &g.nodes[0].op;
        assert_eq!(op.param_specs("a")[0].shape, vec![4, 1, 1]);
        assert_eq!(op.channel_axes("a").len(), 2);
        assert_eq!(
            op.compacted("a", 2, 2).unwrap(),
            Op::Affine(ChannelAffine {
                channels: 2,
                map: true
            })
        );
        let mut bad = g.clone();
        bad.nodes[0].op = Op::Affine(ChannelAffine {
            channels: 4,
            map: false,
        });
        assert!(
            infer_shapes(&bad)
                .unwrap_err()
                .to_string()
                .contains("does not fit")
        );
    }
}
