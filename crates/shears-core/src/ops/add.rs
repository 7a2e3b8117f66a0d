//! Add: the elementwise sum of two or more inputs of identical shape.
//!
//! Every input and the output share unit indices, so a residual Add ties all its branches (and,
//! through identity shortcuts, their producers) into one channel group.

use super::RefCall;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxNode, Op, OpRules, ParamSpec};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;

/// [`Op::Add`], which has no attributes.
pub(crate) struct Add;

impl OpRules for Add {
    fn name(&self) -> &'static str {
        "add"
    }

    fn arity(&self) -> Arity {
        Arity::TwoOrMore
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let first = ins[0];
        for (i, s) in ins.iter().enumerate().skip(1) {
            if *s != first {
                return Err(CoreError::shape(
                    &node.name,
                    format!(
                        "add inputs must have equal shapes: `{}` is {:?} but `{}` is {:?}",
                        node.inputs[0], first, node.inputs[i], s
                    ),
                ));
            }
        }
        Ok(first.clone())
    }

    /// One addition per output element per extra operand under `all-ops`.
    fn macs(&self, ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => out.iter().product::<usize>() as u64 * (ins.len() as u64 - 1),
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Elementwise
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Add)
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let name = &node.name;
        let mut y = x.clone();
        for other in &call.ins[1..] {
            if other.shape() != y.shape() {
                return Err(CoreError::shape(
                    name,
                    format!(
                        "add inputs have shapes {:?} and {:?}",
                        y.shape(),
                        other.shape()
                    ),
                ));
            }
            y += *other;
        }
        Ok(y)
    }

    /// `Add` for two inputs, `Sum` for more.
    fn onnx(&self, _node: &str, ins: &[&Shape]) -> Vec<OnnxNode> {
        vec![OnnxNode::new(
            if ins.len() == 2 { "Add" } else { "Sum" },
            vec![],
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::single;
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::shape::infer_shapes;

    #[test]
    fn add_shape_mismatch_is_an_error() {
        let mut b = GraphBuilder::new("t", &[3, 8, 8]);
        let x = b.input();
        let c = b.conv2d("c", &x, 4, 3, 2, 1);
        let mut g = b.finish(&c);
        g.nodes.push(Node {
            name: "s".into(),
            op: Op::Add,
            inputs: vec![x.clone(), c.clone()],
        });
        g.output = "s".into();
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(e.contains("`s`") && e.contains("equal shapes"), "{e}");
    }

    #[test]
    fn add_cost_flow_arity_and_compaction() {
        let (cl, all) = single(|b, x| b.add("s", &[x, x, x]), &[2, 3, 3]);
        assert_eq!((cl.macs, all.macs), (0, 18 * 2));
        assert_eq!(Op::Add.channel_flow(), ChannelFlow::Elementwise);
        assert_eq!(Op::Add.arity(), Arity::TwoOrMore);
        assert!(!Op::Add.arity().accepts(1) && Op::Add.arity().accepts(3));
        assert_eq!(Op::Add.compacted("s", 1, 1).unwrap(), Op::Add);
    }
}
