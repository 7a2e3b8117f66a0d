//! The token-sequence plumbing of a vision transformer, on per-sample values `[T,C]` (tokens ×
//! channels, the channel axis last, as PyTorch and ONNX lay them out):
//!
//! - [`Op::Tokenize`]: a patch embedding's map `[C,H,W]` becomes `H*W` tokens of `C` channels
//!   (PyTorch's `flatten(2).transpose(1, 2)`), row-major over the positions;
//! - [`Op::ClassToken`]: a learned `[C]` token put in front of the sequence (`cat((cls, x), 1)`);
//! - [`Op::PositionEmbedding`]: a learned `[T,C]` table added to the sequence;
//! - [`Op::TokenPool`]: the classifier's input, the class token or the mean over tokens.
//!
//! Channel rule: all four keep channel `c` as channel `c`, so the embedding width is one channel
//! group from the patch embedding through every residual block to the classifier; the class
//! token and the position table are sliced along their channel axis with it.

use super::RefCall;
use super::{
    Arity, ChannelAxis, ChannelFlow, ChannelSide, OnnxAttr, OnnxIn, OnnxNode, Op, OpRules,
    ParamKind, ParamSpec, param,
};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

/// A `[T,C]` input, or an error naming the node: a rule for token sequences only.
fn tokens_of(node: &Node, s: &Shape) -> Result<(usize, usize)> {
    match s.as_slice() {
        [t, c] => Ok((*t, *c)),
        _ => Err(CoreError::shape(
            &node.name,
            format!(
                "{} needs a [T,C] token sequence, got shape {s:?}",
                node.op.kind_name()
            ),
        )),
    }
}

/// [`Op::Tokenize`], which has no attributes.
pub(crate) struct Tokenize;

impl OpRules for Tokenize {
    fn name(&self) -> &'static str {
        "tokenize"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let (c, h, w) = super::chw(node, ins[0])?;
        Ok(vec![h * w, c])
    }

    /// A transpose: no arithmetic.
    fn macs(&self, _ins: &[&Shape], _out: &[usize], _convention: Convention) -> u64 {
        0
    }

    /// Channel `c` at position `h*W + w` stays channel `c` at token `h*W + w`.
    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PassThrough
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::Tokenize)
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let x = call.ins[0];
        let name = &call.node.name;
        let [n, c, h, w] = super::arith::dims4(call.node, x)?;
        let y = x
            .to_shape((n, c, h * w))
            .map_err(|e| CoreError::shape(name, e.to_string()))?
            .permuted_axes([0, 2, 1])
            .as_standard_layout()
            .into_owned();
        Ok(y.into_dyn())
    }

    fn onnx(&self, _node: &str, ins: &[&Shape]) -> Vec<OnnxNode> {
        let (c, hw) = (ins[0][0], ins[0][1] * ins[0][2]);
        let mut reshape = OnnxNode::new("Reshape", Vec::new());
        reshape.int_consts = vec![("tokens_shape", vec![0, c as i64, hw as i64])];
        vec![
            reshape,
            OnnxNode::new("Transpose", vec![("perm", OnnxAttr::Ints(vec![0, 2, 1]))]),
        ]
    }
}

/// The attributes of [`Op::ClassToken`]: a learned token `{node}.token` of `channels` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassToken {
    pub channels: usize,
}

