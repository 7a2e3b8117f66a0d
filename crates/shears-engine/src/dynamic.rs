//! Dynamic inference that skips gated work: a per-sample interpreter of a graph whose gated
//! convolutions compute only the filters their mask predictor switched on, reading only the
//! input channels that are non-zero for this sample.
//!
//! Every activation is kept *compact*: the data of its live channels and their indices; every
//! other channel is exactly zero. A gated conv's predictor reads the compact input (pooled and
//! soft-maxed over all channels, the zeros included), picks its active filters, and runs only
//! them on the live input channels, with the folded (conv ⊙ BN) weights, the bias and the ReLU:
//! a 3x3 conv with padding 1 and stride 1 or 2 through `conv3x3_selected`, which reads those
//! filters' weights in place (a gathered copy cost as much as the conv on small maps), any other
//! conv as one smaller convolution on gathered weights.
//! Element-wise ops, pooling and residual sums work on the compact form (a sum keeps the union
//! of its inputs' channels); `Flatten` and `Linear` expand to dense vectors.
//!
//! A batch is run sample by sample (every sample has its own masks), each sample's convs using
//! all threads inside the kernel.

use crate::error::{EngineError, Result};
use shears_core::graph::{Graph, Op};
use shears_core::ops::Pool2d;
use shears_core::ops::{BatchNorm, Conv2d, Dropout, Linear};
use shears_core::shape::infer_shapes;
use shears_core::weights::Weights;
use shears_kernels::{
    ConvGeometry, Epilogue, Selection, add_scaled_rows, conv2d_forward, conv3x3_selected, dot,
    plane_means, selected_stride, sum,
};
use std::borrow::Cow;
use std::collections::HashMap;

/// The trained mask predictor of one gated conv: logits = W·softmax(mean_hw(x)) + b.
#[derive(Debug, Clone)]
pub struct GateHead {
    /// The conv whose output filters are gated (its first input is what the head reads).
    pub conv: String,
    /// The node whose output the gate multiplies: the conv, its BN or the ReLU after that.
    pub gate_at: String,
    /// `[out_channels, in_channels]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub softmax: bool,
    /// When every logit is ≤ 0, keep the filter of the largest one on, so that no layer goes
    /// dark for a sample (FTWT's `keep_one`; not in the paper).
    pub keep_one: bool,
}

/// A head as the plan keeps it: its weight transposed, `[in_channels, out_channels]`, so the
/// logits are a sum of weight rows scaled by the input's channel means, and a channel that is
/// zero for this sample (gated off upstream) costs nothing without the softmax.
#[derive(Debug, Clone)]
struct PlannedHead {
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    softmax: bool,
    keep_one: bool,
}

impl PlannedHead {
    fn new(head: &GateHead) -> PlannedHead {
        let (co, ci) = (head.bias.len(), head.weight.len() / head.bias.len().max(1));
        let mut weight_t = vec![0f32; co * ci];
        for o in 0..co {
            for c in 0..ci {
                weight_t[c * co + o] = head.weight[o * ci + c];
            }
        }
        PlannedHead {
            weight_t,
            bias: head.bias.clone(),
            softmax: head.softmax,
            keep_one: head.keep_one,
        }
    }

