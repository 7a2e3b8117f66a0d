//! The ops of the graph IR, one file per op or op family, each holding every rule about that op
//! that needs no deep-learning library: parameter layout, shape rule, cost rule, channel flow and
//! compaction rewrite (as sonos/tract keeps an op's rules on one type).
//!
//! The passes (shape inference, cost, channel groups, effective sparsity, compaction) reach an
//! op's rules only through the methods of [`Op`] below. Those dispatch through one exhaustive
//! match (`Op::with_rules`) to the op file's implementation of the crate-private `OpRules` trait,
//! so a new variant does not compile until its file implements every rule. Interpreters that
//! need an op's arithmetic (the reference forward, the Burn executor) match on `Op` exhaustively
//! themselves.

mod activation;
mod add;
mod affine;
pub(crate) mod arith;
mod attention;
mod batchnorm;
mod concat;
mod conv2d;
mod dropout;
mod flatten;
mod groupnorm;
mod layernorm;
mod linear;
mod mul;
mod pad;
mod pool;
mod relu;
mod resize;
mod shuffle;
mod slice;
mod spatial_slice;
mod tokens;
mod window_attention;

use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

pub use activation::{Activation, erf};
pub use affine::ChannelAffine;
pub use attention::Attention;
pub use batchnorm::BatchNorm;
pub use conv2d::Conv2d;
pub use dropout::Dropout;
pub use groupnorm::GroupNorm;
pub use layernorm::LayerNorm;
pub use linear::Linear;
pub use pad::Pad2d;
pub use pool::{GlobalPool, Pool2d, pool_planes};
pub use resize::{Resize, ResizeMode};
pub use shuffle::ChannelShuffle;
pub use slice::ChannelSlice;
pub use spatial_slice::SpatialSlice;
pub use tokens::{ClassToken, PositionEmbedding, TokenPool, TokenPoolMode};
pub use window_attention::{SHIFT_MASK, WindowAttention};

/// One operation and its structural attributes. Parameter shapes follow from these attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// 2-D convolution; weight `[out, in/groups, kh, kw]` (PyTorch/ONNX layout), optional bias `[out]`.
    Conv2d(Conv2d),
    /// Fully connected layer; weight `[out, in]` (PyTorch/ONNX layout), optional bias `[out]`.
    Linear(Linear),
    /// Batch normalisation over channels of a `[C,H,W]` map (2d) or features of a `[F]` vector (1d).
    BatchNorm(BatchNorm),
    Relu,
    /// `min(max(x, 0), 6)` (MobileNet's activation; ONNX `Clip(0, 6)`).
    Relu6,
    /// A pointwise function other than ReLU (Sigmoid, HardSwish, SiLU, GELU, ...).
    Activation(Activation),
    /// Max pooling; padding never wins.
    MaxPool(Pool2d),
    /// Average pooling; see [`Pool2d`] for the divisor.
    AvgPool(Pool2d),
    /// Mean over the spatial axes: `[C,H,W]` to `[C]`, or `[C,1,1]` with `keep_dims`.
    GlobalAvgPool(GlobalPool),
    /// Maximum over the spatial axes, shaped as [`Op::GlobalAvgPool`].
    GlobalMaxPool(GlobalPool),
    /// Zero rows and columns around a map.
    Pad(Pad2d),
    /// `[C,H,W]` to `[C*H*W]`, channel-major (PyTorch order).
    Flatten,
    /// Elementwise sum of two or more inputs of identical shape.
    Add,
    /// Elementwise product of two inputs; a `[C,1,1]` input broadcasts over a `[C,H,W]` one.
    Mul,
    /// `x * scale[c] + shift[c]` with stored tensors (an imported model's constant arithmetic).
    Affine(ChannelAffine),
    /// Normalisation over the channels of each position, then a per-channel affine.
    LayerNorm(LayerNorm),
    /// Normalisation over blocks of channels and all positions, then a per-channel affine.
    GroupNorm(GroupNorm),
    /// Upsampling of a map by integer factors, nearest or bilinear.
    Resize(Resize),
    /// Concatenation along the channel (first per-sample) axis.
    Concat,
    /// The channels `start..end` of the input (ONNX Slice or one output of a Split).
    Slice(ChannelSlice),
    /// ShuffleNet's channel shuffle: blocks interleaved.
    ChannelShuffle(ChannelShuffle),
    /// Dropout with drop probability `p` (identity at inference).
    Dropout(Dropout),
    /// A map `[C,H,W]` as `H*W` tokens `[T,C]` (a patch embedding's flatten and transpose).
    Tokenize,
    /// A learned token put in front of a `[T,C]` sequence.
    ClassToken(ClassToken),
    /// A learned `[T,C]` table added to a token sequence.
    PositionEmbedding(PositionEmbedding),
    /// Multi-head self-attention from packed queries, keys and values `[T, 3*H*D]` to `[T, H*D]`.
    Attention(Attention),
    /// `[T,C]` to `[C]`: the class token or the mean over tokens.
    TokenPool(TokenPool),
    /// Rows and columns of a map taken with a start, an end and a step (a crop, a subsample).
    SpatialSlice(SpatialSlice),
    /// Swin's shifted-window multi-head attention on a map of packed queries, keys and values
    /// `[3*H*D, Hp, Wp]` to `[H*D, Hp, Wp]`, with a learned relative position table.
    WindowAttention(WindowAttention),
}

