use super::*;
use crate::builder::GraphBuilder;
use crate::graph::Op;
use crate::ops::{Activation, Pool2d, ResizeMode};
use crate::ops::{BatchNorm, Conv2d, Dropout, Linear};
use crate::shape::window_out;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn mask(shape: &[usize], keep: &[bool]) -> ArrayD<bool> {
    ArrayD::from_shape_vec(IxDyn(shape), keep.to_vec()).unwrap()
}

fn flags(m: &ArrayD<bool>) -> Vec<bool> {
    m.iter().copied().collect()
}

/// Pushes an op with non-square attributes (the builder's helpers are square).
fn push(b: &mut GraphBuilder, name: &str, op: Op, x: &str) -> String {
    b.push(name, op, &[x])
}

fn conv_op(
    c_in: usize,
    c_out: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
) -> Op {
    Op::Conv2d(Conv2d {
        in_channels: c_in,
        out_channels: c_out,
        kernel,
        stride,
        padding: pad,
        dilation: [1, 1],
        groups: 1,
        bias: false,
    })
}

#[test]
fn mlp_unit_without_inputs_disables_its_outputs() {
    // x[3] -> l1 (2x3) -> relu -> l2 (2x2); hidden unit 0 loses all incoming weights.
    let mut b = GraphBuilder::new("mlp", &[3]);
    let x = b.input();
    let h = b.linear("l1", &x, 2, true);
    let r = b.relu("r", &h);
    let y = b.linear("l2", &r, 2, true);
    let g = b.finish(&y);
    let mut m = Masks::new();
    m.insert(
        "l1.weight".into(),
        mask(&[2, 3], &[false, false, false, true, true, true]),
    );
    let e = effective_masks(&g, &m).unwrap();
    assert_eq!(
        flags(&e["l1.weight"]),
        [false, false, false, true, true, true]
    );
    // l2[j, 0] reads the dead unit 0.
    assert_eq!(flags(&e["l2.weight"]), [false, true, false, true]);
    let r = sparsity_report(&g, &m).unwrap();
    assert_eq!((r.total, r.unpruned, r.active), (10, 7, 5));
    assert!((r.direct_sparsity - 0.3).abs() < 1e-12);
    assert!((r.effective_sparsity - 0.5).abs() < 1e-12);
    assert!((r.effective_compression - 2.0).abs() < 1e-12);
    assert_eq!(r.layers[1].active, 2);
    assert_eq!(r.layers[1].tensor, "l2.weight");

    // Symmetric case: hidden unit 1 has no outgoing weight, so its incoming ones are inactive.
    let mut m = Masks::new();
    m.insert(
        "l2.weight".into(),
        mask(&[2, 2], &[true, false, true, false]),
    );
    let e = effective_masks(&g, &m).unwrap();
    assert_eq!(
        flags(&e["l1.weight"]),
        [true, true, true, false, false, false]
    );
    assert_eq!(flags(&e["l2.weight"]), [true, false, true, false]);
}

#[test]
fn taps_that_only_see_padding_are_inactive_even_when_dense() {
    // 2x2 input, 3x3 kernel, padding 1, stride 2: one output position reading input rows/cols
    // -1, 0, 1, so only taps (1..3, 1..3) touch the image.
    let mut b = GraphBuilder::new("c", &[1, 2, 2]);
    let x = b.input();
    let c = b.conv2d("c", &x, 1, 3, 2, 1);
    let g = b.finish(&c);
    let e = effective_masks(&g, &Masks::new()).unwrap();
    let want = [false, false, false, false, true, true, false, true, true];
    assert_eq!(flags(&e["c.weight"]), want);
    let r = sparsity_report(&g, &Masks::new()).unwrap();
    assert_eq!(r.direct_sparsity, 0.0);
    assert!((r.effective_sparsity - 5.0 / 9.0).abs() < 1e-12);
}

/// x[1,1,1] -> conv [1,3] padding [0,2]: output position p is read only through tap 2 - p, so
/// which of this conv's taps stay active shows which of its output positions are used downstream.
fn tap_probe(tail: impl FnOnce(&mut GraphBuilder, &str) -> String) -> (Vec<bool>, Graph) {
    let mut b = GraphBuilder::new("probe", &[1, 1, 1]);
    let x = b.input();
    let a = push(&mut b, "a", conv_op(1, 1, [1, 3], [1, 1], [0, 2]), &x);
    let out = tail(&mut b, &a);
    let g = b.finish(&out);
    let e = effective_masks(&g, &Masks::new()).unwrap();
    (flags(&e["a.weight"]), g)
}

#[test]
fn stride_skips_positions_and_their_taps() {
    let (a, g) = tap_probe(|b, a| push(b, "s", conv_op(1, 1, [1, 1], [1, 2], [0, 0]), a));
    // The strided 1x1 conv reads positions 0 and 2 -> taps 2 and 0; its own weight is active.
    assert_eq!(a, [true, false, true]);
    let e = effective_masks(&g, &Masks::new()).unwrap();
    assert_eq!(flags(&e["s.weight"]), [true]);
}

