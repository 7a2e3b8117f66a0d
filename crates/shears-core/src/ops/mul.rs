//! Mul: the elementwise product of two computed values, one of which may be a per-channel
//! `[C,1,1]` value broadcast over the other's positions (squeeze-excitation's scale, a gate).
//!
//! Both inputs and the output share channel indices, as Add's do: a squeeze-excitation's
//! excitation conv is thereby tied to the channels it scales, so pruning one of those channels
//! removes the matching excitation filter too (Torch-Pruning's rule for SE blocks). The squeeze
//! conv's own filters read the pooled channels and start a group of their own.

use super::RefCall;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxNode, Op, OpRules, ParamSpec};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;

/// [`Op::Mul`], which has no attributes.
pub(crate) struct Mul;

/// Whether `s` is a `[C,1,1]` value, which broadcasts over a `[C,H,W]` one.
fn per_channel(s: &Shape) -> bool {
    s.len() == 3 && s[1] == 1 && s[2] == 1
}

impl OpRules for Mul {
    fn name(&self) -> &'static str {
        "mul"
    }

    fn arity(&self) -> Arity {
        Arity::Two
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    /// The larger of the two shapes; they must be equal, or one must be the other's channels
    /// as a `[C,1,1]` value.
    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let (a, b) = (ins[0], ins[1]);
        if a == b {
            return Ok(a.clone());
        }
        let compatible = a.len() == 3 && b.len() == 3 && a[0] == b[0];
        match (compatible, per_channel(a), per_channel(b)) {
            (true, _, true) => Ok(a.clone()),
            (true, true, _) => Ok(b.clone()),
            _ => Err(CoreError::shape(
                &node.name,
                format!(
                    "mul inputs must have equal shapes, or one must be a [C,1,1] per-channel \
                     value of the other's channels: `{}` is {:?} but `{}` is {:?}",
                    node.inputs[0], a, node.inputs[1], b
                ),
            )),
        }
    }

    /// One multiplication per output element under `all-ops`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => out.iter().product::<usize>() as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Elementwise
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Mul)
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (a, b) = (call.ins[0], call.ins[1]);
        // ndarray broadcasts a [N,C,1,1] operand over [N,C,H,W] on either side.
        Ok(if a.shape() == b.shape() || b.len() < a.len() {
            a * b
        } else {
            b * a
        })
    }

    /// ONNX's `Mul` broadcasts `[N,C,1,1]` against `[N,C,H,W]` the same way.
    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        vec![OnnxNode::new("Mul", vec![])]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::cost::{Convention, cost};
    use crate::shape::infer_shapes;

    #[test]
    fn mul_broadcasts_a_per_channel_value() {
        let mut b = GraphBuilder::new("t", &[4, 5, 5]);
        let x = b.input();
        let p = b.global_avg_pool_keep("p", &x);
        let m = b.mul("m", &x, &p);
        let n = b.mul("n", &p, &m);
        let g = b.finish(&n);
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("p"), &vec![4, 1, 1]);
        assert_eq!((s.get("m"), s.get("n")), (&vec![4, 5, 5], &vec![4, 5, 5]));
        assert_eq!(cost(&g, Convention::AllOps).unwrap().macs, 100 + 100 + 100);
        assert_eq!(g.nodes[1].op.channel_flow(), ChannelFlow::Elementwise);
        assert_eq!(g.nodes[1].op.compacted("m", 4, 4).unwrap(), Op::Mul);
    }

    #[test]
    fn mul_of_other_channels_or_three_inputs_is_an_error() {
        let mut b = GraphBuilder::new("t", &[4, 5, 5]);
        let x = b.input();
        let c = b.conv2d("c", &x, 3, 1, 1, 0);
        let p = b.global_avg_pool_keep("p", &c);
        let q = b.global_avg_pool_keep("q", &x);
        let m = b.mul("m", &x, &q);
        let mut g = b.finish(&m);
        // Three channels scaling four: the builder would refuse it, so the graph is edited.
        g.nodes[3].inputs[1] = p;
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(e.contains("`m`") && e.contains("per-channel"), "{e}");

        let mut b = GraphBuilder::new("t", &[4, 5, 5]);
        let x = b.input();
        let m = b.mul("m", &x, &x);
        let mut g = b.finish(&m);
        g.nodes[0].inputs.push(x.clone());
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(e.contains("exactly two"), "{e}");
    }
}