    /// The active filters for an input whose channel means are `pooled` (all channels).
    fn active(&self, pooled: &[f32]) -> Vec<usize> {
        let p: Cow<[f32]> = if self.softmax {
            Cow::Owned(softmax(pooled))
        } else {
            Cow::Borrowed(pooled)
        };
        let mut logits = self.bias.clone();
        add_scaled_rows(&self.weight_t, &p, &mut logits);
        gates_on(&logits, self.keep_one)
            .iter()
            .enumerate()
            .filter_map(|(o, on)| on.then_some(o))
            .collect()
    }
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// Which filters one sample's head logits switch on: those with a logit above 0 (sigmoid above
/// 0.5), and with `keep_one`, when none is, the first of the largest (so no layer goes dark).
/// The training gates and this engine both decide by it, so they agree filter for filter.
pub fn gates_on(logits: &[f32], keep_one: bool) -> Vec<bool> {
    let mut on: Vec<bool> = logits.iter().map(|&l| l > 0.0).collect();
    if keep_one && !logits.is_empty() && !on.contains(&true) {
        let best = (0..logits.len()).fold(0, |b, o| if logits[o] > logits[b] { o } else { b });
        on[best] = true;
    }
    on
}

/// A value of one sample: a map whose listed channels are live (the rest are zero), or a vector.
#[derive(Debug, Clone)]
enum Val {
    Map {
        channels: Vec<usize>,
        total: usize,
        h: usize,
        w: usize,
        data: Vec<f32>,
    },
    Vec(Vec<f32>),
}

impl Val {
    fn dense(self) -> Vec<f32> {
        match self {
            Val::Vec(v) => v,
            Val::Map {
                channels,
                total,
                h,
                w,
                data,
            } => {
                let plane = h * w;
                let mut out = vec![0f32; total * plane];
                for (k, &c) in channels.iter().enumerate() {
                    out[c * plane..(c + 1) * plane]
                        .copy_from_slice(&data[k * plane..(k + 1) * plane]);
                }
                out
            }
        }
    }
}

/// One step of the plan.
#[derive(Debug, Clone)]
enum Step {
    /// A conv with its BN folded in (when the BN alone reads it) and the ReLU fused (when the
    /// ReLU alone reads the BN); `head` gates its filters.
    Conv {
        geometry: ConvGeometry,
        /// `[out, in/groups, kh, kw]` folded weights and the bias (zero without one).
        weight: Vec<f32>,
        bias: Vec<f32>,
        relu: bool,
        head: Option<PlannedHead>,
    },
    /// A BatchNorm not folded into a conv: per-channel scale and shift.
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Relu,
    Pool {
        max: bool,
        attrs: Pool2d,
    },
    GlobalAvgPool,
    Flatten,
    Linear {
        weight: Vec<f32>,
        bias: Vec<f32>,
        in_features: usize,
    },
    Add,
    Concat,
    /// A no-op at inference (Dropout).
    Identity,
    /// A BN or ReLU folded into the conv before it: that conv writes this node's value.
    Folded,
}

/// What one pass measured: the MACs the convolutions really ran, and the filters kept.
#[derive(Debug, Clone, Default)]
pub struct DynamicStats {
    pub samples: u64,
    /// MACs of the convolutions as executed (the gathered sizes), summed over samples.
    pub conv_macs: f64,
    /// Active filters per gated conv, summed over samples.
    pub active: Vec<u64>,
}

/// A graph and its trained heads, ready for dynamic per-sample inference on the CPU.
pub struct DynamicNet {
    steps: Vec<Step>,
    inputs: Vec<Vec<usize>>,
    /// The slot each step writes: its own, or for a conv the last node folded into it.
    writes: Vec<usize>,
    output: usize,
    input_shape: Vec<usize>,
    gated: Vec<usize>,
}

fn param<'a>(weights: &'a Weights, name: &str) -> Result<&'a [f32]> {
    weights
        .get(name)
        .and_then(|a| a.as_slice())
        .ok_or_else(|| EngineError::invalid("dynamic inference", format!("no weight `{name}`")))
}

