//! Exact effective sparsity: which unpruned weights lie on at least one input→output path.
//!
//! Reachability runs in the boolean semiring (multiply → AND, add → OR) at unit level: every
//! (channel, h, w) of a feature map and every feature of a vector is a unit. Forward reachability
//! starts from all input units, backward reachability from all output units; a weight is *active*
//! iff it is unpruned and some use of it (an output position and its input tap) joins a
//! forward-reachable input unit to a backward-reachable output unit. Zero-padding taps reach
//! nothing; pooling is an OR over the window without padding; BN, ReLU and dropout pass units
//! through; biases are not paths (this is the boolean version of ES's linearised SynFlow pass).
//!
//! Layout: a value's activity is position-major with one channel bitset per spatial position
//! (`words = ceil(C/64)` u64 words per position; channel `c` is bit `c % 64` of word `c / 64`).
//! A `[F]` vector is one position with F channels, so a linear layer is a 1×1 conv on a 1×1 map.
//! A conv tap is then a word-wise AND (forward) or OR (backward) over input channels.
//!
//! Which step a node becomes comes from its op's [`ChannelFlow`], not from the op itself, so an
//! op with a known flow needs nothing here.

use crate::error::{CoreError, Result};
use crate::graph::Graph;
use crate::ops::ChannelFlow;
use crate::shape::infer_shapes;
use crate::sparsity::flat_keeps;
use crate::sparsity::quotas::{LayerInfo, layer_infos};
use crate::weights::Masks;
use ndarray::{ArrayD, IxDyn};
use serde::{Serialize, Serializer};
use std::collections::HashMap;

/// Direct and effective sparsity of one prunable tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSparsity {
    pub tensor: String,
    pub total: u64,
    /// Weights the mask keeps.
    pub unpruned: u64,
    /// Unpruned weights on at least one input→output path.
    pub active: u64,
    pub direct_sparsity: f64,
    pub effective_sparsity: f64,
}

/// Direct and effective sparsity over all prunable tensors (conv and linear weights).
///
/// Compression is `1/(1 - sparsity)`; it is `f64::INFINITY` when everything is pruned or
/// inactive, and serialises as JSON `null` in that case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparsityReport {
    pub total: u64,
    pub unpruned: u64,
    pub active: u64,
    pub direct_sparsity: f64,
    pub effective_sparsity: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub direct_compression: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub effective_compression: f64,
    pub layers: Vec<LayerSparsity>,
}

fn finite_or_null<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

/// Effective keep-masks (active weights) for every prunable tensor; a tensor without a mask is
/// treated as dense.
pub fn effective_masks(graph: &Graph, masks: &Masks) -> Result<Masks> {
    let plan = Plan::new(graph)?;
    let keeps = flat_keeps(graph, &plan.layers, masks)?;
    let refs: Vec<Option<&[bool]>> = keeps.iter().map(|k| k.as_deref()).collect();
    let run = plan.run(&refs, true);
    let mut out = Masks::new();
    for (layer, flags) in plan.layers.iter().zip(run.masks.unwrap_or_default()) {
        let arr = ArrayD::from_shape_vec(IxDyn(&layer.shape), flags)
            .map_err(|e| CoreError::tensor(&layer.name, format!("effective mask: {e}")))?;
        out.insert(layer.name.clone(), arr);
    }
    Ok(out)
}

/// Direct and effective sparsity of `masks` on `graph`, per prunable tensor and overall.
pub fn sparsity_report(graph: &Graph, masks: &Masks) -> Result<SparsityReport> {
    let plan = Plan::new(graph)?;
    let keeps = flat_keeps(graph, &plan.layers, masks)?;
    let refs: Vec<Option<&[bool]>> = keeps.iter().map(|k| k.as_deref()).collect();
    let run = plan.run(&refs, false);
    Ok(run.report(&plan.layers))
}

fn fraction_removed(total: u64, left: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        1.0 - left as f64 / total as f64
    }
}

fn compression(sparsity: f64) -> f64 {
    if sparsity >= 1.0 {
        f64::INFINITY
    } else {
        1.0 / (1.0 - sparsity)
    }
}

const NONE: usize = usize::MAX;

/// Sliding-window geometry: for every output row/column and kernel offset, the input row/column
/// it reads, or `NONE` for padding.
#[derive(Debug)]
struct Window {
    in_w: usize,
    out_h: usize,
    out_w: usize,
    kh: usize,
    kw: usize,
    rows: Vec<usize>,
    cols: Vec<usize>,
}