/// What a parameter tensor is for; decides what is prunable, trained or counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    Weight,
    Bias,
    /// BatchNorm scale (gamma).
    BnScale,
    /// BatchNorm shift (beta).
    BnShift,
    RunningMean,
    RunningVar,
    /// A per-channel scale other than BatchNorm's (LayerNorm, a layer scale).
    Scale,
    /// A per-channel shift other than BatchNorm's.
    Shift,
    /// A learned input of the network rather than a weight of a layer (a transformer's class
    /// token and position table): trained, never pruned as weights.
    Embedding,
}

impl ParamKind {
    /// Trainable parameters (running statistics are buffers, not parameters).
    pub fn is_trainable(self) -> bool {
        !matches!(self, ParamKind::RunningMean | ParamKind::RunningVar)
    }
}

/// Name, shape and role of one parameter tensor of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
}

/// The parameter `{node}.{suffix}`; every op names its tensors this way, so names stay unique.
fn param(node: &str, suffix: &str, shape: Vec<usize>, kind: ParamKind) -> ParamSpec {
    ParamSpec {
        name: format!("{node}.{suffix}"),
        shape,
        kind,
    }
}

/// How many inputs an op reads; [`Graph::validate`](crate::graph::Graph::validate) checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly one input: every op except the merges.
    One,
    /// Exactly two inputs (Mul).
    Two,
    /// Two or more inputs: merges (Add, Concat), for which one input would be a no-op.
    TwoOrMore,
}

impl Arity {
    /// Whether `n` inputs are allowed.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::One => n == 1,
            Arity::Two => n == 2,
            Arity::TwoOrMore => n >= 2,
        }
    }

    /// The rule in words, for error messages.
    pub fn text(self) -> &'static str {
        match self {
            Arity::One => "exactly one",
            Arity::Two => "exactly two",
            Arity::TwoOrMore => "two or more",
        }
    }
}

/// Sliding-window geometry of a conv or pool, which effective sparsity walks tap by tap; every
/// field is `[height, width]`, as on the op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

/// Output length of a sliding window (convolution or pooling) along one axis.
pub fn window_out(
    len: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = len + 2 * padding;
    if stride == 0 || kernel == 0 || padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// Which input channels a filter reads; decides whether its channels can be pruned one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterGroups {
    /// Every filter reads every input channel (plain conv, linear): the filters start a fresh
    /// channel space and the input channels can be pruned independently of them.
    Dense,
    /// Filter `c` reads input channel `c` alone (`groups = in = out > 1`): output channel `c`
    /// lives and dies with input channel `c`.
    Depthwise,
    /// `groups` blocks of filters, each reading its own block of input channels: channels could
    /// only go by whole blocks, which channel groups do not model.
    Grouped(usize),
}

