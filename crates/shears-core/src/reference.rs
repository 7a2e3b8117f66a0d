//! Reference forward pass: a plain ndarray interpreter of any graph in inference mode.
//!
//! It is the oracle of equivalence tests (compacted == gated dense network, engine == reference),
//! so it favours plain semantics over speed; convolutions still go through im2col and one matrix
//! product per sample and group, so a CIFAR ResNet on a small batch stays fast enough for tests.
//!
//! Semantics, per op (batch axis first, `[N,C,H,W]` maps, `[N,F]` vectors):
//! Conv2d with stride, zero padding, dilation and groups; Linear `y = x Wᵀ + b`; BatchNorm with
//! running statistics `(x - mean) / sqrt(var + eps) * gamma + beta`; ReLU; MaxPool (padding never
//! wins: it acts as -inf); AvgPool (zero padding counts in the divisor, `count_include_pad`);
//! GlobalAvgPool; Flatten (channel-major); Add; Concat on the channel axis; Dropout = identity.
//! Masks multiply the weights they name; channel gates multiply a value's channels.

use crate::ops::{BatchNorm, Conv2d, Dropout, Linear};
use crate::error::{CoreError, Result};
use crate::graph::{Graph, Node, Op};
use crate::ops::Pool2d;
use crate::shape::infer_shapes;
use crate::weights::{Masks, Weights, check_masks, check_weights};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayD, ArrayView2, ArrayViewD, ArrayViewMut2, Axis, IxDyn, s};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Per-value multipliers on the channel axis (per-sample axis 0, features of a `[F]` value),
/// one per index, keyed by value name (a node name or the graph input's name).
pub type ChannelGates = BTreeMap<String, Vec<f32>>;

/// Runs `graph` on `input` (`[N, ...per-sample shape]`) and returns the output value (`[N, classes]`
/// for a classifier). Masked weights are multiplied by their masks.
pub fn forward(
    graph: &Graph,
    weights: &Weights,
    masks: Option<&Masks>,
    input: &ArrayD<f32>,
) -> Result<ArrayD<f32>> {
    forward_with_channel_gates(graph, weights, masks, &ChannelGates::new(), input)
}

/// Like [`forward`], and multiplies every gated value's channels by its gate right after the node
/// that produces it (after its bias or BatchNorm shift), before any consumer reads it.
pub fn forward_with_channel_gates(
    graph: &Graph,
    weights: &Weights,
    masks: Option<&Masks>,
    gates: &ChannelGates,
    input: &ArrayD<f32>,
) -> Result<ArrayD<f32>> {
    let shapes = infer_shapes(graph)?;
    check_weights(graph, weights)?;
    if let Some(m) = masks {
        check_masks(weights, m)?;
    }
    let expected = &graph.input.shape;
    if input.ndim() != expected.len() + 1 || input.shape()[1..] != expected[..] {
        return Err(CoreError::tensor(
            &graph.input.name,
            format!(
                "input has shape {:?}, the graph expects [N, {}]",
                input.shape(),
                expected
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    for (value, gate) in gates {
        let shape = shapes.try_get(value).ok_or_else(|| {
            CoreError::value(
                "channel gates",
                format!("`{value}` is not a value of the graph"),
            )
        })?;
        if gate.len() != shape[0] {
            return Err(CoreError::value(
                "channel gates",
                format!(
                    "gate of `{value}` has {} entries, the value has {} channels",
                    gate.len(),
                    shape[0]
                ),
            ));
        }
    }

    // Free each value after its last reader so deep nets do not hold every activation.
    let mut last_use: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for inp in &n.inputs {
            last_use.insert(inp.as_str(), i);
        }
    }
    let params = Params { weights, masks };
    let mut values: HashMap<&str, ArrayD<f32>> = HashMap::new();
    let mut x = input.clone();
    if let Some(g) = gates.get(&graph.input.name) {
        apply_gate(&mut x, g);
    }
    values.insert(graph.input.name.as_str(), x);
    for (i, node) in graph.nodes.iter().enumerate() {
        let mut out = {
            let ins: Vec<&ArrayD<f32>> = node.inputs.iter().map(|n| &values[n.as_str()]).collect();
            eval_node(node, &ins, &params, gates.get(&node.inputs[0]))?
        };
        if let Some(g) = gates.get(&node.name) {
            apply_gate(&mut out, g);
        }
        for inp in &node.inputs {
            if last_use.get(inp.as_str()) == Some(&i) && *inp != graph.output {
                values.remove(inp.as_str());
            }
        }
        values.insert(node.name.as_str(), out);
    }
    values.remove(graph.output.as_str()).ok_or_else(|| {
        CoreError::InvalidGraph(format!("output `{}` was not computed", graph.output))
    })
}

/// Weight lookup with masks applied.
struct Params<'a> {
    weights: &'a Weights,
    masks: Option<&'a Masks>,
}

impl Params<'_> {
    fn get(&self, name: &str) -> Result<Cow<'_, ArrayD<f32>>> {
        let w = self
            .weights
            .get(name)
            .ok_or_else(|| CoreError::tensor(name, "missing from the weights"))?;
        match self.masks.and_then(|m| m.get(name)) {
            Some(m) => Ok(Cow::Owned(
                ndarray::Zip::from(w)
                    .and(m)
                    .map_collect(|&v, &keep| if keep { v } else { 0.0 }),
            )),
            None => Ok(Cow::Borrowed(w)),
        }
    }
}

