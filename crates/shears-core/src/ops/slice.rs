//! Slice: the channels `start..end` of a map or vector (ONNX `Slice` on axis 1; `Split` is one
//! slice per output, as Torch-Pruning maps a split's outputs to offsets into its input).
//!
//! Output channel `c` is input channel `start + c`, so the slice's channels stay in the groups
//! of the channels they come from. Compaction moves the bounds: the new `start` is the number of
//! kept input channels before the old one, the new `end` the number before the old end.

use super::RefCall;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxNode, Op, OpRules, ParamSpec};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, Axis};
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::Slice`]: channels `start..end` of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSlice {
    pub start: usize,
    pub end: usize,
}

impl OpRules for ChannelSlice {
    fn name(&self) -> &'static str {
        "slice"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let s = ins[0];
        if s.is_empty() || self.start >= self.end || self.end > s[0] {
            return Err(CoreError::shape(
                &node.name,
                format!(
                    "slice {}..{} must be a non-empty range of the {} channels of {:?}",
                    self.start,
                    self.end,
                    s.first().copied().unwrap_or(0),
                    s
                ),
            ));
        }
        let mut out = s.clone();
        out[0] = self.end - self.start;
        Ok(out)
    }

    /// A copy: no arithmetic under either convention.
    fn macs(&self, _ins: &[&Shape], _out: &[usize], _convention: Convention) -> u64 {
        0
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Slice { start: self.start }
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    /// Counts alone cannot place the bounds; [`ChannelSlice::compacted_with`] is the rule.
    fn compacted(&self, node: &str, in_channels: usize, out_channels: usize) -> Result<Op> {
        let all: Vec<usize> = (0..in_channels).collect();
        if out_channels != self.end - self.start {
            return Err(CoreError::shape(
                node,
                "a slice is compacted from its kept channel indices, not counts",
            ));
        }
        self.compacted_with(node, &[&all], &[])
    }

    fn compacted_with(&self, node: &str, ins: &[&[usize]], _out: &[usize]) -> Result<Op> {
        let before = |c: usize| ins[0].iter().filter(|&&k| k < c).count();
        let (start, end) = (before(self.start), before(self.end));
        if start == end {
            return Err(CoreError::shape(
                node,
                format!(
                    "compaction removed every channel of slice {}..{}",
                    self.start, self.end
                ),
            ));
        }
        Ok(Op::Slice(ChannelSlice { start, end }))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        Ok(call.ins[0]
            .slice_axis(Axis(1), (self.start..self.end).into())
            .to_owned())
    }

    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut n = OnnxNode::new("Slice", vec![]);
        n.int_consts = vec![
            ("starts", vec![self.start as i64]),
            ("ends", vec![self.end as i64]),
            ("axes", vec![1]),
        ];
        vec![n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::shape::infer_shapes;

    #[test]
    fn slice_shape_flow_and_compaction() {
        let mut b = GraphBuilder::new("t", &[6, 4, 4]);
        let x = b.input();
        let s = b.slice("s", &x, 2, 5);
        let g = b.finish(&s);
        assert_eq!(infer_shapes(&g).unwrap().get("s"), &vec![3, 4, 4]);
        let op = &g.nodes[0].op;
        assert_eq!(op.channel_flow(), ChannelFlow::Slice { start: 2 });
        // Input channels 0, 3, 4 kept: the slice 2..5 keeps 3 and 4, now at 1..3.
        assert_eq!(
            op.compacted_with("s", &[&[0, 3, 4]], &[0, 1]).unwrap(),
            Op::Slice(ChannelSlice { start: 1, end: 3 })
        );
        let e = op.compacted_with("s", &[&[0, 1, 5]], &[]).unwrap_err();
        assert!(e.to_string().contains("removed every channel"), "{e}");
        let mut bad = g.clone();
        bad.nodes[0].op = Op::Slice(ChannelSlice { start: 4, end: 7 });
        let e = infer_shapes(&bad).unwrap_err().to_string();
        assert!(e.contains("`s`") && e.contains("4..7"), "{e}");
    }
}
