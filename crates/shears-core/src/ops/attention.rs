//! Multi-head self-attention between a packed QKV projection and the output projection (timm's
//! and torchvision's `Attention` core): the input `[T, 3*H*D]` holds, per token, the queries of
//! every head, then the keys, then the values, each head's `D` channels together (the layout of a
//! `qkv` linear layer and of `nn.MultiheadAttention`'s `in_proj`). Head `h` computes
//! `softmax(q_h k_hᵀ * scale) v_h`; the heads' outputs are concatenated to `[T, H*D]`.
//!
//! Why one op rather than the Reshape/Transpose/MatMul/Softmax it is made of: the head structure
//! is then an attribute that groups, compaction and export read, instead of something to
//! rediscover from five index permutations each time. Pruning a head removes its `D` query, key
//! and value rows of the QKV projection and its `D` input columns of the output projection
//! together, and compaction rewrites `heads`. `scale` is stored (not derived from `D`), so the
//! network stays the same function if a later pass changes the head dimension.
//!
//! Channel rule ([`ChannelFlow::Heads`]): output channel `h*D + d` reads the values of channel
//! `h*D + d` and every query and key channel of head `h`, at every token.

use super::RefCall;
use super::{Arity, ChannelAxis, ChannelFlow, OnnxAttr, OnnxIn, OnnxNode, Op, OpRules, ParamSpec};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

/// The attributes of [`Op::Attention`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Attention {
    pub heads: usize,
    pub head_dim: usize,
    /// Multiplies the query-key products before the softmax (`1/sqrt(head_dim)` as built).
    pub scale: f64,
}

impl Attention {
    /// Channels of the output (`heads * head_dim`); the input has three times as many.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// One sample's attention: `x` is `[t, 3*width]` row-major, the result `[t, width]`.
    pub fn forward_sample(&self, x: &[f32], t: usize) -> Vec<f32> {
        let (hd, d) = (self.width(), self.head_dim);
        let row = 3 * hd;
        let mut out = vec![0.0f32; t * hd];
        let mut scores = vec![0.0f64; t];
        for h in 0..self.heads {
            let (q0, k0, v0) = (h * d, hd + h * d, 2 * hd + h * d);
            for i in 0..t {
                let q = &x[i * row + q0..i * row + q0 + d];
                let mut max = f64::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate() {
                    let k = &x[j * row + k0..j * row + k0 + d];
                    let dot: f64 = q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum();
                    *s = dot * self.scale;
                    max = max.max(*s);
                }
                let mut total = 0.0;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    total += *s;
                }
                let o = &mut out[i * hd + h * d..i * hd + h * d + d];
                for (j, s) in scores.iter().enumerate() {
                    let a = s / total;
                    let v = &x[j * row + v0..j * row + v0 + d];
                    for (o, v) in o.iter_mut().zip(v) {
                        *o += (a * *v as f64) as f32;
                    }
                }
            }
        }
        out
    }
}

