//! Channel importance per group: one score per group channel, higher = more important.
//!
//! Criteria computed from the weights:
//! - `L1`: sum of |w| over the group's filter slices (conv/linear weight axis 0, depthwise
//!   included), plus the consumers' input slices when `include_consumers` is set;
//! - `L2`: sqrt of the sum of w² over the same slices (the L2 norm of the concatenated slices);
//! - `BnScale`: sum of |γ| over the group's BatchNorm layers (Network Slimming's criterion);
//! - `Random`: uniform in [0, 1), seeded, drawn in group order.
//!
//! Scores from outside (first-order Taylor from the engine, PAAM attention) enter through
//! [`importance_from_node_scores`]: per node, one score per output channel.
//!
//! `Reduction::Mean` divides the sum by the number of slices that contributed (so a residual
//! group with seven producers is not seven times as important); for `L2` it takes the root of the
//! mean of squared slice norms. `Normalization` then rescales each group's scores (divide by the
//! group's mean, max or sum) so that a global threshold compares groups of different sizes fairly.
//!
//! Only prunable groups that have something to score appear in the result; groups without a
//! score (no BatchNorm for `BnScale`, no scored node) are kept whole by the selectors.

use super::groups::{ChannelGroup, MemberRole};
use crate::error::{CoreError, Result};
use crate::graph::{Graph, ParamKind};
use crate::shape::infer_shapes;
use crate::weights::Weights;
use ndarray::Axis;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Per group id, one score per group channel.
pub type GroupScores = BTreeMap<usize, Vec<f32>>;

/// What a channel's importance is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    L1,
    L2,
    BnScale,
    Random { seed: u64 },
}

/// How the slices of one group channel are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    #[default]
    Sum,
    Mean,
}

/// Per-group rescaling of the scores before they are compared across groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    #[default]
    None,
    /// Divide by the group's mean score.
    Mean,
    /// Divide by the group's largest score.
    Max,
    /// Divide by the sum of the group's scores.
    Sum,
    /// Divide by the mean score of every group of the same kind: groups whose members have the
    /// same roles, ops and shapes apart from the channel axis (Isomorphic Pruning's isomorphic
    /// groups: a transformer's heads, its MLP channels, a ResNet stage's blocks). Channels then
    /// compete within a kind by their absolute scores and across kinds by their relative ones.
    Kind,
}

/// Options of [`importance`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImportanceOptions {
    pub criterion: Criterion,
    /// Also count the consumers' input slices (L1/L2 only).
    pub include_consumers: bool,
    pub reduction: Reduction,
    pub normalization: Normalization,
}

impl Default for ImportanceOptions {
    fn default() -> Self {
        ImportanceOptions {
            criterion: Criterion::L1,
            include_consumers: false,
            reduction: Reduction::Sum,
            normalization: Normalization::None,
        }
    }
}

/// Rescales one group's scores in place; a zero divisor leaves them unchanged.
pub fn normalize(scores: &mut [f32], how: Normalization) {
    let n = scores.len().max(1) as f32;
    let divisor = match how {
        // Applied to all groups at once by `normalize_by_kind`.
        Normalization::None | Normalization::Kind => return,
        Normalization::Mean => scores.iter().sum::<f32>() / n,
        Normalization::Max => scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
        Normalization::Sum => scores.iter().sum::<f32>(),
    };
    if divisor.is_finite() && divisor != 0.0 {
        scores.iter_mut().for_each(|v| *v /= divisor);
    }
}

/// The kind of a group for [`Normalization::Kind`]: its channel count and its members' roles,
/// kinds, axes, tensor shapes and slice sizes, sorted (two groups are of one kind when they are
/// the same structure at another place of the network).
fn group_kind(g: &ChannelGroup, shapes: &HashMap<String, Vec<usize>>) -> Vec<String> {
    let mut kind: Vec<String> = g
        .members
        .iter()
        .map(|m| {
            let shape = shapes.get(&m.tensor).cloned().unwrap_or_default();
            format!(
                "{:?} {:?} {} {shape:?} {}",
                m.role, m.kind, m.axis, m.stride_per_channel
            )
        })
        .collect();
    kind.sort();
    kind.push(format!("channels {}", g.channels));
    kind
}

