//! Shifted-window multi-head self-attention (Swin's W-MSA and SW-MSA core) on a `[3*H*D, Hp, Wp]`
//! map of packed queries, keys and values, to the `[H*D, Hp, Wp]` map of the heads' outputs.
//!
//! The map is rolled up and left by `shift`, cut into `window × window` tiles, and every tile
//! attends within itself: head `h` computes `softmax(q kᵀ * scale + B_h + M) v`, where `B_h` is
//! head `h`'s column of the learned relative position table, indexed by the row and column
//! offsets between two tokens of a tile, and `M` is `-100` between tokens that the roll brought
//! from different regions of the map (only when the map is shifted). The result is rolled back.
//!
//! Why one op on the map rather than the roll, window reshape, attention, reverse reshape and
//! roll back it exports as: the qkv and output projections act on each position alone, so they
//! stay 1×1 layers on the map (grouped with the map's channels like any other), and the head
//! structure, the window and the shift are attributes that groups, compaction and export read.
//! The map must already be padded to whole windows (a [`Op::Pad`] before the qkv projection, as
//! torchvision pads before it; padded positions attend and are attended to, as there) and the
//! shift must already be zero along an axis one window covers (torchvision's rule).
//!
//! Channel rule: that of [`super::Attention`] ([`ChannelFlow::Heads`]); the position table
//! [`window²` offsets... `(2w-1)²` rows, one column per head] follows the heads
//! ([`ChannelSide::OutputHeads`]): pruning a head drops its column.

use super::RefCall;
use super::arith::dims4;
use super::{
    Arity, ChannelAxis, ChannelFlow, ChannelSide, OnnxAttr, OnnxIn, OnnxNode, Op, OpRules,
    ParamKind, ParamSpec, chw, param,
};
use crate::cost::Convention;
use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::shape::Shape;
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

/// The additive mask between tokens from different regions of a shifted map (torchvision's).
pub const SHIFT_MASK: f32 = -100.0;

/// The attributes of [`Op::WindowAttention`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowAttention {
    pub heads: usize,
    pub head_dim: usize,
    /// Side of the square windows.
    pub window: usize,
    /// Roll `[rows, columns]` before the windows are cut (half a window in every second block).
    pub shift: [usize; 2],
    /// Multiplies the query-key products (`1/sqrt(head_dim)` as built).
    pub scale: f64,
}

impl WindowAttention {
    /// Channels of the output (`heads * head_dim`); the input has three times as many.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Tokens per window.
    pub fn tokens(&self) -> usize {
        self.window * self.window
    }

    /// Rows of the relative position table: one per (row offset, column offset) pair.
    pub fn table_rows(&self) -> usize {
        (2 * self.window - 1) * (2 * self.window - 1)
    }