impl Window {
    fn new(
        input: [usize; 2],
        output: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> Self {
        let axis = |a: usize| -> Vec<usize> {
            let mut t = Vec::with_capacity(output[a] * kernel[a]);
            for o in 0..output[a] {
                for k in 0..kernel[a] {
                    let v = o * stride[a] + k * dilation[a];
                    t.push(if v < padding[a] || v - padding[a] >= input[a] {
                        NONE
                    } else {
                        v - padding[a]
                    });
                }
            }
            t
        };
        Window {
            in_w: input[1],
            out_h: output[0],
            out_w: output[1],
            kh: kernel[0],
            kw: kernel[1],
            rows: axis(0),
            cols: axis(1),
        }
    }

    /// A 1×1 window on a 1×1 map: a linear layer.
    fn point() -> Self {
        Window::new([1, 1], [1, 1], [1, 1], [1, 1], [0, 0], [1, 1])
    }

    fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// Calls `f(p_out, tap, p_in)` for every in-bounds tap of every output position, in
    /// row-major output order; `f` returning `true` skips the rest of that position's taps.
    #[inline]
    fn for_each(&self, mut f: impl FnMut(usize, usize, usize) -> bool) {
        for oy in 0..self.out_h {
            for ox in 0..self.out_w {
                let p_out = oy * self.out_w + ox;
                'taps: for ky in 0..self.kh {
                    let iy = self.rows[oy * self.kh + ky];
                    if iy == NONE {
                        continue;
                    }
                    for kx in 0..self.kw {
                        let ix = self.cols[ox * self.kw + kx];
                        if ix == NONE {
                            continue;
                        }
                        if f(p_out, ky * self.kw + kx, iy * self.in_w + ix) {
                            break 'taps;
                        }
                    }
                }
            }
        }
    }

    /// Like [`Window::for_each`] for one output position.
    #[inline]
    fn for_each_at(&self, p_out: usize, mut f: impl FnMut(usize, usize)) {
        let (oy, ox) = (p_out / self.out_w, p_out % self.out_w);
        for ky in 0..self.kh {
            let iy = self.rows[oy * self.kh + ky];
            if iy == NONE {
                continue;
            }
            for kx in 0..self.kw {
                let ix = self.cols[ox * self.kw + kx];
                if ix != NONE {
                    f(ky * self.kw + kx, iy * self.in_w + ix);
                }
            }
        }
    }
}

/// Channels, positions and words per position of one stored value.
#[derive(Debug, Clone, Copy)]
struct ValueInfo {
    channels: usize,
    positions: usize,
    words: usize,
}

impl ValueInfo {
    fn of(shape: &[usize]) -> Self {
        let (channels, positions) = match shape {
            [c, h, w] => (*c, h * w),
            [t, c] => (*c, *t),
            _ => (shape.iter().product(), 1),
        };
        ValueInfo {
            channels,
            positions,
            words: channels.div_ceil(64),
        }
    }

    fn zeros(&self) -> Vec<u64> {
        vec![0; self.positions * self.words]
    }

    fn ones(&self) -> Vec<u64> {
        let mut v = self.zeros();
        for p in 0..self.positions {
            for c in 0..self.channels {
                v[p * self.words + c / 64] |= 1 << (c % 64);
            }
        }
        v
    }
}

#[inline]
fn get_bit(words: &[u64], bit: usize) -> bool {
    words[bit / 64] >> (bit % 64) & 1 == 1
}

#[inline]
fn set_bit(words: &mut [u64], bit: usize) {
    words[bit / 64] |= 1 << (bit % 64);
}

/// Calls `f` with the index of every set bit.
#[inline]
fn for_each_set_bit(words: &[u64], mut f: impl FnMut(usize)) {
    for (i, &w) in words.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            f(i * 64 + w.trailing_zeros() as usize);
            w &= w - 1;
        }
    }
}

#[inline]
fn or_into(dst: &mut [u64], src: &[u64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d |= s;
    }
}