/// Divides every group's scores by the mean score over all channels of the groups of its kind.
pub fn normalize_by_kind(
    groups: &[ChannelGroup],
    shapes: &HashMap<String, Vec<usize>>,
    scores: &mut GroupScores,
) {
    let mut totals: HashMap<Vec<String>, (f64, usize)> = HashMap::new();
    let kinds: HashMap<usize, Vec<String>> = groups
        .iter()
        .filter(|g| scores.contains_key(&g.id))
        .map(|g| (g.id, group_kind(g, shapes)))
        .collect();
    for (id, s) in scores.iter() {
        let t = totals.entry(kinds[id].clone()).or_default();
        t.0 += s.iter().map(|&v| v as f64).sum::<f64>();
        t.1 += s.len();
    }
    for (id, s) in scores.iter_mut() {
        let (sum, n) = totals[&kinds[id]];
        let mean = (sum / n.max(1) as f64) as f32;
        if mean.is_finite() && mean != 0.0 {
            s.iter_mut().for_each(|v| *v /= mean);
        }
    }
}

/// Per-index sums of |w| (or w²) over all axes but `axis`, cached per (tensor, axis).
struct SliceSums<'a> {
    weights: &'a Weights,
    squared: bool,
    cache: HashMap<(String, usize), Vec<f32>>,
}

impl SliceSums<'_> {
    fn get(&mut self, tensor: &str, axis: usize) -> Result<&[f32]> {
        let key = (tensor.to_string(), axis);
        if !self.cache.contains_key(&key) {
            let t = self
                .weights
                .get(tensor)
                .ok_or_else(|| CoreError::tensor(tensor, "missing from the weights"))?;
            if axis >= t.ndim() {
                return Err(CoreError::tensor(
                    tensor,
                    format!("has no axis {axis} (shape {:?})", t.shape()),
                ));
            }
            let squared = self.squared;
            let sums = t
                .axis_iter(Axis(axis))
                .map(|s| {
                    s.iter()
                        .map(|&v| if squared { v * v } else { v.abs() })
                        .sum::<f32>()
                })
                .collect();
            self.cache.insert(key.clone(), sums);
        }
        Ok(&self.cache[&key])
    }
}

/// Adds each group channel's share of per-index `sums` (indices `range(j)`) into `acc`.
fn accumulate(
    acc: &mut [f32],
    sums: &[f32],
    range: impl Fn(usize) -> std::ops::Range<usize>,
    what: &str,
) -> Result<()> {
    for (j, a) in acc.iter_mut().enumerate() {
        let r = range(j);
        let slice = sums.get(r.clone()).ok_or_else(|| {
            CoreError::tensor(
                what,
                format!(
                    "group channel {j} needs indices {r:?}, the axis has {}",
                    sums.len()
                ),
            )
        })?;
        *a += slice.iter().sum::<f32>();
    }
    Ok(())
}

/// Importance of every prunable group's channels from the weights.
pub fn importance(
    weights: &Weights,
    groups: &[ChannelGroup],
    opts: &ImportanceOptions,
) -> Result<GroupScores> {
    let mut out = GroupScores::new();
    let mut rng = match opts.criterion {
        Criterion::Random { seed } => Some(ChaCha8Rng::seed_from_u64(seed)),
        _ => None,
    };
    let mut sums = SliceSums {
        weights,
        squared: opts.criterion == Criterion::L2,
        cache: HashMap::new(),
    };
    for g in groups.iter().filter(|g| g.prunable) {
        let mut acc = vec![0f32; g.channels];
        let mut count = 0usize;
        match opts.criterion {
            Criterion::Random { .. } => {
                if let Some(rng) = rng.as_mut() {
                    acc.iter_mut().for_each(|v| *v = rng.random::<f32>());
                }
                count = 1;
            }
            Criterion::L1 | Criterion::L2 => {
                for m in &g.members {
                    let wanted = m.role == MemberRole::Filter
                        || (opts.include_consumers && m.role == MemberRole::InputChannels);
                    if wanted {
                        let s = sums.get(&m.tensor, m.axis)?;
                        accumulate(&mut acc, s, |j| m.indices(j), &m.tensor)?;
                        count += 1;
                    }
                }
            }
            Criterion::BnScale => {
                for m in g.members.iter().filter(|m| m.kind == ParamKind::BnScale) {
                    let s = sums.get(&m.tensor, m.axis)?;
                    accumulate(&mut acc, s, |j| m.indices(j), &m.tensor)?;
                    count += 1;
                }
            }
        }
        if count == 0 {
            continue;
        }
        finish(
            &mut acc,
            count,
            opts.reduction,
            opts.criterion == Criterion::L2,
        );
        normalize(&mut acc, opts.normalization);
        out.insert(g.id, acc);
    }
    if opts.normalization == Normalization::Kind {
        let shapes = weights
            .iter()
            .map(|(k, v)| (k.clone(), v.shape().to_vec()))
            .collect();
        normalize_by_kind(groups, &shapes, &mut out);
    }
    if opts.criterion == Criterion::BnScale && out.is_empty() && groups.iter().any(|g| g.prunable) {
        return Err(crate::error::CoreError::value(
            "bn-scale importance",
            "it ranks channels by their BatchNorm scales, and no prunable channel group of this \
             network has a BatchNorm (it normalises with LayerNorm or not at all); rank by filter \
             norms (l1-filter, l2-filter) or by taylor instead",
        ));
    }
    Ok(out)
}

