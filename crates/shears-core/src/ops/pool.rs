//! Pooling: MaxPool and AvgPool over a sliding window, GlobalAvgPool over the whole map.
//!
//! No parameters; output channel `c` pools input channel `c`, so channels pass through and only
//! positions change. MaxPool's padding never wins (it acts as -inf). AvgPool's divisor counts the
//! zero padding (`count_include_pad`, PyTorch's default) or only the input elements a window
//! covers. With `ceil_mode` the output size rounds up, as PyTorch's: a last window that starts
//! inside the input or its left padding counts even where it runs past the right padding, and
//! that overhang never counts in a divisor. [`Pool2d::window_divisor`] is that rule, shared by
//! every interpreter.

use super::RefCall;
use super::arith::{contiguous, dims4};
use super::{
    Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxNode, Op, OpRules, ParamSpec, Window2d, chw,
    ints, pads,
};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::MaxPool`] and [`Op::AvgPool`]: a 2-D window with symmetric padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    /// Output sizes round up (PyTorch's and ONNX's `ceil_mode`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ceil_mode: bool,
    /// Average pooling: zero padding counts in the divisor. Max pooling ignores it.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub count_include_pad: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_true(b: &bool) -> bool {
    *b
}
fn yes() -> bool {
    true
}

impl Pool2d {
    /// A `k`×`k` window with the given stride and padding, floor mode, padding counted.
    pub fn square(k: usize, stride: usize, padding: usize) -> Self {
        Pool2d {
            kernel: [k, k],
            stride: [stride, stride],
            padding: [padding, padding],
            ceil_mode: false,
            count_include_pad: true,
        }
    }

    /// Output length along `axis` (0 = height, 1 = width) for an input of length `len`.
    pub fn out_len(&self, axis: usize, len: usize) -> Option<usize> {
        let (k, s, p) = (self.kernel[axis], self.stride[axis], self.padding[axis]);
        let padded = len + 2 * p;
        if s == 0 || k == 0 || padded < k {
            return None;
        }
        if !self.ceil_mode {
            return Some((padded - k) / s + 1);
        }
        let mut out = (padded - k).div_ceil(s) + 1;
        // PyTorch's rule: the last window must start inside the input or its left padding.
        if (out - 1) * s >= len + p {
            out -= 1;
        }
        Some(out)
    }

    /// The divisor of average pooling at output position `(oy, ox)` of an `h`×`w` input: the
    /// window's area within the padded input (`count_include_pad`), else within the input.
    pub fn window_divisor(&self, [h, w]: [usize; 2], oy: usize, ox: usize) -> f32 {
        let span = |axis: usize, o: usize, len: usize| -> usize {
            let (k, s, p) = (self.kernel[axis], self.stride[axis], self.padding[axis]);
            let start = o * s; // in padded coordinates
            let end = (start + k).min(len + 2 * p);
            if self.count_include_pad {
                end - start
            } else {
                end.min(len + p).saturating_sub(start.max(p))
            }
        };
        (span(0, oy, h) * span(1, ox, w)).max(1) as f32
    }
}

/// Which reduction a windowed pool applies; every rule here but the name is shared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    Max,
    Avg,
}

/// A windowed pool's rules: [`Op::MaxPool`] and [`Op::AvgPool`] differ only in `kind`.
pub(crate) struct Pool {
    pub kind: PoolKind,
    pub attrs: Pool2d,
}

impl OpRules for Pool {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "maxpool",
            PoolKind::Avg => "avgpool",
        }
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let err = |m: String| CoreError::shape(&node.name, m);
        let Pool2d {
            kernel, padding, ..
        } = self.attrs;
        let (c, h, w) = chw(node, ins[0])?;
        if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
            return Err(err(format!(
                "padding {padding:?} must be at most half the kernel {kernel:?}"
            )));
        }
        match (self.attrs.out_len(0, h), self.attrs.out_len(1, w)) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![c, oh, ow]),
            _ => Err(err(format!(
                "pool kernel {kernel:?} does not fit input {h}x{w}"
            ))),
        }
    }

    /// One MAC per window element of every output under `all-ops`, none under `conv+linear`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        let kernel = self.attrs.kernel;
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => {
                out.iter().product::<usize>() as u64 * (kernel[0] * kernel[1]) as u64
            }
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PoolWindow(Window2d {
            kernel: self.attrs.kernel,
            stride: self.attrs.stride,
            padding: self.attrs.padding,
            dilation: [1, 1],
        })
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(match self.kind {
            PoolKind::Max => Op::MaxPool(self.attrs),
            PoolKind::Avg => Op::AvgPool(self.attrs),
        })
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        pool_forward(
            call.node,
            call.ins[0],
            &self.attrs,
            self.kind == PoolKind::Max,
        )
    }

    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let a = self.attrs;
        let mut attrs = vec![
            ("kernel_shape", ints(a.kernel)),
            ("strides", ints(a.stride)),
            ("pads", pads(a.padding)),
        ];
        if a.ceil_mode {
            attrs.push(("ceil_mode", OnnxAttr::Int(1)));
        }
        let op_type = match self.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Avg => {
                attrs.push((
                    "count_include_pad",
                    OnnxAttr::Int(a.count_include_pad as i64),
                ));
                "AveragePool"
            }
        };
        vec![OnnxNode::new(op_type, attrs)]
    }
}

/// The attributes of [`Op::GlobalAvgPool`]: `[C,H,W]` to `[C]`, or to `[C,1,1]` with `keep_dims`
/// (what a squeeze-excitation's convolutions read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GlobalPool {
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_dims: bool,
}

impl OpRules for GlobalPool {
    fn name(&self) -> &'static str {
        "globalavgpool"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let (c, _, _) = chw(node, ins[0])?;
        Ok(if self.keep_dims {
            vec![c, 1, 1]
        } else {
            vec![c]
        })
    }

    /// One MAC per input element under `all-ops`, none under `conv+linear`.
    fn macs(&self, ins: &[&Shape], _out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => ins[0].iter().product::<usize>() as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PoolGlobal
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::GlobalAvgPool(*self))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let name = &node.name;
        let [n, c, h, w] = dims4(node, x)?;
        let flat = x
            .to_shape((n, c, h * w))
            .map_err(|e| CoreError::shape(name, e.to_string()))?;
        let mean = flat.sum_axis(Axis(2)) / (h * w) as f32;
        let shape: Vec<usize> = if self.keep_dims {
            vec![n, c, 1, 1]
        } else {
            vec![n, c]
        };
        mean.into_shape_with_order(IxDyn(&shape))
            .map_err(|e| CoreError::shape(name, e.to_string()))
    }

    /// ONNX keeps the pooled 1×1 map; without `keep_dims` a flatten gives the `[C]` vector.
    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut nodes = vec![OnnxNode::new("GlobalAveragePool", vec![])];
        if !self.keep_dims {
            nodes.push(OnnxNode::new("Flatten", vec![("axis", OnnxAttr::Int(1))]));
        }
        nodes
    }
}

/// [`Op::GlobalMaxPool`]'s rules: [`GlobalPool`]'s with the maximum instead of the mean.
pub(crate) struct GlobalMax(pub GlobalPool);

impl OpRules for GlobalMax {
    fn name(&self) -> &'static str {
        "globalmaxpool"
    }

    fn arity(&self) -> Arity {
        self.0.arity()
    }

    fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        self.0.param_specs(node)
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        self.0.output_shape(node, ins)
    }

    fn macs(&self, ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        self.0.macs(ins, out, convention)
    }

    fn channel_flow(&self) -> ChannelFlow {
        self.0.channel_flow()
    }

    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        self.0.channel_axes(node)
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::GlobalMaxPool(self.0))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let name = &node.name;
        let [n, c, h, w] = dims4(node, x)?;
        let flat = x
            .to_shape((n, c, h * w))
            .map_err(|e| CoreError::shape(name, e.to_string()))?;
        let max = flat.fold_axis(Axis(2), f32::NEG_INFINITY, |m, &v| m.max(v));
        let shape: Vec<usize> = if self.0.keep_dims {
            vec![n, c, 1, 1]
        } else {
            vec![n, c]
        };
        max.into_shape_with_order(IxDyn(&shape))
            .map_err(|e| CoreError::shape(name, e.to_string()))
    }

    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut nodes = vec![OnnxNode::new("GlobalMaxPool", vec![])];
        if !self.0.keep_dims {
            nodes.push(OnnxNode::new("Flatten", vec![("axis", OnnxAttr::Int(1))]));
        }
        nodes
    }
}

/// Max or average pooling of consecutive `h x w` planes into `oh x ow` planes: max ignores
/// padding, average counts it as zeros in the divisor (PyTorch's `count_include_pad`). Shared
/// with the engine's dynamic inference, which pools the live channels of one sample.
pub fn pool_planes(
    planes: &[f32],
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    attrs: &Pool2d,
    max: bool,
) -> Vec<f32> {
    let Pool2d {
        kernel,
        stride,
        padding,
        ..
    } = *attrs;
    let mut out = Vec::with_capacity(planes.len() / (h * w).max(1) * oh * ow);
    for plane in planes.chunks(h * w) {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                for ky in 0..kernel[0] {
                    let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..kernel[1] {
                        let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let v = plane[iy as usize * w + ix as usize];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                out.push(if max {
                    acc
                } else {
                    acc / attrs.window_divisor([h, w], oy, ox)
                });
            }
        }
    }
    out
}

/// Max or average pooling of a node's `[N, C, H, W]` input.
pub(crate) fn pool_forward(
    node: &Node,
    x: &ArrayD<f32>,
    attrs: &Pool2d,
    max: bool,
) -> Result<ArrayD<f32>> {
    let [n, c, h, w] = dims4(node, x)?;
    let (Some(oh), Some(ow)) = (attrs.out_len(0, h), attrs.out_len(1, w)) else {
        return Err(CoreError::shape(
            &node.name,
            format!("pool kernel {:?} does not fit input {h}x{w}", attrs.kernel),
        ));
    };
    let xv = x.view();
    let xs = contiguous(&xv);
    let out = pool_planes(&xs[..n * c * h * w], [h, w], [oh, ow], attrs, max);
    ArrayD::from_shape_vec(IxDyn(&[n, c, oh, ow]), out)
        .map_err(|e| CoreError::shape(&node.name, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{one_op, single};
    use super::*;
    use crate::shape::infer_shapes;

    #[test]
    fn pool_shapes_and_errors() {
        let g = one_op(|b, x| b.maxpool("m", x, 3, 2, 1), &[4, 9, 9]);
        assert_eq!(infer_shapes(&g).unwrap().get("m"), &vec![4, 5, 5]);
        let g = one_op(|b, x| b.avgpool("a", x, 2, 2, 0), &[4, 9, 9]);
        assert_eq!(infer_shapes(&g).unwrap().get("a"), &vec![4, 4, 4]);
        let g = one_op(|b, x| b.global_avg_pool("g", x), &[4, 9, 9]);
        assert_eq!(infer_shapes(&g).unwrap().get("g"), &vec![4]);
        let mut g = one_op(|b, x| b.maxpool("m", x, 3, 1, 1), &[4, 9, 9]);
        g.nodes[0].op = Op::MaxPool(Pool2d {
            padding: [2, 2],
            ..Pool2d::square(3, 1, 1)
        });
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(
            e.contains("`m`") && e.contains("at most half the kernel"),
            "{e}"
        );
        let mut g = one_op(|b, x| b.avgpool("a", x, 2, 2, 0), &[4, 3, 3]);
        g.nodes[0].op = Op::AvgPool(Pool2d::square(4, 1, 0));
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(
            e.contains("pool kernel [4, 4] does not fit input 3x3"),
            "{e}"
        );
        let mut g = one_op(|b, x| b.relu("r", x), &[5]);
        g.nodes[0].op = Op::GlobalAvgPool(GlobalPool::default());
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(e.contains("globalavgpool needs a [C,H,W]"), "{e}");
    }

    #[test]
    fn pool_costs() {
        let (_, all) = single(|b, x| b.maxpool("m", x, 2, 2, 0), &[4, 4, 4]);
        assert_eq!(all.macs, 16 * 4);
        let (_, all) = single(|b, x| b.avgpool("a", x, 3, 1, 1), &[1, 4, 4]);
        assert_eq!(all.macs, 16 * 9);
        let (cl, all) = single(|b, x| b.global_avg_pool("g", x), &[4, 5, 5]);
        assert_eq!((cl.macs, all.macs, all.params), (0, 100, 0));
    }

    #[test]
    fn pool_flow_and_compaction() {
        let g = one_op(|b, x| b.maxpool("m", x, 3, 2, 1), &[4, 9, 9]);
        let op = &g.nodes[0].op;
        assert_eq!(
            op.channel_flow(),
            ChannelFlow::PoolWindow(Window2d {
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
                dilation: [1, 1],
            })
        );
        assert_eq!(op.compacted("m", 2, 2).unwrap(), *op);
        let g = one_op(|b, x| b.avgpool("a", x, 2, 1, 0), &[4, 9, 9]);
        assert_eq!(g.nodes[0].op.compacted("a", 3, 3).unwrap(), g.nodes[0].op);
        assert_eq!(g.nodes[0].op.kind_name(), "avgpool");
        let gap = Op::GlobalAvgPool(GlobalPool::default());
        assert_eq!(gap.channel_flow(), ChannelFlow::PoolGlobal);
        assert!(gap.channel_axes("g").is_empty());
    }

    #[test]
    fn ceil_mode_sizes_and_divisors_follow_pytorch() {
        // torch.nn.MaxPool2d(3, 2, ceil_mode=True) on 8x8 gives 4x4 (floor: 3x3).
        let ceil = Pool2d {
            ceil_mode: true,
            ..Pool2d::square(3, 2, 0)
        };
        assert_eq!(ceil.out_len(0, 8), Some(4));
        assert_eq!(Pool2d::square(3, 2, 0).out_len(0, 8), Some(3));
        // A window may not start in the right padding: 5 with k 2, s 2, p 1 gives 3, not 4.
        let padded = Pool2d {
            ceil_mode: true,
            ..Pool2d::square(2, 2, 1)
        };
        assert_eq!(padded.out_len(0, 5), Some(3));
        // AvgPool2d(3, 2, padding=1, ceil_mode=True) on 6 wide: windows [-1,2), [1,4), [3,6)
        // and [5,8) clipped to the padded end 7: divisors 3, 3, 3, 2 (padding counted) or
        // 2, 3, 3, 1 (padding left out).
        let mut avg = Pool2d {
            ceil_mode: true,
            ..Pool2d::square(3, 2, 1)
        };
        assert_eq!(avg.out_len(1, 6), Some(4));
        let divisors = |p: &Pool2d| {
            (0..4)
                .map(|o| p.window_divisor([1, 6], 0, o))
                .collect::<Vec<_>>()
        };
        // Rows: the 1-row input with its two padding rows counts 3.
        assert_eq!(divisors(&avg), vec![9.0, 9.0, 9.0, 6.0]);
        avg.count_include_pad = false;
        assert_eq!(divisors(&avg), vec![2.0, 3.0, 3.0, 1.0]);
    }

    #[test]
    fn pool_json_without_new_fields_still_loads() {
        let op: Op = serde_json::from_str(
            r#"{"type":"max_pool","kernel":[3,3],"stride":[2,2],"padding":[1,1]}"#,
        )
        .unwrap();
        assert_eq!(op, Op::MaxPool(Pool2d::square(3, 2, 1)));
        let gap: Op = serde_json::from_str(r#"{"type":"global_avg_pool"}"#).unwrap();
        assert_eq!(gap, Op::GlobalAvgPool(GlobalPool { keep_dims: false }));
        assert_eq!(
            serde_json::to_string(&gap).unwrap(),
            r#"{"type":"global_avg_pool"}"#
        );
    }
}
