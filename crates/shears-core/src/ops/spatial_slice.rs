//! Spatial slice: the rows `start, start + step, ... < end` and likewise the columns of a
//! `[C,H,W]` map (ONNX `Slice` on the spatial axes). Two uses in real networks: cropping a map
//! back to its size after padding (Swin's window attention pads to whole windows and crops
//! after), and taking every second row and column from an offset (Swin's patch merging gathers
//! four such subsamples and concatenates them on channels; YOLOv5's Focus layer does the same).
//!
//! Channels pass through; each output position copies one input position.

use super::RefCall;
use super::arith::dims4;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxNode, Op, OpRules, ParamSpec, chw};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::SpatialSlice`], each `[rows, columns]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpatialSlice {
    pub start: [usize; 2],
    /// Exclusive; at most the input's size.
    pub end: [usize; 2],
    pub step: [usize; 2],
}

impl SpatialSlice {
    /// Output size along axis `a` (0 rows, 1 columns).
    fn len(&self, a: usize) -> usize {
        self.end[a]
            .saturating_sub(self.start[a])
            .div_ceil(self.step[a].max(1))
    }

    /// For every output position of an `[h, w]` input (row-major), the input position it copies.
    pub fn sources(&self, [_, w]: [usize; 2]) -> Vec<usize> {
        let (oh, ow) = (self.len(0), self.len(1));
        let mut out = Vec::with_capacity(oh * ow);
        for y in 0..oh {
            for x in 0..ow {
                let (iy, ix) = (
                    self.start[0] + y * self.step[0],
                    self.start[1] + x * self.step[1],
                );
                out.push(iy * w + ix);
            }
        }
        out
    }
}

impl OpRules for SpatialSlice {
    fn name(&self) -> &'static str {
        "spatial_slice"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let (c, h, w) = chw(node, ins[0])?;
        for (a, (size, axis)) in [(h, "rows"), (w, "columns")].into_iter().enumerate() {
            if self.step[a] == 0 || self.end[a] > size || self.start[a] >= self.end[a] {
                return Err(CoreError::shape(
                    &node.name,
                    format!(
                        "slice of {axis} {}..{} step {} does not fit {size} {axis}",
                        self.start[a], self.end[a], self.step[a]
                    ),
                ));
            }
        }
        Ok(vec![c, self.len(0), self.len(1)])
    }

    /// A copy: no arithmetic under either convention.
    fn macs(&self, _ins: &[&Shape], _out: &[usize], _convention: Convention) -> u64 {
        0
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Crop(*self)
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::SpatialSlice(*self))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let [n, c, _, _] = dims4(node, x)?;
        let [s0, s1] = self.start.map(|v| v as isize);
        let [e0, e1] = self.end.map(|v| v as isize);
        let [t0, t1] = self.step.map(|v| v as isize);
        let y = x.slice(ndarray::s![.., .., s0..e0;t0, s1..e1;t1]);
        let mut out = ArrayD::zeros(IxDyn(&[n, c, self.len(0), self.len(1)]));
        out.assign(&y);
        Ok(out)
    }

    /// ONNX `Slice` on axes 2 and 3.
    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut n = OnnxNode::new("Slice", vec![]);
        let pair = |v: [usize; 2]| vec![v[0] as i64, v[1] as i64];
        n.int_consts = vec![
            ("starts", pair(self.start)),
            ("ends", pair(self.end)),
            ("axes", vec![2, 3]),
            ("steps", pair(self.step)),
        ];
        vec![n]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::one_op;
    use super::*;
    use crate::reference::forward;
    use crate::shape::infer_shapes;

    #[test]
    fn every_second_row_from_an_offset() {
        let s = SpatialSlice {
            start: [1, 0],
            end: [4, 3],
            step: [2, 2],
        };
        // 4x3 input: rows 1 and 3, columns 0 and 2.
        assert_eq!(s.sources([4, 3]), vec![3, 5, 9, 11]);
        let g = one_op(|b, x| b.push("s", Op::SpatialSlice(s), &[x]), &[2, 4, 3]);
        assert_eq!(infer_shapes(&g).unwrap().get("s"), &vec![2, 2, 2]);
        let x = ArrayD::from_shape_fn(IxDyn(&[1, 2, 4, 3]), |i| {
            (i[1] * 100 + i[2] * 10 + i[3]) as f32
        });
        let y = forward(&g, &Default::default(), None, &x).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![10., 12., 30., 32., 110., 112., 130., 132.]
        );
    }

    #[test]
    fn a_slice_outside_the_map_is_refused() {
        let s = SpatialSlice {
            start: [0, 0],
            end: [5, 3],
            step: [1, 1],
        };
        let node = Node {
            name: "s".into(),
            op: Op::SpatialSlice(s),
            inputs: vec!["x".into()],
        };
        let err = node.op.output_shape(&node, &[&vec![1, 4, 3]]).unwrap_err();
        assert!(err.to_string().contains("does not fit 4 rows"), "{err}");
    }
}