impl DynamicNet {
    /// Plans `graph` with `weights` and the heads of its gated convs. A head's gate must sit on
    /// the conv, its BN or the ReLU right after that BN (FTWT's placement).
    pub fn new(graph: &Graph, weights: &Weights, heads: &[GateHead]) -> Result<DynamicNet> {
        let shapes = infer_shapes(graph)?;
        let index: HashMap<&str, usize> = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i + 1))
            .collect();
        let slot = |v: &str| -> usize { if v == graph.input.name { 0 } else { index[v] } };
        let mut steps: Vec<Step> = vec![Step::Identity; graph.nodes.len()];
        let mut skip = vec![false; graph.nodes.len()];
        let mut writes: Vec<usize> = (1..=graph.nodes.len()).collect();
        let mut gated = Vec::new();
        for head in heads {
            let i = graph.node_index(&head.conv).ok_or_else(|| {
                EngineError::invalid(
                    "dynamic inference",
                    format!("no conv `{}` for a head", head.conv),
                )
            })?;
            gated.push(i);
        }
        // Stats follow the graph's order of the gated convs.
        gated.sort_unstable();
        for (i, node) in graph.nodes.iter().enumerate() {
            if skip[i] {
                continue;
            }
            steps[i] = match &node.op {
                Op::Conv2d(Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    groups,
                    bias,
                }) => {
                    let input = shapes.get(&node.inputs[0]);
                    let geometry = ConvGeometry {
                        batch: 1,
                        in_channels: *in_channels,
                        in_h: input[1],
                        in_w: input[2],
                        out_channels: *out_channels,
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                        dilation: *dilation,
                        groups: *groups,
                    };
                    let mut w = param(weights, &format!("{}.weight", node.name))?.to_vec();
                    let mut b = if *bias {
                        param(weights, &format!("{}.bias", node.name))?.to_vec()
                    } else {
                        vec![0.0; *out_channels]
                    };
                    // Fold the BN that alone reads the conv, then fuse the ReLU that alone
                    // reads the BN.
                    let mut end = node.name.clone();
                    let mut relu = false;
                    let mut bn_name: Option<String> = None;
                    if let Some(j) = graph.sole_reader(&node.name)
                        && let Op::BatchNorm(BatchNorm { eps, .. }) = graph.nodes[j].op
                    {
                        let bn = &graph.nodes[j].name;
                        let g = param(weights, &format!("{bn}.weight"))?;
                        let beta = param(weights, &format!("{bn}.bias"))?;
                        let mean = param(weights, &format!("{bn}.running_mean"))?;
                        let var = param(weights, &format!("{bn}.running_var"))?;
                        let per = w.len() / out_channels;
                        for o in 0..*out_channels {
                            let s = g[o] / (var[o] + eps as f32).sqrt();
                            w[o * per..(o + 1) * per].iter_mut().for_each(|v| *v *= s);
                            b[o] = (b[o] - mean[o]) * s + beta[o];
                        }
                        skip[j] = true;
                        steps[j] = Step::Folded;
                        end = bn.clone();
                        bn_name = Some(bn.clone());
                        if let Some(k) = graph.sole_reader(bn)
                            && matches!(graph.nodes[k].op, Op::Relu)
                        {
                            skip[k] = true;
                            steps[k] = Step::Folded;
                            relu = true;
                            end = graph.nodes[k].name.clone();
                        }
                    } else if let Some(k) = graph.sole_reader(&node.name)
                        && matches!(graph.nodes[k].op, Op::Relu)
                    {
                        // conv -> ReLU without a BN (LeNet): the ReLU goes into the epilogue.
                        skip[k] = true;
                        steps[k] = Step::Folded;
                        relu = true;
                        end = graph.nodes[k].name.clone();
                    }
                    let head = heads.iter().find(|h| h.conv == node.name).cloned();
                    if let Some(h) = &head {
                        // A 0/1 gate after the BN commutes with the ReLU, but one before the BN
                        // would leave the BN's shift in the gated channels.
                        let ok_place = h.gate_at == end
                            || (relu && bn_name.as_deref() == Some(h.gate_at.as_str()))
                            || (bn_name.is_none() && h.gate_at == node.name);
                        if !ok_place {
                            return Err(EngineError::invalid(
                                "dynamic inference",
                                format!(
                                    "the gate of `{}` sits on `{}`: dynamic inference needs it after the conv's BatchNorm (on `{end}`)",
                                    h.conv, h.gate_at
                                ),
                            ));
                        }
                        if h.weight.len() != out_channels * in_channels
                            || h.bias.len() != *out_channels
                        {
                            return Err(EngineError::invalid(
                                "dynamic inference",
                                format!(
                                    "the head of `{}` has {} weights and {} biases, the conv needs {}x{} and {}",
                                    h.conv,
                                    h.weight.len(),
                                    h.bias.len(),
                                    out_channels,
                                    in_channels,
                                    out_channels
                                ),
                            ));
                        }
                        if *groups > 1 && !(*groups == *in_channels && in_channels == out_channels)
                        {
                            return Err(EngineError::invalid(
                                "dynamic inference",
                                format!(
                                    "`{}`: gated grouped convolutions other than depthwise are not supported",
                                    h.conv
                                ),
                            ));
                        }
                    }
                    writes[i] = index[end.as_str()];
                    Step::Conv {
                        geometry,
                        weight: w,
                        bias: b,
                        relu,
                        head: head.as_ref().map(PlannedHead::new),
                    }
                }
                Op::BatchNorm(BatchNorm { eps, channels, .. }) => {
                    // (Folded BNs were skipped above.)
                    let n = &node.name;
                    let g = param(weights, &format!("{n}.weight"))?;
                    let beta = param(weights, &format!("{n}.bias"))?;
                    let mean = param(weights, &format!("{n}.running_mean"))?;
                    let var = param(weights, &format!("{n}.running_var"))?;
                    let scale: Vec<f32> = (0..*channels)
                        .map(|c| g[c] / (var[c] + *eps as f32).sqrt())
                        .collect();
                    let shift = (0..*channels)
                        .map(|c| beta[c] - mean[c] * scale[c])
                        .collect();
                    Step::Affine { scale, shift }
                }
                Op::Relu => Step::Relu,
                Op::Relu6 => {
                    return Err(EngineError::invalid(
                        "dynamic inference",
                        format!(
                            "node `{}`: ReLU6 is not supported by dynamic inference yet",
                            node.name
                        ),
                    ));
                }
                Op::MaxPool(attrs) => Step::Pool {
                    max: true,
                    attrs: *attrs,
                },
                Op::AvgPool(attrs) => Step::Pool {
                    max: false,
                    attrs: *attrs,
                },
                Op::GlobalAvgPool(g) if !g.keep_dims => Step::GlobalAvgPool,
                // FTWT gates the filters of plain CNNs (ReLU, pooling, residual adds); these
                // ops have no per-sample skipping rule here yet, so the network is refused
                // whole rather than run partly gated.
                op @ (Op::GlobalAvgPool(_)
                | Op::Activation(_)
                | Op::Mul
                | Op::Slice(_)
                | Op::ChannelShuffle(_)
                | Op::Affine(_)
                | Op::LayerNorm(_)
                | Op::GroupNorm(_)
                | Op::Resize(_)
                | Op::GlobalMaxPool(_)
                | Op::Pad(_)
                | Op::Tokenize
                | Op::ClassToken(_)
                | Op::PositionEmbedding(_)
                | Op::Attention(_)
                | Op::SpatialSlice(_)
                | Op::WindowAttention(_)
                | Op::TokenPool(_)) => {
                    return Err(EngineError::invalid(
                        "dynamic inference",
                        format!(
                            "node `{}`: {} is not supported by dynamic inference (FTWT runs \
                             networks of convs, BatchNorm, ReLU, pooling, Add and Concat)",
                            node.name,
                            match op {
                                Op::GlobalAvgPool(_) => "a global pool kept as a [C,1,1] map",
                                other => other.kind_name(),
                            }
                        ),
                    ));
                }
                Op::Flatten => Step::Flatten,
                Op::Linear(Linear {
                    in_features,
                    out_features,
                    bias,
                }) => Step::Linear {
                    weight: param(weights, &format!("{}.weight", node.name))?.to_vec(),
                    bias: if *bias {
                        param(weights, &format!("{}.bias", node.name))?.to_vec()
                    } else {
                        vec![0.0; *out_features]
                    },
                    in_features: *in_features,
                },
                Op::Add => Step::Add,
                Op::Concat => Step::Concat,
                Op::Dropout(Dropout { .. }) => Step::Identity,
            };
        }
        let inputs = graph
            .nodes
            .iter()
            .map(|n| n.inputs.iter().map(|v| slot(v)).collect())
            .collect();
        Ok(DynamicNet {
            steps,
            inputs,
            writes,
            output: slot(&graph.output),
            input_shape: graph.input.shape.clone(),
            gated,
        })
    }

    /// Logits of every sample of `input` (`n` samples, NCHW), and what the pass ran.
    pub fn forward(&self, input: &[f32], n: usize, stats: &mut DynamicStats) -> Result<Vec<f32>> {
        let per: usize = self.input_shape.iter().product();
        if input.len() != n * per {
            return Err(EngineError::invalid(
                "dynamic inference",
                format!(
                    "{} input values for {n} samples of shape {:?}",
                    input.len(),
                    self.input_shape
                ),
            ));
        }
        if stats.active.len() != self.gated.len() {
            stats.active = vec![0; self.gated.len()];
        }
        let mut out = Vec::new();
        for s in 0..n {
            out.extend(self.sample(&input[s * per..(s + 1) * per], stats));
        }
        stats.samples += n as u64;
        Ok(out)
    }

    fn sample(&self, x: &[f32], stats: &mut DynamicStats) -> Vec<f32> {
        let x = match self.input_shape.as_slice() {
            [c, h, w] => Val::Map {
                channels: (0..*c).collect(),
                total: *c,
                h: *h,
                w: *w,
                data: x.to_vec(),
            },
            _ => Val::Vec(x.to_vec()),
        };
        let mut slots: Vec<Option<Val>> = vec![None; self.steps.len() + 1];
        slots[0] = Some(x);
        // Last reader of every slot, so values are dropped (moved) as soon as possible.
        let mut last = vec![usize::MAX; self.steps.len() + 1];
        for (i, ins) in self.inputs.iter().enumerate() {
            for &v in ins {
                last[v] = i;
            }
        }
        // The output is read at the end, whoever else reads it.
        last[self.output] = usize::MAX;
        let mut gated_k = 0;
        for (i, step) in self.steps.iter().enumerate() {
            if matches!(step, Step::Folded) {
                continue;
            }
            let ins = &self.inputs[i];
            let arg = |k: usize, slots: &mut Vec<Option<Val>>| -> Val {
                let v = ins[k];
                // Moved at its last read only (a node may read one value twice: `Add(x, x)`).
                if last[v] == i && !ins[k + 1..].contains(&v) {
                    slots[v].take()
                } else {
                    slots[v].clone()
                }
                .expect("value computed before use")
            };
            let value = match step {
                Step::Conv {
                    geometry,
                    weight,
                    bias,
                    relu,
                    head,
                } => {
                    // Read in place: a block's input is read again by its residual sum, and a
                    // copy of it per sample costs as much as a small conv.
                    let v = ins[0];
                    let x = slots[v].as_ref().expect("value computed before use");
                    let y = conv(
                        geometry,
                        weight,
                        bias,
                        *relu,
                        head.as_ref(),
                        x,
                        stats,
                        gated_k,
                    );
                    if last[v] == i {
                        slots[v] = None;
                    }
                    if head.is_some() {
                        gated_k += 1;
                    }
                    y
                }
                Step::Affine { scale, shift } => affine(arg(0, &mut slots), scale, shift),
                Step::Relu => match arg(0, &mut slots) {
                    Val::Map {
                        channels,
                        total,
                        h,
                        w,
                        mut data,
                    } => {
                        data.iter_mut().for_each(|v| *v = v.max(0.0));
                        Val::Map {
                            channels,
                            total,
                            h,
                            w,
                            data,
                        }
                    }
                    Val::Vec(mut v) => {
                        v.iter_mut().for_each(|x| *x = x.max(0.0));
                        Val::Vec(v)
                    }
                },
                Step::Pool { max, attrs } => pool(arg(0, &mut slots), *max, attrs),
                Step::GlobalAvgPool => match arg(0, &mut slots) {
                    Val::Map {
                        channels,
                        total,
                        h,
                        w,
                        data,
                    } => {
                        let plane = h * w;
                        let means: Vec<f32> = (0..channels.len())
                            .map(|k| sum(&data[k * plane..(k + 1) * plane]) / plane as f32)
                            .collect();
                        Val::Map {
                            channels,
                            total,
                            h: 1,
                            w: 1,
                            data: means,
                        }
                    }
                    v => v,
                },
                Step::Flatten => Val::Vec(arg(0, &mut slots).dense()),
                Step::Linear {
                    weight,
                    bias,
                    in_features,
                } => {
                    let x = arg(0, &mut slots).dense();
                    let y = bias
                        .iter()
                        .enumerate()
                        .map(|(o, b)| dot(&weight[o * in_features..(o + 1) * in_features], &x) + b)
                        .collect();
                    Val::Vec(y)
                }
                Step::Add => {
                    let mut acc = arg(0, &mut slots);
                    for k in 1..self.inputs[i].len() {
                        acc = add(acc, arg(k, &mut slots));
                    }
                    acc
                }
                Step::Concat => {
                    let parts: Vec<Val> = (0..self.inputs[i].len())
                        .map(|k| arg(k, &mut slots))
                        .collect();
                    concat(parts)
                }
                Step::Identity => arg(0, &mut slots),
                Step::Folded => unreachable!("skipped above"),
            };
            slots[self.writes[i]] = Some(value);
        }
        slots[self.output]
            .take()
            .map(Val::dense)
            .unwrap_or_default()
    }
}