#[derive(Debug)]
enum Step {
    /// Conv or linear; `layer` indexes the prunable tensors.
    Weighted {
        layer: usize,
        input: usize,
        output: usize,
        win: Window,
        c_in: usize,
        c_out: usize,
        groups: usize,
    },
    Pool {
        input: usize,
        output: usize,
        win: Window,
    },
    GlobalPool {
        input: usize,
        output: usize,
    },
    Flatten {
        input: usize,
        output: usize,
    },
    Elementwise {
        inputs: Vec<usize>,
        output: usize,
    },
    /// Every output channel of a position reads every input channel of it (LayerNorm).
    Mix {
        input: usize,
        output: usize,
    },
    /// Every output of a block of channels reads every input of that block (GroupNorm).
    GroupMix {
        input: usize,
        output: usize,
        groups: usize,
    },
    /// Output position `p` of channel `c` reads input positions `sources[p]` of channel `c`.
    Resample {
        input: usize,
        output: usize,
        sources: Vec<Vec<usize>>,
    },
    /// Output channel `c` copies input channel `source[c]` at every position (slice, shuffle).
    Gather {
        input: usize,
        output: usize,
        source: Vec<usize>,
    },
    Concat {
        inputs: Vec<usize>,
        output: usize,
    },
    /// Attention: output unit (t, h, d) reads value channel (h, d) of every token and every query
    /// channel of head h at token t and key channel of head h at every token.
    Heads {
        input: usize,
        output: usize,
        heads: usize,
        head_dim: usize,
    },
}

/// Kernel connectivity of one conv/linear layer: for every (output channel, tap) a bitset over
/// the input-channel words its group touches (`span[g]` words from word `base[g]`, stride `gw`).
struct Kernel {
    bits: Vec<u64>,
    gw: usize,
    taps: usize,
    ig: usize,
    og: usize,
    base: Vec<usize>,
    span: Vec<usize>,
}

impl Kernel {
    fn new(c_in: usize, c_out: usize, groups: usize, taps: usize, keep: Option<&[bool]>) -> Self {
        let (ig, og) = (c_in / groups, c_out / groups);
        let base: Vec<usize> = (0..groups).map(|g| g * ig / 64).collect();
        let span: Vec<usize> = (0..groups)
            .map(|g| ((g + 1) * ig - 1) / 64 - base[g] + 1)
            .collect();
        let gw = span.iter().copied().max().unwrap_or(1);
        let mut bits = vec![0u64; c_out * taps * gw];
        for o in 0..c_out {
            let g = o / og;
            for i in 0..ig {
                let ch = g * ig + i;
                let (word, bit) = (ch / 64 - base[g], 1u64 << (ch % 64));
                let first = (o * ig + i) * taps;
                for t in 0..taps {
                    if keep.is_none_or(|k| k[first + t]) {
                        bits[(o * taps + t) * gw + word] |= bit;
                    }
                }
            }
        }
        Kernel {
            bits,
            gw,
            taps,
            ig,
            og,
            base,
            span,
        }
    }

    /// Words of output channel `o`, tap `t` (only the group's span).
    #[inline]
    fn at(&self, o: usize, t: usize) -> std::ops::Range<usize> {
        let start = (o * self.taps + t) * self.gw;
        start..start + self.span[o / self.og]
    }

    fn channel_words(&self, o: usize) -> &[u64] {
        &self.bits[o * self.taps * self.gw..(o + 1) * self.taps * self.gw]
    }
}

/// Per-layer result of one reachability run.
pub(crate) struct Run {
    pub unpruned: Vec<u64>,
    pub active: Vec<u64>,
    /// Row-major effective keep-flags per layer, when asked for.
    pub masks: Option<Vec<Vec<bool>>>,
}

impl Run {
    /// Fraction of all prunable weights that are inactive.
    pub fn effective_sparsity(&self, total: u64) -> f64 {
        fraction_removed(total, self.active.iter().sum())
    }

    pub fn report(&self, layers: &[LayerInfo]) -> SparsityReport {
        let mut out = Vec::with_capacity(layers.len());
        for (l, layer) in layers.iter().enumerate() {
            let total = layer.numel() as u64;
            out.push(LayerSparsity {
                tensor: layer.name.clone(),
                total,
                unpruned: self.unpruned[l],
                active: self.active[l],
                direct_sparsity: fraction_removed(total, self.unpruned[l]),
                effective_sparsity: fraction_removed(total, self.active[l]),
            });
        }
        let total: u64 = out.iter().map(|l| l.total).sum();
        let unpruned: u64 = self.unpruned.iter().sum();
        let active: u64 = self.active.iter().sum();
        let direct = fraction_removed(total, unpruned);
        let effective = fraction_removed(total, active);
        SparsityReport {
            total,
            unpruned,
            active,
            direct_sparsity: direct,
            effective_sparsity: effective,
            direct_compression: compression(direct),
            effective_compression: compression(effective),
            layers: out,
        }
    }
}

/// The graph compiled for repeated reachability runs (the effective-target search reuses it).
/// Pass-through ops (BN, ReLU, dropout) alias their input's storage instead of copying it.
pub(crate) struct Plan {
    pub layers: Vec<LayerInfo>,
    values: Vec<ValueInfo>,
    steps: Vec<Step>,
    input: usize,
    output: usize,
}

