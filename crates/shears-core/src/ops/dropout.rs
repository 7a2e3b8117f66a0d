//! Dropout with drop probability `p`: the identity at inference, so it costs nothing and passes
//! channels and units through; only training (the engine) draws its mask.

use super::RefCall;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxNode, Op, OpRules, ParamSpec};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::Dropout`], on which its rules are written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Dropout {
    pub p: f64,
}

impl OpRules for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let p = self.p;
        if !(0.0..1.0).contains(&p) {
            return Err(CoreError::shape(
                &node.name,
                format!("dropout p must be in [0,1), got {p}"),
            ));
        }
        Ok(ins[0].clone())
    }

    fn macs(&self, _ins: &[&Shape], _out: &[usize], _convention: Convention) -> u64 {
        0
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PassThrough
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Dropout(Dropout { p: self.p }))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        Ok(call.ins[0].clone())
    }

    /// Identity: an exported network is for inference, where dropout passes its input through.
    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        vec![OnnxNode::new("Identity", vec![])]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{one_op, single};
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::shape::infer_shapes;

    #[test]
    fn dropout_rules() {
        let mut b = GraphBuilder::new("t", &[20]);
        let x = b.input();
        let l = b.linear("l", &x, 7, true);
        let n = b.batchnorm("bn", &l);
        let d = b.dropout("d", &n, 0.5);
        let g = b.finish(&d);
        assert_eq!(infer_shapes(&g).unwrap().get("d"), &vec![7]);
        let mut bad = g.clone();
        bad.nodes[2].op = Op::Dropout(Dropout { p: 1.5 });
        assert!(
            infer_shapes(&bad)
                .unwrap_err()
                .to_string()
                .contains("dropout p")
        );
    }

    #[test]
    fn dropout_cost_flow_and_compaction() {
        let (_, all) = single(|b, x| b.dropout("d", x, 0.1), &[7]);
        assert_eq!(all.macs, 0);
        let g = one_op(|b, x| b.dropout("d", x, 0.25), &[7]);
        let op = &g.nodes[0].op;
        assert_eq!(op.channel_flow(), ChannelFlow::PassThrough);
        assert!(op.channel_axes("d").is_empty());
        assert_eq!(
            op.compacted("d", 3, 3).unwrap(),
            Op::Dropout(Dropout { p: 0.25 })
        );
    }
}
