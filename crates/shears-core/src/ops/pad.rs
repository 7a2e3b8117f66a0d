//! Pad: zeros around a `[C,H,W]` map, possibly more on one side than the other (ONNX `Pad` in
//! constant mode, what TensorFlow-style "same" convolutions export as). A convolution with
//! asymmetric pads imports as a Pad and an unpadded convolution.
//!
//! Channels pass through; each output position reads its input position or nothing.

use super::RefCall;
use super::arith::dims4;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxNode, Op, OpRules, ParamSpec, chw};
use crate::cost::Convention;
use crate::error::Result;
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::Pad`]: zero rows and columns `[top, left, bottom, right]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pad2d {
    pub pads: [usize; 4],
}

impl Pad2d {
    /// For every output position of an `[h, w]` input (row-major), the input position it copies,
    /// or `None` for padding.
    pub fn sources(&self, [h, w]: [usize; 2]) -> Vec<Option<usize>> {
        let [top, left, bottom, right] = self.pads;
        let (oh, ow) = (h + top + bottom, w + left + right);
        let mut out = Vec::with_capacity(oh * ow);
        for y in 0..oh {
            for x in 0..ow {
                let inside = y >= top && y < top + h && x >= left && x < left + w;
                out.push(inside.then(|| (y - top) * w + (x - left)));
            }
        }
        out
    }
}

impl OpRules for Pad2d {
    fn name(&self) -> &'static str {
        "pad"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let (c, h, w) = chw(node, ins[0])?;
        let [top, left, bottom, right] = self.pads;
        Ok(vec![c, h + top + bottom, w + left + right])
    }

    /// A copy: no arithmetic under either convention.
    fn macs(&self, _ins: &[&Shape], _out: &[usize], _convention: Convention) -> u64 {
        0
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Pad(*self)
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Pad(*self))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let [n, c, h, w] = dims4(node, x)?;
        let [top, left, bottom, right] = self.pads;
        let mut y = ArrayD::zeros(IxDyn(&[n, c, h + top + bottom, w + left + right]));
        y.slice_mut(ndarray::s![.., .., top..top + h, left..left + w])
            .assign(x);
        Ok(y)
    }

    /// ONNX `Pad` (constant zeros) with its pads as an input: begins then ends of all 4 axes.
    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let [t, l, b, r] = self.pads.map(|p| p as i64);
        let mut n = OnnxNode::new("Pad", vec![]);
        n.int_consts = vec![("pads", vec![0, 0, t, l, 0, 0, b, r])];
        vec![n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::shape::infer_shapes;

    #[test]
    fn pad_shape_and_sources() {
        let p = Pad2d { pads: [1, 0, 0, 2] };
        let s = p.sources([1, 2]);
        // Output 2x4: the first row is padding, then input 0, 1 and two padded columns.
        assert_eq!(
            s,
            vec![None, None, None, None, Some(0), Some(1), None, None]
        );
        let mut b = GraphBuilder::new("t", &[3, 4, 5]);
        let x = b.input();
        let y = b.pad("p", &x, [0, 1, 2, 3]);
        let g = b.finish(&y);
        assert_eq!(infer_shapes(&g).unwrap().get("p"), &vec![3, 6, 9]);
    }
}
