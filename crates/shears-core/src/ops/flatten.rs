//! Flatten: `[C,H,W]` to `[C*H*W]`, channel-major (PyTorch order); a `[F]` vector stays as it is.
//!
//! Channel `c` becomes the `H*W` consecutive features from `c*H*W`, so a linear layer after it
//! loses `H*W` input features per pruned channel.

use super::RefCall;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxNode, Op, OpRules, ParamSpec};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;

/// [`Op::Flatten`], which has no attributes.
pub(crate) struct Flatten;

impl OpRules for Flatten {
    fn name(&self) -> &'static str {
        "flatten"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, _node: &Node, ins: &[&Shape]) -> Result<Shape> {
        Ok(vec![ins[0].iter().product()])
    }

    /// A reshape: no arithmetic under either convention.
    fn macs(&self, _ins: &[&Shape], _out: &[usize], _convention: Convention) -> u64 {
        0
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Flatten
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Flatten)
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let name = &node.name;
        let n = x.shape()[0];
        let f: usize = x.shape()[1..].iter().product();
        let y = x
            .to_shape((n, f))
            .map_err(|e| CoreError::shape(name, e.to_string()))?;
        Ok(y.into_owned().into_dyn())
    }

    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        vec![OnnxNode::new("Flatten", vec![("axis", OnnxAttr::Int(1))])]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{one_op, single};
    use super::*;
    use crate::shape::infer_shapes;

    #[test]
    fn flatten_rules() {
        let g = one_op(|b, x| b.flatten("f", x), &[4, 5, 5]);
        assert_eq!(infer_shapes(&g).unwrap().get("f"), &vec![100]);
        let g = one_op(|b, x| b.flatten("f", x), &[6]);
        assert_eq!(infer_shapes(&g).unwrap().get("f"), &vec![6]);
        let (_, all) = single(|b, x| b.flatten("f", x), &[4, 5, 5]);
        assert_eq!(all.macs, 0);
        assert_eq!(Op::Flatten.channel_flow(), ChannelFlow::Flatten);
        assert_eq!(Op::Flatten.compacted("f", 2, 50).unwrap(), Op::Flatten);
    }
}