impl OpRules for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let err = |m: String| CoreError::shape(&node.name, m);
        if self.heads == 0 || self.head_dim == 0 {
            return Err(err(format!(
                "attention needs at least one head of at least one channel, got {} heads of {}",
                self.heads, self.head_dim
            )));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(err(format!("scale must be positive, got {}", self.scale)));
        }
        match ins[0].as_slice() {
            [t, c] if *c == 3 * self.width() => Ok(vec![*t, self.width()]),
            [_, c] => Err(err(format!(
                "expects packed queries, keys and values of {} heads x {} channels ({} channels), got {c}",
                self.heads,
                self.head_dim,
                3 * self.width()
            ))),
            s => Err(err(format!(
                "attention needs a [T,C] token sequence, got shape {s:?}"
            ))),
        }
    }

    /// The two matrix products (`q kᵀ` and the weighted sum of values), `T*T*H*D` each, count
    /// under both conventions as every matrix product does; `all-ops` adds the scaling and the
    /// softmax, about four operations per score.
    fn macs(&self, ins: &[&Shape], _out: &[usize], convention: Convention) -> u64 {
        let t = ins[0][0] as u64;
        let products = 2 * t * t * self.width() as u64;
        match convention {
            Convention::ConvLinear => products,
            Convention::AllOps => products + 4 * t * t * self.heads as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Heads {
            heads: self.heads,
            head_dim: self.head_dim,
        }
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, node: &str, in_channels: usize, out_channels: usize) -> Result<Op> {
        if out_channels % self.head_dim != 0 || in_channels != 3 * out_channels {
            return Err(CoreError::shape(
                node,
                format!(
                    "attention keeps whole heads of {} channels: {in_channels} input and \
                     {out_channels} output channels are not",
                    self.head_dim
                ),
            ));
        }
        Ok(Op::Attention(Attention {
            heads: out_channels / self.head_dim,
            ..*self
        }))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let x = call.ins[0].as_standard_layout();
        let (n, t, c) = match x.shape() {
            &[n, t, c] => (n, t, c),
            s => {
                return Err(CoreError::shape(
                    &call.node.name,
                    format!("expects [N,T,C] tokens, got {s:?}"),
                ));
            }
        };
        let data = x.as_slice().expect("standard layout");
        let mut out = Vec::with_capacity(n * t * self.width());
        for sample in data.chunks(t * c) {
            out.extend(self.forward_sample(sample, t));
        }
        ArrayD::from_shape_vec(IxDyn(&[n, t, self.width()]), out)
            .map_err(|e| CoreError::shape(&call.node.name, e.to_string()))
    }

    /// Reshape to `[N,T,3,H,D]`, move the `3` and the heads forward, take q, k and v, then
    /// `Softmax(q kᵀ * scale) v`, and back to `[N,T,H*D]`.
    fn onnx(&self, _node: &str, ins: &[&Shape]) -> Vec<OnnxNode> {
        let t = ins[0][0] as i64;
        let (h, d) = (self.heads as i64, self.head_dim as i64);
        let take = |suffix: &'static str, index: i64| {
            OnnxNode::wired(
                "Gather",
                vec![("axis", OnnxAttr::Int(0))],
                vec![OnnxIn::Part(1), OnnxIn::IntScalar(suffix, index)],
            )
        };
        vec![
            // 0
            OnnxNode::wired(
                "Reshape",
                Vec::new(),
                vec![
                    OnnxIn::OpInput(0),
                    OnnxIn::Ints("qkv_shape", vec![0, t, 3, h, d]),
                ],
            ),
            // 1: [3, N, H, T, D]
            OnnxNode::wired(
                "Transpose",
                vec![("perm", OnnxAttr::Ints(vec![2, 0, 3, 1, 4]))],
                vec![OnnxIn::Part(0)],
            ),
            take("q_index", 0),
            take("k_index", 1),
            take("v_index", 2),
            // 5: kᵀ
            OnnxNode::wired(
                "Transpose",
                vec![("perm", OnnxAttr::Ints(vec![0, 1, 3, 2]))],
                vec![OnnxIn::Part(3)],
            ),
            OnnxNode::wired("MatMul", Vec::new(), vec![OnnxIn::Part(2), OnnxIn::Part(5)]),
            OnnxNode::wired(
                "Mul",
                Vec::new(),
                vec![
                    OnnxIn::Part(6),
                    OnnxIn::Floats("scale", vec![self.scale as f32]),
                ],
            ),
            OnnxNode::wired(
                "Softmax",
                vec![("axis", OnnxAttr::Int(-1))],
                vec![OnnxIn::Part(7)],
            ),
            OnnxNode::wired("MatMul", Vec::new(), vec![OnnxIn::Part(8), OnnxIn::Part(4)]),
            // 10: [N, T, H, D]
            OnnxNode::wired(
                "Transpose",
                vec![("perm", OnnxAttr::Ints(vec![0, 2, 1, 3]))],
                vec![OnnxIn::Part(9)],
            ),
            OnnxNode::wired(
                "Reshape",
                Vec::new(),
                vec![
                    OnnxIn::Part(10),
                    OnnxIn::Ints("out_shape", vec![0, t, h * d]),
                ],
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{one_op, single};
    use super::*;
    use crate::reference::forward;
    use crate::shape::infer_shapes;

    fn attention(heads: usize, head_dim: usize) -> Attention {
        Attention {
            heads,
            head_dim,
            scale: 1.0 / (head_dim as f64).sqrt(),
        }
    }

    #[test]
    fn shape_cost_and_flow() {
        let a = attention(2, 3);
        let (conv_linear, all) = single(|b, x| b.push("a", Op::Attention(a), &[x]), &[5, 18]);
        assert_eq!(conv_linear.macs, 2 * 5 * 5 * 6);
        assert_eq!(all.macs, 2 * 5 * 5 * 6 + 4 * 5 * 5 * 2);
        let g = one_op(|b, x| b.push("a", Op::Attention(a), &[x]), &[5, 18]);
        assert_eq!(infer_shapes(&g).unwrap().get("a"), &vec![5, 6]);
        assert_eq!(
            Op::Attention(a).compacted("a", 9, 3).unwrap(),
            Op::Attention(attention(1, 3))
        );
        assert!(Op::Attention(a).compacted("a", 9, 4).is_err());
        let bad = Node {
            name: "a".into(),
            op: Op::Attention(a),
            inputs: vec!["x".into()],
        };
        let err = bad.op.output_shape(&bad, &[&vec![5, 12]]).unwrap_err();
        assert!(err.to_string().contains("18 channels"), "{err}");
    }

    /// One head of one channel, two tokens, written out by hand.
    #[test]
    fn softmax_of_scaled_products_weights_the_values() {
        let a = Attention {
            heads: 1,
            head_dim: 1,
            scale: 0.5,
        };
        // token i: (q, k, v)
        let x = [1.0, 2.0, 10.0, 3.0, 4.0, 20.0];
        let y = a.forward_sample(&x, 2);
        let w = |q: f64| {
            let (s0, s1) = (q * 2.0 * 0.5, q * 4.0 * 0.5);
            let (e0, e1) = (s0.exp(), s1.exp());
            (e0 * 10.0 + e1 * 20.0) / (e0 + e1)
        };
        assert!((y[0] as f64 - w(1.0)).abs() < 1e-4, "{y:?}");
        assert!((y[1] as f64 - w(3.0)).abs() < 1e-4, "{y:?}");
    }

    /// A head whose queries, keys and values are zero outputs zero: gating a head is removing it.
    #[test]
    fn a_zeroed_head_outputs_zero() {
        let a = attention(2, 2);
        let g = one_op(|b, x| b.push("a", Op::Attention(a), &[x]), &[3, 12]);
        let mut x: Vec<f32> = (0..36).map(|v| (v as f32 * 0.37).sin()).collect();
        for t in 0..3 {
            for part in 0..3 {
                for d in 0..2 {
                    x[t * 12 + part * 4 + 2 + d] = 0.0;
                }
            }
        }
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 3, 12]), x).unwrap();
        let y = forward(&g, &Default::default(), None, &x).unwrap();
        for t in 0..3 {
            assert_eq!(y[[0, t, 2]], 0.0);
            assert_eq!(y[[0, t, 3]], 0.0);
            assert_ne!(y[[0, t, 0]], 0.0);
        }
    }
}
