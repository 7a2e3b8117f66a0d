//! Physical compaction: a channel selection turned into a smaller dense graph and sliced tensors.
//!
//! **Which masked network the result equals.** Compaction is output-equivalent to the *gated*
//! dense network: the original graph and weights where, for every pruned channel of a group, every
//! value slice listed in [`ChannelGroup::values`] is multiplied by 0 right after the node that
//! produces it (after the conv bias or the BatchNorm shift, before any consumer reads it).
//! [`selection_gates`] returns exactly those gates for
//! [`forward_with_channel_gates`](crate::reference::forward_with_channel_gates). Zeroing only the
//! producer's filters is *not* equivalent: a BatchNorm after it turns a zero channel into the
//! constant `beta - mean * gamma / sqrt(var + eps)`, which the next layer still sees.
//!
//! Node attributes follow the kept channels by each op's compaction rewrite
//! ([`Op::compacted`](crate::ops::Op::compacted)): conv `in_channels`/`out_channels`, a depthwise
//! conv's `groups` (= its kept channels), linear `in_features`/`out_features`, BatchNorm
//! `channels`. Tensors are sliced along the axes the group members name (each op's
//! [`Op::channel_axes`](crate::ops::Op::channel_axes)); masks are sliced like their tensors.

use super::groups::{ChannelGroup, channel_groups};
use super::select::ChannelSelection;
use crate::error::{CoreError, Result};
use crate::graph::{Graph, ParamSpec};
use crate::reference::ChannelGates;
use crate::shape::{Shapes, infer_shapes};
use crate::weights::{Masks, Weights};
use ndarray::{ArrayD, IxDyn};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// What to keep: per value (axis 0 indices) and per tensor (indices per axis), only where
/// something is removed.
struct Plan {
    values: HashMap<String, Vec<usize>>,
    tensors: HashMap<String, Vec<(usize, Vec<usize>)>>,
}

/// Checks a selection against the groups and lists the removed group channels per group.
fn removed_channels(
    groups: &[ChannelGroup],
    selection: &ChannelSelection,
) -> Result<Vec<(usize, Vec<usize>)>> {
    let mut out = Vec::new();
    for (&gid, kept) in &selection.kept {
        let g = groups.get(gid).ok_or_else(|| {
            CoreError::value(
                "channel selection",
                format!(
                    "names group {gid}, but the graph has {} groups",
                    groups.len()
                ),
            )
        })?;
        if kept.is_empty() {
            return Err(CoreError::value(
                "channel selection",
                format!(
                    "group {gid} ({}) keeps no channel; at least one must stay",
                    g.producers.join(", ")
                ),
            ));
        }
        if kept.windows(2).any(|w| w[0] >= w[1]) || kept[kept.len() - 1] >= g.channels {
            return Err(CoreError::value(
                "channel selection",
                format!(
                    "group {gid} must keep strictly increasing indices below {}, got {kept:?}",
                    g.channels
                ),
            ));
        }
        if kept.len() == g.channels {
            continue;
        }
        if !g.prunable {
            return Err(CoreError::value(
                "channel selection",
                format!(
                    "group {gid} is not prunable: {}",
                    g.reason.as_deref().unwrap_or("no reason given")
                ),
            ));
        }
        let mut keep = vec![false; g.channels];
        for &k in kept {
            keep[k] = true;
        }
        let removed = (0..g.channels).filter(|&j| !keep[j]).collect();
        out.push((gid, removed));
    }
    Ok(out)
}

fn spec_map(graph: &Graph) -> HashMap<String, ParamSpec> {
    graph
        .param_specs()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect()
}

fn kept_indices(keep: &[bool]) -> Vec<usize> {
    keep.iter()
        .enumerate()
        .filter_map(|(i, &k)| k.then_some(i))
        .collect()
}

