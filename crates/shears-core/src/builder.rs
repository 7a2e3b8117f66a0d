//! A small builder that writes graphs node by node, inferring channel counts from the shapes so far.
//! The zoo, tests and examples use it; the importer and compaction write `Graph` directly.

use crate::graph::{Graph, Input, Node, Op};
use crate::ops::{
    Activation, ChannelAffine, ChannelShuffle, ChannelSlice, GlobalPool, GroupNorm, LayerNorm,
    Pad2d, Pool2d, Resize, ResizeMode,
};
use crate::ops::{Attention, ClassToken, PositionEmbedding, TokenPool, TokenPoolMode};
use crate::ops::{BatchNorm, Conv2d, Dropout, Linear};
use crate::ops::{SpatialSlice, WindowAttention};
use crate::shape::{Shape, node_shape};
use std::collections::HashMap;

/// Incremental graph writer. Panics on inconsistent use: it is for code-defined models, whose
/// mistakes are programming errors (user-supplied graphs go through [`Graph::validate`]).
pub struct GraphBuilder {
    graph: Graph,
    shapes: HashMap<String, Shape>,
}

impl GraphBuilder {
    pub fn new(name: &str, input_shape: &[usize]) -> Self {
        let input = Input {
            name: "input".into(),
            shape: input_shape.to_vec(),
        };
        let mut shapes = HashMap::new();
        shapes.insert(input.name.clone(), input.shape.clone());
        GraphBuilder {
            graph: Graph {
                name: name.into(),
                input,
                nodes: Vec::new(),
                output: String::new(),
            },
            shapes,
        }
    }

    /// Name of the graph input value.
    pub fn input(&self) -> String {
        self.graph.input.name.clone()
    }

    pub fn shape(&self, value: &str) -> &Shape {
        &self.shapes[value]
    }

    /// Channels of a value (the first per-sample axis, the last of a token sequence).
    pub fn channels(&self, value: &str) -> usize {
        crate::shape::channels(&self.shapes[value])
    }