/// The sorted union of two channel lists, with each list's positions in it.
fn union(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x == y => {
                i += 1;
                j += 1;
                x
            }
            (Some(&x), Some(&y)) if x < y => {
                i += 1;
                x
            }
            (Some(_), Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, Some(&y)) => {
                j += 1;
                y
            }
            (None, None) => unreachable!(),
        };
        out.push(next);
    }
    out
}

/// Where each of the sorted channels `sub` sits in the sorted `set`, or `None` when one is
/// missing.
fn positions(set: &[usize], sub: &[usize]) -> Option<Vec<usize>> {
    let mut out = Vec::with_capacity(sub.len());
    let mut pos = 0;
    for &c in sub {
        while pos < set.len() && set[pos] < c {
            pos += 1;
        }
        if pos == set.len() || set[pos] != c {
            return None;
        }
        out.push(pos);
    }
    Some(out)
}

fn add(a: Val, b: Val) -> Val {
    match (a, b) {
        (
            Val::Map {
                channels: ca,
                total,
                h,
                w,
                data: da,
            },
            Val::Map {
                channels: cb,
                data: db,
                ..
            },
        ) => {
            let plane = h * w;
            if ca == cb {
                let mut data = da;
                data.iter_mut().zip(&db).for_each(|(x, y)| *x += y);
                return Val::Map {
                    channels: ca,
                    total,
                    h,
                    w,
                    data,
                };
            }
            // One side live on every channel the other has (the identity path of a residual
            // block against a gated conv): add the smaller into the larger where it lies.
            let (big, small) = if ca.len() >= cb.len() {
                ((ca, da), (cb, db))
            } else {
                ((cb, db), (ca, da))
            };
            if let Some(at) = positions(&big.0, &small.0) {
                let (channels, mut data) = big;
                for (k, pos) in at.into_iter().enumerate() {
                    data[pos * plane..(pos + 1) * plane]
                        .iter_mut()
                        .zip(&small.1[k * plane..(k + 1) * plane])
                        .for_each(|(d, s)| *d += s);
                }
                return Val::Map {
                    channels,
                    total,
                    h,
                    w,
                    data,
                };
            }
            let ((ca, da), (cb, db)) = (big, small);
            let channels = union(&ca, &cb);
            let mut data = vec![0f32; channels.len() * plane];
            for (src, list) in [(&da, &ca), (&db, &cb)] {
                let mut pos = 0;
                for (k, c) in list.iter().enumerate() {
                    while channels[pos] != *c {
                        pos += 1;
                    }
                    let dst = &mut data[pos * plane..(pos + 1) * plane];
                    for (d, s) in dst.iter_mut().zip(&src[k * plane..(k + 1) * plane]) {
                        *d += s;
                    }
                }
            }
            Val::Map {
                channels,
                total,
                h,
                w,
                data,
            }
        }
        (a, b) => Val::Vec(
            a.dense()
                .iter()
                .zip(b.dense())
                .map(|(x, y)| x + y)
                .collect(),
        ),
    }
}

