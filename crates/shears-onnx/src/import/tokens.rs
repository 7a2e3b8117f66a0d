//! The transformer patterns of an ONNX file, as PyTorch (timm-style modules, torchvision) and
//! shears' own exporter write them, each folded into the IR's token ops:
//!
//! - patch embedding: a conv's map reshaped to `[N, C, H*W]` then transposed to `[N, H*W, C]`
//!   becomes [`Op::Tokenize`];
//! - class token: `Concat(Expand(stored [1,1,C]), tokens)` on axis 1 becomes [`Op::ClassToken`];
//!   a stored `[1,T,C]` added to tokens becomes [`Op::PositionEmbedding`];
//! - attention: `Reshape(qkv, [N,T,3,H,D])`, `Transpose [2,0,3,1,4]`, q/k/v taken by `Split` +
//!   `Squeeze` or `Gather`, `MatMul(q, Transpose(k))`, a `Mul`/`Div` by a scalar, `Softmax`,
//!   `MatMul(·, v)`, `Transpose [0,2,1,3]`, `Reshape [N,T,H*D]` becomes one [`Op::Attention`];
//! - pooling: `Gather(tokens, 0, axis 1)` (`x[:, 0]`) and `ReduceMean` over axis 1 become
//!   [`Op::TokenPool`].
//!
//! The steps in between map to nothing: each is remembered by the ONNX value it produced, and a
//! pattern left unfinished is an error naming the node where it stopped.

use super::windows::WindowHeads;
use super::{Importer, Layout, Value, constant, unsupported};
use super::{input_name as input, output_name as output};
use crate::OnnxError;
use ndarray::{ArrayD, IxDyn};
use onnx_ir::Node;
use shears_core::graph::Op;
use shears_core::ops::{Attention, ClassToken, PositionEmbedding, TokenPool, TokenPoolMode};

/// The packed projection an attention reads, its head layout, and the product of the scalars
/// its queries and keys were multiplied by before their product (torchvision scales both by
/// `sqrt(scale)`).
#[derive(Debug, Clone)]
pub(super) struct Heads {
    qkv: Value,
    heads: usize,
    head_dim: usize,
    pre: f64,
    /// Swin's attention within windows of a map: the windows, position table and mask.
    win: Option<WindowHeads>,
}

/// A step of the attention pattern, by the ONNX value it produced.
#[derive(Debug, Clone)]
pub(super) enum AttnStep {
    /// `[N, T, 3, H, D]`.
    Split(Heads),
    /// `[3, N, H, T, D]`.
    Packed(Heads),
    /// Queries (0), keys (1) or values (2), `[N, H, T, D]` (`[1, N, H, T, D]` before a Squeeze).
    Part(Heads, usize),
    /// The keys transposed, `[N, H, D, T]`.
    KeysT(Heads),
    /// `q kᵀ * scale`.
    Scores(Heads, f64),
    /// Scores of attention on windows viewed per window, `[N, windows, H, T, T]`.
    WindowScores(Heads, f64),
    /// Softmax of the scores.
    Weights(Heads, f64),
    /// Weights times values, `[N, H, T, D]`.
    Out(Heads, f64),
    /// `[N, T, H, D]`.
    Merged(Heads, f64),
    // torchvision's `nn.MultiheadAttention` (batch first) works on `[T, N, ...]`, the batch
    // second, with the packed projection of width `3 * E`:
    /// `[T, N, 3, E]`.
    TnUnflat(Value, usize),
    /// `[1, T, N, 3, E]`.
    TnUnsqueezed(Value, usize),
    /// `[3, T, N, 1, E]`.
    TnPacked5(Value, usize),
    /// `[3, T, N, E]`.
    TnPacked(Value, usize),
    /// Queries, keys or values `[T, N, E]`.
    TnPart(Value, usize, usize),
    /// `[T, N*H, D]`.
    TnRows(Heads, usize),
    /// `[N*H, T, D]`.
    TnRowsT(Heads, usize),
    /// `[T, N, H, D]`.
    MergedTn(Heads, f64),
}

