//! Channel selection: which channels of each group stay, chosen from importance scores.
//!
//! Three ways to choose:
//! - [`select_channels`]: to a target, a channel ratio or a params or MACs reduction (measured
//!   on the compacted graph with [`crate::cost()`]), in global scope (one ranking of all scored
//!   channels; normalise the scores first so groups compare) or per layer (the same ratio in
//!   every group). The smallest cut that reaches the target is taken, so the achieved
//!   reduction is ≥ the target and as close to it as the channel granularity allows.
//! - [`select_below_threshold`] with [`percentile_threshold`]: Network Slimming's global
//!   percentile of |γ|, channels scoring ≤ the threshold removed.
//! - [`select_by_bn_votes`]: MaskSparsity's rule for residual groups (each BatchNorm of a group
//!   votes with its own |γ| ≤ τ indicator, the most agreed channels go first).
//!
//! Every group keeps at least one channel. Groups that are not prunable, not scored, have a
//! producer on the ignore list, or have a single channel are kept whole.

use super::compact::compact_graph_with;
use super::groups::ChannelGroup;
use super::importance::GroupScores;
use crate::cost::{Convention, cost};
use crate::error::{CoreError, Result};
use crate::graph::{Graph, ParamKind};
use crate::weights::Weights;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Kept channel indices (sorted, group channel space) per group id; absent groups keep all.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChannelSelection {
    pub kept: BTreeMap<usize, Vec<usize>>,
}

impl ChannelSelection {
    /// Number of group channels removed, given the groups the selection was made for.
    pub fn removed_channels(&self, groups: &[ChannelGroup]) -> usize {
        self.kept
            .iter()
            .filter_map(|(&g, k)| groups.get(g).map(|g| g.channels.saturating_sub(k.len())))
            .sum()
    }
}

/// What a structured target measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredTarget {
    /// Fraction of the eligible groups' channels removed.
    ChannelRatio(f64),
    /// Fraction of the network's trainable parameters removed.
    ParamsReduction(f64),
    /// Fraction of the network's MACs removed, under `SelectOptions::convention`.
    MacsReduction(f64),
}

impl StructuredTarget {
    /// The target's fraction, whatever it measures.
    pub fn value(self) -> f64 {
        match self {
            StructuredTarget::ChannelRatio(r)
            | StructuredTarget::ParamsReduction(r)
            | StructuredTarget::MacsReduction(r) => r,
        }
    }
}

/// Whether channels compete across groups or every group loses the same share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Global,
    PerLayer,
}

/// Options of [`select_channels`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectOptions {
    pub target: StructuredTarget,
    pub scope: Scope,
    /// MAC counting convention of a `MacsReduction` target.
    pub convention: Convention,
    /// Round every group's kept count up to a multiple of this (1 = no rounding).
    pub round_to: usize,
    /// Largest fraction of one group's channels that may be removed (per-layer maximum).
    pub max_group_ratio: f64,
    /// Node names or op kinds (`conv2d`, `linear`) whose output channels are never pruned.
    pub ignore: Vec<String>,
}

impl SelectOptions {
    pub fn new(target: StructuredTarget) -> Self {
        SelectOptions {
            target,
            scope: Scope::Global,
            convention: Convention::ConvLinear,
            round_to: 1,
            max_group_ratio: 1.0,
            ignore: Vec::new(),
        }
    }
}

/// A group that may lose channels: its id, channel count, channels sorted by ascending score
/// and the most channels it may lose.
struct Candidate {
    id: usize,
    channels: usize,
    order: Vec<usize>,
    max_remove: usize,
}

/// Checks every ignore entry names a node or an op kind of the graph.
fn check_ignore(graph: &Graph, ignore: &[String]) -> Result<()> {
    for entry in ignore {
        let known = graph
            .nodes
            .iter()
            .any(|n| n.name == *entry || n.op.kind_name() == entry);
        if !known {
            return Err(CoreError::value(
                "ignore list",
                format!("`{entry}` is neither a node name nor an op kind of the graph"),
            ));
        }
    }
    Ok(())
}

/// Whether an ignore entry keeps `group` whole: it names (or names the op kind of) a producer of
/// the group or a node whose output the group's channels run through. The second lets a
/// transformer keep one kind of group: `attention` keeps the heads, `gelu` the MLP channels,
/// `position_embedding` the embedding width.
fn ignored(graph: &Graph, group: &ChannelGroup, ignore: &[String]) -> bool {
    let matches = |node: &str| {
        ignore.iter().any(|i| {
            i == node
                || graph
                    .node(node)
                    .is_some_and(|n| n.op.kind_name() == i.as_str())
        })
    };
    group.producers.iter().any(|p| matches(p)) || group.values.iter().any(|v| matches(&v.value))
}