impl Plan {
    pub fn new(graph: &Graph) -> Result<Self> {
        let shapes = infer_shapes(graph)?;
        let layers = layer_infos(graph);
        let mut values = vec![ValueInfo::of(&graph.input.shape)];
        let mut storage: HashMap<&str, usize> = HashMap::new();
        storage.insert(&graph.input.name, 0);
        let mut steps = Vec::new();
        let mut layer = 0;
        for node in &graph.nodes {
            let ins: Vec<usize> = node.inputs.iter().map(|i| storage[i.as_str()]).collect();
            let in_shape = shapes.get(&node.inputs[0]);
            let out_shape = shapes.get(&node.name);
            let (input, output) = (ins[0], values.len());
            let hw = |s: &[usize]| [s[1], s[2]];
            let step = match node.op.channel_flow() {
                ChannelFlow::Filters { groups, window } => {
                    let win = match window {
                        Some(w) => Window::new(
                            hw(in_shape),
                            hw(out_shape),
                            w.kernel,
                            w.stride,
                            w.padding,
                            w.dilation,
                        ),
                        // A linear layer on tokens: a 1×1 window over the tokens.
                        None if in_shape.len() == 2 => {
                            let t = in_shape[0];
                            Window::new([1, t], [1, t], [1, 1], [1, 1], [0, 0], [1, 1])
                        }
                        None => Window::point(),
                    };
                    let c_in = crate::shape::channels(in_shape);
                    layer += 1;
                    Step::Weighted {
                        layer: layer - 1,
                        input,
                        output,
                        win,
                        c_in,
                        c_out: crate::shape::channels(out_shape),
                        groups: groups.count(c_in),
                    }
                }
                ChannelFlow::PoolWindow(w) => Step::Pool {
                    input,
                    output,
                    win: Window::new(
                        hw(in_shape),
                        hw(out_shape),
                        w.kernel,
                        w.stride,
                        w.padding,
                        w.dilation,
                    ),
                },
                ChannelFlow::PoolGlobal => Step::GlobalPool { input, output },
                ChannelFlow::Flatten => Step::Flatten { input, output },
                ChannelFlow::Elementwise => Step::Elementwise {
                    inputs: ins,
                    output,
                },
                ChannelFlow::Concat => Step::Concat {
                    inputs: ins,
                    output,
                },
                ChannelFlow::Slice { start } => Step::Gather {
                    input,
                    output,
                    source: (start..start + out_shape[0]).collect(),
                },
                ChannelFlow::Shuffle { groups } => {
                    let shuffle = crate::ops::ChannelShuffle { groups };
                    let c = out_shape[0];
                    Step::Gather {
                        input,
                        output,
                        source: (0..c).map(|j| shuffle.source(j, c)).collect(),
                    }
                }
                ChannelFlow::MixChannels => Step::Mix { input, output },
                ChannelFlow::GroupMix { groups } => Step::GroupMix {
                    input,
                    output,
                    groups,
                },
                ChannelFlow::Pad(pad) => Step::Resample {
                    input,
                    output,
                    sources: pad
                        .sources(hw(in_shape))
                        .into_iter()
                        .map(|q| q.into_iter().collect())
                        .collect(),
                },
                ChannelFlow::Crop(c) => Step::Resample {
                    input,
                    output,
                    sources: c
                        .sources(hw(in_shape))
                        .into_iter()
                        .map(|q| vec![q])
                        .collect(),
                },
                ChannelFlow::Resample(r) => Step::Resample {
                    input,
                    output,
                    sources: r
                        .taps(hw(in_shape))
                        .into_iter()
                        .map(|t| t.into_iter().map(|(q, _)| q).collect())
                        .collect(),
                },
                ChannelFlow::PassThrough => {
                    storage.insert(&node.name, input);
                    continue;
                }
                // The learned token reads nothing; token t+1 is input token t.
                ChannelFlow::PrependToken => Step::Resample {
                    input,
                    output,
                    sources: std::iter::once(Vec::new())
                        .chain((0..in_shape[0]).map(|t| vec![t]))
                        .collect(),
                },
                ChannelFlow::FirstToken => Step::Resample {
                    input,
                    output,
                    sources: vec![vec![0]],
                },
                ChannelFlow::Heads { heads, head_dim } => Step::Heads {
                    input,
                    output,
                    heads,
                    head_dim,
                },
            };
            values.push(ValueInfo::of(out_shape));
            storage.insert(&node.name, output);
            steps.push(step);
        }
        debug_assert_eq!(layer, layers.len());
        Ok(Plan {
            layers,
            values,
            steps,
            input: 0,
            output: storage[graph.output.as_str()],
        })
    }

