//! Concat: two or more inputs joined along the channel (first per-sample) axis, in input order.
//!
//! Input `k`'s channel `c` is output channel `offset_k + c`, so each input keeps its own channel
//! group and the output's channels are the union of theirs.

use super::RefCall;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxNode, Op, OpRules, ParamSpec};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, ArrayViewD, Axis};

/// [`Op::Concat`], which has no attributes.
pub(crate) struct Concat;

impl OpRules for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }

    fn arity(&self) -> Arity {
        Arity::TwoOrMore
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let first = ins[0];
        let mut channels = 0;
        for (i, s) in ins.iter().enumerate() {
            if s.len() != first.len() || s[1..] != first[1..] {
                return Err(CoreError::shape(
                    &node.name,
                    format!(
                        "concat inputs must agree on all but the channel axis: `{}` is {:?} but `{}` is {:?}",
                        node.inputs[0], first, node.inputs[i], s
                    ),
                ));
            }
            channels += s[0];
        }
        let mut out = first.clone();
        out[0] = channels;
        Ok(out)
    }

    /// A copy: no arithmetic under either convention.
    fn macs(&self, _ins: &[&Shape], _out: &[usize], _convention: Convention) -> u64 {
        0
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Concat
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Concat)
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let views: Vec<ArrayViewD<'_, f32>> = call.ins.iter().map(|a| a.view()).collect();
        ndarray::concatenate(Axis(1), &views)
            .map_err(|e| CoreError::shape(&call.node.name, e.to_string()))
    }

    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        vec![OnnxNode::new("Concat", vec![("axis", OnnxAttr::Int(1))])]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{one_op, single};
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::shape::infer_shapes;

    #[test]
    fn concat_shapes_and_mismatch() {
        let g = one_op(|b, x| b.concat("c", &[x, x, x]), &[2, 3, 4]);
        assert_eq!(infer_shapes(&g).unwrap().get("c"), &vec![6, 3, 4]);
        let mut b = GraphBuilder::new("t", &[2, 4, 4]);
        let x = b.input();
        let m = b.maxpool("m", &x, 2, 2, 0);
        let mut g = b.finish(&m);
        g.nodes.push(Node {
            name: "c".into(),
            op: Op::Concat,
            inputs: vec![x.clone(), m.clone()],
        });
        g.output = "c".into();
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(
            e.contains("`c`") && e.contains("all but the channel axis"),
            "{e}"
        );
    }

    #[test]
    fn concat_cost_flow_and_compaction() {
        let (cl, all) = single(|b, x| b.concat("c", &[x, x]), &[2, 3, 3]);
        assert_eq!((cl.macs, all.macs, all.params), (0, 0, 0));
        assert_eq!(Op::Concat.channel_flow(), ChannelFlow::Concat);
        assert_eq!(Op::Concat.arity(), Arity::TwoOrMore);
        assert_eq!(Op::Concat.compacted("c", 1, 2).unwrap(), Op::Concat);
    }
}
