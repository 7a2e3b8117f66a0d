//! FTWT's self-supervised mask targets, from the layer's ungated output: which filters one
//! sample needs. `activation[c]` is a_c = max over the map of |O_c| (the "heatmap" peak).

use serde::{Deserialize, Serialize};

/// Masses at or below this count as dead filters (the official code's tolerance).
pub const DEAD: f64 = 1e-5;

/// How the targets are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetRule {
    /// Keep the largest filters whose share of Σ a_c adds up to at most r (r = 1: drop only the
    /// dead filters).
    Mass,
    /// Drop the ⌊r·C⌋ smallest filters (r is a prune fraction here) and the dead ones.
    Uniform,
}

impl TargetRule {
    pub fn name(self) -> &'static str {
        match self {
            TargetRule::Mass => "mass",
            TargetRule::Uniform => "uniform",
        }
    }
}

/// The 0/1 target of one sample's filters, written into `out` (same length as `activation`).
pub fn targets(rule: TargetRule, r: f64, activation: &[f32], out: &mut [f32]) {
    debug_assert_eq!(activation.len(), out.len());
    let total: f64 = activation.iter().map(|&a| a as f64).sum();
    out.fill(0.0);
    if !(total > 0.0) {
        // Every filter is dead for this sample (or the output is not finite): none is needed.
        return;
    }
    let share = |c: usize| activation[c] as f64 / total;
    let mut order: Vec<usize> = (0..activation.len()).collect();
    // Largest first; ties by index, so the rule is deterministic.
    order.sort_by(|&a, &b| activation[b].total_cmp(&activation[a]).then(a.cmp(&b)));
    match rule {
        TargetRule::Mass if r >= 1.0 => {
            for (c, o) in out.iter_mut().enumerate() {
                *o = f32::from(share(c) > DEAD);
            }
        }
        TargetRule::Mass => {
            // The longest prefix whose cumulative share stays within r: the filter that pushes
            // the mass over r is already excluded.
            let mut cumulative = 0.0;
            for &c in &order {
                cumulative += share(c);
                if cumulative > r + DEAD {
                    break;
                }
                out[c] = f32::from(share(c) > DEAD);
            }
        }
        TargetRule::Uniform => {
            let drop = (r * activation.len() as f64).floor() as usize;
            for &c in &order[..activation.len() - drop.min(activation.len())] {
                out[c] = f32::from(activation[c] as f64 > DEAD);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rule: TargetRule, r: f64, a: &[f32]) -> Vec<f32> {
        let mut out = vec![f32::NAN; a.len()];
        targets(rule, r, a, &mut out);
        out
    }

    #[test]
    fn the_posters_example_keeps_four_filters_at_r_095() {
        // Sorted masses 0.3, 0.3, 0.2, 0.1, 0.1, 0.03, 0.01 (cumulative 0.9 after four; the
        // fifth would make 1.0 > 0.95), here shuffled.
        let a = [0.1, 0.3, 0.01, 0.2, 0.3, 0.03, 0.1];
        let t = run(TargetRule::Mass, 0.95, &a);
        assert_eq!(t.iter().sum::<f32>(), 4.0, "{t:?}");
        // The two 0.3 filters, the 0.2 and the first 0.1 (ties by index).
        assert_eq!(t, vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn r_one_drops_only_dead_filters_and_smaller_r_drops_more() {
        let a = [0.5, 0.0, 0.25, 1e-9, 0.25];
        assert_eq!(
            run(TargetRule::Mass, 1.0, &a),
            vec![1.0, 0.0, 1.0, 0.0, 1.0]
        );
        let kept = |r| run(TargetRule::Mass, r, &a).iter().sum::<f32>();
        assert_eq!(kept(0.75), 2.0);
        assert_eq!(kept(0.5), 1.0);
        assert_eq!(kept(0.4), 0.0, "even the largest filter exceeds r alone");
        // Scale does not matter: only shares do.
        let scaled: Vec<f32> = a.iter().map(|v| v * 100.0).collect();
        assert_eq!(
            run(TargetRule::Mass, 0.75, &scaled),
            run(TargetRule::Mass, 0.75, &a)
        );
    }

    #[test]
    fn uniform_drops_a_fixed_share_and_the_dead() {
        let a = [4.0, 1.0, 3.0, 2.0, 0.0];
        assert_eq!(
            run(TargetRule::Uniform, 0.4, &a),
            vec![1.0, 0.0, 1.0, 1.0, 0.0]
        );
        assert_eq!(
            run(TargetRule::Uniform, 0.0, &a),
            vec![1.0, 1.0, 1.0, 1.0, 0.0]
        );
    }

    #[test]
    fn a_sample_with_no_activity_needs_no_filter() {
        assert_eq!(run(TargetRule::Mass, 0.9, &[0.0, 0.0]), vec![0.0, 0.0]);
        assert_eq!(run(TargetRule::Mass, 0.9, &[f32::NAN, 1.0]), vec![0.0, 0.0]);
    }
}