    /// Total number of prunable weights.
    pub fn total(&self) -> u64 {
        self.layers.iter().map(|l| l.numel() as u64).sum()
    }

    /// One forward and one backward reachability pass. `keeps[l]` is layer `l`'s row-major
    /// keep-flags (`None` = dense); lengths must match the layer sizes.
    pub fn run(&self, keeps: &[Option<&[bool]>], want_masks: bool) -> Run {
        let n_layers = self.layers.len();
        let mut kernels: Vec<Option<Kernel>> = (0..n_layers).map(|_| None).collect();
        let mut f: Vec<Vec<u64>> = vec![Vec::new(); self.values.len()];
        f[self.input] = self.values[self.input].ones();
        for step in &self.steps {
            match step {
                Step::Weighted {
                    layer,
                    input,
                    output,
                    win,
                    c_in,
                    c_out,
                    groups,
                } => {
                    let k = Kernel::new(*c_in, *c_out, *groups, win.taps(), keeps[*layer]);
                    f[*output] = self.conv_forward(&k, win, &f[*input], *input, *output);
                    kernels[*layer] = Some(k);
                }
                Step::Pool { input, output, win } => {
                    let w = self.values[*input].words;
                    let fin = &f[*input];
                    let mut out = self.values[*output].zeros();
                    win.for_each(|p_out, _, p_in| {
                        or_into(
                            &mut out[p_out * w..(p_out + 1) * w],
                            &fin[p_in * w..(p_in + 1) * w],
                        );
                        false
                    });
                    f[*output] = out;
                }
                Step::GlobalPool { input, output } => {
                    let w = self.values[*input].words;
                    let mut out = self.values[*output].zeros();
                    for chunk in f[*input].chunks_exact(w) {
                        or_into(&mut out, chunk);
                    }
                    f[*output] = out;
                }
                Step::Flatten { input, output } => {
                    let vi = self.values[*input];
                    let mut out = self.values[*output].zeros();
                    for (p, chunk) in f[*input].chunks_exact(vi.words).enumerate() {
                        for_each_set_bit(chunk, |c| set_bit(&mut out, c * vi.positions + p));
                    }
                    f[*output] = out;
                }
                Step::Elementwise { inputs, output } => {
                    // An input with fewer positions is a [C,1,1] value broadcast over them.
                    let vo = self.values[*output];
                    let mut out = vo.zeros();
                    for i in inputs {
                        if self.values[*i].positions == vo.positions {
                            or_into(&mut out, &f[*i]);
                        } else {
                            for chunk in out.chunks_exact_mut(vo.words) {
                                or_into(chunk, &f[*i]);
                            }
                        }
                    }
                    f[*output] = out;
                }
                Step::Mix { input, output } => {
                    let vo = self.values[*output];
                    let mut out = vo.zeros();
                    let full = vo.ones();
                    for (p, chunk) in f[*input].chunks_exact(vo.words).enumerate() {
                        if chunk.iter().any(|&w| w != 0) {
                            out[p * vo.words..(p + 1) * vo.words]
                                .copy_from_slice(&full[..vo.words]);
                        }
                    }
                    f[*output] = out;
                }
                Step::GroupMix {
                    input,
                    output,
                    groups,
                } => {
                    let vi = self.values[*input];
                    let live = block_activity(&f[*input], vi, *groups);
                    f[*output] = blocks_to_units(&live, self.values[*output], *groups);
                }
                Step::Resample {
                    input,
                    output,
                    sources,
                } => {
                    let (vi, vo) = (self.values[*input], self.values[*output]);
                    let mut out = vo.zeros();
                    for (p, srcs) in sources.iter().enumerate() {
                        for &q in srcs {
                            or_into(
                                &mut out[p * vo.words..(p + 1) * vo.words],
                                &f[*input][q * vi.words..(q + 1) * vi.words],
                            );
                        }
                    }
                    f[*output] = out;
                }
                Step::Gather {
                    input,
                    output,
                    source,
                } => {
                    let (vi, vo) = (self.values[*input], self.values[*output]);
                    let mut out = vo.zeros();
                    for p in 0..vo.positions {
                        let src = &f[*input][p * vi.words..(p + 1) * vi.words];
                        let dst = &mut out[p * vo.words..(p + 1) * vo.words];
                        for (c, &s) in source.iter().enumerate() {
                            if get_bit(src, s) {
                                set_bit(dst, c);
                            }
                        }
                    }
                    f[*output] = out;
                }
                Step::Concat { inputs, output } => {
                    let vo = self.values[*output];
                    let mut out = vo.zeros();
                    let mut offset = 0;
                    for i in inputs {
                        let vi = self.values[*i];
                        for (p, chunk) in f[*i].chunks_exact(vi.words).enumerate() {
                            let dst = &mut out[p * vo.words..(p + 1) * vo.words];
                            for_each_set_bit(chunk, |c| set_bit(dst, offset + c));
                        }
                        offset += vi.channels;
                    }
                    f[*output] = out;
                }
                Step::Heads {
                    input,
                    output,
                    heads,
                    head_dim,
                } => {
                    let (vi, vo) = (self.values[*input], self.values[*output]);
                    let (width, t) = (heads * head_dim, vi.positions);
                    let fin = &f[*input];
                    let unit = |p: usize, c: usize| get_bit(&fin[p * vi.words..], c);
                    let mut out = vo.zeros();
                    for h in 0..*heads {
                        let cols = h * head_dim..(h + 1) * head_dim;
                        let keys = (0..t).any(|j| cols.clone().any(|c| unit(j, width + c)));
                        // Per value channel of the head: reachable at some token.
                        let values: Vec<bool> = cols
                            .clone()
                            .map(|c| (0..t).any(|j| unit(j, 2 * width + c)))
                            .collect();
                        for p in 0..t {
                            let queries = cols.clone().any(|c| unit(p, c));
                            for (c, &value) in cols.clone().zip(&values) {
                                if keys || queries || value {
                                    set_bit(&mut out[p * vo.words..], c);
                                }
                            }
                        }
                    }
                    f[*output] = out;
                }
            }
        }

        let mut active = vec![0u64; n_layers];
        let mut masks: Option<Vec<Vec<bool>>> =
            want_masks.then(|| self.layers.iter().map(|l| vec![false; l.numel()]).collect());
        let unpruned: Vec<u64> = kernels
            .iter()
            .map(|k| {
                k.as_ref()
                    .map_or(0, |k| k.bits.iter().map(|w| w.count_ones() as u64).sum())
            })
            .collect();

        let mut b: Vec<Option<Vec<u64>>> = vec![None; self.values.len()];
        b[self.output] = Some(self.values[self.output].ones());
        for step in self.steps.iter().rev() {
            let out_id = match step {
                Step::Weighted { output, .. }
                | Step::Pool { output, .. }
                | Step::GlobalPool { output, .. }
                | Step::Flatten { output, .. }
                | Step::Elementwise { output, .. }
                | Step::Gather { output, .. }
                | Step::Mix { output, .. }
                | Step::GroupMix { output, .. }
                | Step::Resample { output, .. }
                | Step::Concat { output, .. }
                | Step::Heads { output, .. } => *output,
            };
            // Nothing downstream of this value reaches the output: it contributes nothing.
            let Some(bout) = b[out_id].take() else {
                continue;
            };
            if bout.iter().all(|&w| w == 0) {
                continue;
            }
            match step {
                Step::Weighted {
                    layer,
                    input,
                    win,
                    c_out,
                    ..
                } => {
                    let Some(k) = kernels[*layer].as_ref() else {
                        continue;
                    };
                    let need_bin = *input != self.input;
                    let mut bin = if need_bin {
                        b[*input]
                            .take()
                            .unwrap_or_else(|| self.values[*input].zeros())
                    } else {
                        Vec::new()
                    };
                    let used = self.conv_backward(
                        k,
                        win,
                        *c_out,
                        &f[*input],
                        *input,
                        &bout,
                        out_id,
                        need_bin.then_some(&mut bin),
                    );
                    active[*layer] = k
                        .bits
                        .iter()
                        .zip(&used)
                        .map(|(a, u)| (a & u).count_ones() as u64)
                        .sum();
                    if let Some(masks) = masks.as_mut() {
                        write_mask(k, *c_out, &used, &mut masks[*layer]);
                    }
                    if need_bin {
                        b[*input] = Some(bin);
                    }
                }
                Step::Pool { input, win, .. } => {
                    let w = self.values[*input].words;
                    let mut bin = b[*input]
                        .take()
                        .unwrap_or_else(|| self.values[*input].zeros());
                    win.for_each(|p_out, _, p_in| {
                        or_into(
                            &mut bin[p_in * w..(p_in + 1) * w],
                            &bout[p_out * w..(p_out + 1) * w],
                        );
                        false
                    });
                    b[*input] = Some(bin);
                }
                Step::GlobalPool { input, .. } => {
                    let w = self.values[*input].words;
                    let mut bin = b[*input]
                        .take()
                        .unwrap_or_else(|| self.values[*input].zeros());
                    for chunk in bin.chunks_exact_mut(w) {
                        or_into(chunk, &bout);
                    }
                    b[*input] = Some(bin);
                }
                Step::Flatten { input, .. } => {
                    let vi = self.values[*input];
                    let mut bin = b[*input].take().unwrap_or_else(|| vi.zeros());
                    for_each_set_bit(&bout, |j| {
                        let (c, p) = (j / vi.positions, j % vi.positions);
                        set_bit(&mut bin[p * vi.words..(p + 1) * vi.words], c);
                    });
                    b[*input] = Some(bin);
                }
                Step::Elementwise { inputs, .. } => {
                    let vo = self.values[out_id];
                    for i in inputs {
                        let mut bin = b[*i].take().unwrap_or_else(|| self.values[*i].zeros());
                        if self.values[*i].positions == vo.positions {
                            or_into(&mut bin, &bout);
                        } else {
                            for chunk in bout.chunks_exact(vo.words) {
                                or_into(&mut bin, chunk);
                            }
                        }
                        b[*i] = Some(bin);
                    }
                }
                Step::Mix { input, .. } => {
                    let vi = self.values[*input];
                    let mut bin = b[*input].take().unwrap_or_else(|| vi.zeros());
                    let full = vi.ones();
                    for (p, chunk) in bout.chunks_exact(vi.words).enumerate() {
                        if chunk.iter().any(|&w| w != 0) {
                            or_into(
                                &mut bin[p * vi.words..(p + 1) * vi.words],
                                &full[..vi.words],
                            );
                        }
                    }
                    b[*input] = Some(bin);
                }
                Step::GroupMix { input, groups, .. } => {
                    let vi = self.values[*input];
                    let live = block_activity(&bout, self.values[out_id], *groups);
                    let mut bin = b[*input].take().unwrap_or_else(|| vi.zeros());
                    or_into(&mut bin, &blocks_to_units(&live, vi, *groups));
                    b[*input] = Some(bin);
                }
                Step::Resample { input, sources, .. } => {
                    let (vi, vo) = (self.values[*input], self.values[out_id]);
                    let mut bin = b[*input].take().unwrap_or_else(|| vi.zeros());
                    for (p, srcs) in sources.iter().enumerate() {
                        for &q in srcs {
                            or_into(
                                &mut bin[q * vi.words..(q + 1) * vi.words],
                                &bout[p * vo.words..(p + 1) * vo.words],
                            );
                        }
                    }
                    b[*input] = Some(bin);
                }
                Step::Gather { input, source, .. } => {
                    let (vi, vo) = (self.values[*input], self.values[out_id]);
                    let mut bin = b[*input].take().unwrap_or_else(|| vi.zeros());
                    for p in 0..vo.positions {
                        let src = &bout[p * vo.words..(p + 1) * vo.words];
                        let dst = &mut bin[p * vi.words..(p + 1) * vi.words];
                        for (c, &s) in source.iter().enumerate() {
                            if get_bit(src, c) {
                                set_bit(dst, s);
                            }
                        }
                    }
                    b[*input] = Some(bin);
                }
                Step::Concat { inputs, .. } => {
                    let vo = self.values[out_id];
                    let mut offset = 0;
                    for i in inputs {
                        let vi = self.values[*i];
                        let mut bin = b[*i].take().unwrap_or_else(|| vi.zeros());
                        for p in 0..vi.positions {
                            let src = &bout[p * vo.words..(p + 1) * vo.words];
                            let dst = &mut bin[p * vi.words..(p + 1) * vi.words];
                            for c in 0..vi.channels {
                                if get_bit(src, offset + c) {
                                    set_bit(dst, c);
                                }
                            }
                        }
                        offset += vi.channels;
                        b[*i] = Some(bin);
                    }
                }
                Step::Heads {
                    input,
                    heads,
                    head_dim,
                    ..
                } => {
                    let (vi, vo) = (self.values[*input], self.values[out_id]);
                    let (width, t) = (heads * head_dim, vi.positions);
                    let mut bin = b[*input].take().unwrap_or_else(|| vi.zeros());
                    let needed = |p: usize, c: usize| get_bit(&bout[p * vo.words..], c);
                    for h in 0..*heads {
                        let cols = h * head_dim..(h + 1) * head_dim;
                        let mut head_used = false;
                        for p in 0..t {
                            // Token p's output of head h needs its queries and every key.
                            if cols.clone().any(|c| needed(p, c)) {
                                head_used = true;
                                for c in cols.clone() {
                                    set_bit(&mut bin[p * vi.words..], c);
                                }
                            }
                        }
                        for c in cols.clone() {
                            // Value channel c of every token feeds output channel c anywhere.
                            let value_used = (0..t).any(|p| needed(p, c));
                            for j in 0..t {
                                if head_used {
                                    set_bit(&mut bin[j * vi.words..], width + c);
                                }
                                if value_used {
                                    set_bit(&mut bin[j * vi.words..], 2 * width + c);
                                }
                            }
                        }
                    }
                    b[*input] = Some(bin);
                }
            }
        }
        Run {
            unpruned,
            active,
            masks,
        }
    }

