//! ReLU: elementwise `max(x, 0)`, no parameters; channels and units pass through.

use super::RefCall;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxNode, Op, OpRules, ParamSpec};
use crate::cost::Convention;
use crate::error::Result;
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;

/// [`Op::Relu`], which has no attributes.
pub(crate) struct Relu;

impl OpRules for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, _node: &Node, ins: &[&Shape]) -> Result<Shape> {
        Ok(ins[0].clone())
    }

    /// One comparison per output element under `all-ops`, none under `conv+linear`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => out.iter().product::<usize>() as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PassThrough
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Relu)
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        Ok(call.ins[0].mapv(|v| v.max(0.0)))
    }

    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        vec![OnnxNode::new("Relu", vec![])]
    }
}

/// [`Op::Relu6`]: ReLU capped at 6; every rule but the arithmetic and the export is ReLU's.
pub(crate) struct Relu6;

impl OpRules for Relu6 {
    fn name(&self) -> &'static str {
        "relu6"
    }

    fn arity(&self) -> Arity {
        Relu.arity()
    }

    fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        Relu.param_specs(node)
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        Relu.output_shape(node, ins)
    }

    fn macs(&self, ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        Relu.macs(ins, out, convention)
    }

    fn channel_flow(&self) -> ChannelFlow {
        Relu.channel_flow()
    }

    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        Relu.channel_axes(node)
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Relu6)
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        Ok(call.ins[0].mapv(|v| v.clamp(0.0, 6.0)))
    }

    /// `Clip` with its bounds as inputs (opset 11 and later).
    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut n = OnnxNode::new("Clip", vec![]);
        n.consts = vec![("min", 0.0), ("max", 6.0)];
        vec![n]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{one_op, single};
    use super::*;
    use crate::shape::infer_shapes;

    #[test]
    fn relu_rules() {
        let g = one_op(|b, x| b.relu("r", x), &[4, 3, 3]);
        assert_eq!(infer_shapes(&g).unwrap().get("r"), &vec![4, 3, 3]);
        let op = &g.nodes[0].op;
        assert_eq!(op.channel_flow(), ChannelFlow::PassThrough);
        assert!(op.param_specs("r").is_empty() && op.channel_axes("r").is_empty());
        assert_eq!(op.compacted("r", 2, 2).unwrap(), Op::Relu);
        let (_, all) = single(|b, x| b.relu("r", x), &[4, 3, 3]);
        assert_eq!((all.params, all.macs), (0, 36));
    }
}
