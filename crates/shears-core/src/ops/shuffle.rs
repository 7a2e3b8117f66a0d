//! Channel shuffle (ShuffleNet): `groups` blocks of `C / groups` channels interleaved, so output
//! channel `b * groups + a` is input channel `a * (C / groups) + b`. Exporters write it as
//! Reshape `[N, g, C/g, H, W]` → Transpose `(0, 2, 1, 3, 4)` → Reshape `[N, C, H, W]`.
//!
//! Pruning rule: a shuffle stays a shuffle only if every block keeps the same positions, so
//! channel `b` of every block is tied into one group channel (Torch-Pruning keeps shuffled
//! channels equal per group the same way); the kept count stays divisible by `groups`.

use super::RefCall;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxNode, Op, OpRules, ParamSpec};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, ArrayViewD, Axis};
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::ChannelShuffle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelShuffle {
    pub groups: usize,
}

impl ChannelShuffle {
    /// The input channel that output channel `j` of a `channels`-channel shuffle copies.
    pub fn source(&self, j: usize, channels: usize) -> usize {
        let per = channels / self.groups;
        (j % self.groups) * per + j / self.groups
    }
}

impl OpRules for ChannelShuffle {
    fn name(&self) -> &'static str {
        "channel_shuffle"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let s = ins[0];
        if s.len() != 3 || self.groups == 0 || s[0] % self.groups != 0 {
            return Err(CoreError::shape(
                &node.name,
                format!(
                    "a channel shuffle in {} groups needs a [C,H,W] map with C divisible by it, got {:?}",
                    self.groups, s
                ),
            ));
        }
        Ok(s.clone())
    }

    /// A copy: no arithmetic under either convention.
    fn macs(&self, _ins: &[&Shape], _out: &[usize], _convention: Convention) -> u64 {
        0
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Shuffle {
            groups: self.groups,
        }
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, node: &str, in_channels: usize, _out_channels: usize) -> Result<Op> {
        if in_channels % self.groups != 0 {
            return Err(CoreError::shape(
                node,
                format!(
                    "compaction left {in_channels} channels, not divisible by the shuffle's {} groups",
                    self.groups
                ),
            ));
        }
        Ok(Op::ChannelShuffle(*self))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let name = &node.name;
        let c = x.shape()[1];
        let parts: Vec<ArrayViewD<'_, f32>> = (0..c)
            .map(|j| x.slice_axis(Axis(1), (self.source(j, c)..self.source(j, c) + 1).into()))
            .collect();
        ndarray::concatenate(Axis(1), &parts).map_err(|e| CoreError::shape(name, e.to_string()))
    }

    fn onnx(&self, _node: &str, ins: &[&Shape]) -> Vec<OnnxNode> {
        let s = ins[0];
        let (c, h, w) = (s[0] as i64, s[1] as i64, s[2] as i64);
        let g = self.groups as i64;
        let mut split = OnnxNode::new("Reshape", vec![]);
        split.int_consts = vec![("split_shape", vec![0, g, c / g, h, w])];
        let swap = OnnxNode::new(
            "Transpose",
            vec![("perm", OnnxAttr::Ints(vec![0, 2, 1, 3, 4]))],
        );
        let mut merge = OnnxNode::new("Reshape", vec![]);
        merge.int_consts = vec![("merge_shape", vec![0, c, h, w])];
        vec![split, swap, merge]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::shape::infer_shapes;

    #[test]
    fn shuffle_interleaves_blocks() {
        let s = ChannelShuffle { groups: 2 };
        // Blocks [0 1 2] and [3 4 5] interleave to 0 3 1 4 2 5.
        let order: Vec<usize> = (0..6).map(|j| s.source(j, 6)).collect();
        assert_eq!(order, vec![0, 3, 1, 4, 2, 5]);
        let g3 = ChannelShuffle { groups: 3 };
        let order: Vec<usize> = (0..6).map(|j| g3.source(j, 6)).collect();
        assert_eq!(order, vec![0, 2, 4, 1, 3, 5]);
    }

    #[test]
    fn shuffle_shape_and_compaction() {
        let mut b = GraphBuilder::new("t", &[6, 4, 4]);
        let x = b.input();
        let y = b.channel_shuffle("sh", &x, 2);
        let g = b.finish(&y);
        assert_eq!(infer_shapes(&g).unwrap().get("sh"), &vec![6, 4, 4]);
        let op = &g.nodes[0].op;
        assert_eq!(op.compacted("sh", 4, 4).unwrap(), *op);
        assert!(op.compacted("sh", 3, 3).is_err());
        let mut bad = g.clone();
        bad.nodes[0].op = Op::ChannelShuffle(ChannelShuffle { groups: 4 });
        let e = infer_shapes(&bad).unwrap_err().to_string();
        assert!(e.contains("divisible"), "{e}");
    }
}