    /// Output unit (o, p) is reachable iff some kept tap of channel o reads a reachable unit.
    fn conv_forward(
        &self,
        k: &Kernel,
        win: &Window,
        fin: &[u64],
        input: usize,
        output: usize,
    ) -> Vec<u64> {
        let (w_in, w_out) = (self.values[input].words, self.values[output].words);
        let mut out = self.values[output].zeros();
        let c_out = k.og * k.base.len();
        for o in 0..c_out {
            if k.channel_words(o).iter().all(|&w| w == 0) {
                continue;
            }
            let g = o / k.og;
            let (base, span) = (k.base[g], k.span[g]);
            let (word, bit) = (o / 64, 1u64 << (o % 64));
            win.for_each(|p_out, t, p_in| {
                let x = &fin[p_in * w_in + base..p_in * w_in + base + span];
                let hit = k.bits[k.at(o, t)].iter().zip(x).any(|(a, b)| a & b != 0);
                if hit {
                    out[p_out * w_out + word] |= bit;
                }
                hit
            });
        }
        out
    }

    /// For every (o, tap): the OR of forward activity over the input units it reads at output
    /// positions that reach the output (`used`, same layout as the kernel bits); also ORs the
    /// kernel into the input's backward activity when `bin` is given.
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &self,
        k: &Kernel,
        win: &Window,
        c_out: usize,
        fin: &[u64],
        input: usize,
        bout: &[u64],
        output: usize,
        mut bin: Option<&mut Vec<u64>>,
    ) -> Vec<u64> {
        let (w_in, w_out) = (self.values[input].words, self.values[output].words);
        let positions = self.values[output].positions;
        let mut used = vec![0u64; k.bits.len()];
        for o in 0..c_out {
            if k.channel_words(o).iter().all(|&w| w == 0) {
                continue;
            }
            let g = o / k.og;
            let (base, span) = (k.base[g], k.span[g]);
            for p_out in 0..positions {
                if !get_bit(&bout[p_out * w_out..(p_out + 1) * w_out], o) {
                    continue;
                }
                win.for_each_at(p_out, |t, p_in| {
                    let range = k.at(o, t);
                    let at = p_in * w_in + base;
                    or_into(&mut used[range.clone()], &fin[at..at + span]);
                    if let Some(bin) = bin.as_deref_mut() {
                        or_into(&mut bin[at..at + span], &k.bits[range]);
                    }
                });
            }
        }
        used
    }
}