fn concat(parts: Vec<Val>) -> Val {
    let (mut channels, mut data, mut offset, mut hw) = (Vec::new(), Vec::new(), 0, (0, 0));
    let mut vecs = Vec::new();
    for p in parts {
        match p {
            Val::Map {
                channels: c,
                total,
                h,
                w,
                data: d,
            } => {
                channels.extend(c.iter().map(|x| x + offset));
                data.extend(d);
                offset += total;
                hw = (h, w);
            }
            Val::Vec(v) => vecs.extend(v),
        }
    }
    if !vecs.is_empty() {
        return Val::Vec(vecs);
    }
    Val::Map {
        channels,
        total: offset,
        h: hw.0,
        w: hw.1,
        data,
    }
}

fn affine(x: Val, scale: &[f32], shift: &[f32]) -> Val {
    // Zero channels become `shift`: a standalone BN makes every channel live.
    let dense = match x {
        Val::Map { total, h, w, .. } => (total, h, w, x.dense()),
        Val::Vec(v) => {
            return Val::Vec(
                v.iter()
                    .enumerate()
                    .map(|(c, x)| x * scale[c] + shift[c])
                    .collect(),
            );
        }
    };
    let (total, h, w, mut data) = dense;
    let plane = h * w;
    for c in 0..total {
        data[c * plane..(c + 1) * plane]
            .iter_mut()
            .for_each(|v| *v = *v * scale[c] + shift[c]);
    }
    Val::Map {
        channels: (0..total).collect(),
        total,
        h,
        w,
        data,
    }
}