fn apply_gate(x: &mut ArrayD<f32>, gate: &[f32]) {
    for (mut lane, &g) in x.axis_iter_mut(Axis(1)).zip(gate) {
        lane.mapv_inplace(|v| v * g);
    }
}

/// A contiguous row-major copy (or borrow) of an array's data.
fn contiguous<'a>(a: &'a ArrayViewD<'a, f32>) -> Cow<'a, [f32]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

fn dims4(node: &Node, x: &ArrayD<f32>) -> Result<[usize; 4]> {
    match x.shape() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        s => Err(CoreError::shape(
            &node.name,
            format!("expects a [N,C,H,W] input, got {s:?}"),
        )),
    }
}

/// One node's output. `in_gate` is the gate on the node's first input, which only the norms
/// over channels read (LayerNorm, GroupNorm: their statistics leave gated channels out, as
/// compaction removes them).
fn eval_node(
    node: &Node,
    ins: &[&ArrayD<f32>],
    p: &Params<'_>,
    in_gate: Option<&Vec<f32>>,
) -> Result<ArrayD<f32>> {
    let name = &node.name;
    let x = ins[0];
    match node.op {
        Op::Conv2d(Conv2d {
            stride,
            padding,
            dilation,
            groups,
            bias,
            ..
        }) => {
            let w = p.get(&format!("{name}.weight"))?;
            let b = if bias {
                Some(p.get(&format!("{name}.bias"))?)
            } else {
                None
            };
            let spec = ConvSpec {
                stride,
                padding,
                dilation,
                groups,
            };
            conv2d(node, x, &w, b.as_deref(), spec)
        }
        Op::Linear(Linear { bias, .. }) => {
            let w = p.get(&format!("{name}.weight"))?;
            let b = if bias {
                Some(p.get(&format!("{name}.bias"))?)
            } else {
                None
            };
            linear(node, x, &w, b.as_deref())
        }
        Op::BatchNorm(BatchNorm { eps, .. }) => {
            let gamma = p.get(&format!("{name}.weight"))?;
            let beta = p.get(&format!("{name}.bias"))?;
            let mean = p.get(&format!("{name}.running_mean"))?;
            let var = p.get(&format!("{name}.running_var"))?;
            let mut y = x.clone();
            for (c, mut lane) in y.axis_iter_mut(Axis(1)).enumerate() {
                let scale = gamma[c] / (var[c] as f64 + eps).sqrt() as f32;
                let (m, b) = (mean[c], beta[c]);
                lane.mapv_inplace(|v| (v - m) * scale + b);
            }
            Ok(y)
        }
        Op::Relu => Ok(x.mapv(|v| v.max(0.0))),
        Op::Relu6 => Ok(x.mapv(|v| v.clamp(0.0, 6.0))),
        Op::Activation(f) => Ok(x.mapv(|v| f.apply(v))),
        Op::Dropout(Dropout { .. }) => Ok(x.clone()),
        Op::MaxPool(attrs) => pool(node, x, &attrs, true),
        Op::AvgPool(attrs) => pool(node, x, &attrs, false),
        Op::GlobalAvgPool(g) => {
            let [n, c, h, w] = dims4(node, x)?;
            let flat = x
                .to_shape((n, c, h * w))
                .map_err(|e| CoreError::shape(name, e.to_string()))?;
            let mean = flat.sum_axis(Axis(2)) / (h * w) as f32;
            let out = if g.keep_dims {
                mean.into_shape_with_order((n, c, 1, 1))
                    .map_err(|e| CoreError::shape(name, e.to_string()))?
                    .into_dyn()
            } else {
                mean.into_dyn()
            };
            Ok(out)
        }
        Op::Mul => {
            let (a, b) = (x, ins[1]);
            // ndarray broadcasts a [N,C,1,1] operand over [N,C,H,W] on either side.
            let y = if a.shape() == b.shape() || b.len() < a.len() {
                a * b
            } else {
                b * a
            };
            Ok(y)
        }
        Op::Flatten => {
            let n = x.shape()[0];
            let f: usize = x.shape()[1..].iter().product();
            let y = x
                .to_shape((n, f))
                .map_err(|e| CoreError::shape(name, e.to_string()))?;
            Ok(y.into_owned().into_dyn())
        }
        Op::Add => {
            let mut y = x.clone();
            for other in &ins[1..] {
                if other.shape() != y.shape() {
                    return Err(CoreError::shape(
                        name,
                        format!(
                            "add inputs have shapes {:?} and {:?}",
                            y.shape(),
                            other.shape()
                        ),
                    ));
                }
                y += *other;
            }
            Ok(y)
        }
        Op::Affine(_) => {
            let scale = p.get(&format!("{name}.scale"))?;
            let shift = p.get(&format!("{name}.shift"))?;
            Ok(x * &*scale + &*shift)
        }
        Op::LayerNorm(ln) => {
            let weight = p.get(&format!("{name}.weight"))?;
            let bias = p.get(&format!("{name}.bias"))?;
            let (scale, shift): (Vec<f32>, Vec<f32>) =
                (weight.iter().copied().collect(), bias.iter().copied().collect());
            let mut y = x.as_standard_layout().into_owned();
            let n = y.shape()[0];
            let per_sample = y.len() / n.max(1);
            let positions = per_sample / ln.channels.max(1);
            let data = y
                .as_slice_mut()
                .ok_or_else(|| CoreError::shape(name, "layer norm input is not contiguous"))?;
            for sample in data.chunks_mut(per_sample) {
                for pos in 0..positions {
                    ln.normalize(
                        &mut sample[pos..],
                        positions,
                        in_gate.map(|g| g.as_slice()),
                        &scale,
                        &shift,
                    );
                }
            }
            Ok(y)
        }
        Op::GroupNorm(gn) => {
            let weight = p.get(&format!("{name}.weight"))?;
            let bias = p.get(&format!("{name}.bias"))?;
            let (scale, shift): (Vec<f32>, Vec<f32>) =
                (weight.iter().copied().collect(), bias.iter().copied().collect());
            let mut y = x.as_standard_layout().into_owned();
            let n = y.shape()[0];
            let per_sample = y.len() / n.max(1);
            let data = y
                .as_slice_mut()
                .ok_or_else(|| CoreError::shape(name, "group norm input is not contiguous"))?;
            for sample in data.chunks_mut(per_sample.max(1)) {
                gn.normalize(
                    sample,
                    per_sample / gn.channels.max(1),
                    in_gate.map(|g| g.as_slice()),
                    &scale,
                    &shift,
                );
            }
            Ok(y)
        }
        Op::GlobalMaxPool(g) => {
            let [n, c, h, w] = dims4(node, x)?;
            let flat = x
                .to_shape((n, c, h * w))
                .map_err(|e| CoreError::shape(name, e.to_string()))?;
            let max = flat.fold_axis(Axis(2), f32::NEG_INFINITY, |m, &v| m.max(v));
            let shape: Vec<usize> = if g.keep_dims { vec![n, c, 1, 1] } else { vec![n, c] };
            max.into_shape_with_order(IxDyn(&shape))
                .map_err(|e| CoreError::shape(name, e.to_string()))
        }
        Op::Pad(pad) => {
            let [n, c, h, w] = dims4(node, x)?;
            let [top, left, bottom, right] = pad.pads;
            let mut y = ArrayD::zeros(IxDyn(&[n, c, h + top + bottom, w + left + right]));
            y.slice_mut(s![.., .., top..top + h, left..left + w]).assign(x);
            Ok(y)
        }
        Op::Resize(r) => {
            let [n, c, h, w] = dims4(node, x)?;
            let taps = r.taps([h, w]);
            let xs = x.as_standard_layout();
            let src = xs.as_slice().expect("standard layout");
            let mut out = Vec::with_capacity(n * c * taps.len());
            for plane in src.chunks(h * w) {
                for t in &taps {
                    out.push(t.iter().map(|&(q, wt)| plane[q] * wt).sum::<f32>());
                }
            }
            ArrayD::from_shape_vec(IxDyn(&[n, c, h * r.scale[0], w * r.scale[1]]), out)
                .map_err(|e| CoreError::shape(name, e.to_string()))
        }
        Op::Slice(sl) => Ok(x.slice_axis(Axis(1), (sl.start..sl.end).into()).to_owned()),
        Op::ChannelShuffle(sh) => {
            let c = x.shape()[1];
            let parts: Vec<ArrayViewD<'_, f32>> = (0..c)
                .map(|j| x.slice_axis(Axis(1), (sh.source(j, c)..sh.source(j, c) + 1).into()))
                .collect();
            ndarray::concatenate(Axis(1), &parts).map_err(|e| CoreError::shape(name, e.to_string()))
        }
        Op::Concat => {
            let views: Vec<ArrayViewD<'_, f32>> = ins.iter().map(|a| a.view()).collect();
            ndarray::concatenate(Axis(1), &views).map_err(|e| CoreError::shape(name, e.to_string()))
        }
    }
}