    /// The table row of every (query token, key token) pair of a window, row-major `[N, N]`.
    pub fn relative_index(&self) -> Vec<usize> {
        let w = self.window;
        let n = self.tokens();
        let mut index = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                let (dy, dx) = (i / w + w - 1 - j / w, i % w + w - 1 - j % w);
                index.push(dy * (2 * w - 1) + dx);
            }
        }
        index
    }

    /// For a `[hp, wp]` map: the position (row-major) that token `t` of window `k` reads, windows
    /// row-major over the rolled map, tokens row-major in a window.
    pub fn source(&self, [hp, wp]: [usize; 2], k: usize, t: usize) -> usize {
        let w = self.window;
        let (y, x) = ((k / (wp / w)) * w + t / w, (k % (wp / w)) * w + t % w);
        ((y + self.shift[0]) % hp) * wp + (x + self.shift[1]) % wp
    }

    /// The shift mask `[windows, N, N]` of a `[hp, wp]` map, or `None` when unshifted.
    pub fn mask(&self, [hp, wp]: [usize; 2]) -> Option<Vec<f32>> {
        if self.shift == [0, 0] {
            return None;
        }
        let w = self.window;
        // The region of a rolled coordinate: the last `shift` rows came from the top.
        let region = |v: usize, size: usize, s: usize| -> usize {
            match () {
                _ if s == 0 => 0,
                _ if v < size - w => 0,
                _ if v < size - s => 1,
                _ => 2,
            }
        };
        let (n, windows) = (self.tokens(), (hp / w) * (wp / w));
        let label = |k: usize, t: usize| {
            let (y, x) = ((k / (wp / w)) * w + t / w, (k % (wp / w)) * w + t % w);
            3 * region(y, hp, self.shift[0]) + region(x, wp, self.shift[1])
        };
        let mut mask = Vec::with_capacity(windows * n * n);
        for k in 0..windows {
            for i in 0..n {
                for j in 0..n {
                    mask.push(if label(k, i) == label(k, j) {
                        0.0
                    } else {
                        SHIFT_MASK
                    });
                }
            }
        }
        Some(mask)
    }

    /// One sample: `x` is `[3*width, hp, wp]` channel-major, `table` `[(2w-1)², heads]`
    /// row-major; the result is `[width, hp, wp]`.
    pub fn forward_sample(&self, x: &[f32], table: &[f32], [hp, wp]: [usize; 2]) -> Vec<f32> {
        let (hd, d, n, plane) = (self.width(), self.head_dim, self.tokens(), hp * wp);
        let index = self.relative_index();
        let mask = self.mask([hp, wp]);
        let windows = (hp / self.window) * (wp / self.window);
        let mut out = vec![0.0f32; hd * plane];
        let mut scores = vec![0.0f64; n];
        for k in 0..windows {
            let src: Vec<usize> = (0..n).map(|t| self.source([hp, wp], k, t)).collect();
            for h in 0..self.heads {
                let (q0, k0, v0) = (h * d, hd + h * d, 2 * hd + h * d);
                for i in 0..n {
                    let mut max = f64::NEG_INFINITY;
                    for (j, s) in scores.iter_mut().enumerate() {
                        let dot: f64 = (0..d)
                            .map(|c| {
                                x[(q0 + c) * plane + src[i]] as f64
                                    * x[(k0 + c) * plane + src[j]] as f64
                            })
                            .sum();
                        let bias = table[index[i * n + j] * self.heads + h] as f64;
                        let m = mask.as_ref().map_or(0.0, |m| m[(k * n + i) * n + j] as f64);
                        *s = dot * self.scale + bias + m;
                        max = max.max(*s);
                    }
                    let mut total = 0.0;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        total += *s;
                    }
                    for c in 0..d {
                        let v: f64 = (0..n)
                            .map(|j| scores[j] / total * x[(v0 + c) * plane + src[j]] as f64)
                            .sum();
                        out[(h * d + c) * plane + src[i]] = v as f32;
                    }
                }
            }
        }
        out
    }
}

impl OpRules for WindowAttention {
    fn name(&self) -> &'static str {
        "window_attention"
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn param_specs(&self, node: &str) -> Vec<ParamSpec> {
        vec![param(
            node,
            "bias_table",
            vec![self.table_rows(), self.heads],
            ParamKind::Embedding,
        )]
    }

    fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape> {
        let err = |m: String| CoreError::shape(&node.name, m);
        if self.heads == 0 || self.head_dim == 0 || self.window == 0 {
            return Err(err(format!(
                "window attention needs at least one head of at least one channel and a window, \
                 got {} heads of {} in windows of {}",
                self.heads, self.head_dim, self.window
            )));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(err(format!("scale must be positive, got {}", self.scale)));
        }
        let (c, h, w) = chw(node, ins[0])?;
        if c != 3 * self.width() {
            return Err(err(format!(
                "expects packed queries, keys and values of {} heads x {} channels ({} channels), got {c}",
                self.heads,
                self.head_dim,
                3 * self.width()
            )));
        }
        if h % self.window != 0 || w % self.window != 0 {
            return Err(err(format!(
                "a {h}x{w} map is not whole windows of {}; pad it first",
                self.window
            )));
        }
        for (s, size) in self.shift.into_iter().zip([h, w]) {
            if s >= self.window || (s > 0 && size <= self.window) {
                return Err(err(format!(
                    "shift {s} must be under the window {} and zero where one window covers the \
                     {size} positions",
                    self.window
                )));
            }
        }
        Ok(vec![self.width(), h, w])
    }