impl FilterGroups {
    /// The number of groups for a layer with `in_channels` inputs (the conv `groups` attribute).
    pub fn count(self, in_channels: usize) -> usize {
        match self {
            FilterGroups::Dense => 1,
            FilterGroups::Depthwise => in_channels,
            FilterGroups::Grouped(g) => g,
        }
    }
}

/// How an op's output units (channel, position) relate to its input units. Channel groups read
/// the channel part, effective sparsity the whole; neither needs to know which op it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelFlow {
    /// Output unit (c, p) is input unit (c, p): an elementwise op (BatchNorm, ReLU, Dropout).
    PassThrough,
    /// Output channel c pools input channel c over a sliding window (MaxPool, AvgPool).
    PoolWindow(Window2d),
    /// Output feature c reduces every position of input channel c (GlobalAvgPool).
    PoolGlobal,
    /// Output channels are new, computed by the op's filters from the input channels of their
    /// group; `window` is `None` for a linear layer (a 1×1 window on a 1×1 map).
    Filters {
        /// Which input channels each filter reads.
        groups: FilterGroups,
        /// The conv's window; `None` for a linear layer.
        window: Option<Window2d>,
    },
    /// Each input channel becomes `H*W` consecutive features, channel-major.
    Flatten,
    /// All inputs and the output share channel indices one to one (Add, Mul); an input whose map
    /// is 1×1 is broadcast over the output's positions.
    Elementwise,
    /// Input `k`'s channel `c` is output channel `offset_k + c`, offsets in input order.
    Concat,
    /// Output channel `c` is input channel `start + c`.
    Slice { start: usize },
    /// Channels pass through (groups tie them one to one), but every output channel of a
    /// position reads every input channel of it (LayerNorm's statistics).
    MixChannels,
    /// Channels pass through, the `groups` blocks keep equal positions (GroupNorm), and every
    /// output of a block reads every input of that block.
    GroupMix { groups: usize },
    /// Channels pass through; each output position reads a few input positions
    /// ([`Resize::taps`]).
    Resample(Resize),
    /// Channels pass through; each output position copies one input position or is padding.
    Pad(Pad2d),
    /// Output channel `b * groups + a` is input channel `a * (C / groups) + b`.
    Shuffle { groups: usize },
    /// Channels pass through on a token sequence; output token 0 is a learned token (not a path),
    /// output token `t + 1` is input token `t`.
    PrependToken,
    /// `[T,C]` to `[C]`: output channel `c` is channel `c` of the first token.
    FirstToken,
    /// Multi-head attention: input `[T, 3*heads*head_dim]` packs queries, keys and values;
    /// output channel `h*head_dim + d` reads value channel `h*head_dim + d` and every query and
    /// key channel of head `h`, at every token. Heads are kept or removed whole.
    Heads { heads: usize, head_dim: usize },
    /// Channels pass through; each output position copies one input position
    /// ([`SpatialSlice::sources`]).
    Crop(SpatialSlice),
}

/// Which channels a parameter axis indexes: kept output channels or kept input channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelSide {
    /// Indexed by the node's output channels (filters, biases, BatchNorm tensors).
    Output,
    /// Indexed by the channels of the node's (single) input (a plain conv's or linear's weight axis 1).
    Input,
    /// Indexed by the node's output heads: index `h` goes with output channels
    /// `h*head_dim..(h+1)*head_dim` (a relative position table's head column).
    OutputHeads { head_dim: usize },
}

/// One parameter axis that follows channel pruning: what channel groups list as members and
/// compaction slices.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelAxis {
    /// The tensor, with its full (unpruned) shape, which compaction checks the weights against.
    pub spec: ParamSpec,
    /// Axis of `spec.shape` along which kept channels are selected.
    pub axis: usize,
    /// Whether the node's output or its input channels index that axis.
    pub side: ChannelSide,
}