/// The groups that may lose channels, with their channels ranked by score.
fn candidates(
    graph: &Graph,
    groups: &[ChannelGroup],
    scores: &GroupScores,
    ignore: &[String],
    max_group_ratio: f64,
) -> Result<Vec<Candidate>> {
    check_ignore(graph, ignore)?;
    if !(0.0..=1.0).contains(&max_group_ratio) {
        return Err(CoreError::value(
            "max_group_ratio",
            format!("must be in [0, 1], got {max_group_ratio}"),
        ));
    }
    let mut out = Vec::new();
    for (&gid, s) in scores {
        let g = groups.get(gid).ok_or_else(|| {
            CoreError::value(
                "importance scores",
                format!(
                    "name group {gid}, but the graph has {} groups",
                    groups.len()
                ),
            )
        })?;
        if s.len() != g.channels {
            return Err(CoreError::value(
                "importance scores",
                format!(
                    "group {gid} has {} channels, got {} scores",
                    g.channels,
                    s.len()
                ),
            ));
        }
        if s.iter().any(|v| v.is_nan()) {
            return Err(CoreError::value(
                "importance scores",
                format!("scores of group {gid} contain NaN"),
            ));
        }
        if !g.prunable || g.channels < 2 || ignored(graph, g, ignore) {
            continue;
        }
        let mut order: Vec<usize> = (0..g.channels).collect();
        order.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
        let max_remove =
            ((max_group_ratio * g.channels as f64 + 1e-9).floor() as usize).min(g.channels - 1);
        out.push(Candidate {
            id: gid,
            channels: g.channels,
            order,
            max_remove,
        });
    }
    Ok(out)
}

/// Kept count after rounding up to a multiple of `m` (never above the group's size).
fn rounded_keep(channels: usize, keep: usize, m: usize) -> usize {
    if m <= 1 {
        return keep;
    }
    keep.div_ceil(m).saturating_mul(m).min(channels)
}

/// The selection removing `removed[i]` lowest-scored channels of candidate `i` (after rounding).
fn build(cands: &[Candidate], removed: &[usize], round_to: usize) -> ChannelSelection {
    let mut sel = ChannelSelection::default();
    for (c, &r) in cands.iter().zip(removed) {
        let keep = rounded_keep(c.channels, c.channels - r, round_to);
        if keep < c.channels {
            let mut kept = c.order[c.channels - keep..].to_vec();
            kept.sort_unstable();
            sel.kept.insert(c.id, kept);
        }
    }
    sel
}

/// How much of what the target measures a selection removes.
struct Meter<'a> {
    graph: &'a Graph,
    groups: &'a [ChannelGroup],
    target: StructuredTarget,
    convention: Convention,
    dense: u64,
    eligible_channels: usize,
}

impl Meter<'_> {
    fn measure(&self, sel: &ChannelSelection) -> Result<f64> {
        if let StructuredTarget::ChannelRatio(_) = self.target {
            let removed = sel.removed_channels(self.groups);
            return Ok(removed as f64 / self.eligible_channels.max(1) as f64);
        }
        let small = compact_graph_with(self.graph, self.groups, sel)?;
        let c = cost(&small, self.convention)?;
        let now = match self.target {
            StructuredTarget::ParamsReduction(_) => c.params,
            _ => c.macs,
        };
        Ok(1.0 - now as f64 / self.dense.max(1) as f64)
    }
}

/// How much of what `target` measures `sel` removes from `graph`: the share of the prunable
/// groups' channels, or of the params or MACs (under `convention`) once compacted.
pub fn achieved_reduction(
    graph: &Graph,
    groups: &[ChannelGroup],
    sel: &ChannelSelection,
    target: StructuredTarget,
    convention: Convention,
) -> Result<f64> {
    let dense = match target {
        StructuredTarget::ChannelRatio(_) => 0,
        StructuredTarget::ParamsReduction(_) => cost(graph, convention)?.params,
        StructuredTarget::MacsReduction(_) => cost(graph, convention)?.macs,
    };
    let meter = Meter {
        graph,
        groups,
        target,
        convention,
        dense,
        eligible_channels: groups
            .iter()
            .filter(|g| g.prunable)
            .map(|g| g.channels)
            .sum(),
    };
    meter.measure(sel)
}