fn pool(x: Val, max: bool, attrs: &Pool2d) -> Val {
    let Val::Map {
        channels,
        total,
        h,
        w,
        data,
    } = x
    else {
        return x;
    };
    // Shape inference checked the window fits when the plan was built.
    let (oh, ow) = (
        attrs.out_len(0, h).unwrap_or(1),
        attrs.out_len(1, w).unwrap_or(1),
    );
    let out = if max {
        // The inference kernel (no argmax), as the dense executor's evaluation uses.
        let g = shears_kernels::PoolGeometry {
            batch: 1,
            channels: data.len() / (h * w).max(1),
            in_h: h,
            in_w: w,
            out_h: oh,
            out_w: ow,
            kernel: attrs.kernel,
            stride: attrs.stride,
            padding: attrs.padding,
        };
        let mut y = vec![0.0; g.channels * oh * ow];
        shears_kernels::max_pool2d_forward(&g, &data, &mut y);
        y
    } else {
        shears_core::ops::pool_planes(&data, [h, w], [oh, ow], attrs, max)
    };
    Val::Map {
        channels,
        total,
        h: oh,
        w: ow,
        data: out,
    }
}

/// One conv of one sample: the head picks the filters; a 3x3 conv with padding 1 and stride 1
/// or 2 reads their weights in place ([`conv3x3_selected`]), any other gathers the live input channels' weights of the
/// active filters and runs one smaller convolution.
#[allow(clippy::too_many_arguments)]
fn conv(
    g: &ConvGeometry,
    weight: &[f32],
    bias: &[f32],
    relu: bool,
    head: Option<&PlannedHead>,
    x: &Val,
    stats: &mut DynamicStats,
    gated_k: usize,
) -> Val {
    let all: Vec<usize>;
    let (live_in, data): (&[usize], &[f32]) = match x {
        Val::Map { channels, data, .. } => (channels, data),
        Val::Vec(v) => {
            all = (0..g.in_channels).collect();
            (&all, v)
        }
    };
    let plane = g.in_h * g.in_w;
    let active: Vec<usize> = match head {
        Some(h) => {
            let mut means = vec![0f32; live_in.len()];
            plane_means(data, plane, &mut means);
            let mut pooled = vec![0f32; g.in_channels];
            for (&c, m) in live_in.iter().zip(means) {
                pooled[c] = m;
            }
            let a = h.active(&pooled);
            stats.active[gated_k] += a.len() as u64;
            a
        }
        None => (0..g.out_channels).collect(),
    };
    let (oh, ow) = (g.out_h(), g.out_w());
    let k2 = g.kernel[0] * g.kernel[1];
    if let Some(stride) = selected_stride(g) {
        // The common case: the active filters' weights read in place on the compact input.
        let mut out = vec![0f32; active.len() * oh * ow];
        stats.conv_macs += (active.len() * live_in.len() * k2 * oh * ow) as f64;
        conv3x3_selected(
            Selection {
                weight,
                bias,
                in_channels: g.in_channels,
                filters: &active,
                channels: live_in,
            },
            g.in_h,
            g.in_w,
            stride,
            data,
            relu,
            &mut out,
        );
        return Val::Map {
            channels: active,
            total: g.out_channels,
            h: oh,
            w: ow,
            data: out,
        };
    }
    let depthwise = g.groups > 1 && g.groups == g.in_channels && g.in_channels == g.out_channels;
    let everything = active.len() == g.out_channels && live_in.len() == g.in_channels;
    let (sub, input, sub_weight): (ConvGeometry, Cow<[f32]>, Cow<[f32]>) = if everything {
        // Every filter on every channel: the planned weights as they are, no copy.
        (*g, Cow::Borrowed(data), Cow::Borrowed(weight))
    } else if depthwise {
        // Active filter c reads input channel c: zeros where that channel is not live.
        let mut input = vec![0f32; active.len() * plane];
        let mut pos = 0;
        for (k, &c) in active.iter().enumerate() {
            while pos < live_in.len() && live_in[pos] < c {
                pos += 1;
            }
            if pos < live_in.len() && live_in[pos] == c {
                input[k * plane..(k + 1) * plane]
                    .copy_from_slice(&data[pos * plane..(pos + 1) * plane]);
            }
        }
        let w = active
            .iter()
            .flat_map(|&c| weight[c * k2..(c + 1) * k2].iter().copied())
            .collect();
        let sub = ConvGeometry {
            in_channels: active.len(),
            out_channels: active.len(),
            groups: active.len().max(1),
            ..*g
        };
        (sub, Cow::Owned(input), Cow::Owned(w))
    } else if g.groups > 1 {
        // Grouped (not depthwise) and ungated (gated ones are refused when planning): the
        // whole input, every filter, the original geometry.
        let mut dense = vec![0f32; g.in_channels * plane];
        for (k, &c) in live_in.iter().enumerate() {
            dense[c * plane..(c + 1) * plane].copy_from_slice(&data[k * plane..(k + 1) * plane]);
        }
        (*g, Cow::Owned(dense), Cow::Borrowed(weight))
    } else {
        let ci = g.in_channels / g.groups;
        // Live channels in runs of consecutive indices: one copy per run and filter (one per
        // filter when every channel is live) instead of one per channel.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &c in live_in {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == c => *len += 1,
                _ => runs.push((c, 1)),
            }
        }
        let mut w = Vec::with_capacity(active.len() * live_in.len() * k2);
        for &o in &active {
            for &(c, len) in &runs {
                let base = (o * ci + c) * k2;
                w.extend_from_slice(&weight[base..base + len * k2]);
            }
        }
        let sub = ConvGeometry {
            in_channels: live_in.len(),
            out_channels: active.len(),
            groups: 1,
            ..*g
        };
        (sub, Cow::Borrowed(data), Cow::Owned(w))
    };
    let sub_bias: Cow<[f32]> = if active.len() == g.out_channels {
        Cow::Borrowed(bias)
    } else {
        Cow::Owned(active.iter().map(|&o| bias[o]).collect())
    };
    let mut out = vec![0f32; active.len() * oh * ow];
    if !active.is_empty() && sub.in_channels > 0 {
        stats.conv_macs +=
            (sub.out_channels * (sub.in_channels / sub.groups) * k2 * oh * ow) as f64;
        conv2d_forward(
            &sub,
            &input,
            &sub_weight,
            Epilogue {
                bias: Some(&sub_bias),
                residual: None,
                relu,
            },
            &mut out,
        );
    } else {
        // No live input: every active filter outputs its bias.
        for (k, b) in sub_bias.iter().enumerate() {
            let v = if relu { b.max(0.0) } else { *b };
            out[k * oh * ow..(k + 1) * oh * ow].fill(v);
        }
    }
    Val::Map {
        channels: active,
        total: g.out_channels,
        h: oh,
        w: ow,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::gates_on;

    #[test]
    fn gates_switch_on_positive_logits_and_keep_one_only_when_asked() {
        assert_eq!(gates_on(&[0.5, -1.0, 0.0], true), vec![true, false, false]);
        // All off: the first of the largest stays on with keep_one, nothing without.
        assert_eq!(
            gates_on(&[-3.0, -0.5, -0.5], true),
            vec![false, true, false]
        );
        assert_eq!(gates_on(&[-3.0, -0.5, -0.5], false), vec![false; 3]);
        assert!(gates_on(&[], true).is_empty());
    }
}