/// Every parameter of `specs` indexed along axis 0 by the node's output channels: the rule of
/// the per-channel ops (BatchNorm, LayerNorm, GroupNorm, the affine).
fn output_channel_axes(specs: Vec<ParamSpec>) -> Vec<ChannelAxis> {
    specs
        .into_iter()
        .map(|spec| ChannelAxis {
            spec,
            axis: 0,
            side: ChannelSide::Output,
        })
        .collect()
}

/// An attribute value of an exported ONNX node.
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxAttr {
    Str(&'static str),
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// One ONNX node of an op's export. The first node of an op's list reads the op's inputs, each
/// later one the node before it; the last produces the op's value.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxNode {
    /// The ONNX operator (default domain).
    pub op_type: &'static str,
    pub attrs: Vec<(&'static str, OnnxAttr)>,
    /// Parameter tensors read after the data input, in ONNX input order.
    pub params: Vec<String>,
    /// Scalar constants read after the parameters (an attribute that became an input in later
    /// opsets, as Clip's bounds); written as initializers `{node}.{name}`, so names must differ
    /// across one op's nodes.
    pub consts: Vec<(&'static str, f32)>,
    /// Also reads the op's first input, after the previous node's output (SiLU's `x * σ(x)`).
    pub reads_op_input: bool,
    /// Integer tensors read after the float constants (a Slice's bounds, a Reshape's shape),
    /// written as INT64 initializers `{node}.{name}`.
    pub int_consts: Vec<(&'static str, Vec<i64>)>,
    /// Float tensors of any length read after the integer ones (Resize's `roi` and `scales`),
    /// written as FLOAT initializers `{node}.{name}`.
    pub float_tensors: Vec<(&'static str, Vec<f32>)>,
    /// `[C]` parameters read last, written again as `{node}.{name}` with shape `[C,1,1]` so they
    /// broadcast over a map.
    pub map_params: Vec<(&'static str, String)>,
    /// When not empty, the node's inputs exactly, in order, instead of the chain above: what an
    /// op whose ONNX form branches needs (attention reads one packed value three times).
    pub wiring: Vec<OnnxIn>,
}

/// One input of an [`OnnxNode`] with explicit wiring.
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxIn {
    /// The op's input `k`.
    OpInput(usize),
    /// The output of the op's earlier ONNX node `j` (its index in the op's list).
    Part(usize),
    /// A parameter tensor of the graph, by name.
    Param(String),
    /// An INT64 tensor written as the initializer `{node}.{suffix}`.
    Ints(&'static str, Vec<i64>),
    /// An INT64 scalar (rank 0) written as `{node}.{suffix}` (Gather's index).
    IntScalar(&'static str, i64),
    /// A FLOAT tensor written as `{node}.{suffix}`.
    Floats(&'static str, Vec<f32>),
}

impl OnnxNode {
    fn new(op_type: &'static str, attrs: Vec<(&'static str, OnnxAttr)>) -> Self {
        OnnxNode {
            op_type,
            attrs,
            params: Vec::new(),
            consts: Vec::new(),
            reads_op_input: false,
            int_consts: Vec::new(),
            float_tensors: Vec::new(),
            map_params: Vec::new(),
            wiring: Vec::new(),
        }
    }

    /// A node with explicit inputs (see [`OnnxNode::wiring`]).
    fn wired(
        op_type: &'static str,
        attrs: Vec<(&'static str, OnnxAttr)>,
        wiring: Vec<OnnxIn>,
    ) -> Self {
        OnnxNode {
            wiring,
            ..OnnxNode::new(op_type, attrs)
        }
    }
}

/// `[h, w]` pairs as ONNX `INTS`; `pads` doubles them into `[top, left, bottom, right]`.
fn ints(v: [usize; 2]) -> OnnxAttr {
    OnnxAttr::Ints(v.iter().map(|&x| x as i64).collect())
}
fn pads(v: [usize; 2]) -> OnnxAttr {
    OnnxAttr::Ints([v[0], v[1], v[0], v[1]].iter().map(|&x| x as i64).collect())
}

/// What an op's reference forward reads: its node, its input values (`[N, ...]`), its
/// parameters (masks applied) and the gate on its first input (the norms over channels leave
/// gated channels out of their statistics, as compaction removes them).
pub(crate) struct RefCall<'a> {
    pub node: &'a Node,
    pub ins: &'a [&'a ArrayD<f32>],
    pub params: &'a arith::Params<'a>,
    pub in_gate: Option<&'a [f32]>,
}

/// Every rule of one op. Implemented once per op file; `Op::with_rules` picks the implementation.
pub(crate) trait OpRules {
    /// Short lowercase name used in tables and errors.
    fn name(&self) -> &'static str;
    /// How many inputs the op reads.
    fn arity(&self) -> Arity;
    /// Parameter tensors, named `{node}.{suffix}`.
    fn param_specs(&self, node: &str) -> Vec<ParamSpec>;
    /// Per-sample output shape from the input shapes, or an error naming `node`.
    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape>;
    /// MACs per sample under a convention, with shapes already inferred.
    fn macs(&self, ins: &[&Shape], out: &[usize], convention: Convention) -> u64;
    /// How output units relate to input units.
    fn channel_flow(&self) -> ChannelFlow;
    /// The parameter axes indexed by output or input channels, in parameter order.
    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis>;
    /// The op once its input keeps `in_channels` and its output `out_channels` channels.
    fn compacted(&self, node: &str, in_channels: usize, out_channels: usize) -> Result<Op>;
    /// The op once its inputs keep the channel indices `ins` and its output `out`; by default
    /// only the counts matter.
    fn compacted_with(&self, node: &str, ins: &[&[usize]], out: &[usize]) -> Result<Op> {
        self.compacted(node, ins[0].len(), out.len())
    }
    /// The op's arithmetic in inference mode on ndarray values: the reference forward that
    /// [`crate::reference`] runs and every other interpreter is tested against.
    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>>;
    /// The ONNX nodes (opset 17, NCHW with a batch axis) that compute `node` from inputs of
    /// per-sample shapes `ins`; the exporter wires them and writes the parameters as initializers.
    fn onnx(&self, node: &str, ins: &[&Shape]) -> Vec<OnnxNode>;
}

impl Op {
    /// Calls `f` with this op's rules. The one place that maps variants to op files: a new
    /// variant fails to compile here until it has a file implementing [`OpRules`].
    pub(crate) fn with_rules<R>(&self, f: impl FnOnce(&dyn OpRules) -> R) -> R {
        match *self {
            Op::Conv2d(c) => f(&c),
            Op::Linear(l) => f(&l),
            Op::BatchNorm(b) => f(&b),
            Op::Relu => f(&relu::Relu),
            Op::Relu6 => f(&relu::Relu6),
            Op::Activation(a) => f(&a),
            Op::MaxPool(attrs) => f(&pool::Pool {
                kind: pool::PoolKind::Max,
                attrs,
            }),
            Op::AvgPool(attrs) => f(&pool::Pool {
                kind: pool::PoolKind::Avg,
                attrs,
            }),
            Op::GlobalAvgPool(g) => f(&g),
            Op::GlobalMaxPool(g) => f(&pool::GlobalMax(g)),
            Op::Pad(p) => f(&p),
            Op::Flatten => f(&flatten::Flatten),
            Op::Add => f(&add::Add),
            Op::Mul => f(&mul::Mul),
            Op::Affine(a) => f(&a),
            Op::LayerNorm(l) => f(&l),
            Op::GroupNorm(g) => f(&g),
            Op::Resize(r) => f(&r),
            Op::Concat => f(&concat::Concat),
            Op::Slice(s) => f(&s),
            Op::ChannelShuffle(s) => f(&s),
            Op::Dropout(d) => f(&d),
            Op::Tokenize => f(&tokens::Tokenize),
            Op::ClassToken(c) => f(&c),
            Op::PositionEmbedding(p) => f(&p),
            Op::Attention(a) => f(&a),
            Op::TokenPool(p) => f(&p),
            Op::SpatialSlice(s) => f(&s),
            Op::WindowAttention(a) => f(&a),
        }
    }

    /// Short lowercase name used in tables and errors.
    pub fn kind_name(&self) -> &'static str {
        self.with_rules(|r| r.name())
    }

    /// Parameter tensors this op owns, named `{node}.{suffix}`.
    pub fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        self.with_rules(|r| r.param_specs(node))
    }

    /// Conv and linear layers: the ops whose weights are pruned and whose MACs dominate.
    pub fn is_weighted_layer(&self) -> bool {
        matches!(self.channel_flow(), ChannelFlow::Filters { .. })
    }

    /// How many inputs the op reads; [`Graph::validate`](crate::graph::Graph::validate) checks it.
    pub fn arity(&self) -> Arity {
        self.with_rules(|r| r.arity())
    }

    /// Shape rule: the per-sample output shape of `node` (whose op this is) from its input shapes.
    pub fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        self.with_rules(|r| r.output_shape(node, ins))
    }

    /// Cost rule: MACs per sample under `convention`, given the inferred input and output shapes.
    pub fn macs(&self, ins: &[&Shape], out: &[usize], convention: Convention) -> u64 {
        self.with_rules(|r| r.macs(ins, out, convention))
    }

    /// How output units relate to input units; what channel groups and effective sparsity follow.
    pub fn channel_flow(&self) -> ChannelFlow {
        self.with_rules(|r| r.channel_flow())
    }

    /// The parameter axes of `node` that follow its output or input channels under pruning.
    pub fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        self.with_rules(|r| r.channel_axes(node))
    }

    /// Compaction rewrite: the op with `in_channels` kept on its input and `out_channels` on its
    /// output (the parameter tensors are cut along [`Op::channel_axes`]).
    pub fn compacted(&self, node: &str, in_channels: usize, out_channels: usize) -> Result<Op> {
        self.with_rules(|r| r.compacted(node, in_channels, out_channels))
    }

    /// ONNX mapping: the nodes that compute `node` from inputs of per-sample shapes `ins`.
    pub fn onnx(&self, node: &str, ins: &[&Shape]) -> Vec<OnnxNode> {
        self.with_rules(|r| r.onnx(node, ins))
    }

    /// Compaction rewrite from the kept channel indices of each input and of the output: what
    /// ops whose attributes name channel positions (a slice's bounds) need; the others read
    /// only the counts ([`Op::compacted`]).
    pub fn compacted_with(&self, node: &str, ins: &[&[usize]], out: &[usize]) -> Result<Op> {
        self.with_rules(|r| r.compacted_with(node, ins, out))
    }
}

/// Splits a `[C,H,W]` input shape, or names `node` and its op in the error: a rule for maps only.
fn chw(node: &Node, s: &Shape) -> Result<(usize, usize, usize)> {
    match s.as_slice() {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(CoreError::shape(
            &node.name,
            format!(
                "{} needs a [C,H,W] feature map, got shape {:?}",
                node.op.kind_name(),
                s
            ),
        )),
    }
}

/// Shared helpers for the op files' tests: each op is checked alone on a one-node graph.
#[cfg(test)]
mod test_util {
    use crate::builder::GraphBuilder;
    use crate::cost::{Convention, Cost, cost};
    use crate::graph::Graph;

    /// A graph of one op (written by `op_builder`) on an input of shape `input`.
    pub fn one_op(
        op_builder: impl FnOnce(&mut GraphBuilder, &str) -> String,
        input: &[usize],
    ) -> Graph {
        let mut b = GraphBuilder::new("t", input);
        let x = b.input();
        let y = op_builder(&mut b, &x);
        b.finish(&y)
    }

    /// Cost of a one-op graph under both conventions: (`conv+linear`, `all-ops`).
    pub fn single(
        op_builder: impl FnOnce(&mut GraphBuilder, &str) -> String,
        input: &[usize],
    ) -> (Cost, Cost) {
        let g = one_op(op_builder, input);
        (
            cost(&g, Convention::ConvLinear).unwrap(),
            cost(&g, Convention::AllOps).unwrap(),
        )
    }
}
