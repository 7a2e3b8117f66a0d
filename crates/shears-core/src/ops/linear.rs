//! Fully connected layer: weight `[out, in]` (PyTorch/ONNX layout), optional bias `[out]`.
//!
//! Its filters start a fresh channel space (the output features) and it reads every input feature,
//! so pruning the input features cuts weight axis 1. On a token sequence `[T,C]` it maps the
//! channels of every token alike (a transformer's projections and MLP), `T` times the MACs.

use super::RefCall;
use super::{
    Arity, ChannelAxis, ChannelFlow, ChannelSide, FilterGroups, OnnxAttr, OnnxIn, OnnxNode, Op,
    OpRules, ParamKind, ParamSpec, param,
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
            [t, f] if *f == in_features => Ok(vec![*t, out_features]),
            [f] | [_, f] => Err(err(format!(
                "expects {in_features} input features, got {f}"
            ))),
            s => Err(err(format!(
                "linear needs a [F] vector or [T,C] tokens (add a flatten), got shape {s:?}"
            ))),
        }
    }

    /// `in * out` per vector or token; the bias adds `out` per token under `all-ops`.
    fn macs(&self, ins: &[&Shape], _out: &[usize], convention: Convention) -> u64 {
        let all = convention == Convention::AllOps;
        let tokens = crate::shape::positions(ins[0]) as u64;
        tokens
            * ((self.in_features * self.out_features) as u64
                + if all && self.bias {
                    self.out_features as u64
                } else {
                    0
                })
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

    /// `Gemm` with the weight transposed (`[out, in]` is the PyTorch and ONNX Gemm layout); on
    /// tokens `MatMul` with the transposed weight (which onnxruntime folds once), then the bias.
    fn onnx(&self, node: &str, ins: &[&Shape]) -> Vec<OnnxNode> {
        if !crate::shape::is_tokens(ins[0]) {
            let mut n = OnnxNode::new("Gemm", vec![("transB", OnnxAttr::Int(1))]);
            n.params = self.param_specs(node).into_iter().map(|p| p.name).collect();
            return vec![n];
        }
        let mut parts = vec![
            OnnxNode::wired(
                "Transpose",
                vec![("perm", OnnxAttr::Ints(vec![1, 0]))],
                vec![OnnxIn::Param(format!("{node}.weight"))],
            ),
            OnnxNode::wired(
                "MatMul",
                Vec::new(),
                vec![OnnxIn::OpInput(0), OnnxIn::Part(0)],
            ),
        ];
        if self.bias {
            parts.push(OnnxNode::wired(
                "Add",
                Vec::new(),
                vec![OnnxIn::Part(1), OnnxIn::Param(format!("{node}.bias"))],
            ));
        }
        parts
    }
}

pub(crate) fn linear_forward(
    node: &Node,
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
) -> Result<ArrayD<f32>> {
    let err = |e: ndarray::ShapeError| CoreError::shape(&node.name, e.to_string());
    // Tokens `[N,T,C]` go through as `[N*T, C]` rows and come back as `[N,T,out]`.
    let lead: Vec<usize> = x.shape()[..x.ndim().saturating_sub(1)].to_vec();
    let features = x.shape().last().copied().unwrap_or(0);
    let rows: usize = lead.iter().product();
    let x2 = x.to_shape((rows, features)).map_err(err)?;
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
    let mut out_shape = lead;
    out_shape.push(y.ncols());
    Ok(y.to_shape(ndarray::IxDyn(&out_shape))
        .map_err(err)?
        .into_owned())
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
    fn linear_on_tokens_maps_every_token() {
        let (cl, _) = single(|b, x| b.linear("l", x, 10, true), &[4, 20]);
        assert_eq!(cl.macs, 4 * 200);
        let g = one_op(|b, x| b.linear("l", x, 3, false), &[2, 2]);
        assert_eq!(infer_shapes(&g).unwrap().get("l"), &vec![2, 3]);
        let mut w = crate::weights::init_weights(&g, 0);
        let weight = ndarray::ArrayD::from_shape_vec(
            ndarray::IxDyn(&[3, 2]),
            vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        )
        .unwrap();
        w.insert("l.weight".into(), weight);
        let x = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 2, 2]), vec![1., 2., 3., 4.])
            .unwrap();
        let y = crate::reference::forward(&g, &w, None, &x).unwrap();
        assert_eq!(y.shape(), &[1, 2, 3]);
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![1., 2., 3., 3., 4., 7.]
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
