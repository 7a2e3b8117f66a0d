//! Pruning to a direct or an effective sparsity target (ES "effective pruning").
//!
//! Direct targets select once. Effective targets search over nested masks, along which effective
//! sparsity is monotone (pruning more never adds a path):
//! - global scores: binary search on the number m of lowest-scoring weights removed, keeping the
//!   largest m whose effective sparsity is ≤ the target (`effective_correction_from_global_scores`);
//! - layer quotas: find the range of direct targets the quota accepts, then binary search the
//!   direct target (in steps of one weight) fed to the quota for the largest one whose effective
//!   sparsity is ≤ the target (`effective_correction_layerwise_scores_magnitude_pruning`). Fixed
//!   scores make the per-layer masks nested, so random selection stays monotone too.
//!
//! Both searches take O(log N) effective evaluations and never return a mask above the target.

use crate::error::{CoreError, Result};
use crate::graph::Graph;
use crate::sparsity::check_fraction;
use crate::sparsity::effective::Plan;
use crate::sparsity::quotas::{Quota, layer_sparsities};
use crate::sparsity::scores::Scores;
use crate::sparsity::select::{Candidates, SelectOptions};
use crate::weights::Masks;
use std::fmt;
use std::str::FromStr;

/// Which sparsity a target refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TargetKind {
    /// Fraction of weights removed by the mask.
    #[default]
    Direct,
    /// Fraction of weights on no input→output path (removed or disconnected).
    Effective,
}

impl TargetKind {
    /// Lowercase name, as [`FromStr`] accepts it.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::Effective => "effective",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TargetKind {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "direct" => Ok(TargetKind::Direct),
            "effective" => Ok(TargetKind::Effective),
            _ => Err(CoreError::value(
                "sparsity target kind",
                format!("unknown kind `{s}` (known: direct, effective)"),
            )),
        }
    }
}

/// How the pruning budget is spread over layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Allocation {
    /// One global ranking of all scores.
    Global,
    /// Per-layer sparsities from a quota, lowest scores pruned within each layer.
    Layerwise(Quota),
}

/// What to prune to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneSpec {
    /// Target sparsity in `[0, 1)`.
    pub target: f64,
    pub kind: TargetKind,
    pub allocation: Allocation,
    pub options: SelectOptions,
}

/// The chosen masks and both of their sparsities.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneOutcome {
    /// Keep-masks for every prunable tensor (not yet corrected to their effective masks).
    pub masks: Masks,
    pub direct_sparsity: f64,
    pub effective_sparsity: f64,
    /// Reachability passes used, the final measurement included (1 for direct targets).
    pub evaluations: usize,
}