#[derive(Clone, Copy)]
struct ConvSpec {
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
}

/// Convolution by im2col: per sample and group, `out[og, OH*OW] = W[og, K] · cols[K, OH*OW]`.
fn conv2d(
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

fn linear(
    node: &Node,
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
) -> Result<ArrayD<f32>> {
    let err = |e: ndarray::ShapeError| CoreError::shape(&node.name, e.to_string());
    let x2 = x
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(err)?;
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
    Ok(y.into_dyn())
}

/// Max or average pooling of consecutive `h x w` planes into `oh x ow` planes: max ignores
/// padding, average counts it as zeros in the divisor (PyTorch's `count_include_pad`). Shared
/// with the engine's dynamic inference, which pools the live channels of one sample.
pub fn pool_planes(
    planes: &[f32],
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    attrs: &Pool2d,
    max: bool,
) -> Vec<f32> {
    let Pool2d {
        kernel,
        stride,
        padding,
        ..
    } = *attrs;
    let mut out = Vec::with_capacity(planes.len() / (h * w).max(1) * oh * ow);
    for plane in planes.chunks(h * w) {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                for ky in 0..kernel[0] {
                    let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..kernel[1] {
                        let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let v = plane[iy as usize * w + ix as usize];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                out.push(if max {
                    acc
                } else {
                    acc / attrs.window_divisor([h, w], oy, ox)
                });
            }
        }
    }
    out
}

/// Max or average pooling of a node's `[N, C, H, W]` input.
fn pool(node: &Node, x: &ArrayD<f32>, attrs: &Pool2d, max: bool) -> Result<ArrayD<f32>> {
    let [n, c, h, w] = dims4(node, x)?;
    let (Some(oh), Some(ow)) = (attrs.out_len(0, h), attrs.out_len(1, w)) else {
        return Err(CoreError::shape(
            &node.name,
            format!("pool kernel {:?} does not fit input {h}x{w}", attrs.kernel),
        ));
    };
    let xv = x.view();
    let xs = contiguous(&xv);
    let out = pool_planes(
        &xs[..n * c * h * w],
        [h, w],
        [oh, ow],
        attrs,
        max,
    );
    ArrayD::from_shape_vec(IxDyn(&[n, c, oh, ow]), out)
        .map_err(|e| CoreError::shape(&node.name, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::weights::init_weights;
    use ndarray::{ArrayD, IxDyn};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn arr(shape: &[usize], data: &[f32]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap()
    }

    fn close(a: &ArrayD<f32>, b: &ArrayD<f32>) {
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{a:?}\n!=\n{b:?}");
        }
    }

    fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-1.0f32..1.0))
    }

    /// Straightforward six-loop convolution, independent of the im2col path.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &ArrayD<f32>,
        w: &ArrayD<f32>,
        b: Option<&ArrayD<f32>>,
        stride: [usize; 2],
        pad: [usize; 2],
        dil: [usize; 2],
        groups: usize,
    ) -> ArrayD<f32> {
        let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (o, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
        let oh = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) / stride[0] + 1;
        let ow = (wd + 2 * pad[1] - dil[1] * (kw - 1) - 1) / stride[1] + 1;
        let og = o / groups;
        assert_eq!(cg * groups, c);
        let mut y = ArrayD::zeros(IxDyn(&[n, o, oh, ow]));
        for ni in 0..n {
            for oc in 0..o {
                let g = oc / og;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = b.map(|b| b[oc]).unwrap_or(0.0);
                        for ci in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy =
                                        (oy * stride[0] + ky * dil[0]) as isize - pad[0] as isize;
                                    let ix =
                                        (ox * stride[1] + kx * dil[1]) as isize - pad[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd
                                    {
                                        acc += x[[ni, g * cg + ci, iy as usize, ix as usize]]
                                            * w[[oc, ci, ky, kx]];
                                    }
                                }
                            }
                        }
                        y[[ni, oc, oy, ox]] = acc;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn conv_hand_computed() {
        // 1x1x3x3 input 1..9, 2x2 kernel [[1,0],[0,1]] + bias 0.5: out[i,j] = x[i,j] + x[i+1,j+1] + 0.5.
        let mut b = GraphBuilder::new("t", &[1, 3, 3]);
        let x = b.input();
        let c = b.conv2d_full("c", &x, 1, [2, 2], [1, 1], [0, 0], [1, 1], 1, true);
        let g = b.finish(&c);
        let mut w = init_weights(&g, 0);
        w.insert("c.weight".into(), arr(&[1, 1, 2, 2], &[1., 0., 0., 1.]));
        w.insert("c.bias".into(), arr(&[1], &[0.5]));
        let input = arr(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        let y = forward(&g, &w, None, &input).unwrap();
        close(&y, &arr(&[1, 1, 2, 2], &[6.5, 8.5, 12.5, 14.5]));
    }

    #[test]
    fn conv_padding_stride_hand_computed() {
        // all-ones 3x3 kernel, pad 1, stride 2 on 3x3 input of ones: corners see 4 ones, centre 9;
        // outputs at (0,0),(0,2),(2,0),(2,2) are all corners: 4 each.
        let mut b = GraphBuilder::new("t", &[1, 3, 3]);
        let x = b.input();
        let c = b.conv2d_full("c", &x, 1, [3, 3], [2, 2], [1, 1], [1, 1], 1, false);
        let g = b.finish(&c);
        let mut w = init_weights(&g, 0);
        w.insert("c.weight".into(), ArrayD::ones(IxDyn(&[1, 1, 3, 3])));
        let y = forward(&g, &w, None, &ArrayD::ones(IxDyn(&[1, 1, 3, 3]))).unwrap();
        close(&y, &arr(&[1, 1, 2, 2], &[4., 4., 4., 4.]));
    }

    #[test]
    fn grouped_conv_hand_computed() {
        // groups=2: output 0 reads only channel 0 (x2), output 1 only channel 1 (x3), 1x1 kernels.
        let mut b = GraphBuilder::new("t", &[2, 1, 2]);
        let x = b.input();
        let c = b.conv2d_full("c", &x, 2, [1, 1], [1, 1], [0, 0], [1, 1], 2, false);
        let g = b.finish(&c);
        let mut w = init_weights(&g, 0);
        w.insert("c.weight".into(), arr(&[2, 1, 1, 1], &[2., 3.]));
        let y = forward(&g, &w, None, &arr(&[1, 2, 1, 2], &[1., 2., 10., 20.])).unwrap();
        close(&y, &arr(&[1, 2, 1, 2], &[2., 4., 30., 60.]));
    }

    #[test]
    fn conv_matches_naive_loops() {
        // stride, padding, dilation and groups together, two samples, with bias.
        for (groups, stride, pad, dil) in [
            (1, [1, 1], [1, 1], [1, 1]),
            (2, [2, 1], [1, 2], [2, 1]),
            (4, [1, 2], [0, 1], [1, 2]),
        ] {
            let mut b = GraphBuilder::new("t", &[4, 7, 6]);
            let x = b.input();
            let c = b.conv2d_full("c", &x, 8, [3, 2], stride, pad, dil, groups, true);
            let g = b.finish(&c);
            let mut w = init_weights(&g, 1);
            w.insert("c.bias".into(), random(&[8], 5));
            let input = random(&[2, 4, 7, 6], 9);
            let y = forward(&g, &w, None, &input).unwrap();
            let want = naive_conv(
                &input,
                &w["c.weight"],
                Some(&w["c.bias"]),
                stride,
                pad,
                dil,
                groups,
            );
            close(&y, &want);
        }
    }

    #[test]
    fn linear_hand_computed() {
        let mut b = GraphBuilder::new("t", &[2]);
        let x = b.input();
        let l = b.linear("l", &x, 3, true);
        let g = b.finish(&l);
        let mut w = init_weights(&g, 0);
        w.insert("l.weight".into(), arr(&[3, 2], &[1., 0., 0., 1., 1., 1.]));
        w.insert("l.bias".into(), arr(&[3], &[0., 0., 1.]));
        let y = forward(&g, &w, None, &arr(&[2, 2], &[1., 2., -1., 0.5])).unwrap();
        close(&y, &arr(&[2, 3], &[1., 2., 4., -1., 0.5, 0.5]));
    }

    fn bn_graph(eps: f64) -> Graph {
        let mut b = GraphBuilder::new("t", &[2, 1, 2]);
        let x = b.input();
        let n = b.push(
            "bn",
            Op::BatchNorm(BatchNorm {
                channels: 2,
                eps,
                momentum: 0.1,
            }),
            &[&x],
        );
        b.finish(&n)
    }

    #[test]
    fn batchnorm_eval_hand_computed() {
        // channel 0: (x-1)/sqrt(3.5+0.5)*2+3 = (x-1)+3; channel 1: (x-0)/sqrt(0.5+0.5)*(-1)+0.
        let g = bn_graph(0.5);
        let mut w = init_weights(&g, 0);
        w.insert("bn.weight".into(), arr(&[2], &[2., -1.]));
        w.insert("bn.bias".into(), arr(&[2], &[3., 0.]));
        w.insert("bn.running_mean".into(), arr(&[2], &[1., 0.]));
        w.insert("bn.running_var".into(), arr(&[2], &[3.5, 0.5]));
        let y = forward(&g, &w, None, &arr(&[1, 2, 1, 2], &[1., 5., 2., -4.])).unwrap();
        close(&y, &arr(&[1, 2, 1, 2], &[3., 7., -2., 4.]));
    }

    #[test]
    fn relu_dropout_flatten_gap_hand_computed() {
        let mut b = GraphBuilder::new("t", &[2, 2, 2]);
        let x = b.input();
        let r = b.relu("r", &x);
        let d = b.dropout("d", &r, 0.5);
        let f = b.flatten("f", &d);
        let g = b.finish(&f);
        let input = arr(&[1, 2, 2, 2], &[1., -2., 3., -4., -5., 6., 7., 8.]);
        let y = forward(&g, &Weights::new(), None, &input).unwrap();
        // channel-major: channel 0's four values, then channel 1's.
        close(&y, &arr(&[1, 8], &[1., 0., 3., 0., 0., 6., 7., 8.]));

        let mut b = GraphBuilder::new("t", &[2, 2, 2]);
        let x = b.input();
        let p = b.global_avg_pool("p", &x);
        let g = b.finish(&p);
        let y = forward(&g, &Weights::new(), None, &input).unwrap();
        close(&y, &arr(&[1, 2], &[-0.5, 4.0]));
    }

    #[test]
    fn maxpool_padding_never_wins() {
        // all-negative input: with -inf padding the corner window's max is a real element.
        let mut b = GraphBuilder::new("t", &[1, 3, 3]);
        let x = b.input();
        let m = b.maxpool("m", &x, 3, 2, 1);
        let g = b.finish(&m);
        let input = arr(
            &[1, 1, 3, 3],
            &[-1., -2., -3., -4., -5., -6., -7., -8., -9.],
        );
        let y = forward(&g, &Weights::new(), None, &input).unwrap();
        // windows: (0,0) covers x[0..2,0..2] -> -1; (0,1) covers x[0..2,1..3] -> -2;
        // (1,0) x[1..3,0..2] -> -4; (1,1) x[1..3,1..3] -> -5.
        close(&y, &arr(&[1, 1, 2, 2], &[-1., -2., -4., -5.]));
    }

    #[test]
    fn avgpool_counts_padding_in_divisor() {
        let mut b = GraphBuilder::new("t", &[1, 2, 2]);
        let x = b.input();
        let a = b.avgpool("a", &x, 3, 1, 1);
        let g = b.finish(&a);
        let input = arr(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
        let y = forward(&g, &Weights::new(), None, &input).unwrap();
        // every 3x3 window covers all four real values plus five zeros: 10 / 9.
        close(&y, &arr(&[1, 1, 2, 2], &[10. / 9.; 4]));
        let mut b = GraphBuilder::new("t", &[1, 2, 2]);
        let x = b.input();
        let a = b.avgpool("a", &x, 2, 2, 0);
        let g = b.finish(&a);
        let y = forward(&g, &Weights::new(), None, &input).unwrap();
        close(&y, &arr(&[1, 1, 1, 1], &[2.5]));
    }

    #[test]
    fn add_and_concat_hand_computed() {
        let mut b = GraphBuilder::new("t", &[1, 1, 2]);
        let x = b.input();
        let r = b.relu("r", &x);
        let s = b.add("s", &[&x, &r, &r]);
        let c = b.concat("c", &[&s, &x]);
        let g = b.finish(&c);
        let y = forward(&g, &Weights::new(), None, &arr(&[1, 1, 1, 2], &[-1., 2.])).unwrap();
        close(&y, &arr(&[1, 2, 1, 2], &[-1., 6., -1., 2.]));
    }

    #[test]
    fn masks_multiply_weights_and_gates_multiply_channels() {
        let mut b = GraphBuilder::new("t", &[2]);
        let x = b.input();
        let l = b.linear("l", &x, 2, true);
        let g = b.finish(&l);
        let mut w = init_weights(&g, 0);
        w.insert("l.weight".into(), arr(&[2, 2], &[1., 2., 3., 4.]));
        w.insert("l.bias".into(), arr(&[2], &[1., 1.]));
        let mut m = Masks::new();
        m.insert(
            "l.weight".into(),
            ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![true, false, false, true]).unwrap(),
        );
        let input = arr(&[1, 2], &[1., 1.]);
        let y = forward(&g, &w, Some(&m), &input).unwrap();
        close(&y, &arr(&[1, 2], &[2., 5.]));
        let mut gates = ChannelGates::new();
        gates.insert("l".into(), vec![0.0, 2.0]);
        gates.insert("input".into(), vec![1.0, 0.0]);
        // input gated to [1, 0]: l = [1+1, 3+1] = [2, 4]; gate on l: [0, 8].
        let y = forward_with_channel_gates(&g, &w, None, &gates, &input).unwrap();
        close(&y, &arr(&[1, 2], &[0., 8.]));
    }

    #[test]
    fn bad_inputs_are_named() {
        let mut b = GraphBuilder::new("t", &[3, 4, 4]);
        let x = b.input();
        let c = b.conv2d("c", &x, 2, 3, 1, 1);
        let g = b.finish(&c);
        let w = init_weights(&g, 0);
        let e = forward(&g, &w, None, &ArrayD::zeros(IxDyn(&[1, 3, 5, 4])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[1, 3, 5, 4]") && e.contains("[N, 3, 4, 4]"),
            "{e}"
        );
        let mut missing = w.clone();
        missing.remove("c.weight");
        let e = forward(&g, &missing, None, &ArrayD::zeros(IxDyn(&[1, 3, 4, 4])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.weight") && e.contains("missing"), "{e}");
        let mut gates = ChannelGates::new();
        gates.insert("c".into(), vec![1.0]);
        let e =
            forward_with_channel_gates(&g, &w, None, &gates, &ArrayD::zeros(IxDyn(&[1, 3, 4, 4])))
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("`c`") && e.contains("1 entries") && e.contains("2 channels"),
            "{e}"
        );
    }
}
