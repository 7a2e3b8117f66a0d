//! Per-sample MACs of a gated network, in two conventions.
//!
//! - **paper** (the official code's counter): gated conv l costs a_l · H·W·k² · a_{l−1}/g, with
//!   a_l its active filters for this sample and a_{l−1} those of the previous gated layer (the
//!   input channels for the first), the division floored when g > 1 (so a depthwise layer counts
//!   0 unless every input channel is active); after an ungated conv, a_{l−1} is that conv's full
//!   width. The FC layer is not counted in the dynamic cost
//!   but is in the dense one, so the reduction is slightly optimistic, as published.
//! - **strict**: gated conv l costs H·W·k²·(in/g) for each active filter paired with each
//!   non-zero input channel of its group: the channels that really enter it, after residual
//!   sums (the paper undercounts there). Ungated convs (residual projections included, whose
//!   input may be sparse too) and linear layers count in full: strict never undercounts.

use super::layers::GatedLayer;
use serde::Serialize;
use shears_core::cost::{Convention, cost};
use shears_core::graph::{Graph, Op};
use shears_core::ops::{Conv2d, Linear};

/// One layer's counts for the samples of one batch.
#[derive(Debug, Clone)]
pub struct SampleCounts {
    /// Active filters per sample.
    pub active: Vec<u32>,
    /// Per sample: Σ over groups of (active filters) × (non-zero input channels).
    pub pairs: Vec<u64>,
}

impl SampleCounts {
    /// From the 0/1 gates `[n, out]` and the non-zero input channels `[n, in]`.
    pub fn of(layer: &GatedLayer, gates: &[f32], nonzero_in: &[bool], n: usize) -> SampleCounts {
        let (co, ci, g) = (layer.out_channels, layer.in_channels, layer.groups);
        let (co_g, ci_g) = (co / g, ci / g);
        let mut active = Vec::with_capacity(n);
        let mut pairs = Vec::with_capacity(n);
        for s in 0..n {
            let gate = &gates[s * co..(s + 1) * co];
            let nz = &nonzero_in[s * ci..(s + 1) * ci];
            active.push(gate.iter().filter(|v| **v > 0.0).count() as u32);
            let mut p = 0u64;
            for grp in 0..g {
                let a = gate[grp * co_g..(grp + 1) * co_g]
                    .iter()
                    .filter(|v| **v > 0.0)
                    .count();
                let b = nz[grp * ci_g..(grp + 1) * ci_g]
                    .iter()
                    .filter(|v| **v)
                    .count();
                p += (a * b) as u64;
            }
            pairs.push(p);
        }
        SampleCounts { active, pairs }
    }
}

/// Sums of per-sample gated-layer MACs over the samples seen.
#[derive(Debug, Clone, Default)]
pub struct DynamicCost {
    pub samples: u64,
    pub paper_sum: f64,
    pub strict_sum: f64,
}

/// MACs of one (filter, input channel) pair of a layer: H·W·k².
fn pair_macs(l: &GatedLayer) -> f64 {
    l.macs as f64 / (l.out_channels * (l.in_channels / l.groups)) as f64
}

impl DynamicCost {
    /// Adds one batch: `counts[l]` for every gated layer, in order.
    pub fn add_batch(&mut self, layers: &[GatedLayer], counts: &[SampleCounts]) {
        let n = counts.first().map_or(0, |c| c.active.len());
        for s in 0..n {
            let mut prev = layers[0].in_channels as u64;
            for (l, c) in layers.iter().zip(counts) {
                if l.after_ungated {
                    prev = l.in_channels as u64;
                }
                let a = c.active[s] as u64;
                let inputs = if l.groups > 1 {
                    prev / l.groups as u64
                } else {
                    prev
                };
                self.paper_sum += pair_macs(l) * (a * inputs) as f64;
                self.strict_sum += pair_macs(l) * c.pairs[s] as f64;
                prev = a;
            }
        }
        self.samples += n as u64;
    }
}

/// The dense reference and the ungated remainder of a network (conv+linear MACs per sample).
#[derive(Debug, Clone, Copy)]
pub struct DenseCost {
    /// Every conv and linear layer.
    pub total: u64,
    /// Convs that are not gated.
    pub ungated_convs: u64,
    /// Linear layers.
    pub linear: u64,
}

impl DenseCost {
    pub fn of(graph: &Graph, layers: &[GatedLayer]) -> shears_core::Result<DenseCost> {
        let c = cost(graph, Convention::ConvLinear)?;
        let (mut ungated_convs, mut linear) = (0, 0);
        for (node, nc) in graph.nodes.iter().zip(&c.nodes) {
            match node.op {
                Op::Conv2d(Conv2d { .. }) if !layers.iter().any(|l| l.conv == node.name) => {
                    ungated_convs += nc.macs
                }
                Op::Linear(Linear { .. }) => linear += nc.macs,
                _ => {}
            }
        }
        Ok(DenseCost {
            total: c.macs,
            ungated_convs,
            linear,
        })
    }
}