fn make_plan(
    shapes: &Shapes,
    specs: &HashMap<String, ParamSpec>,
    groups: &[ChannelGroup],
    selection: &ChannelSelection,
) -> Result<Plan> {
    let mut values: HashMap<String, Vec<bool>> = HashMap::new();
    let mut tensors: HashMap<String, HashMap<usize, Vec<bool>>> = HashMap::new();
    for (gid, removed) in removed_channels(groups, selection)? {
        let g = &groups[gid];
        for vs in &g.values {
            let len = crate::shape::channels(shapes.get(&vs.value));
            let keep = values
                .entry(vs.value.clone())
                .or_insert_with(|| vec![true; len]);
            for &j in &removed {
                keep[vs.indices(j)].fill(false);
            }
        }
        for m in &g.members {
            let spec = specs.get(&m.tensor).ok_or_else(|| {
                CoreError::tensor(&m.tensor, "group member is not a parameter of the graph")
            })?;
            let len = spec.shape[m.axis];
            let keep = tensors
                .entry(m.tensor.clone())
                .or_default()
                .entry(m.axis)
                .or_insert_with(|| vec![true; len]);
            for &j in &removed {
                keep[m.indices(j)].fill(false);
            }
        }
    }
    Ok(Plan {
        values: values
            .into_iter()
            .map(|(k, v)| (k, kept_indices(&v)))
            .collect(),
        tensors: tensors
            .into_iter()
            .map(|(k, axes)| {
                let mut axes: Vec<(usize, Vec<usize>)> = axes
                    .into_iter()
                    .map(|(a, keep)| (a, kept_indices(&keep)))
                    .collect();
                axes.sort_by_key(|(a, _)| *a);
                (k, axes)
            })
            .collect(),
    })
}

/// The graph with the new channel counts of `plan`, shape-checked.
fn rewrite_graph(graph: &Graph, shapes: &Shapes, plan: &Plan) -> Result<Graph> {
    let kept = |v: &str| -> Cow<'_, [usize]> {
        match plan.values.get(v) {
            Some(k) => Cow::Borrowed(k.as_slice()),
            None => Cow::Owned((0..crate::shape::channels(shapes.get(v))).collect()),
        }
    };
    let mut out = graph.clone();
    for node in &mut out.nodes {
        let ins: Vec<Cow<'_, [usize]>> = node.inputs.iter().map(|v| kept(v)).collect();
        let ins: Vec<&[usize]> = ins.iter().map(|k| k.as_ref()).collect();
        node.op = node
            .op
            .compacted_with(&node.name, &ins, &kept(&node.name))?;
    }
    infer_shapes(&out)?;
    Ok(out)
}

/// Copies the kept indices of every listed axis of `t` into a new standard-layout tensor.
/// Trailing unsliced axes are copied as contiguous runs (the kernel window of a conv weight),
/// which keeps compaction of large models fast.
fn slice_tensor<T: Clone>(t: &ArrayD<T>, axes: Option<&Vec<(usize, Vec<usize>)>>) -> ArrayD<T> {
    let Some(axes) = axes.filter(|a| !a.is_empty()) else {
        return t.clone();
    };
    let std = t.as_standard_layout();
    let data: Cow<'_, [T]> = match std.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(std.iter().cloned().collect()),
    };
    let shape = t.shape();
    let nd = shape.len();
    let mut lists: Vec<Cow<'_, [usize]>> = (0..nd)
        .map(|a| Cow::Owned((0..shape[a]).collect()))
        .collect();
    let mut tail = 0;
    for (a, keep) in axes {
        lists[*a] = Cow::Borrowed(keep.as_slice());
        tail = tail.max(a + 1);
    }
    let chunk: usize = shape[tail..].iter().product();
    let mut strides = vec![chunk; tail];
    for a in (0..tail.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    let mut new_shape: Vec<usize> = lists[..tail].iter().map(|l| l.len()).collect();
    new_shape.extend_from_slice(&shape[tail..]);
    let total: usize = new_shape.iter().product();
    let mut out: Vec<T> = Vec::with_capacity(total);
    if total > 0 {
        let mut idx = vec![0usize; tail];
        'copy: loop {
            let offset: usize = (0..tail).map(|a| lists[a][idx[a]] * strides[a]).sum();
            out.extend_from_slice(&data[offset..offset + chunk]);
            let mut a = tail;
            loop {
                if a == 0 {
                    break 'copy;
                }
                a -= 1;
                idx[a] += 1;
                if idx[a] < lists[a].len() {
                    break;
                }
                idx[a] = 0;
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&new_shape), out)
        .unwrap_or_else(|_| unreachable!("gathered exactly the product of the new shape"))
}