impl AttnStep {
    /// The ONNX dims of the step's value (`None`: the batch, or a size that includes it).
    fn dims(&self, t: usize) -> Vec<Option<f64>> {
        let d = |v: usize| Some(v as f64);
        match self {
            AttnStep::Split(h) => vec![None, d(t), d(3), d(h.heads), d(h.head_dim)],
            AttnStep::Packed(h) => vec![d(3), None, d(h.heads), d(t), d(h.head_dim)],
            AttnStep::Part(h, _) | AttnStep::Out(h, _) => {
                vec![None, d(h.heads), d(t), d(h.head_dim)]
            }
            AttnStep::KeysT(h) => vec![None, d(h.heads), d(h.head_dim), d(t)],
            AttnStep::Scores(h, _) | AttnStep::Weights(h, _) => vec![None, d(h.heads), d(t), d(t)],
            AttnStep::WindowScores(h, _) => vec![None, None, d(h.heads), d(t), d(t)],
            AttnStep::Merged(h, _) => vec![None, d(t), d(h.heads), d(h.head_dim)],
            AttnStep::TnUnflat(_, e) => vec![d(t), None, d(3), d(*e)],
            AttnStep::TnUnsqueezed(_, e) => vec![d(1), d(t), None, d(3), d(*e)],
            AttnStep::TnPacked5(_, e) => vec![d(3), d(t), None, d(1), d(*e)],
            AttnStep::TnPacked(_, e) => vec![d(3), d(t), None, d(*e)],
            AttnStep::TnPart(_, e, _) => vec![d(t), None, d(*e)],
            AttnStep::TnRows(h, _) => vec![d(t), None, d(h.head_dim)],
            AttnStep::TnRowsT(h, _) => vec![None, d(t), d(h.head_dim)],
            AttnStep::MergedTn(h, _) => vec![d(t), None, d(h.heads), d(h.head_dim)],
        }
    }

    /// The window side, for a step of attention on windows.
    fn window(&self) -> Option<usize> {
        match self {
            AttnStep::Split(h)
            | AttnStep::Packed(h)
            | AttnStep::Part(h, _)
            | AttnStep::KeysT(h)
            | AttnStep::Scores(h, _)
            | AttnStep::WindowScores(h, _)
            | AttnStep::Weights(h, _)
            | AttnStep::Out(h, _)
            | AttnStep::Merged(h, _) => h.win.as_ref().map(|w| w.geo.window),
            _ => None,
        }
    }

    /// The packed projection the step comes from.
    fn qkv(&self) -> &Value {
        match self {
            AttnStep::Split(h)
            | AttnStep::Packed(h)
            | AttnStep::Part(h, _)
            | AttnStep::KeysT(h)
            | AttnStep::Scores(h, _)
            | AttnStep::WindowScores(h, _)
            | AttnStep::Weights(h, _)
            | AttnStep::Out(h, _)
            | AttnStep::Merged(h, _)
            | AttnStep::TnRows(h, _)
            | AttnStep::TnRowsT(h, _)
            | AttnStep::MergedTn(h, _) => &h.qkv,
            AttnStep::TnUnflat(v, _)
            | AttnStep::TnUnsqueezed(v, _)
            | AttnStep::TnPacked5(v, _)
            | AttnStep::TnPacked(v, _)
            | AttnStep::TnPart(v, _, _) => v,
        }
    }
}

