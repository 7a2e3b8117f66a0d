//! Batch normalisation over the channels of a `[C,H,W]` map (2d) or the features of a `[F]`
//! vector (1d): scale, shift, running mean and running variance, one entry per channel.
//!
//! It passes channels through, so its four tensors join the group of the channels it normalises.

use super::RefCall;
use super::{
    Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxNode, Op, OpRules, ParamKind, ParamSpec,
    output_channel_axes, param,
};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, Axis};
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::BatchNorm`], on which its rules are written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchNorm {
    pub channels: usize,
    pub eps: f64,
    pub momentum: f64,
}

impl OpRules for BatchNorm {
    fn name(&self) -> &'static str {
        "batchnorm"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        let channels = self.channels;
        vec![
            param(node, "weight", vec![channels], ParamKind::BnScale),
            param(node, "bias", vec![channels], ParamKind::BnShift),
            param(node, "running_mean", vec![channels], ParamKind::RunningMean),
            param(node, "running_var", vec![channels], ParamKind::RunningVar),
        ]
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let err = |m: String| CoreError::shape(&node.name, m);
        let (channels, eps) = (self.channels, self.eps);
        let c = ins[0][0];
        if crate::shape::is_tokens(ins[0]) {
            return Err(err(format!(
                "batch norm on a token sequence {:?} is not supported (only maps and vectors)",
                ins[0]
            )));
        }
        if eps.is_nan() || eps <= 0.0 {
            return Err(err(format!("eps must be positive, got {eps}")));
        }
        if c != channels {
            return Err(err(format!("expects {channels} channels, got {c}")));
        }
        Ok(ins[0].clone())
    }

    /// One MAC per output element (its affine) under `all-ops`, none under `conv+linear`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => out.iter().product::<usize>() as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PassThrough
    }

    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        output_channel_axes(self.param_specs(node))
    }

    fn compacted(&self, _node: &str, _in_channels: usize, out_channels: usize) -> Result<Op> {
        Ok(Op::BatchNorm(BatchNorm {
            channels: out_channels,
            eps: self.eps,
            momentum: self.momentum,
        }))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let name = &node.name;
        let p = call.params;
        let gamma = p.get(&format!("{name}.weight"))?;
        let beta = p.get(&format!("{name}.bias"))?;
        let mean = p.get(&format!("{name}.running_mean"))?;
        let var = p.get(&format!("{name}.running_var"))?;
        let mut y = x.clone();
        for (c, mut lane) in y.axis_iter_mut(Axis(1)).enumerate() {
            let scale = gamma[c] / (var[c] as f64 + self.eps).sqrt() as f32;
            let (m, b) = (mean[c], beta[c]);
            lane.mapv_inplace(|v| (v - m) * scale + b);
        }
        Ok(y)
    }

    /// ONNX's momentum weighs the running statistic, PyTorch's (and ours) the new batch one.
    fn onnx(&self, node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut n = OnnxNode::new(
            "BatchNormalization",
            vec![
                ("epsilon", OnnxAttr::Float(self.eps as f32)),
                ("momentum", OnnxAttr::Float((1.0 - self.momentum) as f32)),
            ],
        );
        n.params = self.param_specs(node).into_iter().map(|p| p.name).collect();
        vec![n]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{one_op, single};
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::ops::ChannelSide;
    use crate::shape::infer_shapes;

    #[test]
    fn batchnorm_1d_rules() {
        let mut b = GraphBuilder::new("t", &[20]);
        let x = b.input();
        let l = b.linear("l", &x, 7, true);
        let n = b.batchnorm("bn", &l);
        let g = b.finish(&n);
        assert_eq!(infer_shapes(&g).unwrap().get("bn"), &vec![7]);
        let mut bad = g.clone();
        bad.nodes[1].op = Op::BatchNorm(BatchNorm {
            channels: 6,
            eps: 1e-5,
            momentum: 0.1,
        });
        assert!(
            infer_shapes(&bad)
                .unwrap_err()
                .to_string()
                .contains("expects 6 channels, got 7")
        );
        let mut bad = g.clone();
        bad.nodes[1].op = Op::BatchNorm(BatchNorm {
            channels: 7,
            eps: 0.0,
            momentum: 0.1,
        });
        assert!(
            infer_shapes(&bad)
                .unwrap_err()
                .to_string()
                .contains("eps must be positive")
        );
    }

    #[test]
    fn batchnorm_cost() {
        let (cl, all) = single(|b, x| b.batchnorm("bn", x), &[4, 3, 3]);
        assert_eq!((cl.params, cl.macs, all.macs), (8, 0, 36));
    }

    #[test]
    fn flow_axes_and_compaction() {
        let g = one_op(|b, x| b.batchnorm("bn", x), &[4, 3, 3]);
        let op = &g.nodes[0].op;
        assert_eq!(op.channel_flow(), ChannelFlow::PassThrough);
        let axes = op.channel_axes("bn");
        let names: Vec<&str> = axes.iter().map(|a| a.spec.name.as_str()).collect();
        assert_eq!(
            names,
            ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
        );
        assert!(
            axes.iter()
                .all(|a| a.axis == 0 && a.side == ChannelSide::Output)
        );
        assert_eq!(
            op.compacted("bn", 2, 2).unwrap(),
            Op::BatchNorm(BatchNorm {
                channels: 2,
                eps: 1e-5,
                momentum: 0.1
            })
        );
        assert!(!op.is_weighted_layer());
    }
}
