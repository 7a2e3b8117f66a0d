//! Fully connected layer: weight `[out, in]` (PyTorch/ONNX layout), optional bias `[out]`.
//!
//! Its filters start a fresh channel space (the output features) and it reads every input feature,
//! so pruning the input features cuts weight axis 1.

use super::RefCall;
use super::{
    Arity, ChannelAxis, ChannelFlow, ChannelSide, FilterGroups, OnnxAttr, OnnxNode, Op, OpRules,
    ParamKind, ParamSpec, param,
};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::Linear`], on which its rules are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

impl OpRules for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        let mut v = vec![param(
            node,
            "weight",
            vec![self.out_features, self.in_features],
            ParamKind::Weight,
        )];
        if self.bias {
            v.push(param(
                node,
                "bias",
                vec![self.out_features],
                ParamKind::Bias,
            ));
        }
        v
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let err = |m: String| CoreError::shape(&node.name, m);
        let (in_features, out_features) = (self.in_features, self.out_features);
        match ins[0].as_slice() {
            [f] if *f == in_features => Ok(vec![out_features]),
            [f] => Err(err(format!(
                "expects {in_features} input features, got {f}"
            ))),
            s => Err(err(format!(
                "linear needs a [F] vector (add a flatten), got shape {s:?}"
            ))),
        }
    }

    /// `in * out` whatever the batch-free input; the bias adds `out` under `all-ops`.
    fn macs(&self, _ins: &[&Shape], _out: &[usize], convention: Convention) -> u64 {
        let all = convention == Convention::AllOps;
        (self.in_features * self.out_features) as u64
            + if all && self.bias {
                self.out_features as u64
            } else {
                0
            }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Filters {
            groups: FilterGroups::Dense,
            window: None,
        }
    }

    /// Weight rows and bias follow the output features; weight columns follow the input features.
    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        let specs = self.param_specs(node);
        let mut out: Vec<ChannelAxis> = specs
            .iter()
            .map(|spec| ChannelAxis {
                spec: spec.clone(),
                axis: 0,
                side: ChannelSide::Output,
            })
            .collect();
        out.push(ChannelAxis {
            spec: specs[0].clone(),
            axis: 1,
            side: ChannelSide::Input,
        });
        out
    }

    fn compacted(&self, _node: &str, in_channels: usize, out_channels: usize) -> Result<Op> {
        Ok(Op::Linear(Linear {
            in_features: in_channels,
            out_features: out_channels,
            bias: self.bias,
        }))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let (node, x) = (call.node, call.ins[0]);
        let name = &node.name;
        let w = call.params.get(&format!("{name}.weight"))?;
        let b = if self.bias {
            Some(call.params.get(&format!("{name}.bias"))?)
        } else {
            None
        };
        linear_forward(node, x, &w, b.as_deref())
    }

    /// `Gemm` with the weight transposed (`[out, in]` is the PyTorch and ONNX Gemm layout).
    fn onnx(&self, node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut n = OnnxNode::new("Gemm", vec![("transB", OnnxAttr::Int(1))]);
        n.params = self.param_specs(node).into_iter().map(|p| p.name).collect();
        vec![n]
    }
}

pub(crate) fn linear_forward(
    node: &Node,
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
) -> Result<ArrayD<f32>> {
    let err = |e: ndarray::ShapeError| CoreError::shape(&node.name, e.to_string());
    let x2 = x
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(err)?;
    let w2 = w
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(err)?;
    if x2.ncols() != w2.ncols() {
        return Err(CoreError::shape(
            &node.name,
            format!(
                "input has {} features, weight {:?} expects {}",
                x2.ncols(),
                w.shape(),
                w2.ncols()
            ),
        ));
    }
    let mut y = x2.dot(&w2.t());
    if let Some(b) = bias {
        let b1 = b
            .view()
            .into_dimensionality::<ndarray::Ix1>()
            .map_err(err)?;
        y += &b1;
    }
    Ok(y.into_dyn())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{one_op, single};
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::shape::infer_shapes;

    #[test]
    fn linear_on_a_feature_map_is_an_error() {
        let b = GraphBuilder::new("t", &[3, 8, 8]);
        let x = b.input();
        let mut g = b.finish(&x);
        g.nodes.push(Node {
            name: "fc".into(),
            op: Op::Linear(Linear {
                in_features: 192,
                out_features: 10,
                bias: true,
            }),
            inputs: vec![x.clone()],
        });
        g.output = "fc".into();
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(e.contains("fc") && e.contains("flatten"), "{e}");
    }

    #[test]
    fn wrong_feature_count_is_an_error() {
        let mut g = one_op(|b, x| b.linear("l", x, 4, false), &[6]);
        g.nodes[0].op = Op::Linear(Linear {
            in_features: 5,
            out_features: 4,
            bias: false,
        });
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(
            e.contains("`l`") && e.contains("expects 5 input features, got 6"),
            "{e}"
        );
    }

    #[test]
    fn linear_cost() {
        let (cl, all) = single(|b, x| b.linear("l", x, 10, true), &[20]);
        assert_eq!(cl.params, 210);
        assert_eq!(cl.macs, 200);
        assert_eq!(all.macs, 210);
    }

    #[test]
    fn flow_axes_and_compaction() {
        let g = one_op(|b, x| b.linear("l", x, 3, true), &[7]);
        let op = &g.nodes[0].op;
        assert_eq!(
            op.channel_flow(),
            ChannelFlow::Filters {
                groups: FilterGroups::Dense,
                window: None
            }
        );
        let axes: Vec<(String, usize, ChannelSide)> = op
            .channel_axes("l")
            .into_iter()
            .map(|a| (a.spec.name, a.axis, a.side))
            .collect();
        assert_eq!(
            axes,
            vec![
                ("l.weight".to_string(), 0, ChannelSide::Output),
                ("l.bias".to_string(), 0, ChannelSide::Output),
                ("l.weight".to_string(), 1, ChannelSide::Input),
            ]
        );
        assert_eq!(
            op.compacted("l", 5, 2).unwrap(),
            Op::Linear(Linear {
                in_features: 5,
                out_features: 2,
                bias: true
            })
        );
        assert!(op.is_weighted_layer());
    }
}