/// Slices every tensor of `tensors` (weights or masks) by the plan; each must be a graph
/// parameter of the right shape.
fn slice_all<T: Clone>(
    what: &str,
    tensors: &std::collections::BTreeMap<String, ArrayD<T>>,
    specs: &HashMap<String, ParamSpec>,
    plan: &Plan,
) -> Result<std::collections::BTreeMap<String, ArrayD<T>>> {
    let mut out = std::collections::BTreeMap::new();
    for (name, t) in tensors {
        let spec = specs.get(name).ok_or_else(|| {
            CoreError::tensor(
                name,
                format!("{what} names a tensor that is not a parameter of the graph; compaction cannot slice it"),
            )
        })?;
        if t.shape() != spec.shape.as_slice() {
            return Err(CoreError::tensor(
                name,
                format!(
                    "{what} has shape {:?}, the graph needs {:?}",
                    t.shape(),
                    spec.shape
                ),
            ));
        }
        out.insert(name.clone(), slice_tensor(t, plan.tensors.get(name)));
    }
    Ok(out)
}

/// The compacted graph alone (no tensors), for cost estimates; see the module docs.
pub fn compact_graph(graph: &Graph, selection: &ChannelSelection) -> Result<Graph> {
    let groups = channel_groups(graph)?;
    compact_graph_with(graph, &groups, selection)
}

/// [`compact_graph`] with precomputed groups of the same graph.
pub(crate) fn compact_graph_with(
    graph: &Graph,
    groups: &[ChannelGroup],
    selection: &ChannelSelection,
) -> Result<Graph> {
    let shapes = infer_shapes(graph)?;
    let plan = make_plan(&shapes, &spec_map(graph), groups, selection)?;
    rewrite_graph(graph, &shapes, &plan)
}

/// Removes the pruned channels physically: a smaller dense graph and its sliced weights,
/// output-equivalent to the gated dense network (module docs).
pub fn compact(
    graph: &Graph,
    weights: &Weights,
    selection: &ChannelSelection,
) -> Result<(Graph, Weights)> {
    let groups = channel_groups(graph)?;
    let shapes = infer_shapes(graph)?;
    let specs = spec_map(graph);
    for name in specs.keys() {
        if !weights.contains_key(name) {
            return Err(CoreError::tensor(name, "missing from the weights"));
        }
    }
    let plan = make_plan(&shapes, &specs, &groups, selection)?;
    let new_graph = rewrite_graph(graph, &shapes, &plan)?;
    let new_weights = slice_all("weight", weights, &specs, &plan)?;
    for spec in new_graph.param_specs() {
        let got = new_weights.get(&spec.name).map(|t| t.shape().to_vec());
        if got.as_deref() != Some(spec.shape.as_slice()) {
            return Err(CoreError::tensor(
                &spec.name,
                format!(
                    "compaction bug: sliced to {got:?}, the compacted graph needs {:?}",
                    spec.shape
                ),
            ));
        }
    }
    Ok((new_graph, new_weights))
}