/// Smallest `t` in `0..=hi` whose plan reaches `target` (plans grow with `t`).
fn bisect(
    hi: usize,
    target: f64,
    mut achieved: impl FnMut(usize) -> Result<f64>,
) -> Result<Option<usize>> {
    if achieved(hi)? + 1e-12 < target {
        return Ok(None);
    }
    let (mut lo, mut hi) = (0usize, hi);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if achieved(mid)? + 1e-12 >= target {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(Some(lo))
}

/// Chooses the channels to keep so that the target is reached (see the module docs).
pub fn select_channels(
    graph: &Graph,
    groups: &[ChannelGroup],
    scores: &GroupScores,
    opts: &SelectOptions,
) -> Result<ChannelSelection> {
    let dense = match opts.target {
        StructuredTarget::ChannelRatio(_) => 0,
        StructuredTarget::ParamsReduction(_) => cost(graph, opts.convention)?.params,
        StructuredTarget::MacsReduction(_) => cost(graph, opts.convention)?.macs,
    };
    let cands = candidates(graph, groups, scores, &opts.ignore, opts.max_group_ratio)?;
    let meter = Meter {
        graph,
        groups,
        target: opts.target,
        convention: opts.convention,
        dense,
        eligible_channels: cands.iter().map(|c| c.channels).sum(),
    };
    let literal = matches!(opts.target, StructuredTarget::ChannelRatio(_));
    search(
        &cands,
        scores,
        opts,
        opts.target.value(),
        literal,
        &format!("{:?}", opts.target),
        &mut |sel| meter.measure(sel),
    )
}

/// [`select_channels`] to a goal that `measure` reports for each candidate selection (the share
/// of something the selection removes, growing as more channels go: measured latency, say).
/// `opts.target` and `opts.convention` are not used; `what` names the goal in errors. The
/// search calls `measure` about log2(channels) times.
pub fn select_channels_measured(
    graph: &Graph,
    groups: &[ChannelGroup],
    scores: &GroupScores,
    opts: &SelectOptions,
    goal: f64,
    what: &str,
    measure: &mut dyn FnMut(&ChannelSelection) -> Result<f64>,
) -> Result<ChannelSelection> {
    let cands = candidates(graph, groups, scores, &opts.ignore, opts.max_group_ratio)?;
    search(&cands, scores, opts, goal, false, what, measure)
}

/// The smallest plan of `opts.scope` whose measure reaches `r`; `literal` takes a per-layer
/// ratio as given (a channel ratio) instead of searching for it.
fn search(
    cands: &[Candidate],
    scores: &GroupScores,
    opts: &SelectOptions,
    r: f64,
    literal: bool,
    what: &str,
    measure: &mut dyn FnMut(&ChannelSelection) -> Result<f64>,
) -> Result<ChannelSelection> {
    if !(0.0..1.0).contains(&r) {
        return Err(CoreError::value(
            "structured target",
            format!("{what} must be in [0, 1)"),
        ));
    }
    if opts.round_to == 0 {
        return Err(CoreError::value("round_to", "must be at least 1"));
    }
    if r == 0.0 {
        return Ok(ChannelSelection::default());
    }
    if cands.is_empty() {
        return Err(CoreError::value(
            "structured target",
            "no group can lose channels (none prunable, scored and not ignored)",
        ));
    }

    // Each scope is a family of plans growing with one integer parameter `t` in `0..=hi`.
    let n = cands.len();
    let (plan, hi): (Box<dyn Fn(usize) -> Vec<usize>>, usize) = match opts.scope {
        Scope::Global => {
            // One ranking of all channels, each group's list cut at its maximum removal.
            let mut all: Vec<(f32, usize, usize)> = Vec::new();
            for (ci, c) in cands.iter().enumerate() {
                let s = &scores[&c.id];
                all.extend(c.order[..c.max_remove].iter().map(|&j| (s[j], ci, j)));
            }
            all.sort_by(|a, b| {
                a.0.total_cmp(&b.0)
                    .then(cands[a.1].id.cmp(&cands[b.1].id))
                    .then(a.2.cmp(&b.2))
            });
            let owner: Vec<usize> = all.iter().map(|e| e.1).collect();
            let hi = owner.len();
            let plan = move |t: usize| {
                let mut removed = vec![0usize; n];
                for &ci in &owner[..t] {
                    removed[ci] += 1;
                }
                removed
            };
            (Box::new(plan), hi)
        }
        Scope::PerLayer => {
            let rhos: Vec<f64> = if literal {
                // The same ratio in every group, taken literally.
                vec![r]
            } else {
                // Breakpoints of round(rho * C): the ratios where some group's count changes.
                let mut v = vec![0.0];
                for c in cands {
                    v.extend((0..c.max_remove).map(|k| (k as f64 + 0.5) / c.channels as f64));
                }
                v.sort_by(|a, b| a.total_cmp(b));
                v.dedup();
                v
            };
            let hi = rhos.len() - 1;
            let caps: Vec<(usize, usize)> =
                cands.iter().map(|c| (c.channels, c.max_remove)).collect();
            let plan = move |t: usize| -> Vec<usize> {
                let rho = rhos[t];
                caps.iter()
                    .map(|&(ch, cap)| ((rho * ch as f64 + 1e-9).round() as usize).min(cap))
                    .collect()
            };
            if literal {
                return Ok(build(cands, &plan(0), opts.round_to));
            }
            (Box::new(plan), hi)
        }
    };
    let found = bisect(hi, r, |t| measure(&build(cands, &plan(t), opts.round_to)))?;
    match found {
        Some(t) => Ok(build(cands, &plan(t), opts.round_to)),
        None => {
            let best = measure(&build(cands, &plan(hi), opts.round_to))?;
            Err(CoreError::value(
                "structured target",
                format!(
                    "{what} is out of reach: removing every channel allowed (at least one kept per group{}) achieves {best:.4}",
                    if opts.round_to > 1 {
                        format!(", counts rounded to multiples of {}", opts.round_to)
                    } else {
                        String::new()
                    }
                ),
            ))
        }
    }
}

/// Global percentile threshold over all scored channels (Network Slimming): the score at index
/// `floor(n * p)` of the ascending list, so channels with score ≤ it make up just over `p`.
pub fn percentile_threshold(scores: &GroupScores, p: f64) -> Result<f32> {
    if !(0.0..1.0).contains(&p) {
        return Err(CoreError::value(
            "percentile",
            format!("must be in [0, 1), got {p}"),
        ));
    }
    let mut all: Vec<f32> = scores.values().flatten().copied().collect();
    if all.is_empty() {
        return Err(CoreError::value(
            "percentile",
            "no channel has a score (no prunable group was scored)",
        ));
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let idx = ((all.len() as f64 * p).floor() as usize).min(all.len() - 1);
    Ok(all[idx])
}

/// Removes every channel scoring ≤ `threshold`; a group that would lose all keeps its best one.
/// Kept counts are rounded up to a multiple of `round_to` by the same rule as
/// [`select_channels`]: a group takes back its best-scored removed channels.
pub fn select_below_threshold(
    graph: &Graph,
    groups: &[ChannelGroup],
    scores: &GroupScores,
    threshold: f32,
    ignore: &[String],
    round_to: usize,
) -> Result<ChannelSelection> {
    if round_to == 0 {
        return Err(CoreError::value("round_to", "must be at least 1"));
    }
    let cands = candidates(graph, groups, scores, ignore, 1.0)?;
    let removed: Vec<usize> = cands
        .iter()
        .map(|c| {
            let s = &scores[&c.id];
            let below = (0..c.channels).filter(|&j| s[j] <= threshold).count();
            below.min(c.channels - 1)
        })
        .collect();
    Ok(build(&cands, &removed, round_to))
}

/// MaskSparsity's residual-group rule: each BatchNorm `g` of a group marks the channels with
/// |γ| ≤ `tau` (keeping its own largest if it would mark all); the marks are merged by
/// [`merge_bn_marks`]. A group that would lose all keeps its channel of largest summed |γ|.
/// Groups without BatchNorm stay whole.
pub fn select_by_bn_votes(
    graph: &Graph,
    weights: &Weights,
    groups: &[ChannelGroup],
    tau: f32,
    ignore: &[String],
) -> Result<ChannelSelection> {
    check_ignore(graph, ignore)?;
    let mut marks = BnMarks::new();
    let mut fallback = GroupScores::new();
    for g in groups.iter().filter(|g| g.prunable && g.channels > 1) {
        if ignored(graph, g, ignore) {
            continue;
        }
        let mut total = vec![0f32; g.channels];
        for m in g.members.iter().filter(|m| m.kind == ParamKind::BnScale) {
            let t = weights
                .get(&m.tensor)
                .ok_or_else(|| CoreError::tensor(&m.tensor, "missing from the weights"))?;
            let gamma: Vec<f32> = (0..g.channels)
                .map(|j| {
                    let r = m.indices(j);
                    let n = r.len() as f32;
                    r.map(|i| t.get(i).map_or(0.0, |v| v.abs())).sum::<f32>() / n
                })
                .collect();
            let mut q: Vec<bool> = gamma.iter().map(|&v| v <= tau).collect();
            if q.iter().all(|&x| x) {
                let best = argmax(&gamma);
                q[best] = false;
            }
            for (acc, v) in total.iter_mut().zip(&gamma) {
                *acc += v;
            }
            marks.insert(m.node.clone(), q);
        }
        fallback.insert(g.id, total);
    }
    merge_bn_marks(groups, &marks, &fallback)
}

/// Per-BatchNorm prune marks (node name -> one flag per group channel, `true` = prune).
pub type BnMarks = BTreeMap<String, Vec<bool>>;

/// Merges per-BatchNorm prune marks into one selection per channel group, by the vote rule of
/// the official MaskSparsity code: with `m` the fewest marks of any member BatchNorm and `v_c` the
/// votes of channel c, the first `i` from the member count down to 1 with at least `m` channels
/// of `v_c ≥ i` decides, and exactly those channels are removed. So every BatchNorm feeding one
/// residual sum gets the same mask. A group that would lose all keeps its channel of largest
/// `fallback` score (its first channel without one). Members without marks do not vote.
pub fn merge_bn_marks(
    groups: &[ChannelGroup],
    marks: &BnMarks,
    fallback: &GroupScores,
) -> Result<ChannelSelection> {
    let mut sel = ChannelSelection::default();
    for g in groups.iter().filter(|g| g.prunable && g.channels > 1) {
        let mut member_marks: Vec<&Vec<bool>> = Vec::new();
        for m in g.members.iter().filter(|m| m.kind == ParamKind::BnScale) {
            let Some(q) = marks.get(&m.node) else {
                continue;
            };
            if q.len() != g.channels {
                return Err(CoreError::value(
                    format!("mask of `{}`", m.node),
                    format!(
                        "has {} entries, its channel group has {}",
                        q.len(),
                        g.channels
                    ),
                ));
            }
            member_marks.push(q);
        }
        if member_marks.is_empty() {
            continue;
        }
        let m = member_marks
            .iter()
            .map(|q| q.iter().filter(|&&x| x).count())
            .min()
            .unwrap_or(0);
        let votes: Vec<usize> = (0..g.channels)
            .map(|c| member_marks.iter().filter(|q| q[c]).count())
            .collect();
        let mut pruned: Vec<bool> = vec![false; g.channels];
        for i in (1..=member_marks.len()).rev() {
            let chosen: Vec<bool> = votes.iter().map(|&v| v >= i).collect();
            if chosen.iter().filter(|&&x| x).count() >= m {
                pruned = chosen;
                break;
            }
        }
        if pruned.iter().all(|&x| x) {
            let keep = fallback.get(&g.id).map_or(0, |s| argmax(s));
            pruned[keep] = false;
        }
        let kept: Vec<usize> = (0..g.channels).filter(|&c| !pruned[c]).collect();
        if kept.len() < g.channels {
            sel.kept.insert(g.id, kept);
        }
    }
    Ok(sel)
}

/// The per-BatchNorm prune marks of a selection: every BatchNorm of a pruned group marks the
/// channels the group loses (the inverse of [`merge_bn_marks`] for group-consistent marks).
pub fn selection_bn_marks(
    groups: &[ChannelGroup],
    selection: &ChannelSelection,
) -> Result<BnMarks> {
    let mut out = BnMarks::new();
    for (&gid, kept) in &selection.kept {
        let g = groups.get(gid).ok_or_else(|| {
            CoreError::value(
                "channel selection",
                format!("names group {gid}, the model has {} groups", groups.len()),
            )
        })?;
        let mut q = vec![true; g.channels];
        for &k in kept {
            *q.get_mut(k).ok_or_else(|| {
                CoreError::value(
                    "channel selection",
                    format!("group {gid} has {} channels, keeps index {k}", g.channels),
                )
            })? = false;
        }
        for m in g.members.iter().filter(|m| m.kind == ParamKind::BnScale) {
            out.insert(m.node.clone(), q.clone());
        }
    }
    Ok(out)
}

/// Index of the largest value (the first on ties).
fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::structured::groups::channel_groups;
    use crate::weights::init_weights;
    use ndarray::{ArrayD, IxDyn};

    /// conv a (4 ch) -> bn -> relu -> conv b (6 ch) -> bn -> relu -> gap -> fc (2).
    fn net() -> Graph {
        let mut b = GraphBuilder::new("t", &[2, 4, 4]);
        let x = b.input();
        let a = b.conv_bn_relu("a", &x, 4, 3, 1, 1);
        let c = b.conv_bn_relu("b", &a, 6, 3, 1, 1);
        let p = b.global_avg_pool("gap", &c);
        let fc = b.linear("fc", &p, 2, true);
        b.finish(&fc)
    }

    fn ids(groups: &[ChannelGroup]) -> (usize, usize) {
        let f = |p: &str| groups.iter().find(|g| g.producers == [p]).unwrap().id;
        (f("a"), f("b"))
    }

    fn scores(ga: usize, gb: usize) -> GroupScores {
        let mut s = GroupScores::new();
        s.insert(ga, vec![0.4, 0.1, 0.9, 0.3]);
        s.insert(gb, vec![0.2, 0.8, 0.05, 0.7, 0.6, 0.5]);
        s
    }

    #[test]
    fn global_channel_ratio_removes_the_lowest_scores() {
        let g = net();
        let groups = channel_groups(&g).unwrap();
        let (ga, gb) = ids(&groups);
        let sel = select_channels(
            &g,
            &groups,
            &scores(ga, gb),
            &SelectOptions::new(StructuredTarget::ChannelRatio(0.4)),
        )
        .unwrap();
        // 10 channels, 4 go: 0.05 (b2), 0.1 (a1), 0.2 (b0), 0.3 (a3).
        assert_eq!(sel.kept[&ga], vec![0, 2]);
        assert_eq!(sel.kept[&gb], vec![1, 3, 4, 5]);
        assert_eq!(sel.removed_channels(&groups), 4);
    }

    #[test]
    fn per_layer_ratio_and_rounding_and_caps() {
        let g = net();
        let groups = channel_groups(&g).unwrap();
        let (ga, gb) = ids(&groups);
        let mut opts = SelectOptions::new(StructuredTarget::ChannelRatio(0.5));
        opts.scope = Scope::PerLayer;
        let sel = select_channels(&g, &groups, &scores(ga, gb), &opts).unwrap();
        assert_eq!(sel.kept[&ga], vec![0, 2]);
        assert_eq!(sel.kept[&gb], vec![1, 3, 4]);
        // kept counts rounded up to multiples of 4: a keeps 4 (untouched), b keeps 4.
        opts.round_to = 4;
        let sel = select_channels(&g, &groups, &scores(ga, gb), &opts).unwrap();
        assert!(!sel.kept.contains_key(&ga));
        assert_eq!(sel.kept[&gb], vec![1, 3, 4, 5]);
        // a group never loses more than max_group_ratio, nor all channels.
        let mut opts = SelectOptions::new(StructuredTarget::ChannelRatio(0.8));
        opts.max_group_ratio = 0.5;
        let e = select_channels(&g, &groups, &scores(ga, gb), &opts).unwrap_err();
        assert!(e.to_string().contains("out of reach"), "{e}");
        opts.target = StructuredTarget::ChannelRatio(0.5);
        let sel = select_channels(&g, &groups, &scores(ga, gb), &opts).unwrap();
        assert_eq!(sel.kept[&ga].len(), 2);
        assert_eq!(sel.kept[&gb].len(), 3);
    }

    #[test]
    fn ignore_list_by_name_and_kind() {
        let g = net();
        let groups = channel_groups(&g).unwrap();
        let (ga, gb) = ids(&groups);
        let mut opts = SelectOptions::new(StructuredTarget::ChannelRatio(0.5));
        opts.ignore = vec!["a".into()];
        let sel = select_channels(&g, &groups, &scores(ga, gb), &opts).unwrap();
        assert!(!sel.kept.contains_key(&ga));
        assert_eq!(sel.kept[&gb], vec![1, 3, 4]);
        opts.ignore = vec!["conv2d".into()];
        let e = select_channels(&g, &groups, &scores(ga, gb), &opts).unwrap_err();
        assert!(e.to_string().contains("no group can lose"), "{e}");
        opts.ignore = vec!["nope".into()];
        let e = select_channels(&g, &groups, &scores(ga, gb), &opts).unwrap_err();
        assert!(e.to_string().contains("`nope`"), "{e}");
    }

    #[test]
    fn params_and_macs_targets_are_reached_minimally() {
        let g = net();
        let groups = channel_groups(&g).unwrap();
        let (ga, gb) = ids(&groups);
        let s = scores(ga, gb);
        let dense = cost(&g, Convention::ConvLinear).unwrap();
        for scope in [Scope::Global, Scope::PerLayer] {
            for target in [
                StructuredTarget::ParamsReduction(0.3),
                StructuredTarget::MacsReduction(0.5),
            ] {
                let mut opts = SelectOptions::new(target);
                opts.scope = scope;
                let sel = select_channels(&g, &groups, &s, &opts).unwrap();
                let small = compact_graph_with(&g, &groups, &sel).unwrap();
                let c = cost(&small, Convention::ConvLinear).unwrap();
                let (now, was, r) = match target {
                    StructuredTarget::ParamsReduction(r) => (c.params, dense.params, r),
                    StructuredTarget::MacsReduction(r) => (c.macs, dense.macs, r),
                    _ => unreachable!(),
                };
                let achieved = 1.0 - now as f64 / was as f64;
                assert!(achieved >= r, "{scope:?} {target:?}: {achieved}");
            }
        }
        // Hand check, global order b2 (.05), a1 (.1), b0 (.2), a3 (.3), a0 (.4), ...
        // Params: dense = a 72 + bn 8 + b 216 + bn 12 + fc 14 = 322. Removing b2 saves
        // 36 + 2 + 2 = 40 (12.4%); then a1 saves 18 + 2 + 5*9 = 65 (32.6% in all) >= 30%.
        assert_eq!(dense.params, 322);
        let sel = select_channels(
            &g,
            &groups,
            &s,
            &SelectOptions::new(StructuredTarget::ParamsReduction(0.3)),
        )
        .unwrap();
        assert_eq!(sel.kept[&ga], vec![0, 2, 3]);
        assert_eq!(sel.kept[&gb], vec![0, 1, 3, 4, 5]);
        // MACs (16 positions): dense = 1152 + 3456 + 12 = 4620. b2: 576 + 2 (12.5%); a1: 288 +
        // 720 (34.3%); b0: 432 + 2 (43.7%); a3: 288 + 576 (62.4%) -> four channels for 50%.
        assert_eq!(dense.macs, 4620);
        let sel = select_channels(
            &g,
            &groups,
            &s,
            &SelectOptions::new(StructuredTarget::MacsReduction(0.5)),
        )
        .unwrap();
        assert_eq!(sel.kept[&ga], vec![0, 2]);
        assert_eq!(sel.kept[&gb], vec![1, 3, 4, 5]);
    }

    #[test]
    fn out_of_range_targets_are_errors() {
        let g = net();
        let groups = channel_groups(&g).unwrap();
        let (ga, gb) = ids(&groups);
        for t in [1.0, -0.1, f64::NAN] {
            let e = select_channels(
                &g,
                &groups,
                &scores(ga, gb),
                &SelectOptions::new(StructuredTarget::MacsReduction(t)),
            )
            .unwrap_err();
            assert!(e.to_string().contains("[0, 1)"), "{e}");
        }
        let e = select_channels(
            &g,
            &groups,
            &scores(ga, gb),
            &SelectOptions::new(StructuredTarget::ParamsReduction(0.99)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("out of reach"), "{e}");
        let mut bad = scores(ga, gb);
        bad.insert(ga, vec![1.0]);
        let e = select_channels(
            &g,
            &groups,
            &bad,
            &SelectOptions::new(StructuredTarget::ChannelRatio(0.5)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("4 channels, got 1"), "{e}");
    }

    #[test]
    fn slimming_percentile_threshold() {
        let g = net();
        let groups = channel_groups(&g).unwrap();
        let (ga, gb) = ids(&groups);
        let s = scores(ga, gb);
        // sorted: .05 .1 .2 .3 .4 .5 .6 .7 .8 .9; p = 0.3 -> index 3 -> 0.3.
        let thr = percentile_threshold(&s, 0.3).unwrap();
        assert_eq!(thr, 0.3);
        let sel = select_below_threshold(&g, &groups, &s, thr, &[], 1).unwrap();
        assert_eq!(sel.kept[&ga], vec![0, 2]);
        assert_eq!(sel.kept[&gb], vec![1, 3, 4, 5]);
        // a group entirely below the threshold keeps its best channel.
        let sel = select_below_threshold(&g, &groups, &s, 0.95, &[], 1).unwrap();
        assert_eq!(sel.kept[&ga], vec![2]);
        assert_eq!(sel.kept[&gb], vec![1]);
        assert!(percentile_threshold(&s, 1.0).is_err());
    }

    #[test]
    fn bn_votes_follow_the_masksparsity_rule() {
        // Residual group with three BNs (stem_bn, r1_bn, r2_bn) over 5 channels.
        let mut b = GraphBuilder::new("t", &[1, 4, 4]);
        let x = b.input();
        let s = b.conv2d("stem", &x, 5, 1, 1, 0);
        let s = b.batchnorm("stem_bn", &s);
        let r1 = b.conv2d("r1", &s, 5, 1, 1, 0);
        let r1 = b.batchnorm("r1_bn", &r1);
        let a1 = b.add("a1", &[&s, &r1]);
        let r2 = b.conv2d("r2", &a1, 5, 1, 1, 0);
        let r2 = b.batchnorm("r2_bn", &r2);
        let a2 = b.add("a2", &[&a1, &r2]);
        let p = b.global_avg_pool("gap", &a2);
        let fc = b.linear("fc", &p, 2, false);
        let g = b.finish(&fc);
        let mut w = init_weights(&g, 0);
        let set = |w: &mut Weights, n: &str, v: &[f32]| {
            w.insert(
                format!("{n}.weight"),
                ArrayD::from_shape_vec(IxDyn(&[5]), v.to_vec()).unwrap(),
            );
        };
        // marks (|γ| ≤ 0.1): stem {0,1,2}, r1 {0,1}, r2 {0,3,4}; m = 2; votes [3,2,1,1,1].
        set(&mut w, "stem_bn", &[0.0, 0.05, -0.1, 1.0, 1.0]);
        set(&mut w, "r1_bn", &[0.01, 0.0, 1.0, 1.0, 1.0]);
        set(&mut w, "r2_bn", &[0.0, 1.0, 1.0, 0.1, -0.02]);
        let groups = channel_groups(&g).unwrap();
        let gid = groups.iter().find(|g| g.producers.len() == 3).unwrap().id;
        let sel = select_by_bn_votes(&g, &w, &groups, 0.1, &[]).unwrap();
        // i = 3: {0} (1 < m); i = 2: {0, 1} (2 ≥ m) -> remove 0 and 1.
        assert_eq!(sel.kept[&gid], vec![2, 3, 4]);
        // tau = 1 marks all but each member's best (4, 3, 2): m = 4, votes [3,3,2,2,2]; i = 3
        // finds 2 < 4 channels, i = 2 takes all five, so the best summed |γ| (channel 4) stays.
        set(&mut w, "stem_bn", &[0.0, 0.0, 0.0, 0.0, 0.5]);
        set(&mut w, "r1_bn", &[0.0, 0.0, 0.0, 0.4, 0.0]);
        set(&mut w, "r2_bn", &[0.0, 0.0, 0.3, 0.0, 0.0]);
        let sel = select_by_bn_votes(&g, &w, &groups, 1.0, &[]).unwrap();
        assert_eq!(sel.kept[&gid], vec![4]);
    }

    #[test]
    fn pipeline_on_resnet20_reaches_a_macs_target_and_stays_equivalent() {
        use crate::reference::{forward, forward_with_channel_gates};
        use crate::structured::compact::{compact, selection_gates};
        use crate::structured::importance::{ImportanceOptions, Normalization, importance};
        let g = crate::zoo::build("resnet-20", &[3, 8, 8], 10).unwrap();
        let mut w = init_weights(&g, 3);
        for (name, t) in w.iter_mut() {
            if name.ends_with("_bn.bias") || name.ends_with("bn.running_mean") {
                t.mapv_inplace(|_| 0.3);
            }
        }
        let groups = channel_groups(&g).unwrap();
        let opts = ImportanceOptions {
            normalization: Normalization::Mean,
            ..Default::default()
        };
        let scores = importance(&w, &groups, &opts).unwrap();
        let mut sel_opts = SelectOptions::new(StructuredTarget::MacsReduction(0.4));
        sel_opts.round_to = 2;
        let sel = select_channels(&g, &groups, &scores, &sel_opts).unwrap();
        let (g2, w2) = compact(&g, &w, &sel).unwrap();
        let before = cost(&g, Convention::ConvLinear).unwrap().macs as f64;
        let after = cost(&g2, Convention::ConvLinear).unwrap().macs as f64;
        let achieved = 1.0 - after / before;
        assert!((0.4..0.45).contains(&achieved), "{achieved}");
        for (&gid, kept) in &sel.kept {
            let g = &groups[gid];
            assert!(kept.len() % 2 == 0 || kept.len() == g.channels, "{g}");
        }
        let x = ArrayD::from_shape_fn(IxDyn(&[2, 3, 8, 8]), |i| {
            ((i[1] * 7 + i[2] * 3 + i[3] + i[0] * 5) % 11) as f32 / 11.0 - 0.5
        });
        let gates = selection_gates(&g, &sel).unwrap();
        let a = forward(&g2, &w2, None, &x).unwrap();
        let b = forward_with_channel_gates(&g, &w, None, &gates, &x).unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(diff <= 1e-4 * scale, "{diff} vs {scale}");
    }
}