    /// The two matrix products per window, `2 * N*N*H*D` per window (`N` tokens a window), count
    /// under both conventions; `all-ops` adds the scaling, the bias, the mask and the softmax,
    /// about five operations per score.
    fn macs(&self, ins: &[&Shape], _out: &[usize], convention: Convention) -> u64 {
        let (h, w) = (ins[0][1] as u64, ins[0][2] as u64);
        let n = self.tokens() as u64;
        let windows = (h * w) / n.max(1);
        let products = 2 * windows * n * n * self.width() as u64;
        match convention {
            Convention::ConvLinear => products,
            Convention::AllOps => products + 5 * windows * n * n * self.heads as u64,
        }
    }

    fn channel_flow(&self) -> ChannelFlow {
        ChannelFlow::Heads {
            heads: self.heads,
            head_dim: self.head_dim,
        }
    }

    fn channel_axes(&self, node: &str) -> Vec<ChannelAxis> {
        self.param_specs(node)
            .into_iter()
            .map(|spec| ChannelAxis {
                spec,
                axis: 1,
                side: ChannelSide::OutputHeads {
                    head_dim: self.head_dim,
                },
            })
            .collect()
    }

    fn compacted(&self, node: &str, in_channels: usize, out_channels: usize) -> Result<Op> {
        if out_channels % self.head_dim != 0 || in_channels != 3 * out_channels {
            return Err(CoreError::shape(
                node,
                format!(
                    "window attention keeps whole heads of {} channels: {in_channels} input and \
                     {out_channels} output channels are not",
                    self.head_dim
                ),
            ));
        }
        Ok(Op::WindowAttention(WindowAttention {
            heads: out_channels / self.head_dim,
            ..*self
        }))
    }

    fn reference(&self, call: &RefCall<'_>) -> Result<ArrayD<f32>> {
        let node = call.node;
        let [n, c, h, w] = dims4(node, call.ins[0])?;
        let x = call.ins[0].as_standard_layout();
        let table = call.params.get(&format!("{}.bias_table", node.name))?;
        let table = table.as_standard_layout();
        let table = table.as_slice().expect("standard layout");
        let data = x.as_slice().expect("standard layout");
        let mut out = Vec::with_capacity(n * self.width() * h * w);
        for sample in data.chunks(c * h * w) {
            out.extend(self.forward_sample(sample, table, [h, w]));
        }
        ArrayD::from_shape_vec(IxDyn(&[n, self.width(), h, w]), out)
            .map_err(|e| CoreError::shape(&node.name, e.to_string()))
    }