impl OpRules for ClassToken {
    fn name(&self) -> &'static str {
        "class_token"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        vec![param(
            node,
            "token",
            vec![self.channels],
            ParamKind::Embedding,
        )]
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let (t, c) = tokens_of(node, ins[0])?;
        if c != self.channels {
            return Err(CoreError::shape(
                &node.name,
                format!("expects {} channels, got {c}", self.channels),
            ));
        }
        Ok(vec![t + 1, c])
    }

    /// A concatenation: no arithmetic.
    fn macs(&self, _ins: &[&Shape], _out: &[usize], _convention: Convention) -> u64 {
        0
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PrependToken
    }

    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        super::output_channel_axes(self.param_specs(node))
    }

    fn compacted(&self, _node: &str, _in_channels: usize, out_channels: usize) -> Result<Op> {
        Ok(Op::ClassToken(ClassToken {
            channels: out_channels,
        }))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let x = call.ins[0];
        let name = &call.node.name;
        let token = call.params.get(&format!("{name}.token"))?;
        let (n, t, c) = match x.shape() {
            &[n, t, c] => (n, t, c),
            s => {
                return Err(CoreError::shape(
                    name,
                    format!("expects [N,T,C] tokens, got {s:?}"),
                ));
            }
        };
        let mut y = ArrayD::<f32>::zeros(IxDyn(&[n, t + 1, c]));
        for (mut ys, xs) in y.axis_iter_mut(Axis(0)).zip(x.axis_iter(Axis(0))) {
            ys.index_axis_mut(Axis(0), 0)
                .iter_mut()
                .zip(token.iter())
                .for_each(|(d, s)| *d = *s);
            ys.slice_axis_mut(Axis(0), (1..).into()).assign(&xs);
        }
        Ok(y)
    }

    /// `Concat(Expand(token, [N,1,C]), x)` on the token axis, the batch size read from `x`.
    fn onnx(&self, node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let c = self.channels as i64;
        vec![
            OnnxNode::wired("Shape", Vec::new(), vec![OnnxIn::OpInput(0)]),
            OnnxNode::wired(
                "Slice",
                Vec::new(),
                vec![
                    OnnxIn::Part(0),
                    OnnxIn::Ints("batch_start", vec![0]),
                    OnnxIn::Ints("batch_end", vec![1]),
                ],
            ),
            OnnxNode::wired(
                "Concat",
                vec![("axis", OnnxAttr::Int(0))],
                vec![OnnxIn::Part(1), OnnxIn::Ints("token_dims", vec![1, c])],
            ),
            OnnxNode::wired(
                "Reshape",
                Vec::new(),
                vec![
                    OnnxIn::Param(format!("{node}.token")),
                    OnnxIn::Ints("token_shape", vec![1, 1, c]),
                ],
            ),
            OnnxNode::wired("Expand", Vec::new(), vec![OnnxIn::Part(3), OnnxIn::Part(2)]),
            OnnxNode::wired(
                "Concat",
                vec![("axis", OnnxAttr::Int(1))],
                vec![OnnxIn::Part(4), OnnxIn::OpInput(0)],
            ),
        ]
    }
}

/// The attributes of [`Op::PositionEmbedding`]: a learned table `{node}.table` `[tokens, channels]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionEmbedding {
    pub tokens: usize,
    pub channels: usize,
}

impl OpRules for PositionEmbedding {
    fn name(&self) -> &'static str {
        "position_embedding"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        vec![param(
            node,
            "table",
            vec![self.tokens, self.channels],
            ParamKind::Embedding,
        )]
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let (t, c) = tokens_of(node, ins[0])?;
        if (t, c) != (self.tokens, self.channels) {
            return Err(CoreError::shape(
                &node.name,
                format!(
                    "expects {} tokens of {} channels, got {t} of {c}",
                    self.tokens, self.channels
                ),
            ));
        }
        Ok(vec![t, c])
    }

    /// One addition per element under `all-ops`.
    fn macs(&self, _ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        match convention {
            Convention::ConvLinear => 0,
            Convention::AllOps => out.iter().product::<usize>() as u64,
        }
    }

    /// An added constant: units pass through (like a bias, the table is not a path).
    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::PassThrough
    }

    /// The table's axis 1 follows the channels.
    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        self.param_specs(node)
            .into_iter()
            .map(|spec| ChannelAxis {
                spec,
                axis: 1,
                side: ChannelSide::Output,
            })
            .collect()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, out_channels: usize) -> Result<Op> {
        Ok(Op::PositionEmbedding(PositionEmbedding {
            tokens: self.tokens,
            channels: out_channels,
        }))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let name = &call.node.name;
        let table = call.params.get(&format!("{name}.table"))?;
        let mut y = call.ins[0].clone();
        for mut sample in y.axis_iter_mut(Axis(0)) {
            sample += &*table;
        }
        Ok(y)
    }

    fn onnx(&self, node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        let mut add = OnnxNode::new("Add", Vec::new());
        add.params = vec![format!("{node}.table")];
        vec![add]
    }
}

/// Which token a transformer classifies from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPoolMode {
    /// The first token (ViT's and DeiT's class token).
    Class,
    /// The mean over all tokens (global average pooling of the sequence).
    Mean,
}

/// The attributes of [`Op::TokenPool`]: `[T,C]` to `[C]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPool {
    pub mode: TokenPoolMode,
}

