//! Resize: upsampling of a `[C,H,W]` map by integer factors, nearest (PyTorch's `nearest`, ONNX
//! `asymmetric` + `floor`) or bilinear with half-pixel centres (PyTorch's `align_corners=False`),
//! as FPN, HRNet and U-Net fuse a coarse map into a fine one.
//!
//! Channels pass through; each output position reads one input position (nearest) or the up to
//! four around it (bilinear), which [`Resize::taps`] lists for every interpreter and for
//! effective sparsity.

use super::RefCall;
use super::arith::dims4;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxNode, Op, OpRules, ParamSpec, chw};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

/// How a resized position is computed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    Nearest,
    Bilinear,
}

/// The attributes of [`Op::Resize`]: output `[C, H * scale[0], W * scale[1]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    pub scale: [usize; 2],
    pub mode: ResizeMode,
}

impl Resize {
    /// The input indices and weights that output index `o` of one axis reads, for an input of
    /// length `len` upsampled by `scale`; weights sum to 1 and zero weights are left out.
    pub fn axis_taps(&self, o: usize, len: usize, scale: usize) -> Vec<(usize, f32)> {
        match self.mode {
            ResizeMode::Nearest => vec![((o / scale).min(len - 1), 1.0)],
            ResizeMode::Bilinear => {
                let src = ((o as f64 + 0.5) / scale as f64 - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(len - 1);
                let i1 = (i0 + 1).min(len - 1);
                let l = (src - i0 as f64) as f32;
                let mut taps = vec![(i0, 1.0 - l)];
                if i1 != i0 && l > 0.0 {
                    taps.push((i1, l));
                } else {
                    taps[0].1 = 1.0;
                }
                taps
            }
        }
    }

    /// For every output position of an `[h, w]` input (row-major), the input positions it reads
    /// with their weights.
    pub fn taps(&self, [h, w]: [usize; 2]) -> Vec<Vec<(usize, f32)>> {
        let (oh, ow) = (h * self.scale[0], w * self.scale[1]);
        let rows: Vec<_> = (0..oh)
            .map(|y| self.axis_taps(y, h, self.scale[0]))
            .collect();
        let cols: Vec<_> = (0..ow)
            .map(|x| self.axis_taps(x, w, self.scale[1]))
            .collect();
        let mut out = Vec::with_capacity(oh * ow);
        for r in &rows {
            for c in &cols {
                out.push(
                    r.iter()
                        .flat_map(|&(y, wy)| c.iter().map(move |&(x, wx)| (y * w + x, wy * wx)))
                        .collect(),
                );
            }
        }
        out
    }
}

impl OpRules for Resize {
    fn name(&self) -> &'static str {
        "resize"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let (c, h, w) = chw(node, ins[0])?;
        if self.scale.contains(&0) {
            return Err(CoreError::shape(
                &node.name,
                "resize scales must be positive integers",
            ));
        }
        Ok(vec![c, h * self.scale[0], w * self.scale[1]])
    }

    /// One read per output element (nearest) or four multiply-adds (bilinear) under `all-ops`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        let per = match self.mode {
            ResizeMode::Nearest => 0,
            ResizeMode::Bilinear => 4,
        };
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => per * out.iter().product::<usize>() as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Resample(*self)
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Resize(*self))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let name = &node.name;
        let [n, c, h, w] = dims4(node, x)?;
        let taps = self.taps([h, w]);
        let xs = x.as_standard_layout();
        let src = xs
            .as_slice()
            .ok_or_else(|| CoreError::shape(name, "resize input is not contiguous"))?;
        let mut out = Vec::with_capacity(n * c * taps.len());
        for plane in src.chunks(h * w) {
            for t in &taps {
                out.push(t.iter().map(|&(q, wt)| plane[q] * wt).sum::<f32>());
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[n, c, h * self.scale[0], w * self.scale[1]]), out)
            .map_err(|e| CoreError::shape(name, e.to_string()))
    }

    /// ONNX Resize with its scales as an input (`[1, 1, s_h, s_w]`; the empty `roi` first).
    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let attrs = match self.mode {
            ResizeMode::Nearest => vec![
                ("mode", OnnxAttr::Str("nearest")),
                (
                    "coordinate_transformation_mode",
                    OnnxAttr::Str("asymmetric"),
                ),
                ("nearest_mode", OnnxAttr::Str("floor")),
            ],
            ResizeMode::Bilinear => vec![
                ("mode", OnnxAttr::Str("linear")),
                (
                    "coordinate_transformation_mode",
                    OnnxAttr::Str("half_pixel"),
                ),
            ],
        };
        let mut n = OnnxNode::new("Resize", attrs);
        n.float_tensors = vec![
            ("roi", vec![]),
            (
                "scales",
                vec![1.0, 1.0, self.scale[0] as f32, self.scale[1] as f32],
            ),
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
    fn resize_taps_follow_pytorch() {
        let near = Resize {
            scale: [2, 2],
            mode: ResizeMode::Nearest,
        };
        assert_eq!(near.axis_taps(3, 4, 2), vec![(1, 1.0)]);
        let bil = Resize {
            scale: [2, 2],
            mode: ResizeMode::Bilinear,
        };
        // Output 0 of a 2x upsampling sits at input -0.25, clamped to 0: input 0 alone.
        assert_eq!(bil.axis_taps(0, 4, 2), vec![(0, 1.0)]);
        // Output 1 at input 0.25: 0.75 of input 0, 0.25 of input 1.
        assert_eq!(bil.axis_taps(1, 4, 2), vec![(0, 0.75), (1, 0.25)]);
        // The last output (7 -> 3.25) reads only the last input.
        assert_eq!(bil.axis_taps(7, 4, 2), vec![(3, 1.0)]);
        assert_eq!(bil.taps([2, 2]).len(), 16);
    }

    #[test]
    fn resize_shape() {
        let mut b = GraphBuilder::new("t", &[3, 4, 5]);
        let x = b.input();
        let y = b.resize("up", &x, [2, 3], ResizeMode::Nearest);
        let g = b.finish(&y);
        assert_eq!(infer_shapes(&g).unwrap().get("up"), &vec![3, 8, 15]);
    }
}