    /// Adds a node and returns the name of its output value.
    pub fn push(&mut self, name: &str, op: Op, inputs: &[&str]) -> String {
        let node = Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
        };
        let ins: Vec<&Shape> = node
            .inputs
            .iter()
            .map(|i| &self.shapes[i.as_str()])
            .collect();
        let out = node_shape(&node, &ins).unwrap_or_else(|e| panic!("builder: {e}"));
        assert!(
            self.shapes.insert(node.name.clone(), out).is_none(),
            "builder: duplicate name {name}"
        );
        self.graph.nodes.push(node);
        name.to_string()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_full(
        &mut self,
        name: &str,
        x: &str,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
        bias: bool,
    ) -> String {
        let in_channels = self.channels(x);
        self.push(
            name,
            Op::Conv2d(Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                bias,
            }),
            &[x],
        )
    }

    /// Square convolution without bias (the usual choice before BatchNorm).
    pub fn conv2d(
        &mut self,
        name: &str,
        x: &str,
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> String {
        self.conv2d_full(
            name,
            x,
            out,
            [k, k],
            [stride, stride],
            [pad, pad],
            [1, 1],
            1,
            false,
        )
    }

    /// Square convolution with bias.
    pub fn conv2d_bias(
        &mut self,
        name: &str,
        x: &str,
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> String {
        self.conv2d_full(
            name,
            x,
            out,
            [k, k],
            [stride, stride],
            [pad, pad],
            [1, 1],
            1,
            true,
        )
    }

    /// Depthwise square convolution (groups = channels), no bias.
    pub fn depthwise(
        &mut self,
        name: &str,
        x: &str,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> String {
        let c = self.channels(x);
        self.conv2d_full(
            name,
            x,
            c,
            [k, k],
            [stride, stride],
            [pad, pad],
            [1, 1],
            c,
            false,
        )
    }

    pub fn linear(&mut self, name: &str, x: &str, out: usize, bias: bool) -> String {
        let in_features = self.channels(x);
        self.push(
            name,
            Op::Linear(Linear {
                in_features,
                out_features: out,
                bias,
            }),
            &[x],
        )
    }

    pub fn batchnorm(&mut self, name: &str, x: &str) -> String {
        let channels = self.channels(x);
        self.push(
            name,
            Op::BatchNorm(BatchNorm {
                channels,
                eps: 1e-5,
                momentum: 0.1,
            }),
            &[x],
        )
    }

    pub fn relu(&mut self, name: &str, x: &str) -> String {
        self.push(name, Op::Relu, &[x])
    }

    pub fn relu6(&mut self, name: &str, x: &str) -> String {
        self.push(name, Op::Relu6, &[x])
    }

    pub fn maxpool(&mut self, name: &str, x: &str, k: usize, stride: usize, pad: usize) -> String {
        self.push(name, Op::MaxPool(Pool2d::square(k, stride, pad)), &[x])
    }

    pub fn avgpool(&mut self, name: &str, x: &str, k: usize, stride: usize, pad: usize) -> String {
        self.push(name, Op::AvgPool(Pool2d::square(k, stride, pad)), &[x])
    }

    pub fn global_avg_pool(&mut self, name: &str, x: &str) -> String {
        self.push(
            name,
            Op::GlobalAvgPool(GlobalPool { keep_dims: false }),
            &[x],
        )
    }

    /// Global average pooling to a `[C,1,1]` map (what a squeeze-excitation reads).
    pub fn global_avg_pool_keep(&mut self, name: &str, x: &str) -> String {
        self.push(
            name,
            Op::GlobalAvgPool(GlobalPool { keep_dims: true }),
            &[x],
        )
    }

    pub fn activation(&mut self, name: &str, x: &str, f: Activation) -> String {
        self.push(name, Op::Activation(f), &[x])
    }

    /// A per-channel affine `x * scale + shift` (layer scale).
    pub fn affine(&mut self, name: &str, x: &str) -> String {
        let s = self.shape(x);
        let op = Op::Affine(ChannelAffine {
            channels: s[0],
            map: s.len() == 3,
        });
        self.push(name, op, &[x])
    }

    /// Layer normalisation over the channels of each position.
    pub fn layer_norm(&mut self, name: &str, x: &str) -> String {
        let channels = self.channels(x);
        self.push(
            name,
            Op::LayerNorm(LayerNorm {
                channels,
                eps: 1e-6,
            }),
            &[x],
        )
    }

    /// Upsampling by integer factors.
    pub fn resize(&mut self, name: &str, x: &str, scale: [usize; 2], mode: ResizeMode) -> String {
        self.push(name, Op::Resize(Resize { scale, mode }), &[x])
    }

    /// Zero padding `[top, left, bottom, right]`.
    pub fn pad(&mut self, name: &str, x: &str, pads: [usize; 4]) -> String {
        self.push(name, Op::Pad(Pad2d { pads }), &[x])
    }

    /// Global max pooling to `[C]`.
    pub fn global_max_pool(&mut self, name: &str, x: &str) -> String {
        self.push(
            name,
            Op::GlobalMaxPool(GlobalPool { keep_dims: false }),
            &[x],
        )
    }

    /// Group normalisation in `groups` blocks.
    pub fn group_norm(&mut self, name: &str, x: &str, groups: usize) -> String {
        let channels = self.channels(x);
        self.push(
            name,
            Op::GroupNorm(GroupNorm {
                channels,
                groups,
                eps: 1e-5,
            }),
            &[x],
        )
    }

    /// Channels `start..end` of `x`.
    pub fn slice(&mut self, name: &str, x: &str, start: usize, end: usize) -> String {
        self.push(name, Op::Slice(ChannelSlice { start, end }), &[x])
    }

    /// ShuffleNet's channel shuffle in `groups` blocks.
    pub fn channel_shuffle(&mut self, name: &str, x: &str, groups: usize) -> String {
        self.push(name, Op::ChannelShuffle(ChannelShuffle { groups }), &[x])
    }

    /// Elementwise product; `b` may be a `[C,1,1]` per-channel value of `a`'s channels.
    pub fn mul(&mut self, name: &str, a: &str, b: &str) -> String {
        self.push(name, Op::Mul, &[a, b])
    }

    pub fn flatten(&mut self, name: &str, x: &str) -> String {
        self.push(name, Op::Flatten, &[x])
    }

    pub fn add(&mut self, name: &str, xs: &[&str]) -> String {
        self.push(name, Op::Add, xs)
    }

    pub fn concat(&mut self, name: &str, xs: &[&str]) -> String {
        self.push(name, Op::Concat, xs)
    }

    pub fn dropout(&mut self, name: &str, x: &str, p: f64) -> String {
        self.push(name, Op::Dropout(Dropout { p }), &[x])
    }

    /// conv → BN → ReLU, the usual CNN unit; returns the ReLU output.
    pub fn conv_bn_relu(
        &mut self,
        name: &str,
        x: &str,
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> String {
        let c = self.conv2d(name, x, out, k, stride, pad);
        let b = self.batchnorm(&format!("{name}_bn"), &c);
        self.relu(&format!("{name}_relu"), &b)
    }

    /// Finishes the graph with `output` as its output value.
    /// A map `[C,H,W]` as `H*W` tokens `[T,C]`.
    pub fn tokenize(&mut self, name: &str, x: &str) -> String {
        self.push(name, Op::Tokenize, &[x])
    }

    /// A learned class token in front of a token sequence.
    pub fn class_token(&mut self, name: &str, x: &str) -> String {
        let channels = self.channels(x);
        self.push(name, Op::ClassToken(ClassToken { channels }), &[x])
    }

    /// A learned position table added to a token sequence.
    pub fn position_embedding(&mut self, name: &str, x: &str) -> String {
        let (tokens, channels) = (self.shape(x)[0], self.channels(x));
        self.push(
            name,
            Op::PositionEmbedding(PositionEmbedding { tokens, channels }),
            &[x],
        )
    }

    /// Multi-head self-attention on packed queries, keys and values, scale `1/sqrt(head_dim)`.
    pub fn attention(&mut self, name: &str, qkv: &str, heads: usize) -> String {
        let head_dim = self.channels(qkv) / (3 * heads.max(1));
        let op = Op::Attention(Attention {
            heads,
            head_dim,
            scale: 1.0 / (head_dim.max(1) as f64).sqrt(),
        });
        self.push(name, op, &[qkv])
    }

    /// Shifted-window attention on a map of packed queries, keys and values, scale
    /// `1/sqrt(head_dim)`.
    pub fn window_attention(
        &mut self,
        name: &str,
        qkv: &str,
        heads: usize,
        window: usize,
        shift: [usize; 2],
    ) -> String {
        let head_dim = self.channels(qkv) / (3 * heads.max(1));
        let op = Op::WindowAttention(WindowAttention {
            heads,
            head_dim,
            window,
            shift,
            scale: 1.0 / (head_dim.max(1) as f64).sqrt(),
        });
        self.push(name, op, &[qkv])
    }

    /// Rows and columns `start..end` by `step` of a map.
    pub fn spatial_slice(
        &mut self,
        name: &str,
        x: &str,
        start: [usize; 2],
        end: [usize; 2],
        step: [usize; 2],
    ) -> String {
        self.push(
            name,
            Op::SpatialSlice(SpatialSlice { start, end, step }),
            &[x],
        )
    }

    /// The classifier's input from a token sequence.
    pub fn token_pool(&mut self, name: &str, x: &str, mode: TokenPoolMode) -> String {
        self.push(name, Op::TokenPool(TokenPool { mode }), &[x])
    }

    pub fn finish(mut self, output: &str) -> Graph {
        self.graph.output = output.to_string();
        self.graph
    }
}