#[test]
fn pooling_is_an_or_over_its_window_without_padding() {
    let pool = |kernel, stride, padding, max| {
        move |b: &mut GraphBuilder, a: &str| {
            let attrs = Pool2d {
                kernel,
                stride,
                padding,
                ceil_mode: false,
                count_include_pad: true,
            };
            let op = if max {
                Op::MaxPool(attrs)
            } else {
                Op::AvgPool(attrs)
            };
            push(b, "p", op, a)
        }
    };
    // Window [0, 1] of 3 positions: position 2 is never read.
    assert_eq!(
        tap_probe(pool([1, 2], [1, 2], [0, 0], true)).0,
        [false, true, true]
    );
    // 1-wide window with stride 2: positions 0 and 2.
    assert_eq!(
        tap_probe(pool([1, 1], [1, 2], [0, 0], false)).0,
        [true, false, true]
    );
    // Padded window (-1, 0, 1): padding reads nothing, positions 0 and 1 are used.
    assert_eq!(
        tap_probe(pool([1, 3], [1, 3], [0, 1], true)).0,
        [false, true, true]
    );
    // Global pooling reads everything.
    assert_eq!(
        tap_probe(|b, a| b.global_avg_pool("gp", a)).0,
        [true, true, true]
    );
}

#[test]
fn flatten_is_channel_major() {
    // a: 1 -> 2 channels of width 3; flatten gives feature c*3 + p; the classifier drops
    // feature 3 = (channel 1, position 0), which only a.weight[1, 0, 0, 2] feeds.
    let mut b = GraphBuilder::new("f", &[1, 1, 1]);
    let x = b.input();
    let a = push(&mut b, "a", conv_op(1, 2, [1, 3], [1, 1], [0, 2]), &x);
    let f = b.flatten("f", &a);
    let l = b.linear("fc", &f, 1, false);
    let g = b.finish(&l);
    let mut m = Masks::new();
    m.insert(
        "fc.weight".into(),
        mask(&[1, 6], &[true, true, true, false, true, true]),
    );
    let e = effective_masks(&g, &m).unwrap();
    assert_eq!(flags(&e["a.weight"]), [true, true, true, true, true, false]);
    assert_eq!(
        flags(&e["fc.weight"]),
        [true, true, true, false, true, true]
    );
}

#[test]
fn residual_shortcut_keeps_a_unit_alive() {
    // x[2] -> l1 (row 0 pruned: h0 has no inputs) -> s = h + x -> l2. Through the shortcut s0
    // is still reachable, so l2's weights reading s0 stay active; without it they do not.
    let build = |residual: bool| {
        let mut b = GraphBuilder::new("res", &[2]);
        let x = b.input();
        let h = b.linear("l1", &x, 2, false);
        let s = if residual { b.add("s", &[&h, &x]) } else { h };
        let y = b.linear("l2", &s, 1, false);
        b.finish(&y)
    };
    let mut m = Masks::new();
    m.insert(
        "l1.weight".into(),
        mask(&[2, 2], &[false, false, true, true]),
    );
    let e = effective_masks(&build(true), &m).unwrap();
    assert_eq!(flags(&e["l2.weight"]), [true, true]);
    assert_eq!(flags(&e["l1.weight"]), [false, false, true, true]);
    let e = effective_masks(&build(false), &m).unwrap();
    assert_eq!(flags(&e["l2.weight"]), [false, true]);

    // Backward direction: l2 entirely pruned, the shortcut alone carries l1's output.
    let mut b = GraphBuilder::new("res2", &[2]);
    let x = b.input();
    let h = b.linear("l1", &x, 2, false);
    let z = b.linear("l2", &h, 2, false);
    let s = b.add("s", &[&z, &h]);
    let g = b.finish(&s);
    let mut m = Masks::new();
    m.insert("l2.weight".into(), mask(&[2, 2], &[false; 4]));
    let r = sparsity_report(&g, &m).unwrap();
    assert_eq!((r.layers[0].active, r.layers[1].active), (4, 0));
}

#[test]
fn concat_stacks_channels() {
    // a (2 channels) ++ b (1 channel) -> d reads channels 0..3; pruning d's input channel 1
    // kills a's output channel 1, pruning channel 2 kills b.
    let mut bld = GraphBuilder::new("cat", &[1, 2, 2]);
    let x = bld.input();
    let a = bld.conv2d("a", &x, 2, 1, 1, 0);
    let b = bld.conv2d("b", &x, 1, 1, 1, 0);
    let c = bld.concat("c", &[&a, &b]);
    let d = bld.conv2d("d", &c, 1, 1, 1, 0);
    let g = bld.finish(&d);
    let mut m = Masks::new();
    m.insert("d.weight".into(), mask(&[1, 3, 1, 1], &[true, false, true]));
    let e = effective_masks(&g, &m).unwrap();
    assert_eq!(flags(&e["a.weight"]), [true, false]);
    assert_eq!(flags(&e["b.weight"]), [true]);
    m.insert("d.weight".into(), mask(&[1, 3, 1, 1], &[true, true, false]));
    let e = effective_masks(&g, &m).unwrap();
    assert_eq!(flags(&e["a.weight"]), [true, true]);
    assert_eq!(flags(&e["b.weight"]), [false]);
}

#[test]
fn grouped_conv_channels_stay_in_their_group() {
    // 4 -> 4 channels in 2 groups; the next 1x1 conv reads only channel 3, so only output
    // channel 3's weights (which read group 1's inputs 2 and 3) are active.
    let mut b = GraphBuilder::new("grp", &[4, 1, 1]);
    let x = b.input();
    let gc = b.conv2d_full("g", &x, 4, [1, 1], [1, 1], [0, 0], [1, 1], 2, false);
    let d = b.conv2d("d", &gc, 1, 1, 1, 0);
    let g = b.finish(&d);
    let mut m = Masks::new();
    m.insert(
        "d.weight".into(),
        mask(&[1, 4, 1, 1], &[false, false, false, true]),
    );
    let e = effective_masks(&g, &m).unwrap();
    // g.weight is [4, 2, 1, 1]: rows are output channels.
    assert_eq!(
        flags(&e["g.weight"]),
        [false, false, false, false, false, false, true, true]
    );
}