    /// torchvision's form, so that shears reads its own export back: the map channels-last,
    /// rolled (two Slices and a Concat per shifted axis), cut into windows (Reshape, Transpose,
    /// Reshape), the attention of [`super::Attention`] with the gathered position bias and the
    /// shift mask added to the scores, then the windows put back, the roll undone and the map
    /// channels-first again.
    fn onnx(&self, node: &str, ins: &[&Shape]) -> Vec<OnnxNode> {
        let (hp, wp) = (ins[0][1] as i64, ins[0][2] as i64);
        let w = self.window as i64;
        let (h, d, n) = (
            self.heads as i64,
            self.head_dim as i64,
            self.tokens() as i64,
        );
        let (nh, nw) = (hp / w, wp / w);
        let windows = nh * nw;
        let mut nodes: Vec<OnnxNode> = Vec::new();
        let push = |nodes: &mut Vec<OnnxNode>, n: OnnxNode| -> OnnxIn {
            nodes.push(n);
            OnnxIn::Part(nodes.len() - 1)
        };
        let reshape = |x: OnnxIn, name: &'static str, shape: Vec<i64>| {
            OnnxNode::wired("Reshape", Vec::new(), vec![x, OnnxIn::Ints(name, shape)])
        };
        let transpose = |x: OnnxIn, perm: Vec<i64>| {
            OnnxNode::wired("Transpose", vec![("perm", OnnxAttr::Ints(perm))], vec![x])
        };
        // Roll the channels-last map along `axis` so that position `first` comes first; the
        // initializer names (`{node}.{tag}`) are unique per node.
        let roll = |nodes: &mut Vec<OnnxNode>,
                    last: OnnxIn,
                    axis: i64,
                    first: i64,
                    size: i64,
                    tag: [&'static str; 6]|
         -> OnnxIn {
            let slice = |start: i64, end: i64, [s, e, a]: [&'static str; 3]| {
                OnnxNode::wired(
                    "Slice",
                    Vec::new(),
                    vec![
                        last.clone(),
                        OnnxIn::Ints(s, vec![start]),
                        OnnxIn::Ints(e, vec![end]),
                        OnnxIn::Ints(a, vec![axis]),
                    ],
                )
            };
            let k = nodes.len();
            nodes.push(slice(first, size, [tag[0], tag[1], tag[2]]));
            nodes.push(slice(0, first, [tag[3], tag[4], tag[5]]));
            nodes.push(OnnxNode::wired(
                "Concat",
                vec![("axis", OnnxAttr::Int(axis))],
                vec![OnnxIn::Part(k), OnnxIn::Part(k + 1)],
            ));
            OnnxIn::Part(k + 2)
        };
        let [sh, sw] = self.shift.map(|s| s as i64);
        let mut x = push(&mut nodes, transpose(OnnxIn::OpInput(0), vec![0, 2, 3, 1]));
        if sh > 0 {
            x = roll(
                &mut nodes,
                x,
                1,
                sh,
                hp,
                ["r0s", "r0e", "r0a", "r1s", "r1e", "r1a"],
            );
        }
        if sw > 0 {
            x = roll(
                &mut nodes,
                x,
                2,
                sw,
                wp,
                ["c0s", "c0e", "c0a", "c1s", "c1e", "c1a"],
            );
        }
        // [B, Hp, Wp, 3HD] → [B, nh, w, nw, w, 3HD] → [B, nh, nw, w, w, 3HD] → [B*nW, N, 3HD]
        let x = push(
            &mut nodes,
            reshape(x, "tiles", vec![-1, nh, w, nw, w, 3 * h * d]),
        );
        let x = push(&mut nodes, transpose(x, vec![0, 1, 3, 2, 4, 5]));
        let x = push(&mut nodes, reshape(x, "windows", vec![-1, n, 3 * h * d]));
        // → [B*nW, N, 3, H, D] → [3, B*nW, H, N, D]
        let x = push(&mut nodes, reshape(x, "qkv_shape", vec![-1, n, 3, h, d]));
        let qkv = push(&mut nodes, transpose(x, vec![2, 0, 3, 1, 4]));
        let take = |nodes: &mut Vec<OnnxNode>, suffix: &'static str, index: i64| {
            push(
                nodes,
                OnnxNode::wired(
                    "Gather",
                    vec![("axis", OnnxAttr::Int(0))],
                    vec![qkv.clone(), OnnxIn::IntScalar(suffix, index)],
                ),
            )
        };
        let q = take(&mut nodes, "q_index", 0);
        let k = take(&mut nodes, "k_index", 1);
        let v = take(&mut nodes, "v_index", 2);
        let kt = push(&mut nodes, transpose(k, vec![0, 1, 3, 2]));
        let s = push(
            &mut nodes,
            OnnxNode::wired("MatMul", Vec::new(), vec![q, kt]),
        );
        let s = push(
            &mut nodes,
            OnnxNode::wired(
                "Mul",
                Vec::new(),
                vec![s, OnnxIn::Floats("scale", vec![self.scale as f32])],
            ),
        );
        // The position bias: table rows gathered per token pair, [N*N, H] → [H, N, N].
        let index = self
            .relative_index()
            .into_iter()
            .map(|i| i as i64)
            .collect();
        let bias = push(
            &mut nodes,
            OnnxNode::wired(
                "Gather",
                vec![("axis", OnnxAttr::Int(0))],
                vec![
                    OnnxIn::Param(format!("{node}.bias_table")),
                    OnnxIn::Ints("relative_index", index),
                ],
            ),
        );
        let bias = push(&mut nodes, reshape(bias, "bias_shape", vec![n, n, h]));
        let bias = push(&mut nodes, transpose(bias, vec![2, 0, 1]));
        let mut s = push(
            &mut nodes,
            OnnxNode::wired("Add", Vec::new(), vec![s, bias]),
        );
        if let Some(mask) = self.mask([hp as usize, wp as usize]) {
            let m = push(
                &mut nodes,
                OnnxNode::wired(
                    "Reshape",
                    Vec::new(),
                    vec![
                        OnnxIn::Floats("mask", mask),
                        OnnxIn::Ints("mask_shape", vec![windows, 1, n, n]),
                    ],
                ),
            );
            let by_window = push(
                &mut nodes,
                reshape(s, "by_window", vec![-1, windows, h, n, n]),
            );
            let masked = push(
                &mut nodes,
                OnnxNode::wired("Add", Vec::new(), vec![by_window, m]),
            );
            s = push(
                &mut nodes,
                reshape(masked, "scores_shape", vec![-1, h, n, n]),
            );
        }
        let a = push(
            &mut nodes,
            OnnxNode::wired("Softmax", vec![("axis", OnnxAttr::Int(-1))], vec![s]),
        );
        let o = push(
            &mut nodes,
            OnnxNode::wired("MatMul", Vec::new(), vec![a, v]),
        );
        // [B*nW, H, N, D] → [B*nW, N, HD] → [B, nh, nw, w, w, HD] → [B, nh, w, nw, w, HD]
        // → [B, Hp, Wp, HD]
        let o = push(&mut nodes, transpose(o, vec![0, 2, 1, 3]));
        let o = push(&mut nodes, reshape(o, "merged", vec![-1, n, h * d]));
        let o = push(
            &mut nodes,
            reshape(o, "windows_back", vec![-1, nh, nw, w, w, h * d]),
        );
        let o = push(&mut nodes, transpose(o, vec![0, 1, 3, 2, 4, 5]));
        let mut o = push(&mut nodes, reshape(o, "map_back", vec![-1, hp, wp, h * d]));
        if sh > 0 {
            o = roll(
                &mut nodes,
                o,
                1,
                hp - sh,
                hp,
                ["b0s", "b0e", "b0a", "b1s", "b1e", "b1a"],
            );
        }
        if sw > 0 {
            o = roll(
                &mut nodes,
                o,
                2,
                wp - sw,
                wp,
                ["d0s", "d0e", "d0a", "d1s", "d1e", "d1a"],
            );
        }
        push(&mut nodes, transpose(o, vec![0, 3, 1, 2]));
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{one_op, single};
    use super::*;
    use crate::reference::forward;
    use crate::shape::infer_shapes;
    use std::collections::BTreeMap;