/// The indices each parameter tensor keeps along each axis under `selection`, ascending (only
/// tensors that lose something appear): the slicing [`compact`] does, for a front end that
/// slices tensors of its own (the PyTorch bridge slices a module's parameters by it).
pub fn kept_tensor_indices(
    graph: &Graph,
    selection: &ChannelSelection,
) -> Result<BTreeMap<String, Vec<(usize, Vec<usize>)>>> {
    let groups = channel_groups(graph)?;
    let shapes = infer_shapes(graph)?;
    let plan = make_plan(&shapes, &spec_map(graph), &groups, selection)?;
    Ok(plan.tensors.into_iter().collect())
}

/// Slices unstructured masks like the tensors they mask, for the graph [`compact`] returns.
pub fn compact_masks(graph: &Graph, masks: &Masks, selection: &ChannelSelection) -> Result<Masks> {
    let groups = channel_groups(graph)?;
    let shapes = infer_shapes(graph)?;
    let specs = spec_map(graph);
    let plan = make_plan(&shapes, &specs, &groups, selection)?;
    slice_all("mask", masks, &specs, &plan)
}

/// Channel gates (0 = pruned) on every value a selection touches: running the dense graph with
/// these gates gives the same outputs as the compacted graph.
pub fn selection_gates(graph: &Graph, selection: &ChannelSelection) -> Result<ChannelGates> {
    let groups = channel_groups(graph)?;
    let shapes = infer_shapes(graph)?;
    let plan = make_plan(&shapes, &spec_map(graph), &groups, selection)?;
    Ok(plan
        .values
        .iter()
        .map(|(value, kept)| {
            let mut gate = vec![0.0f32; crate::shape::channels(shapes.get(value))];
            for &k in kept {
                gate[k] = 1.0;
            }
            (value.clone(), gate)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::graph::Op;
    use crate::ops::{BatchNorm, Conv2d, Linear};
    use crate::reference::{forward, forward_with_channel_gates};
    use crate::structured::groups::MemberRole;
    use ndarray::Axis;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random weights with non-trivial BatchNorm statistics (so a zeroed filter is not zero
    /// after its BatchNorm) and non-zero biases. A small xorshift generator: `init_weights`'
    /// normal sampling takes seconds for the larger zoo models in debug builds.
    fn random_weights(graph: &Graph, seed: u64) -> Weights {
        use crate::graph::ParamKind;
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut uniform = move |lo: f32, hi: f32| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
        };
        let mut w = Weights::new();
        for spec in graph.param_specs() {
            let fan_in: usize = spec.shape[1..].iter().product::<usize>().max(1);
            let a = (6.0 / fan_in as f32).sqrt();
            let (lo, hi) = match spec.kind {
                ParamKind::Weight => (-a, a),
                ParamKind::BnScale | ParamKind::Scale => (0.5, 1.5),
                ParamKind::Embedding => (-1.0, 1.0),
                ParamKind::RunningVar => (0.5, 2.0),
                ParamKind::Bias
                | ParamKind::BnShift
                | ParamKind::RunningMean
                | ParamKind::Shift => (-0.5, 0.5),
            };
            let t = ArrayD::from_shape_simple_fn(IxDyn(&spec.shape), || uniform(lo, hi));
            w.insert(spec.name, t);
        }
        w
    }

    fn random_input(graph: &Graph, n: usize, seed: u64) -> ArrayD<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut shape = vec![n];
        shape.extend(&graph.input.shape);
        ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.random_range(-1.0f32..1.0))
    }

    /// Keeps a random `1 - ratio` share (at least one) of every prunable group.
    fn random_selection(groups: &[ChannelGroup], ratio: f64, seed: u64) -> ChannelSelection {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut sel = ChannelSelection::default();
        for g in groups.iter().filter(|g| g.prunable) {
            let keep = ((g.channels as f64 * (1.0 - ratio)).round() as usize).clamp(1, g.channels);
            let mut idx: Vec<usize> = (0..g.channels).collect();
            idx.shuffle(&mut rng);
            let mut kept = idx[..keep].to_vec();
            kept.sort_unstable();
            sel.kept.insert(g.id, kept);
        }
        sel
    }

    fn max_rel_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
        assert_eq!(a.shape(), b.shape());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        a.iter()
            .zip(b.iter())
            .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
    }

    /// Compacts at several ratios and checks compacted == gated dense on random inputs, and that
    /// something was actually removed.
    fn check_equivalence(graph: &Graph, ratios: &[f64], batch: usize) {
        let w = random_weights(graph, 3);
        let groups = channel_groups(graph).unwrap();
        let x = random_input(graph, batch, 11);
        let dense_params = crate::cost::cost(graph, crate::cost::Convention::ConvLinear)
            .unwrap()
            .params;
        for (i, &r) in ratios.iter().enumerate() {
            let sel = random_selection(&groups, r, 100 + i as u64);
            let (g2, w2) = compact(graph, &w, &sel).unwrap();
            let params = crate::cost::cost(&g2, crate::cost::Convention::ConvLinear)
                .unwrap()
                .params;
            assert!(
                params < dense_params,
                "{}: nothing removed at ratio {r}",
                graph.name
            );
            let gates = selection_gates(graph, &sel).unwrap();
            let gated = forward_with_channel_gates(graph, &w, None, &gates, &x).unwrap();
            let small = forward(&g2, &w2, None, &x).unwrap();
            let d = max_rel_diff(&small, &gated);
            assert!(d < 1e-4, "{} ratio {r}: max rel diff {d}", graph.name);
        }
    }

    fn tiny_conv() -> Graph {
        let mut b = GraphBuilder::new("tiny", &[3, 8, 8]);
        let x = b.input();
        let c1 = b.conv_bn_relu("c1", &x, 8, 3, 1, 1);
        let c2 = b.conv2d_bias("c2", &c1, 12, 3, 2, 1);
        let r2 = b.relu("r2", &c2);
        let p = b.global_avg_pool("gap", &r2);
        let d = b.dropout("drop", &p, 0.2);
        let fc = b.linear("fc", &d, 4, true);
        b.finish(&fc)
    }

    #[test]
    fn tiny_conv_net_compacts_equivalently() {
        check_equivalence(&tiny_conv(), &[0.25, 0.5, 0.9], 2);
    }

    #[test]
    fn compaction_removes_the_right_slices() {
        let g = tiny_conv();
        let w = random_weights(&g, 1);
        let groups = channel_groups(&g).unwrap();
        let gc1 = groups.iter().find(|g| g.producers == ["c1"]).unwrap();
        let mut sel = ChannelSelection::default();
        sel.kept.insert(gc1.id, vec![1, 4, 6]);
        let (g2, w2) = compact(&g, &w, &sel).unwrap();
        let c1 = g2.node("c1").unwrap();
        assert!(matches!(
            c1.op,
            Op::Conv2d(Conv2d {
                in_channels: 3,
                out_channels: 3,
                ..
            })
        ));
        assert!(matches!(
            g2.node("c2").unwrap().op,
            Op::Conv2d(Conv2d {
                in_channels: 3,
                out_channels: 12,
                ..
            })
        ));
        assert!(matches!(
            g2.node("c1_bn").unwrap().op,
            Op::BatchNorm(BatchNorm { channels: 3, .. })
        ));
        assert_eq!(w2["c1.weight"].shape(), &[3, 3, 3, 3]);
        assert_eq!(w2["c2.weight"].shape(), &[12, 3, 3, 3]);
        // kept filter 4 of c1 is now filter 1; c2's input channel 6 is now 2.
        assert_eq!(
            w2["c1.weight"].index_axis(Axis(0), 1),
            w["c1.weight"].index_axis(Axis(0), 4)
        );
        assert_eq!(
            w2["c2.weight"].index_axis(Axis(1), 2),
            w["c2.weight"].index_axis(Axis(1), 6)
        );
        assert_eq!(w2["c1_bn.running_var"][[2]], w["c1_bn.running_var"][[6]]);
        assert_eq!(w2["fc.weight"], w["fc.weight"]);
        // The indices a front end slices by are the ones compaction kept.
        let kept = kept_tensor_indices(&g, &sel).unwrap();
        assert_eq!(kept["c1.weight"], vec![(0, vec![1, 4, 6])]);
        assert_eq!(kept["c1_bn.running_var"], vec![(0, vec![1, 4, 6])]);
        assert_eq!(kept["c2.weight"], vec![(1, vec![1, 4, 6])]);
        assert!(!kept.contains_key("fc.weight"));
    }

    fn residual_net() -> Graph {
        let mut b = GraphBuilder::new("res", &[3, 8, 8]);
        let x = b.input();
        let stem = b.conv_bn_relu("stem", &x, 6, 3, 1, 1);
        let a = b.conv_bn_relu("b1a", &stem, 5, 3, 1, 1);
        let c = b.conv2d("b1b", &a, 6, 3, 1, 1);
        let c = b.batchnorm("b1b_bn", &c);
        let s = b.add("b1_add", &[&c, &stem]);
        let r = b.relu("b1_relu", &s);
        let a2 = b.conv_bn_relu("b2a", &r, 8, 3, 2, 1);
        let c2 = b.conv2d("b2b", &a2, 10, 3, 1, 1);
        let c2 = b.batchnorm("b2b_bn", &c2);
        let p = b.conv2d("b2p", &r, 10, 1, 2, 0);
        let p = b.batchnorm("b2p_bn", &p);
        let s2 = b.add("b2_add", &[&c2, &p]);
        let r2 = b.relu("b2_relu", &s2);
        let m = b.maxpool("mp", &r2, 3, 2, 1);
        let gp = b.global_avg_pool("gap", &m);
        let fc = b.linear("fc", &gp, 3, true);
        b.finish(&fc)
    }

    #[test]
    fn residual_net_compacts_equivalently() {
        check_equivalence(&residual_net(), &[0.2, 0.5, 0.8], 2);
    }

    #[test]
    fn concat_net_compacts_equivalently() {
        let mut b = GraphBuilder::new("cat", &[3, 6, 6]);
        let x = b.input();
        let a = b.conv_bn_relu("a", &x, 4, 3, 1, 1);
        let c = b.conv_bn_relu("c", &x, 6, 1, 1, 0);
        let cat = b.concat("cat", &[&a, &c, &a]);
        let y = b.conv2d_bias("y", &x, 14, 1, 1, 0);
        let s = b.add("s", &[&cat, &y]);
        let z = b.conv_bn_relu("z", &s, 5, 3, 1, 1);
        let cat2 = b.concat("cat2", &[&z, &s]);
        let ap = b.avgpool("ap", &cat2, 3, 2, 1);
        let f = b.flatten("f", &ap);
        let fc = b.linear("fc", &f, 2, false);
        let g = b.finish(&fc);
        check_equivalence(&g, &[0.3, 0.6], 2);
    }

    #[test]
    fn depthwise_net_compacts_equivalently() {
        let mut b = GraphBuilder::new("dw", &[3, 8, 8]);
        let x = b.input();
        let s = b.conv_bn_relu("stem", &x, 8, 3, 1, 1);
        let e = b.conv_bn_relu("expand", &s, 16, 1, 1, 0);
        let d = b.depthwise("dw", &e, 3, 2, 1);
        let d = b.batchnorm("dw_bn", &d);
        let d = b.relu("dw_relu", &d);
        let p = b.conv2d("proj", &d, 8, 1, 1, 0);
        let p = b.batchnorm("proj_bn", &p);
        let d2 = b.depthwise("dw2", &p, 3, 1, 1);
        let d2 = b.batchnorm("dw2_bn", &d2);
        let s2 = b.add("add", &[&d2, &p]);
        let gp = b.global_avg_pool("gap", &s2);
        let fc = b.linear("fc", &gp, 3, true);
        let g = b.finish(&fc);
        check_equivalence(&g, &[0.25, 0.5, 0.75], 2);
        let groups = channel_groups(&g).unwrap();
        let ge = groups
            .iter()
            .find(|g| g.producers.contains(&"expand".to_string()))
            .unwrap();
        let mut sel = ChannelSelection::default();
        sel.kept.insert(ge.id, vec![0, 3, 9, 15]);
        let w = random_weights(&g, 2);
        let (g2, w2) = compact(&g, &w, &sel).unwrap();
        assert!(matches!(
            g2.node("dw").unwrap().op,
            Op::Conv2d(Conv2d {
                in_channels: 4,
                out_channels: 4,
                groups: 4,
                ..
            })
        ));
        assert_eq!(w2["dw.weight"].shape(), &[4, 1, 3, 3]);
    }

    #[test]
    fn flatten_linear_net_compacts_equivalently() {
        let mut b = GraphBuilder::new("fl", &[1, 6, 6]);
        let x = b.input();
        let c = b.conv_bn_relu("c", &x, 5, 3, 1, 0);
        let m = b.maxpool("mp", &c, 2, 2, 0);
        let f = b.flatten("f", &m);
        // a BatchNorm over the flattened features: 4 features per conv channel.
        let fb = b.batchnorm("fbn", &f);
        let h = b.linear("h", &fb, 7, true);
        let hb = b.batchnorm("hbn", &h);
        let hr = b.relu("hr", &hb);
        let o = b.linear("o", &hr, 3, true);
        let g = b.finish(&o);
        check_equivalence(&g, &[0.2, 0.4, 0.8], 3);
        let groups = channel_groups(&g).unwrap();
        let gc = groups.iter().find(|g| g.producers == ["c"]).unwrap();
        let mut sel = ChannelSelection::default();
        sel.kept.insert(gc.id, vec![1, 3]);
        let (g2, _) = compact(&g, &random_weights(&g, 0), &sel).unwrap();
        assert!(matches!(
            g2.node("h").unwrap().op,
            Op::Linear(Linear {
                in_features: 8,
                out_features: 7,
                ..
            })
        ));
        assert!(matches!(
            g2.node("fbn").unwrap().op,
            Op::BatchNorm(BatchNorm { channels: 8, .. })
        ));
    }

    #[test]
    fn masks_are_sliced_like_their_tensors() {
        let g = tiny_conv();
        let w = random_weights(&g, 1);
        let groups = channel_groups(&g).unwrap();
        let gc1 = groups.iter().find(|g| g.producers == ["c1"]).unwrap();
        let mut sel = ChannelSelection::default();
        sel.kept.insert(gc1.id, vec![0, 7]);
        let mut masks = Masks::new();
        masks.insert("c2.weight".into(), w["c2.weight"].mapv(|v| v > 0.0));
        let m2 = compact_masks(&g, &masks, &sel).unwrap();
        let (_, w2) = compact(&g, &w, &sel).unwrap();
        assert_eq!(m2["c2.weight"], w2["c2.weight"].mapv(|v| v > 0.0));
        // and the masked compacted net equals the masked gated dense net.
        let x = random_input(&g, 2, 4);
        let gates = selection_gates(&g, &sel).unwrap();
        let (g2, _) = compact(&g, &w, &sel).unwrap();
        let a = forward(&g2, &w2, Some(&m2), &x).unwrap();
        let b = forward_with_channel_gates(&g, &w, Some(&masks), &gates, &x).unwrap();
        assert!(max_rel_diff(&a, &b) < 1e-4);
    }

    #[test]
    fn zeroing_filters_alone_is_not_the_equivalent_network() {
        // Documents why gating is needed: with a BN shift, zeroed filters still leak.
        let g = tiny_conv();
        let w = random_weights(&g, 1);
        let groups = channel_groups(&g).unwrap();
        let gc1 = groups.iter().find(|g| g.producers == ["c1"]).unwrap();
        let mut sel = ChannelSelection::default();
        sel.kept.insert(gc1.id, vec![0, 1, 2, 3]);
        let mut zeroed = w.clone();
        for m in gc1.members_with(MemberRole::Filter) {
            let t = zeroed.get_mut(&m.tensor).unwrap();
            for j in 4..8 {
                t.index_axis_mut(Axis(0), j).fill(0.0);
            }
        }
        let x = random_input(&g, 2, 5);
        let (g2, w2) = compact(&g, &w, &sel).unwrap();
        let small = forward(&g2, &w2, None, &x).unwrap();
        let z = forward(&g, &zeroed, None, &x).unwrap();
        assert!(max_rel_diff(&small, &z) > 1e-3);
    }

    #[test]
    fn bad_selections_are_errors() {
        let g = tiny_conv();
        let w = random_weights(&g, 1);
        let groups = channel_groups(&g).unwrap();
        let fixed = groups.iter().find(|g| !g.prunable).unwrap();
        let mut sel = ChannelSelection::default();
        sel.kept.insert(fixed.id, vec![0]);
        let e = compact(&g, &w, &sel).unwrap_err().to_string();
        assert!(
            e.contains("not prunable") && e.contains("graph input"),
            "{e}"
        );
        let gc1 = groups.iter().find(|g| g.producers == ["c1"]).unwrap();
        for (kept, needle) in [
            (vec![], "keeps no channel"),
            (vec![3, 1], "strictly increasing"),
            (vec![1, 8], "below 8"),
        ] {
            let mut sel = ChannelSelection::default();
            sel.kept.insert(gc1.id, kept);
            let e = compact(&g, &w, &sel).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let mut sel = ChannelSelection::default();
        sel.kept.insert(99, vec![0]);
        assert!(
            compact(&g, &w, &sel)
                .unwrap_err()
                .to_string()
                .contains("group 99")
        );
        let mut extra = w.clone();
        extra.insert("ghost.weight".into(), ArrayD::zeros(IxDyn(&[1])));
        let e = compact(&g, &extra, &ChannelSelection::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ghost.weight"), "{e}");
    }

    #[test]
    fn zoo_models_compact_equivalently() {
        // Every zoo model, on inputs small enough to keep the reference forward quick.
        for &name in crate::zoo::MODEL_NAMES {
            let input: [usize; 3] = match name {
                "lenet-5" => [1, 28, 28],
                "lenet-300-100" => [1, 8, 8],
                "small-cnn" => [1, 12, 12],
                "resnet-50" => [3, 16, 16],
                _ => [3, 8, 8],
            };
            let g = crate::zoo::build(name, &input, 10).unwrap();
            check_equivalence(&g, &[0.3, 0.7], 2);
        }
    }

    /// Groups + compaction of ResNet-50 (25.6M weights) in well under a second. Timing only means
    /// something in release: `cargo test --release -p shears-core --lib resnet50_speed -- --ignored`.
    #[test]
    #[ignore = "timing test, run in release"]
    fn resnet50_groups_and_compaction_speed() {
        let g = crate::zoo::build("resnet-50", &[3, 32, 32], 1000).unwrap();
        let w = random_weights(&g, 1);
        let t = std::time::Instant::now();
        let groups = channel_groups(&g).unwrap();
        let sel = random_selection(&groups, 0.5, 1);
        let (g2, w2) = compact(&g, &w, &sel).unwrap();
        let elapsed = t.elapsed();
        eprintln!(
            "resnet-50: {} groups, compacted {} -> {} tensors' elements in {elapsed:?}",
            groups.len(),
            w.values().map(|t| t.len()).sum::<usize>(),
            w2.values().map(|t| t.len()).sum::<usize>()
        );
        assert!(infer_shapes(&g2).is_ok());
        if !cfg!(debug_assertions) {
            assert!(elapsed.as_secs_f64() < 1.0, "{elapsed:?}");
        }
    }
}