impl OpRules for TokenPool {
    fn name(&self) -> &'static str {
        match self.mode {
            TokenPoolMode::Class => "class_token_pool",
            TokenPoolMode::Mean => "token_mean_pool",
        }
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let (_, c) = tokens_of(node, ins[0])?;
        Ok(vec![c])
    }

    /// The mean adds every token under `all-ops`; picking the class token is free.
    fn macs(&self, ins: &[&Shape], _out: &[usize], convention: Convention) -> u64 {
        match (convention, self.mode) {
            (Convention::AllOps, TokenPoolMode::Mean) => ins[0].iter().product::<usize>() as u64,
            _ => 0,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        match self.mode {
            TokenPoolMode::Class => ChannelFlow::FirstToken,
            TokenPoolMode::Mean => ChannelFlow::PoolGlobal,
        }
    }

    fn channel_axes(&self, _node: &str) -> Vec<ChannelAxis> {
        Vec::new()
    }

    fn compacted(&self, _node: &str, _in_channels: usize, _out_channels: usize) -> Result<Op> {
        Ok(Op::TokenPool(*self))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let x = call.ins[0];
        if x.ndim() != 3 {
            return Err(CoreError::shape(
                &call.node.name,
                format!("expects [N,T,C] tokens, got {:?}", x.shape()),
            ));
        }
        Ok(match self.mode {
            TokenPoolMode::Class => x.index_axis(Axis(1), 0).to_owned(),
            TokenPoolMode::Mean => x
                .mean_axis(Axis(1))
                .ok_or_else(|| CoreError::shape(&call.node.name, "no tokens to average"))?,
        })
    }

    fn onnx(&self, _node: &str, _ins: &[&Shape]) -> Vec<OnnxNode> {
        match self.mode {
            TokenPoolMode::Class => vec![OnnxNode::wired(
                "Gather",
                vec![("axis", OnnxAttr::Int(1))],
                vec![OnnxIn::OpInput(0), OnnxIn::IntScalar("class_index", 0)],
            )],
            TokenPoolMode::Mean => vec![OnnxNode::new(
                "ReduceMean",
                vec![
                    ("axes", OnnxAttr::Ints(vec![1])),
                    ("keepdims", OnnxAttr::Int(0)),
                ],
            )],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::one_op;
    use super::*;
    use crate::reference::forward;
    use crate::shape::infer_shapes;
    use crate::weights::init_weights;

    #[test]
    fn tokenize_then_class_token_then_positions_then_pool() {
        let g = one_op(
            |b, x| {
                let t = b.tokenize("t", x);
                let c = b.class_token("cls", &t);
                let p = b.position_embedding("pos", &c);
                b.token_pool("pool", &p, TokenPoolMode::Class)
            },
            &[3, 2, 2],
        );
        let shapes = infer_shapes(&g).unwrap();
        assert_eq!(shapes.get("t"), &vec![4, 3]);
        assert_eq!(shapes.get("cls"), &vec![5, 3]);
        assert_eq!(shapes.get("pool"), &vec![3]);
        let mut w = init_weights(&g, 0);
        w.insert(
            "cls.token".into(),
            ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, 2.0, 3.0]).unwrap(),
        );
        w.insert("pos.table".into(), ArrayD::from_elem(IxDyn(&[5, 3]), 0.5));
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 3, 2, 2]), (0..12).map(|v| v as f32).collect())
            .unwrap();
        // The class token (plus its position) is what the pool reads.
        let y = forward(&g, &w, None, &x).unwrap();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![1.5, 2.5, 3.5]);
    }

    #[test]
    fn tokenize_is_flatten_then_transpose_and_mean_pool_averages() {
        let g = one_op(
            |b, x| {
                let t = b.tokenize("t", x);
                b.token_pool("pool", &t, TokenPoolMode::Mean)
            },
            &[2, 1, 3],
        );
        let x =
            ArrayD::from_shape_vec(IxDyn(&[1, 2, 1, 3]), vec![0., 1., 2., 10., 20., 30.]).unwrap();
        let y = forward(&g, &init_weights(&g, 0), None, &x).unwrap();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![1.0, 20.0]);
    }

    #[test]
    fn token_ops_refuse_maps() {
        let b = crate::builder::GraphBuilder::new("t", &[3, 4, 4]);
        let x = b.input();
        let node = Node {
            name: "cls".into(),
            op: Op::ClassToken(ClassToken { channels: 3 }),
            inputs: vec![x],
        };
        let err = node
            .op
            .output_shape(&node, &[&vec![3, 4, 4]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[T,C] token sequence"), "{err}");
    }
}