    fn wa(heads: usize, head_dim: usize, window: usize, shift: [usize; 2]) -> WindowAttention {
        WindowAttention {
            heads,
            head_dim,
            window,
            shift,
            scale: 1.0 / (head_dim as f64).sqrt(),
        }
    }

    #[test]
    fn shape_cost_flow_and_compaction() {
        let a = wa(2, 3, 2, [1, 1]);
        let (conv_linear, all) = single(
            |b, x| b.push("a", Op::WindowAttention(a), &[x]),
            &[18, 4, 6],
        );
        // 6 windows of 4 tokens, 2 heads x 3 channels.
        assert_eq!(conv_linear.macs, 2 * 6 * 4 * 4 * 6);
        assert_eq!(all.macs, 2 * 6 * 4 * 4 * 6 + 5 * 6 * 4 * 4 * 2);
        let g = one_op(
            |b, x| b.push("a", Op::WindowAttention(a), &[x]),
            &[18, 4, 6],
        );
        assert_eq!(infer_shapes(&g).unwrap().get("a"), &vec![6, 4, 6]);
        assert_eq!(
            Op::WindowAttention(a).compacted("a", 9, 3).unwrap(),
            Op::WindowAttention(wa(1, 3, 2, [1, 1]))
        );
        assert_eq!(a.param_specs("a")[0].shape, vec![9, 2]);
        let node = |shape: Vec<usize>, a: WindowAttention| {
            let n = Node {
                name: "a".into(),
                op: Op::WindowAttention(a),
                inputs: vec!["x".into()],
            };
            n.op.output_shape(&n, &[&shape]).unwrap_err().to_string()
        };
        assert!(node(vec![18, 5, 6], a).contains("not whole windows"));
        assert!(node(vec![12, 4, 6], a).contains("18 channels"));
        assert!(node(vec![18, 2, 6], a).contains("shift 1"));
    }