#[test]
fn dead_branches_and_fully_pruned_networks() {
    let mut b = GraphBuilder::new("dead", &[3]);
    let x = b.input();
    let _unused = b.linear("side", &x, 4, false);
    let y = b.linear("main", &x, 2, false);
    let g = b.finish(&y);
    let r = sparsity_report(&g, &Masks::new()).unwrap();
    assert_eq!((r.layers[0].active, r.layers[1].active), (0, 6));
    assert_eq!(r.direct_sparsity, 0.0);
    assert!((r.effective_sparsity - 12.0 / 18.0).abs() < 1e-12);

    let mut m = Masks::new();
    m.insert("main.weight".into(), mask(&[2, 3], &[false; 6]));
    let r = sparsity_report(&g, &m).unwrap();
    assert_eq!(r.effective_sparsity, 1.0);
    assert!(r.effective_compression.is_infinite());
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["effective_compression"].is_null(), "{json}");
    // 6 of 18 weights pruned: direct sparsity 1/3, compression 1.5.
    assert!((json["direct_compression"].as_f64().unwrap() - 1.5).abs() < 1e-12);
}

#[test]
fn bad_masks_are_named_errors() {
    let mut b = GraphBuilder::new("m", &[3]);
    let x = b.input();
    let y = b.linear("l", &x, 2, true);
    let g = b.finish(&y);
    let mut m = Masks::new();
    m.insert("l.weight".into(), mask(&[3, 2], &[true; 6]));
    let e = sparsity_report(&g, &m).unwrap_err().to_string();
    assert!(e.contains("l.weight") && e.contains("[3, 2]"), "{e}");
    let mut m = Masks::new();
    m.insert("nope.weight".into(), mask(&[1], &[true]));
    let e = effective_masks(&g, &m).unwrap_err().to_string();
    assert!(
        e.contains("nope.weight") && e.contains("does not have"),
        "{e}"
    );
    // A mask on a bias is accepted and ignored: biases are not paths.
    let mut m = Masks::new();
    m.insert("l.bias".into(), mask(&[2], &[false, false]));
    assert_eq!(sparsity_report(&g, &m).unwrap().effective_sparsity, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Brute force: every weight use is an explicit edge of the unit-level DAG; reachability by DFS.

/// A unit-level edge: (from unit, to unit, the kept weight it uses as (layer, flat index)).
type Edge = (usize, usize, Option<(usize, usize)>);

/// Active flags per prunable layer by explicit path search (independent of the bitset code).
fn brute_force(graph: &Graph, masks: &Masks) -> Vec<Vec<bool>> {
    let shapes = infer_shapes(graph).unwrap();
    let numel = |v: &str| shapes.get(v).iter().product::<usize>();
    let mut base: HashMap<&str, usize> = HashMap::new();
    let mut units = numel(&graph.input.name);
    base.insert(&graph.input.name, 0);
    for n in &graph.nodes {
        base.insert(&n.name, units);
        units += numel(&n.name);
    }
    // (from, to, weight) with weight = (layer, flat index) for kept weights only.
    let mut edges: Vec<Edge> = Vec::new();
    let mut sizes = Vec::new();
    for n in &graph.nodes {
        let xs = shapes.get(&n.inputs[0]).clone();
        let ys = shapes.get(&n.name).clone();
        let (xb, yb) = (base[n.inputs[0].as_str()], base[n.name.as_str()]);
        let keep = |i: usize| {
            masks
                .get(&format!("{}.weight", n.name))
                .is_none_or(|m| m.as_slice().unwrap()[i])
        };
        match n.op {
            Op::Conv2d(Conv2d {
                kernel,
                stride,
                padding,
                dilation,
                groups,
                ..
            }) => {
                let layer = sizes.len();
                let (ci, hi, wi) = (xs[0], xs[1] as isize, xs[2] as isize);
                let (co, ho, wo) = (ys[0], ys[1], ys[2]);
                let (ig, og) = (ci / groups, co / groups);
                for o in 0..co {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            for i in 0..ig {
                                for ky in 0..kernel[0] {
                                    for kx in 0..kernel[1] {
                                        let iy = (oy * stride[0] + ky * dilation[0]) as isize
                                            - padding[0] as isize;
                                        let ix = (ox * stride[1] + kx * dilation[1]) as isize
                                            - padding[1] as isize;
                                        if iy < 0 || iy >= hi || ix < 0 || ix >= wi {
                                            continue;
                                        }
                                        let w = ((o * ig + i) * kernel[0] + ky) * kernel[1] + kx;
                                        if keep(w) {
                                            let c = (o / og) * ig + i;
                                            let src = xb
                                                + (c * hi as usize + iy as usize) * wi as usize
                                                + ix as usize;
                                            edges.push((
                                                src,
                                                yb + (o * ho + oy) * wo + ox,
                                                Some((layer, w)),
                                            ));
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                sizes.push(co * ig * kernel[0] * kernel[1]);
            }
            Op::Linear(Linear {
                in_features,
                out_features,
                ..
            }) => {
                let layer = sizes.len();
                // Tokens `[T,C]` are row-major: unit (t, c) is t*C + c.
                let tokens = if xs.len() == 2 { xs[0] } else { 1 };
                for t in 0..tokens {
                    for o in 0..out_features {
                        for i in 0..in_features {
                            if keep(o * in_features + i) {
                                edges.push((
                                    xb + t * in_features + i,
                                    yb + t * out_features + o,
                                    Some((layer, o * in_features + i)),
                                ));
                            }
                        }
                    }
                }
                sizes.push(in_features * out_features);
            }
            Op::PositionEmbedding(_) => {
                for u in 0..numel(&n.name) {
                    edges.push((xb + u, yb + u, None));
                }
            }
            Op::Tokenize => {
                let (c, p) = (xs[0], xs[1] * xs[2]);
                for ch in 0..c {
                    for q in 0..p {
                        edges.push((xb + ch * p + q, yb + q * c + ch, None));
                    }
                }
            }
            Op::ClassToken(_) => {
                for u in 0..numel(&n.inputs[0]) {
                    edges.push((xb + u, yb + xs[1] + u, None));
                }
            }
            Op::TokenPool(pool) => {
                let (t, c) = (xs[0], xs[1]);
                let read = match pool.mode {
                    crate::ops::TokenPoolMode::Class => 1,
                    crate::ops::TokenPoolMode::Mean => t,
                };
                for q in 0..read {
                    for ch in 0..c {
                        edges.push((xb + q * c + ch, yb + ch, None));
                    }
                }
            }
            Op::Attention(a) => {
                let (t, w, d) = (xs[0], a.width(), a.head_dim);
                for p in 0..t {
                    for j in 0..w {
                        let head = j / d * d..j / d * d + d;
                        let out = yb + p * w + j;
                        for s in 0..t {
                            edges.push((xb + s * 3 * w + 2 * w + j, out, None));
                            for c in head.clone() {
                                edges.push((xb + s * 3 * w + w + c, out, None));
                            }
                        }
                        for c in head.clone() {
                            edges.push((xb + p * 3 * w + c, out, None));
                        }
                    }
                }
            }
            Op::SpatialSlice(sl) => {
                let (ci, pi, po) = (xs[0], xs[1] * xs[2], ys[1] * ys[2]);
                let sources = sl.sources([xs[1], xs[2]]);
                for ch in 0..ci {
                    for (q, &src) in sources.iter().enumerate() {
                        edges.push((xb + ch * pi + src, yb + ch * po + q, None));
                    }
                }
            }
            Op::WindowAttention(a) => {
                // Channel-major maps; the keys and values of every position reach every output
                // position of their head (the pass does not narrow connections to windows).
                let (p, w, d) = (xs[1] * xs[2], a.width(), a.head_dim);
                for j in 0..w {
                    let head = j / d * d..j / d * d + d;
                    for q in 0..p {
                        let out = yb + j * p + q;
                        for s in 0..p {
                            edges.push((xb + (2 * w + j) * p + s, out, None));
                            for c in head.clone() {
                                edges.push((xb + (w + c) * p + s, out, None));
                            }
                        }
                        for c in head.clone() {
                            edges.push((xb + c * p + q, out, None));
                        }
                    }
                }
            }
            Op::BatchNorm(BatchNorm { .. })
            | Op::Relu
            | Op::Relu6
            | Op::Activation(_)
            | Op::Affine(_)
            | Op::Dropout(Dropout { .. })
            | Op::Flatten => {
                for u in 0..numel(&n.name) {
                    edges.push((xb + u, yb + u, None));
                }
            }
            Op::MaxPool(Pool2d {
                kernel,
                stride,
                padding,
                ..
            })
            | Op::AvgPool(Pool2d {
                kernel,
                stride,
                padding,
                ..
            }) => {
                let (hi, wi) = (xs[1] as isize, xs[2] as isize);
                for c in 0..ys[0] {
                    for oy in 0..ys[1] {
                        for ox in 0..ys[2] {
                            for ky in 0..kernel[0] {
                                for kx in 0..kernel[1] {
                                    let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                                    let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                                    if iy >= 0 && iy < hi && ix >= 0 && ix < wi {
                                        let src = xb
                                            + (c * hi as usize + iy as usize) * wi as usize
                                            + ix as usize;
                                        edges.push((src, yb + (c * ys[1] + oy) * ys[2] + ox, None));
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Op::Pad(pad) => {
                let (h, w) = (xs[1], xs[2]);
                let sources = pad.sources([h, w]);
                for c in 0..ys[0] {
                    for (p, q) in sources.iter().enumerate() {
                        if let Some(q) = q {
                            edges.push((xb + c * h * w + q, yb + c * sources.len() + p, None));
                        }
                    }
                }
            }
            Op::GlobalAvgPool(_) | Op::GlobalMaxPool(_) => {
                let p = xs[1] * xs[2];
                for c in 0..xs[0] {
                    for q in 0..p {
                        edges.push((xb + c * p + q, yb + c, None));
                    }
                }
            }
            Op::Add | Op::Mul => {
                // A [C,1,1] input (fewer units) broadcasts: its unit c feeds every (c, p).
                let positions = numel(&n.name) / ys[0];
                for inp in &n.inputs {
                    let broadcast = numel(inp) < numel(&n.name);
                    for u in 0..numel(&n.name) {
                        let src = if broadcast { u / positions } else { u };
                        edges.push((base[inp.as_str()] + src, yb + u, None));
                    }
                }
            }
            Op::Concat => {
                let mut off = 0;
                for inp in &n.inputs {
                    for u in 0..numel(inp) {
                        edges.push((base[inp.as_str()] + u, yb + off + u, None));
                    }
                    off += numel(inp);
                }
            }
            Op::GroupNorm(gn) => {
                let positions = numel(&n.name) / ys[0];
                let per = ys[0] / gn.groups;
                for i in 0..numel(&n.name) {
                    for o in 0..numel(&n.name) {
                        if i / positions / per == o / positions / per {
                            edges.push((xb + i, yb + o, None));
                        }
                    }
                }
            }
            Op::Resize(r) => {
                let (h, w) = (xs[1], xs[2]);
                let taps = r.taps([h, w]);
                for c in 0..ys[0] {
                    for (p, t) in taps.iter().enumerate() {
                        for &(q, _) in t {
                            edges.push((xb + c * h * w + q, yb + c * taps.len() + p, None));
                        }
                    }
                }
            }
            Op::LayerNorm(_) if ys.len() == 2 => {
                let (t, c) = (ys[0], ys[1]);
                for p in 0..t {
                    for i in 0..c {
                        for o in 0..c {
                            edges.push((xb + p * c + i, yb + p * c + o, None));
                        }
                    }
                }
            }
            Op::LayerNorm(_) => {
                let positions = numel(&n.name) / ys[0];
                for p in 0..positions {
                    for i in 0..ys[0] {
                        for o in 0..ys[0] {
                            edges.push((xb + i * positions + p, yb + o * positions + p, None));
                        }
                    }
                }
            }
            Op::Slice(_) | Op::ChannelShuffle(_) => {
                let positions = numel(&n.name) / ys[0];
                for c in 0..ys[0] {
                    let src = match n.op {
                        Op::Slice(sl) => sl.start + c,
                        Op::ChannelShuffle(sh) => sh.source(c, ys[0]),
                        _ => unreachable!(),
                    };
                    for p in 0..positions {
                        edges.push((xb + src * positions + p, yb + c * positions + p, None));
                    }
                }
            }
        }
    }
    let search = |starts: std::ops::Range<usize>, forward: bool| -> Vec<bool> {
        let mut adj: Vec<Vec<usize>> = vec![Vec::new(); units];
        for &(a, b, _) in &edges {
            if forward {
                adj[a].push(b);
            } else {
                adj[b].push(a);
            }
        }
        let mut seen = vec![false; units];
        let mut stack: Vec<usize> = starts.collect();
        for &s in &stack {
            seen[s] = true;
        }
        while let Some(u) = stack.pop() {
            for &v in &adj[u] {
                if !seen[v] {
                    seen[v] = true;
                    stack.push(v);
                }
            }
        }
        seen
    };
    let fwd = search(0..numel(&graph.input.name), true);
    let ob = base[graph.output.as_str()];
    let bwd = search(ob..ob + numel(&graph.output), false);
    let mut active: Vec<Vec<bool>> = sizes.iter().map(|&s| vec![false; s]).collect();
    for (a, b, w) in edges {
        if let Some((l, i)) = w
            && fwd[a]
            && bwd[b]
        {
            active[l][i] = true;
        }
    }
    active
}

/// Valid (output length) for a window along one axis, if it fits.
fn fits(len: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    window_out(len, k, s, p, d).filter(|&o| o > 0)
}

fn random_mlp(rng: &mut ChaCha8Rng) -> Graph {
    let mut b = GraphBuilder::new("mlp", &[rng.random_range(1..=5)]);
    let mut cur = b.input();
    for i in 0..rng.random_range(1..=4) {
        let width = rng.random_range(1..=5);
        let mut h = b.linear(&format!("l{i}"), &cur, width, rng.random_bool(0.5));
        if rng.random_bool(0.3) {
            h = b.batchnorm(&format!("bn{i}"), &h);
        }
        if rng.random_bool(0.5) {
            h = b.relu(&format!("r{i}"), &h);
        }
        if rng.random_bool(0.2) {
            h = b.dropout(&format!("d{i}"), &h, 0.5);
        }
        if rng.random_bool(0.15) {
            let _ = b.linear(&format!("dead{i}"), &cur, 2, false);
        }
        if b.channels(&h) == b.channels(&cur) && rng.random_bool(0.5) {
            h = b.add(&format!("res{i}"), &[&h, &cur]);
        } else if rng.random_bool(0.25) {
            let side = b.linear(&format!("side{i}"), &cur, rng.random_range(1..=3), false);
            h = b.concat(&format!("cat{i}"), &[&h, &side]);
        }
        cur = h;
    }
    let out = b.linear("head", &cur, rng.random_range(1..=3), true);
    b.finish(&out)
}

fn random_conv(
    rng: &mut ChaCha8Rng,
    b: &mut GraphBuilder,
    name: &str,
    x: &str,
    same_size: bool,
) -> Option<String> {
    let c = b.channels(x);
    let (h, w) = (b.shape(x)[1], b.shape(x)[2]);
    let divisors: Vec<usize> = (1..=c).filter(|g| c.is_multiple_of(*g)).collect();
    let groups = divisors[rng.random_range(0..divisors.len())];
    let out = if same_size {
        c
    } else {
        groups * rng.random_range(1..=3)
    };
    let (k, s, p, d) = if same_size {
        let k = [1, 3][rng.random_range(0..2)];
        let d = rng.random_range(1..=2);
        ([k, k], [1, 1], [d * (k - 1) / 2; 2], [d, d])
    } else {
        let k = [rng.random_range(1..=3), rng.random_range(1..=3)];
        (
            k,
            [rng.random_range(1..=2), rng.random_range(1..=2)],
            [rng.random_range(0..=k[0]), rng.random_range(0..=k[1])],
            [rng.random_range(1..=2), rng.random_range(1..=2)],
        )
    };
    fits(h, k[0], s[0], p[0], d[0])?;
    fits(w, k[1], s[1], p[1], d[1])?;
    Some(b.conv2d_full(name, x, out, k, s, p, d, groups, false))
}

fn random_convnet(rng: &mut ChaCha8Rng) -> Graph {
    let shape = [
        rng.random_range(1..=3),
        rng.random_range(1..=5),
        rng.random_range(1..=5),
    ];
    let mut b = GraphBuilder::new("cnn", &shape);
    let mut cur = b.input();
    for i in 0..rng.random_range(1..=4) {
        match rng.random_range(0..7) {
            0 | 1 => {
                if let Some(y) = random_conv(rng, &mut b, &format!("c{i}"), &cur, false) {
                    cur = if rng.random_bool(0.5) {
                        let n = b.batchnorm(&format!("bn{i}"), &y);
                        b.relu(&format!("r{i}"), &n)
                    } else {
                        y
                    };
                }
            }
            2 => {
                let (h, w) = (b.shape(&cur)[1], b.shape(&cur)[2]);
                let k = [rng.random_range(1..=3), rng.random_range(1..=3)];
                let s = [rng.random_range(1..=2), rng.random_range(1..=2)];
                let p = [
                    rng.random_range(0..=k[0] / 2),
                    rng.random_range(0..=k[1] / 2),
                ];
                if fits(h, k[0], s[0], p[0], 1).is_some() && fits(w, k[1], s[1], p[1], 1).is_some()
                {
                    let attrs = Pool2d {
                        kernel: k,
                        stride: s,
                        padding: p,
                        ceil_mode: rng.random_bool(0.5),
                        count_include_pad: true,
                    };
                    let op = if rng.random_bool(0.5) {
                        Op::MaxPool(attrs)
                    } else {
                        Op::AvgPool(attrs)
                    };
                    cur = push(&mut b, &format!("p{i}"), op, &cur);
                }
            }
            3 => {
                if let Some(y) = random_conv(rng, &mut b, &format!("rc{i}"), &cur, true) {
                    cur = b.add(&format!("res{i}"), &[&y, &cur]);
                }
            }
            5 => {
                // ShuffleNet-style: two halves, one through a conv, joined and shuffled.
                let c = b.shape(&cur)[0];
                if c >= 2 && c % 2 == 0 {
                    let left = b.slice(&format!("sl{i}"), &cur, 0, c / 2);
                    let right = b.slice(&format!("sr{i}"), &cur, c / 2, c);
                    let r = b.conv2d(&format!("sc{i}"), &right, c / 2, 1, 1, 0);
                    let cat = b.concat(&format!("scat{i}"), &[&left, &r]);
                    cur = b.channel_shuffle(&format!("shuf{i}"), &cat, 2);
                }
                if rng.random_bool(0.5) {
                    let ln = b.layer_norm(&format!("ln{i}"), &cur);
                    cur = b.affine(&format!("ls{i}"), &ln);
                }
                let c = b.shape(&cur)[0];
                if c % 2 == 0 && rng.random_bool(0.5) {
                    cur = b.group_norm(&format!("gn{i}"), &cur, 2);
                }
                if rng.random_bool(0.3) {
                    let pads = [0, 1, 2, 1].map(|_| rng.random_range(0..3));
                    cur = b.pad(&format!("pad{i}"), &cur, pads);
                }
                if rng.random_bool(0.3) {
                    let mode = if rng.random_bool(0.5) {
                        ResizeMode::Nearest
                    } else {
                        ResizeMode::Bilinear
                    };
                    cur = b.resize(
                        &format!("up{i}"),
                        &cur,
                        [2, 1 + rng.random_range(0..2)],
                        mode,
                    );
                }
            }
            4 => {
                // Squeeze-excitation: pooled [C,1,1] -> 1x1 convs -> sigmoid, scaling the map.
                let c = b.shape(&cur)[0];
                let p = b.global_avg_pool_keep(&format!("se_pool{i}"), &cur);
                let s = b.conv2d(&format!("se_sq{i}"), &p, rng.random_range(1..=3), 1, 1, 0);
                let s = b.activation(&format!("se_act{i}"), &s, Activation::Silu);
                let e = b.conv2d(&format!("se_ex{i}"), &s, c, 1, 1, 0);
                let e = b.activation(&format!("se_gate{i}"), &e, Activation::Sigmoid);
                cur = if rng.random_bool(0.5) {
                    b.mul(&format!("se_mul{i}"), &cur, &e)
                } else {
                    b.mul(&format!("se_mul{i}"), &e, &cur)
                };
            }
            _ => {
                let l = random_conv(rng, &mut b, &format!("ca{i}"), &cur, true);
                let r = random_conv(rng, &mut b, &format!("cb{i}"), &cur, true);
                if let (Some(l), Some(r)) = (l, r) {
                    cur = b.concat(&format!("cat{i}"), &[&l, &r]);
                }
            }
        }
    }
    let out = match rng.random_range(0..3) {
        0 => {
            let f = b.flatten("flat", &cur);
            b.linear("head", &f, rng.random_range(1..=3), true)
        }
        1 if rng.random_bool(0.5) => {
            let gp = b.global_max_pool("gmp", &cur);
            b.linear("head", &gp, rng.random_range(1..=3), true)
        }
        1 => {
            let gp = b.global_avg_pool("gap", &cur);
            b.linear("head", &gp, rng.random_range(1..=3), true)
        }
        _ => cur,
    };
    b.finish(&out)
}

fn random_masks(rng: &mut ChaCha8Rng, graph: &Graph) -> Masks {
    let density = rng.random_range(0.05..1.0);
    let mut m = Masks::new();
    for l in layer_infos(graph) {
        if rng.random_bool(0.1) {
            continue;
        }
        let keep: Vec<bool> = (0..l.numel()).map(|_| rng.random_bool(density)).collect();
        m.insert(l.name.clone(), mask(&l.shape, &keep));
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn matches_brute_force_path_enumeration(seed in any::<u64>(), mlp in any::<bool>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let g = if mlp { random_mlp(&mut rng) } else { random_convnet(&mut rng) };
        let m = random_masks(&mut rng, &g);
        let want = brute_force(&g, &m);
        let got = effective_masks(&g, &m).unwrap();
        let report = sparsity_report(&g, &m).unwrap();
        for (l, layer) in layer_infos(&g).iter().enumerate() {
            let got = flags(&got[&layer.name]);
            prop_assert_eq!(&got, &want[l], "layer {} of {}", layer.name, g.to_json());
            let active = want[l].iter().filter(|&&a| a).count() as u64;
            prop_assert_eq!(report.layers[l].active, active);
            // Active weights are kept weights.
            if let Some(mk) = m.get(&layer.name) {
                prop_assert!(got.iter().zip(mk.iter()).all(|(a, k)| !a || *k));
            }
        }
        prop_assert!(report.effective_sparsity >= report.direct_sparsity);
    }
}

/// A tiny random vision transformer: patch conv, class token or not, blocks of attention and
/// MLP with residuals, class or mean pooling.
fn random_vit(rng: &mut ChaCha8Rng) -> Graph {
    let side = rng.random_range(1..=3) * 2;
    let mut b = GraphBuilder::new("vit", &[rng.random_range(1..=2), side, side]);
    let x = b.input();
    let width = rng.random_range(1..=3) * 2;
    let x = b.conv2d_full("patch", &x, width, [2, 2], [2, 2], [0, 0], [1, 1], 1, true);
    let mut x = b.tokenize("tok", &x);
    let class = rng.random_bool(0.5);
    if class {
        x = b.class_token("cls", &x);
    }
    x = b.position_embedding("pos", &x);
    for i in 0..rng.random_range(1..=2) {
        let heads = rng.random_range(1..=2);
        let n = b.layer_norm(&format!("n{i}"), &x);
        let qkv = b.linear(
            &format!("qkv{i}"),
            &n,
            3 * heads * rng.random_range(1..=2),
            true,
        );
        let a = b.attention(&format!("attn{i}"), &qkv, heads);
        let a = b.linear(&format!("proj{i}"), &a, width, rng.random_bool(0.5));
        x = b.add(&format!("r{i}"), &[&x, &a]);
        let m = b.linear(&format!("fc1_{i}"), &x, rng.random_range(1..=4), true);
        let m = b.activation(&format!("g{i}"), &m, Activation::Gelu);
        let m = b.linear(&format!("fc2_{i}"), &m, width, true);
        x = b.add(&format!("m{i}"), &[&x, &m]);
    }
    let mode = if class && rng.random_bool(0.7) {
        crate::ops::TokenPoolMode::Class
    } else {
        crate::ops::TokenPoolMode::Mean
    };
    let p = b.token_pool("pool", &x, mode);
    let y = b.linear("head", &p, rng.random_range(1..=3), true);
    b.finish(&y)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    #[test]
    fn transformers_match_brute_force_path_enumeration(seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let g = random_vit(&mut rng);
        let m = random_masks(&mut rng, &g);
        let want = brute_force(&g, &m);
        let got = effective_masks(&g, &m).unwrap();
        for (l, layer) in layer_infos(&g).iter().enumerate() {
            prop_assert_eq!(&flags(&got[&layer.name]), &want[l], "layer {} of {}", layer.name, g.to_json());
        }
    }
}

#[test]
fn wide_grouped_convs_match_brute_force() {
    // More than 64 channels, so groups start inside and straddle u64 words.
    for seed in 0..6 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut b = GraphBuilder::new("wide", &[130, 3, 3]);
        let x = b.input();
        let dw = b.depthwise("dw", &x, 3, 1, 1);
        let g2 = b.conv2d_full("g2", &dw, 130, [1, 1], [1, 1], [0, 0], [1, 1], 2, false);
        let g5 = b.conv2d_full("g5", &x, 70, [3, 3], [2, 2], [1, 1], [1, 1], 5, false);
        let g5 = b.conv2d_full("g5b", &g5, 130, [1, 1], [1, 1], [0, 0], [1, 1], 10, false);
        let up = b.conv2d("up", &g5, 130, 2, 1, 1);
        let up = b.maxpool("upp", &up, 3, 1, 1);
        let s = b.add("s", &[&g2, &up]);
        let c = b.concat("c", &[&s, &dw]);
        let f = b.flatten("f", &c);
        let y = b.linear("fc", &f, 3, false);
        let g = b.finish(&y);
        let m = random_masks(&mut rng, &g);
        let want = brute_force(&g, &m);
        let got = effective_masks(&g, &m).unwrap();
        for (l, layer) in layer_infos(&g).iter().enumerate() {
            assert_eq!(
                flags(&got[&layer.name]),
                want[l],
                "seed {seed}, {}",
                layer.name
            );
        }
    }
}

#[test]
fn dense_masks_have_no_effective_sparsity_without_padding_only_taps() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..50 {
        let g = random_mlp(&mut rng);
        let dense_outside_dead = brute_force(&g, &Masks::new());
        let r = sparsity_report(&g, &Masks::new()).unwrap();
        assert_eq!(r.direct_sparsity, 0.0);
        let active: usize = dense_outside_dead.iter().flatten().filter(|&&a| a).count();
        assert_eq!(r.active as usize, active);
        if !g.nodes.iter().any(|n| n.name.starts_with("dead")) {
            assert_eq!(r.effective_sparsity, 0.0, "{}", g.to_json());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Performance.

/// torchvision ResNet-50 (v1.5: stride on the 3x3 conv); `width` 64 is the real one, with
/// about 25.5M prunable weights.
fn resnet50(input: &[usize], width: usize, classes: usize) -> Graph {
    let mut b = GraphBuilder::new("resnet-50", input);
    let x = b.input();
    let stem = b.conv_bn_relu("conv1", &x, width, 7, 2, 3);
    let mut cur = b.maxpool("pool1", &stem, 3, 2, 1);
    for (stage, (&blocks, mult)) in [3, 4, 6, 3].iter().zip([1, 2, 4, 8]).enumerate() {
        let width = width * mult;
        for block in 0..blocks {
            let stride = if block == 0 && stage > 0 { 2 } else { 1 };
            let n = format!("s{stage}b{block}");
            let a = b.conv_bn_relu(&format!("{n}a"), &cur, width, 1, 1, 0);
            let m = b.conv_bn_relu(&format!("{n}b"), &a, width, 3, stride, 1);
            let c = b.conv2d(&format!("{n}c"), &m, width * 4, 1, 1, 0);
            let c = b.batchnorm(&format!("{n}c_bn"), &c);
            let short = if block == 0 {
                let d = b.conv2d(&format!("{n}down"), &cur, width * 4, 1, stride, 0);
                b.batchnorm(&format!("{n}down_bn"), &d)
            } else {
                cur.clone()
            };
            let s = b.add(&format!("{n}add"), &[&c, &short]);
            cur = b.relu(&format!("{n}out"), &s);
        }
    }
    let gp = b.global_avg_pool("gap", &cur);
    let fc = b.linear("fc", &gp, classes, true);
    b.finish(&fc)
}

fn random_density_masks(graph: &Graph, density: f64, seed: u64) -> Masks {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut m = Masks::new();
    for l in layer_infos(graph) {
        let keep: Vec<bool> = (0..l.numel()).map(|_| rng.random_bool(density)).collect();
        m.insert(l.name.clone(), mask(&l.shape, &keep));
    }
    m
}

#[test]
fn mid_size_network_is_fast_and_consistent() {
    // A quarter-width ResNet-50 on 16x16 inputs: ~1.5M weights, 53 layers; debug build.
    let g = resnet50(&[3, 16, 16], 16, 10);
    let m = random_density_masks(&g, 0.05, 1);
    let start = std::time::Instant::now();
    let r = sparsity_report(&g, &m).unwrap();
    let took = start.elapsed();
    assert!(took.as_secs_f64() < 20.0, "took {took:?}");
    assert!(r.total > 1_000_000, "{}", r.total);
    assert!(r.effective_sparsity > r.direct_sparsity);
    // Random 95% pruning disconnects more than it removes directly, but not everything.
    assert!(r.effective_sparsity < 1.0);
}

/// Release-only timing (one core): `cargo test --release -p shears-core --lib
/// resnet50_under_a_second -- --ignored --nocapture`. The bound is asserted at 32x32 inputs;
/// 224x224 and the zoo's CIFAR-style nets are printed for reference.
#[test]
#[ignore]
fn resnet50_under_a_second() {
    let cases = [
        ("resnet-50 (here)", resnet50(&[3, 32, 32], 64, 1000), true),
        (
            "resnet-50 (zoo)",
            crate::zoo::build("resnet-50", &[3, 32, 32], 10).unwrap(),
            true,
        ),
        (
            "resnet-50 (here)",
            resnet50(&[3, 224, 224], 64, 1000),
            false,
        ),
        (
            "resnet-18 (zoo)",
            crate::zoo::build("resnet-18", &[3, 32, 32], 10).unwrap(),
            false,
        ),
        (
            "mobilenet-v2 (zoo)",
            crate::zoo::build("mobilenet-v2", &[3, 32, 32], 10).unwrap(),
            false,
        ),
    ];
    for (name, g, bounded) in cases {
        let m = random_density_masks(&g, 0.1, 2);
        let plan = Plan::new(&g).unwrap();
        let keeps = flat_keeps(&g, &plan.layers, &m).unwrap();
        let refs: Vec<Option<&[bool]>> = keeps.iter().map(|k| k.as_deref()).collect();
        let start = std::time::Instant::now();
        let run = plan.run(&refs, true);
        let with_masks = start.elapsed();
        let start = std::time::Instant::now();
        let report = sparsity_report(&g, &m).unwrap();
        let report_time = start.elapsed();
        println!(
            "{name} {:?}: {} weights, run+masks {with_masks:?}, sparsity_report {report_time:?}, direct {:.5}, effective {:.5}",
            g.input.shape, report.total, report.direct_sparsity, report.effective_sparsity
        );
        assert!(report.effective_sparsity >= report.direct_sparsity);
        assert_eq!(run.active.iter().sum::<u64>(), report.active);
        if bounded {
            assert!(with_masks.as_secs_f64() < 1.0 && report_time.as_secs_f64() < 1.0);
        }
    }
}