fn finish(acc: &mut [f32], count: usize, reduction: Reduction, root: bool) {
    if reduction == Reduction::Mean {
        acc.iter_mut().for_each(|v| *v /= count as f32);
    }
    if root {
        acc.iter_mut().for_each(|v| *v = v.sqrt());
    }
}

/// Importance from scores computed elsewhere: `node_scores[node][i]` scores index `i` of the
/// node's output (channel of a map, feature of a vector). A group channel's score combines the
/// scores of every scored value slice of the group (sum, or mean over slices).
pub fn importance_from_node_scores(
    graph: &Graph,
    groups: &[ChannelGroup],
    node_scores: &BTreeMap<String, Vec<f32>>,
    reduction: Reduction,
    normalization: Normalization,
) -> Result<GroupScores> {
    let shapes = infer_shapes(graph)?;
    for (node, s) in node_scores {
        let shape = shapes.try_get(node).ok_or_else(|| {
            CoreError::value(
                "channel scores",
                format!("scores given for `{node}`, which is not a value of the graph"),
            )
        })?;
        if s.len() != crate::shape::channels(shape) {
            return Err(CoreError::value(
                "channel scores",
                format!(
                    "`{node}` has {} output channels, got {} scores",
                    crate::shape::channels(shape),
                    s.len()
                ),
            ));
        }
        if s.iter().any(|v| !v.is_finite()) {
            return Err(CoreError::value(
                "channel scores",
                format!("scores of `{node}` contain NaN or infinite values"),
            ));
        }
    }
    let mut out = GroupScores::new();
    for g in groups.iter().filter(|g| g.prunable) {
        let mut acc = vec![0f32; g.channels];
        let mut count = 0;
        for vs in &g.values {
            if let Some(s) = node_scores.get(&vs.value) {
                accumulate(&mut acc, s, |j| vs.indices(j), &vs.value)?;
                count += 1;
            }
        }
        if count == 0 {
            continue;
        }
        finish(&mut acc, count, reduction, false);
        normalize(&mut acc, normalization);
        out.insert(g.id, acc);
    }
    if normalization == Normalization::Kind {
        let shapes = graph
            .param_specs()
            .into_iter()
            .map(|p| (p.name, p.shape))
            .collect();
        normalize_by_kind(groups, &shapes, &mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::structured::groups::channel_groups;
    use crate::weights::init_weights;
    use ndarray::{ArrayD, IxDyn};

    fn arr(shape: &[usize], data: &[f32]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap()
    }

    /// c1 (2 filters, 1x1 on 1 channel) -> bn -> c2 (1x1, 2 -> 3) -> gap -> fc.
    fn net() -> (Graph, Weights) {
        let mut b = GraphBuilder::new("t", &[1, 4, 4]);
        let x = b.input();
        let c1 = b.conv2d("c1", &x, 2, 1, 1, 0);
        let n = b.batchnorm("bn", &c1);
        let c2 = b.conv2d("c2", &n, 3, 1, 1, 0);
        let p = b.global_avg_pool("gap", &c2);
        let fc = b.linear("fc", &p, 2, false);
        let g = b.finish(&fc);
        let mut w = init_weights(&g, 0);
        w.insert("c1.weight".into(), arr(&[2, 1, 1, 1], &[-3., 1.]));
        w.insert("bn.weight".into(), arr(&[2], &[0.5, -2.]));
        w.insert(
            "c2.weight".into(),
            arr(&[3, 2, 1, 1], &[1., 2., 3., -4., 0., 1.]),
        );
        w.insert("fc.weight".into(), arr(&[2, 3], &[1., 1., 1., 1., 1., 1.]));
        (g, w)
    }

    fn group_of(groups: &[ChannelGroup], p: &str) -> usize {
        groups.iter().find(|g| g.producers == [p]).unwrap().id
    }

    #[test]
    fn l1_l2_and_bn_scale_hand_computed() {
        let (g, w) = net();
        let groups = channel_groups(&g).unwrap();
        let (g1, g2) = (group_of(&groups, "c1"), group_of(&groups, "c2"));
        let opts = ImportanceOptions::default();
        let s = importance(&w, &groups, &opts).unwrap();
        assert_eq!(s[&g1], vec![3., 1.]);
        assert_eq!(s[&g2], vec![3., 7., 1.]);
        // fixed groups (input, logits) are not scored.
        assert_eq!(s.len(), 2);
        let s = importance(
            &w,
            &groups,
            &ImportanceOptions {
                include_consumers: true,
                ..opts
            },
        )
        .unwrap();
        // c1 channel 0: |-3| + |1|+|3|+|0| = 7; channel 1: 1 + |2|+|-4|+|1| = 8.
        assert_eq!(s[&g1], vec![7., 8.]);
        let s = importance(
            &w,
            &groups,
            &ImportanceOptions {
                criterion: Criterion::L2,
                include_consumers: true,
                ..opts
            },
        )
        .unwrap();
        assert!((s[&g1][0] - 19f32.sqrt()).abs() < 1e-6);
        assert!((s[&g1][1] - 22f32.sqrt()).abs() < 1e-6);
        let s = importance(
            &w,
            &groups,
            &ImportanceOptions {
                criterion: Criterion::L2,
                include_consumers: true,
                reduction: Reduction::Mean,
                ..opts
            },
        )
        .unwrap();
        assert!((s[&g1][0] - 9.5f32.sqrt()).abs() < 1e-6);
        let s = importance(
            &w,
            &groups,
            &ImportanceOptions {
                criterion: Criterion::BnScale,
                ..opts
            },
        )
        .unwrap();
        assert_eq!(s[&g1], vec![0.5, 2.]);
        // c2's group has no BatchNorm: not scored, so kept whole.
        assert!(!s.contains_key(&g2));
    }

    #[test]
    fn normalisations() {
        let mut v = vec![1., 3.];
        normalize(&mut v, Normalization::Mean);
        assert_eq!(v, vec![0.5, 1.5]);
        let mut v = vec![1., 4.];
        normalize(&mut v, Normalization::Max);
        assert_eq!(v, vec![0.25, 1.]);
        let mut v = vec![1., 4.];
        normalize(&mut v, Normalization::Sum);
        assert_eq!(v, vec![0.2, 0.8]);
        let mut v = vec![0., 0.];
        normalize(&mut v, Normalization::Max);
        assert_eq!(v, vec![0., 0.]);
    }

    #[test]
    fn random_is_seeded() {
        let (g, w) = net();
        let groups = channel_groups(&g).unwrap();
        let opts = |seed| ImportanceOptions {
            criterion: Criterion::Random { seed },
            ..Default::default()
        };
        let a = importance(&w, &groups, &opts(1)).unwrap();
        assert_eq!(a, importance(&w, &groups, &opts(1)).unwrap());
        assert_ne!(a, importance(&w, &groups, &opts(2)).unwrap());
        assert!(a.values().flatten().all(|&v| (0.0..1.0).contains(&v)));
    }

    #[test]
    fn node_scores_sum_over_values_of_the_group() {
        let (g, _) = net();
        let groups = channel_groups(&g).unwrap();
        let g1 = group_of(&groups, "c1");
        let mut ns = BTreeMap::new();
        ns.insert("c1".to_string(), vec![1., 2.]);
        ns.insert("bn".to_string(), vec![10., 20.]);
        let s = importance_from_node_scores(&g, &groups, &ns, Reduction::Sum, Normalization::None)
            .unwrap();
        assert_eq!(s[&g1], vec![11., 22.]);
        assert_eq!(s.len(), 1);
        let s = importance_from_node_scores(&g, &groups, &ns, Reduction::Mean, Normalization::Max)
            .unwrap();
        assert_eq!(s[&g1], vec![0.5, 1.]);
        ns.insert("bn".to_string(), vec![1.]);
        let e = importance_from_node_scores(&g, &groups, &ns, Reduction::Sum, Normalization::None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`bn` has 2 output channels, got 1"), "{e}");
        let mut ns = BTreeMap::new();
        ns.insert("nope".to_string(), vec![1.]);
        let e = importance_from_node_scores(&g, &groups, &ns, Reduction::Sum, Normalization::None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nope`"), "{e}");
    }

    #[test]
    fn flattened_consumer_slices_cover_hw_features() {
        let mut b = GraphBuilder::new("t", &[1, 2, 2]);
        let x = b.input();
        let c = b.conv2d("c", &x, 2, 1, 1, 0);
        let f = b.flatten("f", &c);
        let l = b.linear("l", &f, 1, false);
        let o = b.linear("o", &l, 2, false);
        let g = b.finish(&o);
        let mut w = init_weights(&g, 0);
        w.insert("c.weight".into(), arr(&[2, 1, 1, 1], &[0., 0.]));
        w.insert(
            "l.weight".into(),
            arr(&[1, 8], &[1., 1., 1., 1., 2., 2., 2., -2.]),
        );
        let groups = channel_groups(&g).unwrap();
        let s = importance(
            &w,
            &groups,
            &ImportanceOptions {
                include_consumers: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s[&group_of(&groups, "c")], vec![4., 8.]);
    }
}
