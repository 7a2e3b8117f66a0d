//! Reference forward pass: a plain ndarray interpreter of any graph in inference mode.
//!
//! It is the oracle of equivalence tests (compacted == gated dense network, engine == reference),
//! so it favours plain semantics over speed; convolutions still go through im2col and one matrix
//! product per sample and group, so a CIFAR ResNet on a small batch stays fast enough for tests.
//!
//! This module walks the graph, applies masks and gates and frees values after their last
//! reader; each op's arithmetic (batch axis first, `[N,C,H,W]` maps, `[N,F]` vectors) is its
//! `reference` rule in its file under [`crate::ops`]. Masks multiply the weights they name;
//! channel gates multiply a value's channels.

use crate::error::{CoreError, Result};
use crate::graph::{Graph, Node};
use crate::ops::RefCall;
use crate::ops::arith::Params;
use crate::shape::infer_shapes;
use crate::weights::{Masks, Weights, check_masks, check_weights};
use ndarray::{ArrayD, Axis};
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
        if gate.len() != crate::shape::channels(shape) {
            return Err(CoreError::value(
                "channel gates",
                format!(
                    "gate of `{value}` has {} entries, the value has {} channels",
                    gate.len(),
                    crate::shape::channels(shape)
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

fn apply_gate(x: &mut ArrayD<f32>, gate: &[f32]) {
    // The channel axis of the batched value: the last of tokens `[N,T,C]`, else axis 1.
    let axis = if x.ndim() == 3 { 2 } else { 1 };
    for (mut lane, &g) in x.axis_iter_mut(Axis(axis)).zip(gate) {
        lane.mapv_inplace(|v| v * g);
    }
}

/// One node's output: the op's own reference arithmetic (its file in [`crate::ops`]).
/// `in_gate` is the gate on the node's first input, which only the norms over channels read.
fn eval_node(
    node: &Node,
    ins: &[&ArrayD<f32>],
    p: &Params<'_>,
    in_gate: Option<&Vec<f32>>,
) -> Result<ArrayD<f32>> {
    let call = RefCall {
        node,
        ins,
        params: p,
        in_gate: in_gate.map(|g| g.as_slice()),
    };
    node.op.with_rules(|r| r.reference(&call))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::graph::Op;
    use crate::ops::BatchNorm;
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