/// Prunes the lowest `scores` to `spec`; weights pruned in `existing` stay pruned and count.
pub fn prune_to_target(
    graph: &Graph,
    scores: &Scores,
    spec: &PruneSpec,
    existing: Option<&Masks>,
) -> Result<PruneOutcome> {
    check_fraction("target sparsity", spec.target, false)?;
    let cand = Candidates::new(graph, scores, existing)?;
    let plan = Plan::new(graph)?;
    let total = plan.total();
    let guard = spec.options.keep_one_per_layer;
    let mut evaluations = 0;
    let mut effective = |keep: &[bool]| {
        evaluations += 1;
        plan.run(&cand.slices(keep), false)
            .effective_sparsity(total)
    };
    let keep = match (spec.kind, spec.allocation) {
        (TargetKind::Direct, Allocation::Global) => cand.global_keep(spec.target, guard),
        (TargetKind::Direct, Allocation::Layerwise(quota)) => {
            let s = layer_sparsities(quota, &cand.layers, spec.target)?;
            cand.layer_keep(&cand.layer_orders(guard), &s)
        }
        (TargetKind::Effective, Allocation::Global) => {
            let order = cand.global_order(guard);
            let m = largest_within(order.len(), spec.target, |m| {
                effective(&cand.keep_without(&order[..m]))
            })?;
            cand.keep_without(&order[..m])
        }
        (TargetKind::Effective, Allocation::Layerwise(quota)) => {
            let orders = cand.layer_orders(guard);
            let n = cand.total();
            let quota_at = |m: usize| layer_sparsities(quota, &cand.layers, m as f64 / n as f64);
            let last_valid = last_valid_step(n - 1, |m| quota_at(m).is_ok()).ok_or_else(|| {
                CoreError::value(
                    "target sparsity",
                    format!("{quota} gives no valid layer sparsities even at sparsity 0"),
                )
            })?;
            let keep_at =
                |m: usize| -> Result<Vec<bool>> { Ok(cand.layer_keep(&orders, &quota_at(m)?)) };
            let mut failure = None;
            let m = largest_within(last_valid, spec.target, |m| match keep_at(m) {
                Ok(keep) => effective(&keep),
                Err(e) => {
                    failure = Some(e);
                    f64::INFINITY
                }
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            keep_at(m)?
        }
    };
    let run = plan.run(&cand.slices(&keep), false);
    let kept: usize = keep.iter().filter(|&&k| k).count();
    Ok(PruneOutcome {
        masks: cand.to_masks(&keep)?,
        direct_sparsity: 1.0 - kept as f64 / total as f64,
        effective_sparsity: run.effective_sparsity(total),
        evaluations: evaluations + 1,
    })
}

/// The largest m in `0..=max` with `effective(m) ≤ target`, assuming `effective` is
/// non-decreasing; an error when even m = 0 is above the target.
fn largest_within(
    max: usize,
    target: f64,
    mut effective: impl FnMut(usize) -> f64,
) -> Result<usize> {
    let at_zero = effective(0);
    if at_zero > target {
        return Err(CoreError::value(
            "target sparsity",
            format!(
                "effective target {target} is unreachable: pruning no further weights already \
                 gives effective sparsity {at_zero}"
            ),
        ));
    }
    if max == 0 || effective(max) <= target {
        return Ok(max);
    }
    let (mut lo, mut hi) = (0, max);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if effective(mid) <= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The largest m in `0..=max` with `valid(m)`, assuming validity holds on a prefix; `None` when
/// m = 0 is invalid.
fn last_valid_step(max: usize, valid: impl Fn(usize) -> bool) -> Option<usize> {
    if !valid(0) {
        return None;
    }
    if valid(max) {
        return Some(max);
    }
    let (mut lo, mut hi) = (0, max);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if valid(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::sparsity::effective::sparsity_report;
    use crate::sparsity::quotas::layer_infos;
    use crate::sparsity::scores::{magnitude_scores, random_scores};
    use crate::sparsity::select::{select_global, select_per_layer};
    use crate::weights::init_weights;

    /// A small LeNet-300-100-shaped MLP: 2720 weights.
    fn mlp() -> Graph {
        let mut b = GraphBuilder::new("mlp", &[64]);
        let x = b.input();
        let h = b.linear("l1", &x, 32, true);
        let h = b.relu("r1", &h);
        let h = b.linear("l2", &h, 16, true);
        let h = b.relu("r2", &h);
        let y = b.linear("l3", &h, 10, true);
        b.finish(&y)
    }

    fn convnet() -> Graph {
        let mut b = GraphBuilder::new("cnn", &[3, 8, 8]);
        let x = b.input();
        let c = b.conv_bn_relu("c1", &x, 8, 3, 1, 1);
        let c = b.conv_bn_relu("c2", &c, 16, 3, 2, 1);
        let d = b.conv2d("c3", &c, 16, 3, 1, 1);
        let s = b.add("res", &[&d, &c]);
        let p = b.global_avg_pool("gap", &s);
        let y = b.linear("fc", &p, 10, true);
        b.finish(&y)
    }

    fn spec(target: f64, kind: TargetKind, allocation: Allocation) -> PruneSpec {
        PruneSpec {
            target,
            kind,
            allocation,
            options: SelectOptions::default(),
        }
    }

    fn pruned_count(m: &Masks) -> usize {
        m.values().flatten().filter(|&&k| !k).count()
    }

    #[test]
    fn global_effective_target_is_never_exceeded_and_maximal() {
        let g = mlp();
        let n = 2720.0;
        let s = magnitude_scores(&g, &init_weights(&g, 3)).unwrap();
        for target in [0.5, 0.9, 0.97, 0.99] {
            let sp = spec(target, TargetKind::Effective, Allocation::Global);
            let out = prune_to_target(&g, &s, &sp, None).unwrap();
            let report = sparsity_report(&g, &out.masks).unwrap();
            assert_eq!(report.effective_sparsity, out.effective_sparsity);
            assert!(out.effective_sparsity <= target, "{target}: {out:?}");
            // m = 0, m = max, then bisection over 2720 steps (12), then the final measurement.
            assert!(out.evaluations <= 2 + 12 + 1, "{}", out.evaluations);
            // One more weight from the global order crosses the target.
            let m = pruned_count(&out.masks);
            let next =
                select_global(&g, &s, (m + 1) as f64 / n, None, SelectOptions::default()).unwrap();
            assert_eq!(pruned_count(&next), m + 1);
            let over = sparsity_report(&g, &next).unwrap().effective_sparsity;
            assert!(over > target, "{target}: m={m} is not maximal ({over})");
        }
    }

    #[test]
    fn effective_target_prunes_directly_less_when_connectivity_is_lost() {
        let g = mlp();
        let s = random_scores(&g, 9);
        let target = 0.98;
        let direct = prune_to_target(
            &g,
            &s,
            &spec(target, TargetKind::Direct, Allocation::Global),
            None,
        )
        .unwrap();
        assert!((direct.direct_sparsity - target).abs() < 1.0 / 2720.0);
        assert!(direct.effective_sparsity > target, "{direct:?}");
        let eff = prune_to_target(
            &g,
            &s,
            &spec(target, TargetKind::Effective, Allocation::Global),
            None,
        )
        .unwrap();
        assert!(eff.direct_sparsity < target, "{eff:?}");
        assert!(eff.effective_sparsity <= target);
        // Random global pruning disconnects in jumps; it still lands within 1% of the target.
        assert!(target - eff.effective_sparsity < 0.01, "{eff:?}");
    }

    #[test]
    fn quota_effective_targets_match_within_a_few_weights() {
        let g = mlp();
        let n = 2720.0;
        let s = random_scores(&g, 4);
        for quota in [Quota::Uniform, Quota::Erk, Quota::Igq, Quota::Er] {
            for target in [0.8, 0.95] {
                let sp = spec(target, TargetKind::Effective, Allocation::Layerwise(quota));
                let out = prune_to_target(&g, &s, &sp, None).unwrap();
                assert!(
                    out.effective_sparsity <= target,
                    "{quota} {target}: {out:?}"
                );
                assert!(out.direct_sparsity <= out.effective_sparsity);
                // Each step of the search adds about one pruned weight; disconnections can add a
                // few more, so allow a 20-weight gap on this small net.
                assert!(
                    (target - out.effective_sparsity) * n < 20.0,
                    "{quota} {target}: {out:?}"
                );
                // The masks are exactly the quota's per-layer selection at the found direct target.
                let ls = layer_sparsities(quota, &layer_infos(&g), out.direct_sparsity).unwrap();
                let again = select_per_layer(&g, &s, &ls, None, SelectOptions::default()).unwrap();
                let diff: usize = again
                    .iter()
                    .map(|(k, m)| {
                        m.iter()
                            .zip(out.masks[k].iter())
                            .filter(|(a, b)| a != b)
                            .count()
                    })
                    .sum();
                assert!(diff <= 3, "{quota} {target}: {diff} weights differ");
            }
        }
    }

    #[test]
    fn quota_search_stays_in_the_quota_valid_range() {
        // uniform+ keeps the conv net's first layer dense and caps the classifier at 0.8, so
        // high targets are only reachable through the middle layers.
        let g = convnet();
        let s = random_scores(&g, 1);
        let sp = spec(
            0.9,
            TargetKind::Effective,
            Allocation::Layerwise(Quota::UniformPlus),
        );
        let out = prune_to_target(&g, &s, &sp, None).unwrap();
        assert!(out.effective_sparsity <= 0.9);
        assert!(out.masks["c1.weight"].iter().all(|&k| k));
        let fc = &out.masks["fc.weight"];
        assert!(fc.iter().filter(|&&k| !k).count() as f64 <= 0.8 * fc.len() as f64 + 0.5);
        // Beyond what uniform+ can prune at all, the search stops at its last valid target.
        let sp = spec(
            0.99,
            TargetKind::Effective,
            Allocation::Layerwise(Quota::UniformPlus),
        );
        let out = prune_to_target(&g, &s, &sp, None).unwrap();
        assert!(out.effective_sparsity <= 0.99 && out.direct_sparsity < 0.99);
        let e = prune_to_target(
            &g,
            &s,
            &spec(
                0.99,
                TargetKind::Direct,
                Allocation::Layerwise(Quota::UniformPlus),
            ),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("uniform+ cannot reach"), "{e}");
    }

    #[test]
    fn direct_targets_equal_plain_selection() {
        let g = convnet();
        let s = magnitude_scores(&g, &init_weights(&g, 2)).unwrap();
        let out = prune_to_target(
            &g,
            &s,
            &spec(0.7, TargetKind::Direct, Allocation::Global),
            None,
        )
        .unwrap();
        assert_eq!(
            out.masks,
            select_global(&g, &s, 0.7, None, SelectOptions::default()).unwrap()
        );
        let ls = layer_sparsities(Quota::Erk, &layer_infos(&g), 0.7).unwrap();
        let out = prune_to_target(
            &g,
            &s,
            &spec(0.7, TargetKind::Direct, Allocation::Layerwise(Quota::Erk)),
            None,
        )
        .unwrap();
        assert_eq!(
            out.masks,
            select_per_layer(&g, &s, &ls, None, SelectOptions::default()).unwrap()
        );
        // Padding-free taps all see the image here, so a dense-ish mask is connected.
        assert!(out.effective_sparsity >= out.direct_sparsity);
    }

    #[test]
    fn unreachable_effective_targets_are_errors() {
        let g = mlp();
        let s = random_scores(&g, 2);
        let mut existing = Masks::new();
        // Cutting every l3 weight disconnects the whole network.
        existing.insert(
            "l3.weight".into(),
            ndarray::ArrayD::from_elem(ndarray::IxDyn(&[10, 16]), false),
        );
        let e = prune_to_target(
            &g,
            &s,
            &spec(0.5, TargetKind::Effective, Allocation::Global),
            Some(&existing),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("unreachable") && e.to_string().contains("0.5"),
            "{e}"
        );
        let e = prune_to_target(
            &g,
            &s,
            &spec(1.0, TargetKind::Effective, Allocation::Global),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("must be in [0, 1)"), "{e}");
        assert_eq!(
            "Effective".parse::<TargetKind>().unwrap(),
            TargetKind::Effective
        );
        assert!(
            "both"
                .parse::<TargetKind>()
                .unwrap_err()
                .to_string()
                .contains("direct, effective")
        );
    }

    #[test]
    fn binary_searches_find_the_boundary() {
        let f = |m: usize| m as f64 / 100.0;
        assert_eq!(largest_within(100, 0.375, f).unwrap(), 37);
        assert_eq!(largest_within(100, 1.0, f).unwrap(), 100);
        assert_eq!(largest_within(100, 0.0, f).unwrap(), 0);
        assert!(largest_within(100, 0.5, |m| 0.6 + m as f64).is_err());
        assert_eq!(last_valid_step(100, |m| m <= 42), Some(42));
        assert_eq!(last_valid_step(100, |_| true), Some(100));
        assert_eq!(last_valid_step(100, |_| false), None);
    }
}