impl Importer {
    /// Maps `node` when it is a step of a transformer pattern; `None` when it is not one.
    pub(super) fn token_pattern(&mut self, node: &Node) -> Option<Result<(), OnnxError>> {
        let step = |k: usize| self.attention.get(&input(node, k)).cloned();
        let layout = |k: usize| self.values.get(&input(node, k)).map(|v| v.layout);
        match node {
            Node::Reshape(r) => {
                let target = self.reshape_target(node, &r.config)?;
                match step(0) {
                    Some(AttnStep::Merged(h, scale)) if h.win.is_some() => {
                        return Some(self.merge_window_heads(node, h, scale, &target));
                    }
                    Some(AttnStep::Scores(h, scale)) if h.win.is_some() && target.len() == 5 => {
                        self.attention
                            .insert(output(node, 0), AttnStep::WindowScores(h, scale));
                        return Some(Ok(()));
                    }
                    Some(AttnStep::WindowScores(h, scale)) if target.len() == 4 => {
                        self.attention
                            .insert(output(node, 0), AttnStep::Scores(h, scale));
                        return Some(Ok(()));
                    }
                    Some(AttnStep::Merged(h, scale)) => {
                        return Some(self.attention_op(node, h, scale, &target, Layout::Tokens));
                    }
                    Some(AttnStep::MergedTn(h, scale)) => {
                        return Some(self.attention_op(node, h, scale, &target, Layout::TokenRows));
                    }
                    Some(AttnStep::TnPart(qkv, e, which)) => {
                        return Some(self.tn_heads(node, qkv, e, which, &target));
                    }
                    Some(AttnStep::TnRowsT(h, which)) => {
                        let ok = target.len() == 4
                            && target[1] == Some(h.heads as i64)
                            && target[3] == Some(h.head_dim as i64);
                        return Some(if ok {
                            self.attention
                                .insert(output(node, 0), AttnStep::Part(h, which));
                            Ok(())
                        } else {
                            Err(unsupported(
                                node,
                                format!(
                                    "a reshape of [N*heads, T, D] to {target:?} is not [N, heads, T, D]"
                                ),
                            ))
                        });
                    }
                    Some(s) => {
                        return Some(Err(unsupported(
                            node,
                            format!("a reshape to {target:?} after the attention step {s:?}"),
                        )));
                    }
                    None => {}
                }
                match layout(0)? {
                    Layout::Tokens | Layout::Windows if target.len() == 5 => {
                        Some(self.split_heads(node, &target))
                    }
                    Layout::TokensTnc if target.len() == 4 => {
                        Some(self.tn_unflatten(node, &target))
                    }
                    Layout::TokenRows if target.len() == 3 => {
                        let x = self.data(node, 0, &[Layout::TokenRows]).ok()?;
                        Some(self.bind(
                            node,
                            Value {
                                name: x.name,
                                layout: Layout::TokensTnc,
                            },
                        ))
                    }
                    Layout::Map if target.len() == 3 && self.feeds_a_transpose(node) => {
                        Some(self.map_rows(node, &target))
                    }
                    _ => None,
                }
            }
            Node::Unsqueeze(_) => match step(0) {
                Some(AttnStep::TnUnflat(v, e)) if node.outputs()[0].ty.rank() == 5 => {
                    self.attention
                        .insert(output(node, 0), AttnStep::TnUnsqueezed(v, e));
                    Some(Ok(()))
                }
                Some(s) => Some(Err(unsupported(
                    node,
                    format!("an Unsqueeze after the attention step {s:?}"),
                ))),
                None => None,
            },
            Node::Transpose(t) => {
                let perm = t.config.perm.as_slice();
                let next = match (step(0), perm) {
                    (Some(AttnStep::Split(h)), [2, 0, 3, 1, 4]) => AttnStep::Packed(h),
                    (Some(AttnStep::Part(h, 1)), [0, 1, 3, 2]) => AttnStep::KeysT(h),
                    (Some(AttnStep::Out(h, s)), [0, 2, 1, 3]) => AttnStep::Merged(h, s),
                    (Some(AttnStep::Out(h, s)), [2, 0, 1, 3]) => AttnStep::MergedTn(h, s),
                    (Some(AttnStep::TnUnsqueezed(v, e)), [3, 1, 2, 0, 4]) => {
                        AttnStep::TnPacked5(v, e)
                    }
                    (Some(AttnStep::TnRows(h, w)), [1, 0, 2]) => AttnStep::TnRowsT(h, w),
                    (Some(s), _) => {
                        return Some(Err(unsupported(
                            node,
                            format!("Transpose {perm:?} after the attention step {s:?}"),
                        )));
                    }
                    (None, [0, 2, 1]) if layout(0) == Some(Layout::MapRows) => {
                        return Some(self.tokenize(node));
                    }
                    // Tokens with the batch second (`nn.MultiheadAttention` before PyTorch's
                    // batch-first fast path) and back: the same IR value.
                    (None, [1, 0, 2])
                        if matches!(layout(0), Some(Layout::Tokens | Layout::TokensTnc)) =>
                    {
                        let x = self
                            .data(node, 0, &[Layout::Tokens, Layout::TokensTnc])
                            .ok()?;
                        let layout = if x.layout == Layout::Tokens {
                            Layout::TokensTnc
                        } else {
                            Layout::Tokens
                        };
                        return Some(self.bind(
                            node,
                            Value {
                                name: x.name,
                                layout,
                            },
                        ));
                    }
                    (None, _) => return None,
                };
                self.attention.insert(output(node, 0), next);
                Some(Ok(()))
            }
            Node::Split(sp) => match step(0) {
                Some(AttnStep::Packed(h)) if sp.config.axis == 0 && node.outputs().len() == 3 => {
                    for k in 0..3 {
                        self.attention
                            .insert(output(node, k), AttnStep::Part(h.clone(), k));
                    }
                    Some(Ok(()))
                }
                Some(s) => Some(Err(unsupported(
                    node,
                    format!("a Split after the attention step {s:?} other than q, k, v on axis 0"),
                ))),
                None => None,
            },
            Node::Squeeze(_) => match step(0) {
                Some(part @ AttnStep::Part(..)) => {
                    self.attention.insert(output(node, 0), part);
                    Some(Ok(()))
                }
                Some(AttnStep::TnPacked5(v, e)) if node.outputs()[0].ty.rank() == 4 => {
                    self.attention
                        .insert(output(node, 0), AttnStep::TnPacked(v, e));
                    Some(Ok(()))
                }
                _ => None,
            },
            Node::Gather(g) => {
                let index = self.scalar_input(node, 1);
                // q, k or v taken from packed attention inputs (timm's or torchvision's).
                let part = |i: usize| match step(0) {
                    Some(AttnStep::TnPacked(v, e)) => Some(AttnStep::TnPart(v, e, i)),
                    Some(AttnStep::Packed(h)) => Some(AttnStep::Part(h, i)),
                    _ => None,
                };
                if part(0).is_some() {
                    return Some(match index {
                        Some(i) if g.config.axis == 0 && (0.0..3.0).contains(&i) => {
                            let taken = part(i as usize).expect("checked");
                            self.attention.insert(output(node, 0), taken);
                            Ok(())
                        }
                        _ => Err(unsupported(
                            node,
                            "only q, k and v (indices 0, 1, 2 on axis 0) are taken from packed \
                             attention inputs"
                                .into(),
                        )),
                    });
                }
                (layout(0)? == Layout::Tokens).then(|| {
                    if g.config.axis != 1 || index != Some(0.0) {
                        return Err(unsupported(
                            node,
                            "of token sequences only the first token (index 0 on axis 1, the \
                             class token) is supported"
                                .into(),
                        ));
                    }
                    self.token_pool(node, TokenPoolMode::Class)
                })
            }
            Node::MatMul(_) => match (step(0), step(1)) {
                (Some(AttnStep::Part(h, 0)), Some(AttnStep::KeysT(k))) if same(&h, &k) => {
                    let scale = h.pre * k.pre;
                    self.attention
                        .insert(output(node, 0), AttnStep::Scores(h, scale));
                    Some(Ok(()))
                }
                (Some(AttnStep::Weights(h, s)), Some(AttnStep::Part(v, 2))) if same(&h, &v) => {
                    self.attention.insert(output(node, 0), AttnStep::Out(h, s));
                    Some(Ok(()))
                }
                (None, None) => None,
                (a, b) => Some(Err(unsupported(
                    node,
                    format!(
                        "a MatMul of attention steps {a:?} and {b:?} is not q kᵀ or weights × v \
                         of one attention"
                    ),
                ))),
            },
            // Queries, keys (torchvision scales both by sqrt(scale)) or their product scaled.
            Node::Mul(_) | Node::Div(_) => {
                let (k, current) = (0..2).find_map(|k| match step(k)? {
                    st @ (AttnStep::Part(_, 0 | 1) | AttnStep::KeysT(_) | AttnStep::Scores(..)) => {
                        Some((k, st))
                    }
                    _ => None,
                })?;
                let Some(c) = self
                    .scalar_input(node, 1 - k)
                    .filter(|c| c.is_finite() && *c > 0.0)
                else {
                    return Some(Err(unsupported(
                        node,
                        "attention's queries, keys and scores are scaled only by a positive \
                         scalar"
                            .into(),
                    )));
                };
                let factor = match node {
                    Node::Div(_) if k == 0 => 1.0 / c,
                    Node::Div(_) => {
                        return Some(Err(unsupported(
                            node,
                            "a scalar divided by attention queries, keys or scores".into(),
                        )));
                    }
                    _ => c,
                };
                let next = match current {
                    AttnStep::Part(mut h, w) => {
                        h.pre *= factor;
                        AttnStep::Part(h, w)
                    }
                    AttnStep::KeysT(mut h) => {
                        h.pre *= factor;
                        AttnStep::KeysT(h)
                    }
                    AttnStep::Scores(h, s) => AttnStep::Scores(h, s * factor),
                    _ => unreachable!("matched above"),
                };
                self.attention.insert(output(node, 0), next);
                Some(Ok(()))
            }
            Node::Softmax(sm) => match step(0)? {
                AttnStep::Scores(h, s) if sm.config.axis == 3 => {
                    self.attention
                        .insert(output(node, 0), AttnStep::Weights(h, s));
                    Some(Ok(()))
                }
                _ => Some(Err(unsupported(
                    node,
                    "Softmax is supported only over the keys of attention scores (q kᵀ)".into(),
                ))),
            },
            // onnx-ir folds `Softmax(q kᵀ * s) v` into one Attention node reading q, k and v.
            Node::Attention(a) => {
                let parts = (step(0), step(1), step(2));
                let (
                    Some(AttnStep::Part(mut q, 0)),
                    Some(AttnStep::Part(k, 1)),
                    Some(AttnStep::Part(v, 2)),
                ) = parts
                else {
                    return Some(Err(unsupported(
                        node,
                        "only self-attention on the queries, keys and values of one packed \
                         projection (Reshape to [N,T,3,H,D], Transpose [2,0,3,1,4]) is supported"
                            .into(),
                    )));
                };
                // On windows the additive mask is Swin's position bias (unshifted windows).
                if let Some(wh) = q.win.take() {
                    let Some(bias) = node.inputs().get(3).cloned() else {
                        return Some(Err(unsupported(
                            node,
                            "attention on windows without a relative position bias".into(),
                        )));
                    };
                    match self.window_bias(node, &bias, wh, q.heads, false) {
                        Ok(wh) => q.win = Some(wh),
                        Err(e) => return Some(Err(e)),
                    }
                }
                let inputs = if q.win.is_some() { 4 } else { 3 };
                let plain = node.inputs().len() == inputs
                    && !a.config.is_causal
                    && a.config.softcap == 0.0
                    && same(&q, &k)
                    && same(&q, &v);
                if !plain {
                    return Some(Err(unsupported(
                        node,
                        "attention with a mask, causality, a softcap or inputs of different \
                         projections is not supported"
                            .into(),
                    )));
                }
                let scale =
                    a.config.scale.unwrap_or(1.0 / (q.head_dim as f64).sqrt()) * q.pre * k.pre;
                self.attention
                    .insert(output(node, 0), AttnStep::Out(q, scale));
                Some(Ok(()))
            }
            Node::Expand(_) => Some(self.expand_class_token(node)),
            Node::Concat(c) => {
                let class = self.class_tokens.get(&input(node, 0)).cloned()?;
                Some(if c.config.axis == 1 && node.inputs().len() == 2 {
                    self.class_token(node, class)
                } else {
                    Err(unsupported(
                        node,
                        "a class token is put in front of the tokens only (Concat of the \
                         expanded token and the sequence on axis 1)"
                            .into(),
                    ))
                })
            }
            Node::Add(_) => {
                let scores = (0..2).find_map(|k| match step(k)? {
                    AttnStep::Scores(h, s) if h.win.is_some() => Some((k, h, s, false)),
                    AttnStep::WindowScores(h, s) => Some((k, h, s, true)),
                    _ => None,
                });
                if let Some((k, mut h, s, per_window)) = scores {
                    let wh = h.win.take().expect("attention on windows");
                    let other = node.inputs()[1 - k].clone();
                    return Some(self.window_bias(node, &other, wh, h.heads, per_window).map(
                        |wh| {
                            h.win = Some(wh);
                            let next = if per_window {
                                AttnStep::WindowScores(h, s)
                            } else {
                                AttnStep::Scores(h, s)
                            };
                            self.attention.insert(output(node, 0), next);
                        },
                    ));
                }
                let k = (0..2).find(|&k| layout(k) == Some(Layout::Tokens))?;
                let other = node.inputs().get(1 - k)?;
                other
                    .value()
                    .is_some()
                    .then(|| self.position_embedding(node, k))
            }
            _ => None,
        }
    }

