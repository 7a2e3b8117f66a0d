//! PAAM's one global budget: which filters stay in use while training continues.
//!
//! There are no per-layer budgets. At the start of an epoch, every scored filter of the whole
//! network is ranked by its current score and the lowest are cut until the network's
//! parameters (or MACs) are reduced by the epoch's share of the budget: the cut through the
//! cumulative distribution of the scores, measured on the compacted graph, and the smallest cut
//! that reaches the target, so it lands within one filter of it (`select_channels`). Cut
//! filters are gated to exactly 0 until the next budget step. The share ramps up cubically
//! from `prune_start` to `prune_end` (fractions of the epochs) [UNVERIFIED: the paper's schedule
//! is not public], so the network adapts to its shrinking width, and the last epochs train the
//! final network that compaction will produce.

use crate::error::Result;
use crate::invalid;
use serde::Serialize;
use shears_core::cost::Convention;
use shears_core::graph::Graph;
use shears_core::structured::{
    ChannelGroup, ChannelSelection, GroupScores, Scope, SelectOptions, StructuredTarget,
    select_channels,
};

/// What the budget measures, and how much of it goes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// Share of the network's parameters removed.
    ParamsReduction(f64),
    /// Share of the network's MACs removed (conv+linear convention).
    MacsReduction(f64),
}

impl Budget {
    pub fn value(self) -> f64 {
        match self {
            Budget::ParamsReduction(v) | Budget::MacsReduction(v) => v,
        }
    }

    /// The same kind of budget, of size `v`.
    fn with(self, v: f64) -> StructuredTarget {
        match self {
            Budget::ParamsReduction(_) => StructuredTarget::ParamsReduction(v),
            Budget::MacsReduction(_) => StructuredTarget::MacsReduction(v),
        }
    }

    /// `params0.5` or `macs0.5`, for run names.
    pub fn label(self) -> String {
        match self {
            Budget::ParamsReduction(v) => format!("params{v}"),
            Budget::MacsReduction(v) => format!("macs{v}"),
        }
    }
}

/// When the budget is applied over a phase of `epochs` epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Schedule {
    pub budget: Budget,
    pub epochs: usize,
    /// The first epoch with a cut (at least 1: the first epoch only learns scores).
    pub first: usize,
    /// The epoch from which the whole budget is cut.
    pub last: usize,
}

impl Schedule {
    /// The schedule for `prune_start` ∈ [0, 1) and `prune_end` ∈ (prune_start, 1] of `epochs`
    /// (at least 2).
    pub fn new(budget: Budget, epochs: usize, prune_start: f64, prune_end: f64) -> Result<Self> {
        let b = budget.value();
        if !(b > 0.0 && b < 1.0) {
            invalid!("[method] the PAAM budget must be in (0, 1), got {b}");
        }
        if !(0.0..1.0).contains(&prune_start) {
            invalid!("[method] prune_start must be in [0, 1), got {prune_start}");
        }
        if !(prune_end > prune_start && prune_end <= 1.0) {
            invalid!(
                "[method] prune_end must be in (prune_start, 1] = ({prune_start}, 1], got {prune_end}"
            );
        }
        if epochs < 2 {
            invalid!(
                "PAAM needs at least 2 training epochs (one to learn scores before the first cut), got {epochs}"
            );
        }
        let first = ((prune_start * epochs as f64).floor() as usize).clamp(1, epochs - 1);
        let last = ((prune_end * epochs as f64).ceil() as usize)
            .saturating_sub(1)
            .clamp(first, epochs - 1);
        Ok(Schedule {
            budget,
            epochs,
            first,
            last,
        })
    }

    /// The share of the budget cut during epoch `epoch` (0-based): 0 before `first`, then a
    /// cubic ramp reaching the whole budget at `last`.
    pub fn target(&self, epoch: usize) -> f64 {
        if epoch < self.first {
            return 0.0;
        }
        let steps = (self.last - self.first + 1) as f64;
        let progress = ((epoch - self.first + 1) as f64 / steps).min(1.0);
        self.budget.value() * (1.0 - (1.0 - progress).powi(3))
    }
}