/// Which of `groups` channel blocks has any active unit at any position.
fn block_activity(bits: &[u64], v: ValueInfo, groups: usize) -> Vec<bool> {
    let per = v.channels / groups.max(1);
    let mut live = vec![false; groups];
    for chunk in bits.chunks_exact(v.words) {
        for_each_set_bit(chunk, |c| live[(c / per.max(1)).min(groups - 1)] = true);
    }
    live
}

/// Every unit (all positions) of the live blocks set.
fn blocks_to_units(live: &[bool], v: ValueInfo, groups: usize) -> Vec<u64> {
    let per = v.channels / groups.max(1);
    let mut out = v.zeros();
    for p in 0..v.positions {
        for c in 0..v.channels {
            if live[(c / per.max(1)).min(groups - 1)] {
                set_bit(&mut out[p * v.words..(p + 1) * v.words], c);
            }
        }
    }
    out
}

/// Row-major effective keep-flags of one layer: kept ∧ used.
fn write_mask(k: &Kernel, c_out: usize, used: &[u64], out: &mut [bool]) {
    for o in 0..c_out {
        let g = o / k.og;
        for i in 0..k.ig {
            let ch = g * k.ig + i;
            let (word, bit) = (ch / 64 - k.base[g], ch % 64);
            let first = (o * k.ig + i) * k.taps;
            for t in 0..k.taps {
                let at = (o * k.taps + t) * k.gw + word;
                out[first + t] = (k.bits[at] & used[at]) >> bit & 1 == 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