/// Average dynamic MACs per sample and the reduction against the dense network.
#[derive(Debug, Clone, Serialize)]
pub struct MacsSummary {
    pub dense_macs: u64,
    pub samples: u64,
    pub paper_macs: f64,
    pub paper_reduction: f64,
    pub strict_macs: f64,
    pub strict_reduction: f64,
}

impl MacsSummary {
    pub fn of(dense: DenseCost, cost: &DynamicCost) -> MacsSummary {
        let n = cost.samples.max(1) as f64;
        let paper = cost.paper_sum / n + dense.ungated_convs as f64;
        let strict = cost.strict_sum / n + (dense.ungated_convs + dense.linear) as f64;
        let total = dense.total as f64;
        MacsSummary {
            dense_macs: dense.total,
            samples: cost.samples,
            paper_macs: paper,
            paper_reduction: 1.0 - paper / total,
            strict_macs: strict,
            strict_reduction: 1.0 - strict / total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, ci: usize, co: usize, groups: usize, hw_k2: u64) -> GatedLayer {
        GatedLayer {
            conv: name.into(),
            gate_at: name.into(),
            in_channels: ci,
            out_channels: co,
            groups,
            macs: hw_k2 * (co * ci / groups) as u64,
            after_ungated: false,
        }
    }

    #[test]
    fn all_on_is_the_dense_cost_in_both_conventions() {
        let layers = vec![
            layer("a", 3, 4, 1, 9),
            layer("b", 4, 4, 4, 9),
            layer("c", 4, 2, 1, 1),
        ];
        let counts: Vec<SampleCounts> = layers
            .iter()
            .map(|l| {
                SampleCounts::of(
                    l,
                    &vec![1.0; 2 * l.out_channels],
                    &vec![true; 2 * l.in_channels],
                    2,
                )
            })
            .collect();
        let mut c = DynamicCost::default();
        c.add_batch(&layers, &counts);
        let dense: u64 = layers.iter().map(|l| l.macs).sum();
        assert_eq!(c.samples, 2);
        assert!((c.paper_sum / 2.0 - dense as f64).abs() < 1e-9);
        assert!((c.strict_sum / 2.0 - dense as f64).abs() < 1e-9);
    }

    #[test]
    fn the_conventions_differ_where_the_paper_does() {
        // a: 2 of 4 filters on; b depthwise 4: filters 0 and 1 on, its input (a's output)
        // non-zero on channels 0 and 2 only.
        let layers = vec![layer("a", 3, 4, 1, 10), layer("b", 4, 4, 4, 10)];
        let a = SampleCounts::of(&layers[0], &[1.0, 0.0, 1.0, 0.0], &[true; 3], 1);
        let b = SampleCounts::of(
            &layers[1],
            &[1.0, 1.0, 0.0, 0.0],
            &[true, false, true, false],
            1,
        );
        let mut c = DynamicCost::default();
        c.add_batch(&layers, &[a, b]);
        // paper: a = 2·3·10; b = 2·⌊2/4⌋·10 = 0.
        assert_eq!(c.paper_sum, 60.0);
        // strict: a = 2·3·10; b: only filter 0 has its input channel on = 10.
        assert_eq!(c.strict_sum, 70.0);
    }

    #[test]
    fn after_an_ungated_conv_the_paper_counts_its_full_width() {
        let mut layers = vec![layer("a", 3, 4, 1, 10), layer("c", 4, 4, 1, 10)];
        let a = SampleCounts::of(&layers[0], &[1.0, 0.0, 0.0, 0.0], &[true; 3], 1);
        let c = SampleCounts::of(&layers[1], &[1.0; 4], &[true; 4], 1);
        let mut chained = DynamicCost::default();
        chained.add_batch(&layers, &[a.clone(), c.clone()]);
        // c after a: 4 filters x 1 active input.
        assert_eq!(chained.paper_sum, 30.0 + 40.0);
        // An ungated conv between them hands c its full 4 channels.
        layers[1].after_ungated = true;
        let mut reset = DynamicCost::default();
        reset.add_batch(&layers, &[a, c]);
        assert_eq!(reset.paper_sum, 30.0 + 160.0);
    }

    #[test]
    fn the_summary_adds_the_ungated_remainder() {
        let dense = DenseCost {
            total: 1000,
            ungated_convs: 100,
            linear: 50,
        };
        let cost = DynamicCost {
            samples: 2,
            paper_sum: 800.0,
            strict_sum: 1000.0,
        };
        let s = MacsSummary::of(dense, &cost);
        assert!((s.paper_macs - 500.0).abs() < 1e-9 && (s.paper_reduction - 0.5).abs() < 1e-9);
        assert!((s.strict_macs - 650.0).abs() < 1e-9 && (s.strict_reduction - 0.35).abs() < 1e-9);
    }
}