    /// The table row of a token pair depends on their offsets only (torchvision's formula).
    #[test]
    fn relative_index_follows_offsets() {
        let a = wa(1, 1, 2, [0, 0]);
        // Tokens (0,0) (0,1) (1,0) (1,1); a 3x3 table of offsets (dy+1, dx+1).
        assert_eq!(
            a.relative_index(),
            vec![4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
    }

    /// A shifted 4x4 map in windows of 2: the last window gathers the four corners, which the mask
    /// keeps apart; the first window is one region.
    #[test]
    fn shift_mask_separates_regions() {
        let a = wa(1, 1, 2, [1, 1]);
        let mask = a.mask([4, 4]).unwrap();
        assert!(mask[..16].iter().all(|&m| m == 0.0));
        let last = &mask[3 * 16..];
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(last[i * 4 + j] == 0.0, i == j, "{i} {j}");
            }
        }
        assert_eq!(
            a.source([4, 4], 3, 3),
            0,
            "the last token of the last window is the corner"
        );
        assert!(wa(1, 1, 2, [0, 0]).mask([4, 4]).is_none());
    }

    /// One window of two tokens (a 1x2 map is not square: use 2x2 with one token pair checked):
    /// the scores add the table's entry, so a large bias picks the value it points at.
    #[test]
    fn bias_table_steers_attention() {
        let a = wa(1, 1, 2, [0, 0]);
        // q = k = 0 everywhere: the scores are the bias alone.
        let mut x = vec![0.0f32; 3 * 4];
        for (p, v) in [1.0, 2.0, 3.0, 4.0].into_iter().enumerate() {
            x[2 * 4 + p] = v;
        }
        let mut table = vec![0.0f32; 9];
        // Offset (0, -1) (row 4 - 1 = 3): each token attends to its right neighbour.
        table[3] = 50.0;
        let y = a.forward_sample(&x, &table, [2, 2]);
        assert!(
            (y[0] - 2.0).abs() < 1e-4 && (y[2] - 4.0).abs() < 1e-4,
            "{y:?}"
        );
        // Tokens on the right have no right neighbour: they average all four values.
        assert!((y[1] - 2.5).abs() < 1e-4, "{y:?}");
        let g = one_op(|b, x| b.push("a", Op::WindowAttention(a), &[x]), &[3, 2, 2]);
        let mut params = BTreeMap::new();
        params.insert(
            "a.bias_table".to_string(),
            ArrayD::from_shape_vec(IxDyn(&[9, 1]), table).unwrap(),
        );
        let input = ArrayD::from_shape_vec(IxDyn(&[1, 3, 2, 2]), x).unwrap();
        let out = forward(&g, &params, None, &input).unwrap();
        assert_eq!(out.iter().copied().collect::<Vec<_>>(), y);
    }
}
