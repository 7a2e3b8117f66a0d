//! Masks from scores: prune the lowest-scoring weights globally or per layer.
//!
//! Ties are broken deterministically by position (tensor order in the graph, then row-major
//! index): the earlier weight is pruned first. Weights already pruned by `existing` masks stay
//! pruned and count toward the target, so iterative pruning can call this repeatedly. Counts are
//! rounded to the nearest weight (`round(s·n)`), per layer for layer quotas. Because a fixed score
//! map gives a fixed order, a higher sparsity always prunes a superset (nested masks): random
//! scores with quotas are the "random permutation per layer fixed by the seed" of ES.

use crate::error::{CoreError, Result};
use crate::graph::Graph;
use crate::sparsity::quotas::{LayerInfo, layer_infos};
use crate::sparsity::scores::{Scores, flat_scores};
use crate::sparsity::{check_fraction, flat_keeps};
use crate::weights::Masks;
use ndarray::{ArrayD, IxDyn};
use std::borrow::Cow;

/// Options shared by all selections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelectOptions {
    /// Never prune a layer's last surviving weight (its highest-scoring one), which guards
    /// against layer collapse; the pruning budget then goes to other weights.
    pub keep_one_per_layer: bool,
}

/// Prunes the globally lowest-scoring weights until `sparsity` of all prunable weights
/// (existing pruned ones included) are pruned.
pub fn select_global(
    graph: &Graph,
    scores: &Scores,
    sparsity: f64,
    existing: Option<&Masks>,
    options: SelectOptions,
) -> Result<Masks> {
    check_fraction("sparsity", sparsity, true)?;
    let cand = Candidates::new(graph, scores, existing)?;
    let keep = cand.global_keep(sparsity, options.keep_one_per_layer);
    cand.to_masks(&keep)
}

/// Prunes the lowest-scoring weights of each layer to the given per-layer sparsities (one per
/// prunable tensor, in graph order; e.g. from [`crate::sparsity::layer_sparsities`]).
pub fn select_per_layer(
    graph: &Graph,
    scores: &Scores,
    layer_sparsities: &[f64],
    existing: Option<&Masks>,
    options: SelectOptions,
) -> Result<Masks> {
    let cand = Candidates::new(graph, scores, existing)?;
    cand.check_layer_sparsities(layer_sparsities)?;
    let orders = cand.layer_orders(options.keep_one_per_layer);
    let keep = cand.layer_keep(&orders, layer_sparsities);
    cand.to_masks(&keep)
}

/// Total order key of a score: larger keys sort later; -0.0 is treated as 0.0.
fn order_bits(x: f32) -> u32 {
    let bits = if x == 0.0 { 0 } else { x.to_bits() };
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

const INDEX_MASK: u64 = 0xffff_ffff;

/// Scores, existing keep-flags and orderings of all prunable weights, flattened in layer order.
/// A weight's key is `score bits << 32 | global index`, so sorting keys sorts by score with ties
/// broken by position.
pub(crate) struct Candidates<'a> {
    pub layers: Vec<LayerInfo>,
    /// Start of each layer in the global index space, plus the total at the end.
    pub offsets: Vec<usize>,
    scores: Vec<Cow<'a, [f32]>>,
    /// Existing keep-flags (all true without existing masks).
    pub keep: Vec<bool>,
}

impl<'a> Candidates<'a> {
    pub fn new(graph: &Graph, scores: &'a Scores, existing: Option<&Masks>) -> Result<Self> {
        let layers = layer_infos(graph);
        if layers.is_empty() {
            return Err(CoreError::value(
                "pruning",
                "the network has no prunable (conv or linear) layers",
            ));
        }
        let mut offsets = vec![0];
        for l in &layers {
            offsets.push(offsets[offsets.len() - 1] + l.numel());
        }
        let total = offsets[layers.len()];
        if total as u64 > INDEX_MASK {
            return Err(CoreError::value(
                "pruning",
                format!("{total} prunable weights is more than the supported 2^32 - 1"),
            ));
        }
        let scores = flat_scores(&layers, scores)?;
        let empty = Masks::new();
        let keeps = flat_keeps(graph, &layers, existing.unwrap_or(&empty))?;
        let mut keep = Vec::with_capacity(total);
        for (l, k) in layers.iter().zip(&keeps) {
            match k {
                Some(k) => keep.extend_from_slice(k),
                None => keep.extend(std::iter::repeat_n(true, l.numel())),
            }
        }
        Ok(Candidates {
            layers,
            offsets,
            scores,
            keep,
        })
    }

