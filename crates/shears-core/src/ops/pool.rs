//! Pooling: MaxPool and AvgPool over a sliding window, GlobalAvgPool over the whole map.
//!
//! No parameters; output channel `c` pools input channel `c`, so channels pass through and only
//! positions change. MaxPool's padding never wins (it acts as -inf); AvgPool counts zero padding
//! in the divisor (`count_include_pad`); both are the reference forward's business, not the rules'.

use super::{
    Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxNode, Op, OpRules, ParamSpec, Window2d, chw,
    ints, pads, window_out,
};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;

/// Which reduction a windowed pool applies; every rule here but the name is shared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    Max,
    Avg,
}

/// The attributes of [`Op::MaxPool`] and [`Op::AvgPool`], on which their rules are written.
pub(crate) struct Pool {
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
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
        let (kernel, stride, padding) = (self.kernel, self.stride, self.padding);
        let (c, h, w) = chw(node, ins[0])?;
        if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
            return Err(err(format!(
                "padding {padding:?} must be at most half the kernel {kernel:?}"
            )));
        }
        let oh = window_out(h, kernel[0], stride[0], padding[0], 1);
        let ow = window_out(w, kernel[1], stride[1], padding[1], 1);
        match (oh, ow) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![c, oh, ow]),
            _ => Err(err(format!(
                "pool kernel {kernel:?} does not fit input {h}x{w}"
            ))),
        }
    }

    /// One MAC per window element of every output under `all-ops`, none under `conv+linear`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => {
                out.iter().product::<usize>() as u64 * (self.kernel[0] * self.kernel[1]) as u64
            }
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PoolWindow(Window2d {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: [1, 1],
        })
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        let (kernel, stride, padding) = (self.kernel, self.stride, self.padding);
        Ok(match self.kind {
            PoolKind::Max => Op::MaxPool {
                kernel,
                stride,
                padding,
            },
            PoolKind::Avg => Op::AvgPool {
                kernel,
                stride,
                padding,
            },
        })
    }

    /// Average pooling counts the zero padding in the divisor, as the op does.
    fn onnx(&self, _node: &str, _inputs: usize) -> Vec<OnnxNode> {
        let mut attrs = vec![
            ("kernel_shape", ints(self.kernel)),
            ("strides", ints(self.stride)),
            ("pads", pads(self.padding)),
        ];
        let op_type = match self.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Avg => {
                attrs.push(("count_include_pad", OnnxAttr::Int(1)));
                "AveragePool"
            }
        };
        vec![OnnxNode::new(op_type, attrs)]
    }
}

/// [`Op::GlobalAvgPool`], which has no attributes: `[C,H,W]` to `[C]`.
pub(crate) struct GlobalAvgPool;

impl OpRules for GlobalAvgPool {
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
        Ok(vec![c])
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
        Ok(Op::GlobalAvgPool)
    }

    /// ONNX keeps the pooled 1×1 map; the flatten gives the `[C]` vector this op produces.
    fn onnx(&self, _node: &str, _inputs: usize) -> Vec<OnnxNode> {
        vec![
            OnnxNode::new("GlobalAveragePool", vec![]),
            OnnxNode::new("Flatten", vec![("axis", OnnxAttr::Int(1))]),
        ]
    }
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
        g.nodes[0].op = Op::MaxPool {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [2, 2],
        };
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(
            e.contains("`m`") && e.contains("at most half the kernel"),
            "{e}"
        );
        let mut g = one_op(|b, x| b.avgpool("a", x, 2, 2, 0), &[4, 3, 3]);
        g.nodes[0].op = Op::AvgPool {
            kernel: [4, 4],
            stride: [1, 1],
            padding: [0, 0],
        };
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(
            e.contains("pool kernel [4, 4] does not fit input 3x3"),
            "{e}"
        );
        let mut g = one_op(|b, x| b.relu("r", x), &[5]);
        g.nodes[0].op = Op::GlobalAvgPool;
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
        assert_eq!(Op::GlobalAvgPool.channel_flow(), ChannelFlow::PoolGlobal);
        assert!(Op::GlobalAvgPool.channel_axes("g").is_empty());
    }
}