    /// The ONNX dims of an attention step's value, for the shape bookkeeping that reads them.
    pub(super) fn step_dims(&self, value: &str) -> Option<Vec<Option<f64>>> {
        let step = self.attention.get(value)?;
        let t = match step.window() {
            Some(w) => w * w,
            None => self.shapes.get(&step.qkv().name)?[0],
        };
        Some(step.dims(t))
    }

    /// A scalar input: stored, or computed from shapes (torchvision's `sqrt(1/sqrt(D))`).
    fn scalar_input(&self, node: &Node, k: usize) -> Option<f64> {
        let v = self.numbers(node.inputs().get(k)?)?;
        match v.as_slice() {
            [Some(x)] => Some(*x),
            _ => None,
        }
    }

    /// Whether a Transpose reads `node`'s output (a flatten of a map into rows of positions).
    fn feeds_a_transpose(&self, node: &Node) -> bool {
        self.readers
            .get(&output(node, 0))
            .is_some_and(|r| r.iter().any(|t| t == "Transpose"))
    }

    /// `[N, C, H, W]` reshaped to `[N, C, H*W]`: the same IR map, rows of positions in ONNX.
    fn map_rows(&mut self, node: &Node, target: &[Option<i64>]) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::Map])?;
        let s = self.shapes[&x.name].clone();
        let (c, hw) = (s[0] as i64, (s[1] * s[2]) as i64);
        let fits = target[1] == Some(c) && matches!(target[2], Some(d) if d == hw || d == -1);
        if !fits {
            return Err(unsupported(
                node,
                format!(
                    "a reshape of a [{c}, {}, {}] map to {target:?} is not its flatten into \
                     [N, C, H*W] before a transpose to tokens",
                    s[1], s[2]
                ),
            ));
        }
        self.bind(
            node,
            Value {
                name: x.name,
                layout: Layout::MapRows,
            },
        )
    }

    fn tokenize(&mut self, node: &Node) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::MapRows])?;
        self.push(
            node,
            Op::Tokenize,
            vec![x.name],
            vec![],
            Layout::Tokens,
            None,
        )
    }

    /// Tokens `[N, T, 3*H*D]` (or windows `[N*windows, T, 3*H*D]`) reshaped to
    /// `[N, T, 3, H, D]`.
    fn split_heads(&mut self, node: &Node, target: &[Option<i64>]) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::Tokens, Layout::Windows])?;
        let s = self.shapes[&x.name].clone();
        let win = (x.layout == Layout::Windows).then(|| WindowHeads {
            geo: self
                .windows
                .get(&input(node, 0))
                .copied()
                .unwrap_or_default(),
            ..WindowHeads::default()
        });
        let (t, c) = match &win {
            Some(w) => ((w.geo.window * w.geo.window) as i64, s[0] as i64),
            None => (s[0] as i64, s[1] as i64),
        };
        let (Some(Some(h)), Some(Some(d))) = (target.get(3), target.get(4)) else {
            return Err(unsupported(
                node,
                format!("the head count and size of {target:?} are not known before run time"),
            ));
        };
        // timm leaves the head size to the reshape (`reshape(B, N, 3, heads, -1)`).
        let d = &(if *d == -1 && *h > 0 && c % (3 * h) == 0 {
            c / (3 * h)
        } else {
            *d
        });
        let ok = matches!(target[1], Some(n) if n == t || n == -1)
            && target[2] == Some(3)
            && *h > 0
            && *d > 0
            && 3 * h * d == c;
        if !ok {
            return Err(unsupported(
                node,
                format!(
                    "a reshape of [{t}, {c}] tokens to {target:?} is not packed queries, keys \
                     and values [N, T, 3, heads, head_dim]"
                ),
            ));
        }
        let heads = Heads {
            qkv: x,
            heads: *h as usize,
            head_dim: *d as usize,
            pre: 1.0,
            win,
        };
        self.attention
            .insert(output(node, 0), AttnStep::Split(heads));
        Ok(())
    }

    /// torchvision: packed tokens `[T, N, 3E]` unflattened to `[T, N, 3, E]`.
    fn tn_unflatten(&mut self, node: &Node, target: &[Option<i64>]) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::TokensTnc])?;
        let c = self.shapes[&x.name][1];
        let e = c / 3;
        if c % 3 != 0 || target[2] != Some(3) || target[3] != Some(e as i64) {
            return Err(unsupported(
                node,
                format!("a reshape of [T, N, {c}] tokens to {target:?} is not [T, N, 3, {e}]"),
            ));
        }
        self.attention
            .insert(output(node, 0), AttnStep::TnUnflat(x, e));
        Ok(())
    }

    /// torchvision: queries, keys or values `[T, N, E]` viewed as `[T, N*H, D]`.
    fn tn_heads(
        &mut self,
        node: &Node,
        qkv: Value,
        e: usize,
        which: usize,
        target: &[Option<i64>],
    ) -> Result<(), OnnxError> {
        let d = match target {
            [_, _, Some(d)] if *d > 0 && e % (*d as usize) == 0 => *d as usize,
            _ => {
                return Err(unsupported(
                    node,
                    format!(
                        "a reshape of [T, N, {e}] attention inputs to {target:?} is not \
                         [T, N*heads, head_dim]"
                    ),
                ));
            }
        };
        let h = Heads {
            qkv,
            heads: e / d,
            head_dim: d,
            pre: 1.0,
            win: None,
        };
        self.attention
            .insert(output(node, 0), AttnStep::TnRows(h, which));
        Ok(())
    }

    /// The heads merged back to `[N, T, H*D]`: the attention op.
    fn attention_op(
        &mut self,
        node: &Node,
        h: Heads,
        scale: f64,
        target: &[Option<i64>],
        layout: Layout,
    ) -> Result<(), OnnxError> {
        let width = (h.heads * h.head_dim) as i64;
        let rank = if layout == Layout::Tokens { 3 } else { 2 };
        let last = target.last().copied().flatten();
        if target.len() != rank || !matches!(last, Some(d) if d == width || d == -1) {
            return Err(unsupported(
                node,
                format!(
                    "attention heads are merged to [N, T, {width}] or [T*N, {width}], not to {target:?}"
                ),
            ));
        }
        let op = Op::Attention(Attention {
            heads: h.heads,
            head_dim: h.head_dim,
            scale,
        });
        self.push(node, op, vec![h.qkv.name], vec![], layout, None)
    }

    /// The heads of attention on windows merged back to `[N*windows, T, H*D]`.
    fn merge_window_heads(
        &mut self,
        node: &Node,
        h: Heads,
        scale: f64,
        target: &[Option<i64>],
    ) -> Result<(), OnnxError> {
        let width = (h.heads * h.head_dim) as i64;
        let last = target.last().copied().flatten();
        if target.len() != 3 || !matches!(last, Some(d) if d == width || d == -1) {
            return Err(unsupported(
                node,
                format!(
                    "attention heads on windows are merged to [N*windows, T, {width}], not to {target:?}"
                ),
            ));
        }
        let wh = h.win.clone().expect("attention on windows");
        self.window_attention_op(node, h.qkv, h.heads, h.head_dim, scale, wh)
    }

    /// A stored `[1, 1, C]` token expanded over the batch.
    fn expand_class_token(&mut self, node: &Node) -> Result<(), OnnxError> {
        let (_, token) = constant(node, 0, "class token")?;
        let c = token.len();
        if token.shape().iter().filter(|&&d| d != 1).count() > 1 || c == 0 {
            return Err(unsupported(
                node,
                format!(
                    "only a stored [1, 1, C] class token is expanded; this one is {:?}",
                    token.shape()
                ),
            ));
        }
        let token = token
            .into_shape_with_order(IxDyn(&[c]))
            .map_err(|e| unsupported(node, e.to_string()))?;
        self.class_tokens.insert(output(node, 0), token);
        Ok(())
    }

    fn class_token(&mut self, node: &Node, token: ArrayD<f32>) -> Result<(), OnnxError> {
        let x = self.data(node, 1, &[Layout::Tokens])?;
        let op = Op::ClassToken(ClassToken {
            channels: token.len(),
        });
        self.push(
            node,
            op,
            vec![x.name],
            vec![("token", token)],
            Layout::Tokens,
            None,
        )
    }

    /// Tokens plus a stored `[1, T, C]` (or `[T, C]`) table; or plus a `[C]` bias after a
    /// bias-free linear layer that nothing else reads (`MatMul` then `Add`, as shears exports a
    /// linear layer on tokens).
    fn position_embedding(&mut self, node: &Node, k: usize) -> Result<(), OnnxError> {
        let x = self.data(node, k, &[Layout::Tokens])?;
        let (_, table) = constant(node, 1 - k, "position table")?;
        let s = self.shapes[&x.name].clone();
        let (t, c) = (s[0], s[1]);
        let only_reader = self
            .readers
            .get(&input(node, k))
            .is_some_and(|r| r.len() == 1);
        let bias_free = self
            .nodes
            .iter()
            .position(|n| n.name == x.name && matches!(n.op, Op::Linear(l) if !l.bias));
        if let (true, Some(i), true) = (table.len() == c, bias_free, only_reader) {
            let bias = table
                .into_shape_with_order(IxDyn(&[c]))
                .map_err(|e| unsupported(node, e.to_string()))?;
            if let Op::Linear(l) = &mut self.nodes[i].op {
                l.bias = true;
            }
            self.weights.insert(format!("{}.bias", x.name), bias);
            return self.bind(node, x);
        }
        if table.len() != t * c || table.shape().last() != Some(&c) {
            return Err(unsupported(
                node,
                format!(
                    "only a [1, {t}, {c}] position table is added to [{t}, {c}] tokens; this \
                     constant is {:?}",
                    table.shape()
                ),
            ));
        }
        let table = table
            .into_shape_with_order(IxDyn(&[t, c]))
            .map_err(|e| unsupported(node, e.to_string()))?;
        let op = Op::PositionEmbedding(PositionEmbedding {
            tokens: t,
            channels: c,
        });
        self.push(
            node,
            op,
            vec![x.name],
            vec![("table", table)],
            Layout::Tokens,
            None,
        )
    }

    /// `[N, T, C]` to `[N, C]`.
    pub(super) fn token_pool(&mut self, node: &Node, mode: TokenPoolMode) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::Tokens])?;
        let op = Op::TokenPool(TokenPool { mode });
        self.push(node, op, vec![x.name], vec![], Layout::Vector, None)
    }

    /// Fails when an attention or class-token pattern was left unfinished at `value`.
    pub(super) fn unfinished(&self, value: &str) -> Option<String> {
        if let Some(s) = self.attention.get(value) {
            return Some(format!("a partial attention pattern (at its step {s:?})"));
        }
        self.class_tokens
            .contains_key(value)
            .then(|| "an expanded class token never put in front of tokens".to_string())
    }
}

fn same(a: &Heads, b: &Heads) -> bool {
    a.qkv.name == b.qkv.name && a.heads == b.heads && a.head_dim == b.head_dim
}