/// The filters kept when `target` of the budget is cut by `scores` (one list per scored group;
/// absent groups stay whole).
pub fn cut(
    graph: &Graph,
    groups: &[ChannelGroup],
    scores: &GroupScores,
    budget: Budget,
    target: f64,
    round_to: usize,
) -> Result<ChannelSelection> {
    if target <= 0.0 {
        return Ok(ChannelSelection::default());
    }
    let opts = SelectOptions {
        target: budget.with(target),
        scope: Scope::Global,
        convention: Convention::ConvLinear,
        round_to,
        max_group_ratio: 1.0,
        ignore: Vec::new(),
    };
    Ok(select_channels(graph, groups, scores, &opts)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shears_core::cost::cost;
    use shears_core::structured::{channel_groups, compact_graph};
    use shears_core::zoo;

    #[test]
    fn the_ramp_is_cubic_starts_after_a_warm_up_and_ends_on_the_budget() {
        let s = Schedule::new(Budget::ParamsReduction(0.5), 10, 0.25, 0.75).unwrap();
        assert_eq!((s.first, s.last), (2, 7));
        assert_eq!(s.target(0), 0.0);
        assert_eq!(s.target(1), 0.0);
        assert!(s.target(2) > 0.0 && s.target(2) < s.target(3));
        assert!((s.target(7) - 0.5).abs() < 1e-12);
        assert!((s.target(9) - 0.5).abs() < 1e-12);
        // Short phases still warm up one epoch and end on the whole budget.
        let s = Schedule::new(Budget::MacsReduction(0.3), 2, 0.0, 1.0).unwrap();
        assert_eq!((s.first, s.last), (1, 1));
        assert_eq!(s.target(0), 0.0);
        assert!((s.target(1) - 0.3).abs() < 1e-12);
        for (b, e, a, z, want) in [
            (1.0, 10, 0.2, 0.8, "budget must be in (0, 1), got 1"),
            (0.0, 10, 0.2, 0.8, "budget must be in (0, 1), got 0"),
            (0.5, 1, 0.2, 0.8, "at least 2 training epochs"),
            (0.5, 10, 0.8, 0.2, "prune_end must be in"),
            (0.5, 10, -0.1, 0.8, "prune_start must be in [0, 1)"),
        ] {
            let e = Schedule::new(Budget::ParamsReduction(b), e, a, z)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn the_cut_reaches_the_budget_within_one_filter() {
        let graph = zoo::build("vgg-11", &[1, 28, 28], 10).unwrap();
        let groups = channel_groups(&graph).unwrap();
        // Distinct scores that do not follow the layer order.
        let mut scores = GroupScores::new();
        for g in groups.iter().filter(|g| g.prunable) {
            let s = (0..g.channels)
                .map(|j| ((j * 7919 + g.id * 104_729) % 1009) as f32 / 1009.0 + g.id as f32 * 1e-4)
                .collect();
            scores.insert(g.id, s);
        }
        let dense = cost(&graph, Convention::ConvLinear).unwrap().params as f64;
        for target in [0.2, 0.5, 0.7] {
            let sel = cut(
                &graph,
                &groups,
                &scores,
                Budget::ParamsReduction(0.9),
                target,
                1,
            )
            .unwrap();
            let reduction = |sel: &ChannelSelection| {
                let small = compact_graph(&graph, sel).unwrap();
                1.0 - cost(&small, Convention::ConvLinear).unwrap().params as f64 / dense
            };
            let achieved = reduction(&sel);
            assert!(achieved >= target, "{achieved} < {target}");
            // The cut follows the scores: every kept filter scores at least every cut one.
            let (mut lowest_kept, mut highest_cut) = (f32::INFINITY, f32::NEG_INFINITY);
            let mut best_cut = None;
            for (gid, kept) in &sel.kept {
                for (j, &s) in scores[gid].iter().enumerate() {
                    if kept.contains(&j) {
                        lowest_kept = lowest_kept.min(s);
                    } else if s > highest_cut {
                        highest_cut = s;
                        best_cut = Some((*gid, j));
                    }
                }
            }
            for (gid, s) in &scores {
                if !sel.kept.contains_key(gid) {
                    lowest_kept = lowest_kept.min(s.iter().copied().fold(f32::INFINITY, f32::min));
                }
            }
            assert!(highest_cut <= lowest_kept, "{highest_cut} > {lowest_kept}");
            // One filter fewer cut (the best-scored cut one back) misses the target.
            let (gid, j) = best_cut.unwrap();
            let mut back = sel.clone();
            let kept = back.kept.get_mut(&gid).unwrap();
            kept.push(j);
            kept.sort_unstable();
            assert!(
                reduction(&back) < target,
                "target {target} reached with one filter fewer"
            );
        }
    }
}
