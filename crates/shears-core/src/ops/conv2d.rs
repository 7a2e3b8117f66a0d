//! 2-D convolution: weight `[out, in/groups, kh, kw]` (PyTorch/ONNX layout), optional bias `[out]`.
//!
//! Its `groups` attribute decides its channel flow: `groups = 1` is a plain conv whose filters
//! start a fresh channel space; `groups = in = out > 1` is depthwise, output channel `c` tied to
//! input channel `c`; anything else is a grouped conv whose channels can only go by whole groups.

use super::RefCall;
use super::arith::{contiguous, dims4};
use super::{
    Arity, ChannelAxis, ChannelFlow, ChannelSide, FilterGroups, OnnxAttr, OnnxNode, Op, OpRules,
    ParamKind, ParamSpec, Window2d, chw, ints, pads, param, window_out,
};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, IxDyn, s};
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::Conv2d`], on which its rules are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub bias: bool,
}

impl Conv2d {
    /// Plain, depthwise or grouped: how the `groups` attribute is handled.
    fn filter_groups(&self) -> FilterGroups {
        let (groups, in_channels, out_channels) =
            (self.groups, self.in_channels, self.out_channels);
        if groups <= 1 {
            FilterGroups::Dense
        } else if groups == in_channels && in_channels == out_channels {
            FilterGroups::Depthwise
        } else {
            FilterGroups::Grouped(groups)
        }
    }
}

impl OpRules for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        let mut v = vec![param(
            node,
            "weight",
            vec![
                self.out_channels,
                self.in_channels / self.groups.max(1),
                self.kernel[0],
                self.kernel[1],
            ],
            ParamKind::Weight,
        )];
        if self.bias {
            v.push(param(
                node,
                "bias",
                vec![self.out_channels],
                ParamKind::Bias,
            ));
        }
        v
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let err = |m: String| CoreError::shape(&node.name, m);
        let Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            ..
        } = *self;
        let (c, h, w) = chw(node, ins[0])?;
        if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
            return Err(err(format!(
                "groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )));
        }
        if c != in_channels {
            return Err(err(format!(
                "expects {in_channels} input channels, got {c}"
            )));
        }
        if out_channels == 0 {
            return Err(err("has zero output channels".into()));
        }
        let oh = window_out(h, kernel[0], stride[0], padding[0], dilation[0]);
        let ow = window_out(w, kernel[1], stride[1], padding[1], dilation[1]);
        match (oh, ow) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![out_channels, oh, ow]),
            _ => Err(err(format!(
                "kernel {kernel:?} does not fit input {h}x{w} with padding {padding:?}"
            ))),
        }
    }

    /// `in/groups * kh * kw` per output element; the bias adds one per output under `all-ops`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        let out = out.iter().product::<usize>() as u64;
        let all = convention == Convention::AllOps;
        let per_output =
            (self.in_channels / self.groups) as u64 * (self.kernel[0] * self.kernel[1]) as u64;
        out * per_output + if all && self.bias { out } else { 0 }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Filters {
            groups: self.filter_groups(),
            window: Some(Window2d {
                kernel: self.kernel,
                stride: self.stride,
                padding: self.padding,
                dilation: self.dilation,
            }),
        }
    }

    /// Filters and bias follow the output channels; weight axis 1 follows the input channels
    /// only in a plain conv (depthwise and grouped weights have `in/groups` there).
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
        if self.filter_groups() == FilterGroups::Dense {
            out.push(ChannelAxis {
                spec: specs[0].clone(),
                axis: 1,
                side: ChannelSide::Input,
            });
        }
        out
    }

    /// A depthwise conv keeps `groups = in = out`, so its kept input and output must agree.
    fn compacted(&self, node: &str, in_channels: usize, out_channels: usize) -> Result<Op> {
        let mut groups = self.groups;
        if self.filter_groups() == FilterGroups::Depthwise {
            if in_channels != out_channels {
                return Err(CoreError::shape(
                    node,
                    format!(
                        "compaction bug: depthwise conv would keep {in_channels} input but {out_channels} output channels"
                    ),
                ));
            }
            groups = out_channels;
        }
        Ok(Op::Conv2d(Conv2d {
            in_channels,
            out_channels,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups,
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
        let spec = ConvSpec {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        };
        conv2d_im2col(node, x, &w, b.as_deref(), spec)
    }

    fn onnx(&self, node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut n = OnnxNode::new(
            "Conv",
            vec![
                ("kernel_shape", ints(self.kernel)),
                ("strides", ints(self.stride)),
                ("pads", pads(self.padding)),
                ("dilations", ints(self.dilation)),
                ("group", OnnxAttr::Int(self.groups as i64)),
            ],
        );
        n.params = self.param_specs(node).into_iter().map(|p| p.name).collect();
        vec![n]
    }
}

/// A convolution's geometry, for [`conv2d_im2col`].
#[derive(Clone, Copy)]
pub(crate) struct ConvSpec {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

/// Convolution by im2col: per sample and group, `out[og, OH*OW] = W[og, K] · cols[K, OH*OW]`.
pub(crate) fn conv2d_im2col(
    node: &Node,
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    spec: ConvSpec,
) -> Result<ArrayD<f32>> {
    let [n, c, h, wd] = dims4(node, x)?;
    let (o, cg, kh, kw) = match w.shape() {
        &[o, cg, kh, kw] => (o, cg, kh, kw),
        s => {
            return Err(CoreError::shape(
                &node.name,
                format!("conv weight must be 4-D, got {s:?}"),
            ));
        }
    };
    let ConvSpec {
        stride,
        padding,
        dilation,
        groups,
    } = spec;
    if groups == 0 || cg * groups != c || o % groups != 0 {
        return Err(CoreError::shape(
            &node.name,
            format!(
                "weight {:?} does not fit {c} input channels in {groups} groups",
                w.shape()
            ),
        ));
    }
    let out_len = |len: usize, k: usize, i: usize| {
        crate::shape::window_out(len, k, stride[i], padding[i], dilation[i])
    };
    let (oh, ow) = match (out_len(h, kh, 0), out_len(wd, kw, 1)) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Err(CoreError::shape(
                &node.name,
                format!("kernel {kh}x{kw} does not fit input {h}x{wd}"),
            ));
        }
    };
    let og = o / groups;
    let k = cg * kh * kw;
    let ohw = oh * ow;
    // All samples share one product per group, so the weights are packed once per forward.
    let cols_len = n * ohw;
    let xv = x.view();
    let xs = contiguous(&xv);
    let wv = w.view();
    let ws = contiguous(&wv);
    let wmat = ArrayView2::from_shape((o, k), &ws)
        .map_err(|e| CoreError::shape(&node.name, e.to_string()))?;
    let mut out = vec![0f32; n * o * ohw];
    let mut cols = vec![0f32; k * cols_len];
    let mut prod = vec![0f32; og * cols_len];
    for gi in 0..groups {
        for ni in 0..n {
            for ci in 0..cg {
                let plane = &xs[((ni * c) + gi * cg + ci) * h * wd..][..h * wd];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = ((ci * kh + ky) * kw + kx) * cols_len + ni * ohw;
                        let row = &mut cols[row..row + ohw];
                        for oy in 0..oh {
                            let iy =
                                (oy * stride[0] + ky * dilation[0]) as isize - padding[0] as isize;
                            let dst = &mut row[oy * ow..(oy + 1) * ow];
                            if iy < 0 || iy >= h as isize {
                                dst.fill(0.0);
                                continue;
                            }
                            let src = &plane[iy as usize * wd..][..wd];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = (ox * stride[1] + kx * dilation[1]) as isize
                                    - padding[1] as isize;
                                *d = if ix < 0 || ix >= wd as isize {
                                    0.0
                                } else {
                                    src[ix as usize]
                                };
                            }
                        }
                    }
                }
            }
        }
        let colv = ArrayView2::from_shape((k, cols_len), &cols)
            .map_err(|e| CoreError::shape(&node.name, e.to_string()))?;
        let wg = wmat.slice(s![gi * og..(gi + 1) * og, ..]);
        let mut prodv = ArrayViewMut2::from_shape((og, cols_len), &mut prod)
            .map_err(|e| CoreError::shape(&node.name, e.to_string()))?;
        general_mat_mul(1.0, &wg, &colv, 0.0, &mut prodv);
        // prod is [og, N*OHW]; out is [N, O, OHW].
        for (r, prow) in prod.chunks(cols_len).enumerate() {
            for ni in 0..n {
                let dst = (ni * o + gi * og + r) * ohw;
                out[dst..dst + ohw].copy_from_slice(&prow[ni * ohw..(ni + 1) * ohw]);
            }
        }
    }
    if let Some(b) = bias {
        for (i, chunk) in out.chunks_mut(ohw).enumerate() {
            let bv = b[i % o];
            chunk.iter_mut().for_each(|v| *v += bv);
        }
    }
    ArrayD::from_shape_vec(IxDyn(&[n, o, oh, ow]), out)
        .map_err(|e| CoreError::shape(&node.name, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{one_op, single};
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::shape::infer_shapes;

    #[test]
    fn conv_stride_padding_dilation() {
        let mut b = GraphBuilder::new("t", &[3, 32, 32]);
        let x = b.input();
        let y = b.conv2d_full("c", &x, 8, [3, 3], [2, 2], [1, 1], [1, 1], 1, false);
        let z = b.conv2d_full("d", &y, 8, [3, 3], [1, 1], [2, 2], [2, 2], 8, true);
        let g = b.finish(&z);
        let s = infer_shapes(&g).unwrap();
        assert_eq!(s.get("c"), &vec![8, 16, 16]);
        assert_eq!(s.get("d"), &vec![8, 16, 16]);
    }

    #[test]
    fn mismatched_channels_name_the_node() {
        let mut b = GraphBuilder::new("t", &[3, 8, 8]);
        let x = b.input();
        let _ = b.conv2d("c1", &x, 4, 3, 1, 1);
        let mut g = b.finish("c1");
        if let Op::Conv2d(Conv2d { in_channels, .. }) = &mut g.nodes[0].op {
            *in_channels = 5;
        }
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(
            e.contains("c1") && e.contains("expects 5 input channels, got 3"),
            "{e}"
        );
    }

    #[test]
    fn bad_groups_and_oversized_kernels_are_errors() {
        let mut g = one_op(|b, x| b.conv2d("c", x, 4, 3, 1, 1), &[6, 8, 8]);
        if let Op::Conv2d(Conv2d { groups, .. }) = &mut g.nodes[0].op {
            *groups = 4;
        }
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(
            e.contains("`c`") && e.contains("groups=4 must divide"),
            "{e}"
        );
        let mut g = one_op(|b, x| b.conv2d("c", x, 4, 3, 1, 0), &[6, 8, 8]);
        if let Op::Conv2d(Conv2d { kernel, .. }) = &mut g.nodes[0].op {
            *kernel = [9, 9];
        }
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(e.contains("does not fit input 8x8"), "{e}");
        let conv = one_op(|b, x| b.conv2d("c", x, 4, 3, 1, 0), &[6, 8, 8]).nodes[0]
            .op
            .clone();
        let mut g = one_op(|b, x| b.relu("c", x), &[6]);
        g.nodes[0].op = conv;
        let e = infer_shapes(&g).unwrap_err().to_string();
        assert!(e.contains("conv2d needs a [C,H,W] feature map"), "{e}");
    }

    #[test]
    fn conv_cost() {
        // 3->8, 3x3, pad 1 on 3x10x10: out 8x10x10; MACs = 800 * 27; params 8*27 + 8 bias.
        let (cl, all) = single(|b, x| b.conv2d_bias("c", x, 8, 3, 1, 1), &[3, 10, 10]);
        assert_eq!(cl.params, 8 * 27 + 8);
        assert_eq!(cl.macs, 800 * 27);
        assert_eq!(all.macs, 800 * 27 + 800);
    }

    #[test]
    fn grouped_and_depthwise_conv_cost() {
        let (cl, _) = single(
            |b, x| b.conv2d_full("c", x, 8, [3, 3], [1, 1], [1, 1], [1, 1], 2, false),
            &[4, 5, 5],
        );
        assert_eq!(cl.params, 8 * 2 * 9);
        assert_eq!(cl.macs, 8 * 25 * 2 * 9);
        let (cl, _) = single(|b, x| b.depthwise("d", x, 3, 2, 1), &[6, 8, 8]);
        assert_eq!(cl.params, 6 * 9);
        assert_eq!(cl.macs, 6 * 16 * 9);
    }

    #[test]
    fn grouped_strided_dilated_conv_shape_cost_and_flow() {
        // 4 -> 6 channels in 2 groups, 3x2 kernel, stride [2,1], padding [1,0], dilation [1,2]
        // on 4x9x7: out height (9+2-3)/2+1 = 5, width (7-3)/1+1 = 5.
        let g = one_op(
            |b, x| b.conv2d_full("c", x, 6, [3, 2], [2, 1], [1, 0], [1, 2], 2, true),
            &[4, 9, 7],
        );
        assert_eq!(infer_shapes(&g).unwrap().get("c"), &vec![6, 5, 5]);
        let op = &g.nodes[0].op;
        let specs = op.param_specs("c");
        assert_eq!(specs[0].shape, vec![6, 2, 3, 2]);
        assert_eq!(specs[1].shape, vec![6]);
        let out = [6, 5, 5];
        assert_eq!(
            op.macs(&[&vec![4, 9, 7]], &out, Convention::ConvLinear),
            150 * 12
        );
        assert_eq!(
            op.macs(&[&vec![4, 9, 7]], &out, Convention::AllOps),
            150 * 13
        );
        assert_eq!(
            op.channel_flow(),
            ChannelFlow::Filters {
                groups: FilterGroups::Grouped(2),
                window: Some(Window2d {
                    kernel: [3, 2],
                    stride: [2, 1],
                    padding: [1, 0],
                    dilation: [1, 2],
                }),
            }
        );
        // grouped: only output-side axes, never the input channels.
        let axes = op.channel_axes("c");
        assert!(
            axes.iter()
                .all(|a| a.side == ChannelSide::Output && a.axis == 0)
        );
        assert_eq!(axes.len(), 2);
        assert!(op.is_weighted_layer());
        assert_eq!(op.arity(), Arity::One);
    }

    #[test]
    fn plain_and_depthwise_flow_and_axes() {
        let plain = one_op(|b, x| b.conv2d("c", x, 8, 3, 1, 1), &[4, 6, 6]);
        let op = &plain.nodes[0].op;
        assert!(matches!(
            op.channel_flow(),
            ChannelFlow::Filters {
                groups: FilterGroups::Dense,
                window: Some(_)
            }
        ));
        let axes: Vec<(String, usize, ChannelSide)> = op
            .channel_axes("c")
            .into_iter()
            .map(|a| (a.spec.name, a.axis, a.side))
            .collect();
        assert_eq!(
            axes,
            vec![
                ("c.weight".to_string(), 0, ChannelSide::Output),
                ("c.weight".to_string(), 1, ChannelSide::Input)
            ]
        );
        let dw = one_op(|b, x| b.depthwise("d", x, 3, 1, 1), &[4, 6, 6]);
        let op = &dw.nodes[0].op;
        assert!(matches!(
            op.channel_flow(),
            ChannelFlow::Filters {
                groups: FilterGroups::Depthwise,
                ..
            }
        ));
        assert_eq!(FilterGroups::Depthwise.count(4), 4);
        assert!(
            op.channel_axes("d")
                .iter()
                .all(|a| a.side == ChannelSide::Output)
        );
        // one channel with groups = 1 is a plain conv, not a depthwise one.
        let one = one_op(|b, x| b.depthwise("d", x, 3, 1, 1), &[1, 6, 6]);
        assert!(matches!(
            one.nodes[0].op.channel_flow(),
            ChannelFlow::Filters {
                groups: FilterGroups::Dense,
                ..
            }
        ));
    }

    #[test]
    fn compaction_rewrites_channels_and_depthwise_groups() {
        let plain = one_op(|b, x| b.conv2d_bias("c", x, 8, 3, 2, 1), &[4, 6, 6]);
        let op = plain.nodes[0].op.compacted("c", 3, 5).unwrap();
        assert_eq!(
            op,
            Op::Conv2d(Conv2d {
                in_channels: 3,
                out_channels: 5,
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
                dilation: [1, 1],
                groups: 1,
                bias: true,
            })
        );
        let dw = one_op(|b, x| b.depthwise("d", x, 3, 1, 1), &[6, 6, 6]);
        let op = dw.nodes[0].op.compacted("d", 2, 2).unwrap();
        assert!(matches!(
            op,
            Op::Conv2d(Conv2d {
                in_channels: 2,
                out_channels: 2,
                groups: 2,
                ..
            })
        ));
        let e = dw.nodes[0].op.compacted("d", 2, 3).unwrap_err().to_string();
        assert!(
            e.contains("`d`") && e.contains("depthwise conv would keep 2 input but 3 output"),
            "{e}"
        );
    }
}