    pub fn total(&self) -> usize {
        self.offsets[self.layers.len()]
    }

    fn key(&self, l: usize, i: usize) -> u64 {
        u64::from(order_bits(self.scores[l][i])) << 32 | (self.offsets[l] + i) as u64
    }

    /// Keys of layer `l`'s surviving weights, minus its highest-scoring one when `guard`.
    fn survivors(&self, l: usize, guard: bool) -> Vec<u64> {
        let mut keys: Vec<u64> = (0..self.layers[l].numel())
            .filter(|&i| self.keep[self.offsets[l] + i])
            .map(|i| self.key(l, i))
            .collect();
        if guard && let Some((at, _)) = keys.iter().enumerate().max_by_key(|(_, k)| **k) {
            keys.swap_remove(at);
        }
        keys
    }

    /// Every prunable survivor (guarded ones excluded), lowest score first.
    pub fn global_order(&self, guard: bool) -> Vec<u64> {
        let mut keys: Vec<u64> = (0..self.layers.len())
            .flat_map(|l| self.survivors(l, guard))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Per layer: its prunable survivors, lowest score first.
    pub fn layer_orders(&self, guard: bool) -> Vec<Vec<u64>> {
        (0..self.layers.len())
            .map(|l| {
                let mut keys = self.survivors(l, guard);
                keys.sort_unstable();
                keys
            })
            .collect()
    }

    /// Existing keep-flags with the weights of `keys` pruned.
    pub fn keep_without(&self, keys: &[u64]) -> Vec<bool> {
        let mut keep = self.keep.clone();
        for k in keys {
            keep[(k & INDEX_MASK) as usize] = false;
        }
        keep
    }

    /// Keep-flags after pruning globally to `sparsity`.
    pub fn global_keep(&self, sparsity: f64, guard: bool) -> Vec<bool> {
        let target = (sparsity * self.total() as f64).round() as usize;
        let pruned = self.keep.iter().filter(|&&k| !k).count();
        let mut keys: Vec<u64> = (0..self.layers.len())
            .flat_map(|l| self.survivors(l, guard))
            .collect();
        let extra = target.saturating_sub(pruned).min(keys.len());
        if extra < keys.len() && extra > 0 {
            keys.select_nth_unstable(extra);
        }
        self.keep_without(&keys[..extra])
    }

    /// Keep-flags after pruning each layer to `sparsities` (prefixes of `orders`).
    pub fn layer_keep(&self, orders: &[Vec<u64>], sparsities: &[f64]) -> Vec<bool> {
        let mut keep = self.keep.clone();
        for (l, order) in orders.iter().enumerate() {
            let n = self.layers[l].numel();
            let target = ((sparsities[l] * n as f64).round() as usize).min(n);
            let range = self.offsets[l]..self.offsets[l + 1];
            let pruned = self.keep[range].iter().filter(|&&k| !k).count();
            let extra = target.saturating_sub(pruned).min(order.len());
            for k in &order[..extra] {
                keep[(k & INDEX_MASK) as usize] = false;
            }
        }
        keep
    }

    pub fn check_layer_sparsities(&self, sparsities: &[f64]) -> Result<()> {
        if sparsities.len() != self.layers.len() {
            return Err(CoreError::value(
                "layer sparsities",
                format!(
                    "got {} values for {} prunable tensors",
                    sparsities.len(),
                    self.layers.len()
                ),
            ));
        }
        for (l, &s) in self.layers.iter().zip(sparsities) {
            check_fraction(&format!("sparsity of `{}`", l.name), s, true)?;
        }
        Ok(())
    }

    /// Per-layer slices of global keep-flags, for [`crate::sparsity::effective::Plan::run`].
    pub fn slices<'k>(&self, keep: &'k [bool]) -> Vec<Option<&'k [bool]>> {
        self.offsets
            .windows(2)
            .map(|w| Some(&keep[w[0]..w[1]]))
            .collect()
    }

    /// Global keep-flags as masks for every prunable tensor.
    pub fn to_masks(&self, keep: &[bool]) -> Result<Masks> {
        let mut out = Masks::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let flags = keep[self.offsets[l]..self.offsets[l + 1]].to_vec();
            let arr = ArrayD::from_shape_vec(IxDyn(&layer.shape), flags)
                .map_err(|e| CoreError::tensor(&layer.name, format!("mask: {e}")))?;
            out.insert(layer.name.clone(), arr);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::sparsity::quotas::{Quota, layer_sparsities};
    use crate::sparsity::scores::random_scores;

    fn net() -> Graph {
        let mut b = GraphBuilder::new("s", &[2]);
        let x = b.input();
        let h = b.linear("a", &x, 2, true);
        let y = b.linear("b", &h, 3, false);
        b.finish(&y)
    }

    fn scores(a: [f32; 4], b: [f32; 6]) -> Scores {
        let mut s = Scores::new();
        s.insert(
            "a.weight".into(),
            ArrayD::from_shape_vec(IxDyn(&[2, 2]), a.to_vec()).unwrap(),
        );
        s.insert(
            "b.weight".into(),
            ArrayD::from_shape_vec(IxDyn(&[3, 2]), b.to_vec()).unwrap(),
        );
        s
    }

    fn kept(m: &Masks, name: &str) -> Vec<bool> {
        m[name].iter().copied().collect()
    }

    #[test]
    fn global_prunes_the_lowest_scores_with_positional_ties() {
        let s = scores([0.5, 0.1, 0.9, 0.3], [0.3, 0.2, 0.8, 0.7, 0.3, 0.05]);
        // 10 weights, 0.5 -> 5 pruned: 0.05, 0.1, 0.2 and two of the three 0.3s, earliest first
        // (a[3] before b[0]; b[4] survives).
        let m = select_global(&net(), &s, 0.5, None, SelectOptions::default()).unwrap();
        assert_eq!(kept(&m, "a.weight"), [true, false, true, false]);
        assert_eq!(
            kept(&m, "b.weight"),
            [false, false, true, true, true, false]
        );
        assert!(
            select_global(&net(), &s, 1.0, None, SelectOptions::default())
                .unwrap()
                .values()
                .flatten()
                .all(|k| !k)
        );
    }

    #[test]
    fn existing_masks_count_toward_the_target() {
        let s = scores([0.5, 0.1, 0.9, 0.3], [0.3, 0.2, 0.8, 0.7, 0.3, 0.05]);
        let mut existing = Masks::new();
        // a[2] (the best weight) is already pruned: it stays pruned and counts as one of the 3.
        existing.insert(
            "a.weight".into(),
            ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![true, true, false, true]).unwrap(),
        );
        let m = select_global(&net(), &s, 0.3, Some(&existing), SelectOptions::default()).unwrap();
        assert_eq!(kept(&m, "a.weight"), [true, false, false, true]);
        assert_eq!(kept(&m, "b.weight"), [true, true, true, true, true, false]);
        // Per layer: a at 0.5 (2 weights) has 1 pruned already, one more: a[1].
        let m = select_per_layer(
            &net(),
            &s,
            &[0.5, 0.0],
            Some(&existing),
            SelectOptions::default(),
        )
        .unwrap();
        assert_eq!(kept(&m, "a.weight"), [true, false, false, true]);
        assert!(kept(&m, "b.weight").iter().all(|&k| k));
    }

    #[test]
    fn guard_keeps_one_weight_per_layer() {
        // Layer a scores lowest everywhere: global 0.6 would empty it.
        let s = scores([0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let opts = SelectOptions {
            keep_one_per_layer: true,
        };
        let m = select_global(&net(), &s, 0.6, None, SelectOptions::default()).unwrap();
        assert!(kept(&m, "a.weight").iter().all(|&k| !k));
        let m = select_global(&net(), &s, 0.6, None, opts).unwrap();
        assert_eq!(kept(&m, "a.weight"), [false, false, false, true]);
        assert_eq!(
            kept(&m, "b.weight"),
            [false, false, false, true, true, true]
        );
        let m = select_per_layer(&net(), &s, &[1.0, 1.0], None, opts).unwrap();
        assert_eq!(m.values().flatten().filter(|&&k| k).count(), 2);
        assert!(kept(&m, "b.weight")[5]);
    }

    #[test]
    fn per_layer_counts_round_to_nearest() {
        let s = scores([0.4, 0.3, 0.2, 0.1], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]);
        // a: 0.3·4 = 1.2 -> 1; b: 0.5·6 = 3.
        let m = select_per_layer(&net(), &s, &[0.3, 0.5], None, SelectOptions::default()).unwrap();
        assert_eq!(kept(&m, "a.weight"), [true, true, true, false]);
        assert_eq!(
            kept(&m, "b.weight"),
            [true, true, true, false, false, false]
        );
        let e = select_per_layer(&net(), &s, &[0.3], None, SelectOptions::default()).unwrap_err();
        assert!(e.to_string().contains("1 values for 2"), "{e}");
        let e =
            select_per_layer(&net(), &s, &[0.3, 1.5], None, SelectOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("b.weight") && e.to_string().contains("1.5"),
            "{e}"
        );
    }

    #[test]
    fn random_quota_masks_are_nested_in_the_target() {
        let mut b = GraphBuilder::new("n", &[8]);
        let x = b.input();
        let h = b.linear("a", &x, 16, false);
        let y = b.linear("b", &h, 4, false);
        let g = b.finish(&y);
        let s = random_scores(&g, 11);
        let layers = layer_infos(&g);
        let mut previous: Option<Masks> = None;
        for t in [0.1, 0.3, 0.5, 0.7, 0.9] {
            let ls = layer_sparsities(Quota::Igq, &layers, t).unwrap();
            let m = select_per_layer(&g, &s, &ls, None, SelectOptions::default()).unwrap();
            if let Some(p) = &previous {
                for (name, mask) in &m {
                    assert!(
                        mask.iter()
                            .zip(p[name].iter())
                            .all(|(now, before)| !now || *before)
                    );
                }
            }
            let pruned = m.values().flatten().filter(|&&k| !k).count() as f64;
            // Per-layer rounding (≤ 0.5 each) plus IGQ's tolerance (< 1): under 2 weights.
            assert!((pruned - t * 192.0).abs() < 2.0, "{t}: {pruned}");
            previous = Some(m);
        }
    }

    #[test]
    fn bad_scores_are_named() {
        let mut s = scores([0.0; 4], [0.0; 6]);
        s.remove("b.weight");
        let e = select_global(&net(), &s, 0.5, None, SelectOptions::default()).unwrap_err();
        assert!(e.to_string().contains("b.weight") && e.to_string().contains("no scores"));
        let s = scores([0.0, f32::NAN, 0.0, 0.0], [0.0; 6]);
        let e = select_global(&net(), &s, 0.5, None, SelectOptions::default()).unwrap_err();
        assert!(e.to_string().contains("a.weight") && e.to_string().contains("NaN"));
        let e = select_global(
            &net(),
            &scores([0.0; 4], [0.0; 6]),
            1.2,
            None,
            SelectOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("1.2"), "{e}");
    }
}
