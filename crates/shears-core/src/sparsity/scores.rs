//! Data-free weight scores (magnitude, random, LAMP) and the iterative-pruning global order.
//!
//! A score map holds one array per prunable tensor, same shape as the weight; low scores are
//! pruned first. Gradient scores (SNIP, GraSP, SynFlow) are computed by the engine into the same
//! [`Scores`] type and go through the same selection.

use crate::error::{CoreError, Result};
use crate::graph::Graph;
use crate::sparsity::quotas::{LayerInfo, layer_infos};
use crate::sparsity::{flat_keeps, layer_keeps};
use crate::weights::{Masks, Weights};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Per-weight scores by tensor name, one array per prunable tensor (low = prune first).
pub type Scores = BTreeMap<String, ArrayD<f32>>;

/// Row-major weights of one prunable tensor, checked against its shape.
fn weights_of<'a>(weights: &'a Weights, layer: &LayerInfo) -> Result<std::borrow::Cow<'a, [f32]>> {
    let w = weights
        .get(&layer.name)
        .ok_or_else(|| CoreError::tensor(&layer.name, "missing from the weights"))?;
    if w.shape() != layer.shape.as_slice() {
        return Err(CoreError::tensor(
            &layer.name,
            format!(
                "has shape {:?}, the graph needs {:?}",
                w.shape(),
                layer.shape
            ),
        ));
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(CoreError::tensor(
            &layer.name,
            "contains NaN or infinite values",
        ));
    }
    Ok(match w.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(w.iter().copied().collect()),
    })
}

fn array(layer: &LayerInfo, values: Vec<f32>) -> Result<ArrayD<f32>> {
    ArrayD::from_shape_vec(IxDyn(&layer.shape), values)
        .map_err(|e| CoreError::tensor(&layer.name, format!("scores: {e}")))
}

/// |w| of every prunable weight.
pub fn magnitude_scores(graph: &Graph, weights: &Weights) -> Result<Scores> {
    layer_infos(graph)
        .iter()
        .map(|l| {
            let w = weights_of(weights, l)?;
            Ok((
                l.name.clone(),
                array(l, w.iter().map(|v| v.abs()).collect())?,
            ))
        })
        .collect()
}

/// Uniform [0, 1) scores, deterministic in `seed`; each tensor draws from its own ChaCha stream
/// (its index among the prunable tensors), so its order does not depend on the other tensors.
pub fn random_scores(graph: &Graph, seed: u64) -> Scores {
    layer_infos(graph)
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i as u64);
            let values = ArrayD::from_shape_simple_fn(IxDyn(&l.shape), || rng.random::<f32>());
            (l.name.clone(), values)
        })
        .collect()
}

/// LAMP (Lee et al. 2021) as in ES `lamp`: within each tensor sort w² ascending (ties by index);
/// score(u) = w_u² / (Σ_{v ≥ u} w_v² + 1e-8). Computed in f64, stored as f32.
pub fn lamp_scores(graph: &Graph, weights: &Weights) -> Result<Scores> {
    layer_infos(graph)
        .iter()
        .map(|l| {
            let w = weights_of(weights, l)?;
            let sq: Vec<f64> = w.iter().map(|&v| f64::from(v) * f64::from(v)).collect();
            let mut order: Vec<usize> = (0..sq.len()).collect();
            order.sort_by(|&a, &b| sq[a].total_cmp(&sq[b]).then(a.cmp(&b)));
            let mut scores = vec![0f32; sq.len()];
            let mut suffix = 0f64;
            for &i in order.iter().rev() {
                suffix += sq[i];
                scores[i] = (sq[i] / (suffix + 1e-8)) as f32;
            }
            Ok((l.name.clone(), array(l, scores)?))
        })
        .collect()
}

/// Checks `scores` has a finite array of the right shape for every prunable tensor and returns
/// them row-major in layer order.
pub(crate) fn flat_scores<'a>(
    layers: &[LayerInfo],
    scores: &'a Scores,
) -> Result<Vec<std::borrow::Cow<'a, [f32]>>> {
    layers
        .iter()
        .map(|l| {
            let s = scores
                .get(&l.name)
                .ok_or_else(|| CoreError::tensor(&l.name, "has no scores"))?;
            if s.shape() != l.shape.as_slice() {
                return Err(CoreError::tensor(
                    &l.name,
                    format!(
                        "scores have shape {:?}, the tensor is {:?}",
                        s.shape(),
                        l.shape
                    ),
                ));
            }
            if let Some(v) = s.iter().find(|v| v.is_nan()) {
                return Err(CoreError::tensor(&l.name, format!("scores contain {v}")));
            }
            Ok(match s.as_slice() {
                Some(v) => std::borrow::Cow::Borrowed(v),
                None => std::borrow::Cow::Owned(s.iter().copied().collect()),
            })
        })
        .collect()
}

/// Turns an iterative pruner's history into one global order (ES `prune_synflow`,
/// `prune_iterative_snip`): a weight pruned at iteration t scores 2t + its min-max-normalised
/// score within that iteration's batch; survivors score 2(T+1) + their normalised final score;
/// weights already pruned before iteration 1 score 0. Pruning the m lowest then replays the
/// iterations, which the effective-target search needs.
#[derive(Debug, Clone)]
pub struct IterativeOrder {
    layers: Vec<LayerInfo>,
    /// Global order value per weight, `None` while still unpruned.
    order: Vec<Vec<Option<f64>>>,
    last: usize,
}

impl IterativeOrder {
    /// Starts the history; weights pruned in `initial` (if given) come first in the order.
    pub fn new(graph: &Graph, initial: Option<&Masks>) -> Result<Self> {
        let layers = layer_infos(graph);
        let empty = Masks::new();
        let keeps = flat_keeps(graph, &layers, initial.unwrap_or(&empty))?;
        let order = layers
            .iter()
            .zip(&keeps)
            .map(|(l, k)| match k {
                None => vec![None; l.numel()],
                Some(k) => k.iter().map(|&kept| (!kept).then_some(0.0)).collect(),
            })
            .collect();
        Ok(IterativeOrder {
            layers,
            order,
            last: 0,
        })
    }

    /// Records iteration `iteration` (1-based, strictly increasing): every weight pruned in
    /// `after` that was still unpruned gets 2·iteration + its normalised score in `scores`.
    pub fn record(&mut self, iteration: usize, after: &Masks, scores: &Scores) -> Result<()> {
        if iteration <= self.last {
            return Err(CoreError::value(
                "pruning iteration",
                format!(
                    "{iteration} must be greater than the previous one ({})",
                    self.last
                ),
            ));
        }
        let keeps = layer_keeps(&self.layers, after)?;
        let values = flat_scores(&self.layers, scores)?;
        let newly = |l: usize, i: usize| {
            self.order[l][i].is_none() && keeps[l].as_ref().is_some_and(|k| !k[i])
        };
        let batch: Vec<(usize, usize)> = (0..self.layers.len())
            .flat_map(|l| (0..self.layers[l].numel()).map(move |i| (l, i)))
            .filter(|&(l, i)| newly(l, i))
            .collect();
        let base = 2.0 * iteration as f64;
        for ((l, i), v) in normalised(&batch, &values) {
            self.order[l][i] = Some(base + v);
        }
        self.last = iteration;
        Ok(())
    }

    /// The global order as scores; survivors are ranked by `final_scores`.
    pub fn finish(self, final_scores: &Scores) -> Result<Scores> {
        let values = flat_scores(&self.layers, final_scores)?;
        let survivors: Vec<(usize, usize)> = (0..self.layers.len())
            .flat_map(|l| (0..self.layers[l].numel()).map(move |i| (l, i)))
            .filter(|&(l, i)| self.order[l][i].is_none())
            .collect();
        let base = 2.0 * (self.last + 1) as f64;
        let mut order = self.order;
        for ((l, i), v) in normalised(&survivors, &values) {
            order[l][i] = Some(base + v);
        }
        self.layers
            .iter()
            .zip(order)
            .map(|(l, o)| {
                let v = o.into_iter().map(|x| x.unwrap_or(0.0) as f32).collect();
                Ok((l.name.clone(), array(l, v)?))
            })
            .collect()
    }
}

/// (s - min)/(max - min + 1e-10) over the listed weights, as in ES.
fn normalised(
    items: &[(usize, usize)],
    values: &[std::borrow::Cow<'_, [f32]>],
) -> Vec<((usize, usize), f64)> {
    let v = |&(l, i): &(usize, usize)| f64::from(values[l][i]);
    let min = items.iter().map(v).fold(f64::INFINITY, f64::min);
    let max = items.iter().map(v).fold(f64::NEG_INFINITY, f64::max);
    items
        .iter()
        .map(|it| (*it, (v(it) - min) / (max - min + 1e-10)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;

    fn net() -> Graph {
        let mut b = GraphBuilder::new("s", &[3]);
        let x = b.input();
        let h = b.linear("a", &x, 2, true);
        let y = b.linear("b", &h, 2, false);
        b.finish(&y)
    }

    fn weights(a: &[f32], b: &[f32]) -> Weights {
        let mut w = Weights::new();
        w.insert(
            "a.weight".into(),
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), a.to_vec()).unwrap(),
        );
        w.insert(
            "b.weight".into(),
            ArrayD::from_shape_vec(IxDyn(&[2, 2]), b.to_vec()).unwrap(),
        );
        w
    }

    fn flat(s: &Scores, name: &str) -> Vec<f32> {
        s[name].iter().copied().collect()
    }

    #[test]
    fn magnitude_is_absolute_value() {
        let w = weights(&[-3.0, 1.0, 0.0, 2.0, -0.5, 4.0], &[1.0, -1.0, 2.0, -2.0]);
        let s = magnitude_scores(&net(), &w).unwrap();
        assert_eq!(flat(&s, "a.weight"), [3.0, 1.0, 0.0, 2.0, 0.5, 4.0]);
        assert_eq!(s.len(), 2, "biases are not scored");
    }

    #[test]
    fn lamp_matches_hand_computation() {
        // b: w² = 1, 4, 9, 16 (already sorted); suffix sums 30, 29, 25, 16.
        let w = weights(&[1.0; 6], &[1.0, -2.0, 3.0, 4.0]);
        let s = lamp_scores(&net(), &w).unwrap();
        let want = [
            1.0 / (30.0 + 1e-8),
            4.0 / (29.0 + 1e-8),
            9.0 / (25.0 + 1e-8),
            16.0 / (16.0 + 1e-8),
        ];
        for (got, want) in flat(&s, "b.weight").iter().zip(want) {
            assert_eq!(*got, want as f32);
        }
        // Ties: equal w² are ordered by index; the earlier one has the larger suffix sum.
        let a = flat(&s, "a.weight");
        let want_a: Vec<f32> = (0..6).map(|i| (1.0 / (6 - i) as f64) as f32).collect();
        for (got, want) in a.iter().zip(&want_a) {
            assert!((got - want).abs() < 1e-6, "{a:?}");
        }
        // The largest weight of every layer scores (almost exactly) 1.
        assert!((a[5] - 1.0).abs() < 1e-6 && (flat(&s, "b.weight")[3] - 1.0).abs() < 1e-6);
        // All-zero tensors give 0, not NaN, thanks to the 1e-8.
        let s = lamp_scores(&net(), &weights(&[0.0; 6], &[1.0; 4])).unwrap();
        assert!(flat(&s, "a.weight").iter().all(|&v| v == 0.0));
    }

    #[test]
    fn random_scores_are_seeded_and_per_tensor_independent() {
        let g = net();
        let a = random_scores(&g, 3);
        assert_eq!(a, random_scores(&g, 3));
        assert_ne!(a["a.weight"], random_scores(&g, 4)["a.weight"]);
        assert_ne!(flat(&a, "a.weight")[..4], flat(&a, "b.weight")[..]);
        assert!(a.values().flatten().all(|&v| (0.0..1.0).contains(&v)));
    }

    #[test]
    fn missing_or_bad_weights_are_named() {
        let mut w = weights(&[1.0; 6], &[1.0; 4]);
        w.remove("b.weight");
        let e = magnitude_scores(&net(), &w).unwrap_err().to_string();
        assert!(e.contains("b.weight") && e.contains("missing"), "{e}");
        let w = weights(&[1.0, f32::NAN, 1.0, 1.0, 1.0, 1.0], &[1.0; 4]);
        let e = lamp_scores(&net(), &w).unwrap_err().to_string();
        assert!(e.contains("a.weight") && e.contains("NaN"), "{e}");
    }

    #[test]
    fn iterative_order_replays_the_iterations() {
        let g = net();
        let mask = |a: [bool; 6], b: [bool; 4]| {
            let mut m = Masks::new();
            m.insert(
                "a.weight".into(),
                ArrayD::from_shape_vec(IxDyn(&[2, 3]), a.to_vec()).unwrap(),
            );
            m.insert(
                "b.weight".into(),
                ArrayD::from_shape_vec(IxDyn(&[2, 2]), b.to_vec()).unwrap(),
            );
            m
        };
        let sc = |a: [f32; 6], b: [f32; 4]| weights(&a, &b);
        let mut initial = mask([true; 6], [true; 4]);
        initial.get_mut("b.weight").unwrap()[[1, 1]] = false;
        let mut order = IterativeOrder::new(&g, Some(&initial)).unwrap();
        // Iteration 1 prunes a[0] (score 5) and b[0] (score 1): normalised 1 and 0.
        let after1 = mask(
            [false, true, true, true, true, true],
            [false, true, true, false],
        );
        order
            .record(
                1,
                &after1,
                &sc([5.0, 9.0, 9.0, 9.0, 9.0, 9.0], [1.0, 9.0, 9.0, 9.0]),
            )
            .unwrap();
        // Iteration 2 prunes a[1] alone: normalised 0.
        let after2 = mask(
            [false, false, true, true, true, true],
            [false, true, true, false],
        );
        order
            .record(
                2,
                &after2,
                &sc([0.0, 7.0, 9.0, 9.0, 9.0, 9.0], [0.0, 9.0, 9.0, 9.0]),
            )
            .unwrap();
        let e = order
            .record(2, &after2, &after2_scores())
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be greater"), "{e}");
        // Survivors: a[2..6] and b[1], b[2] ranked by final scores 1..=6 -> normalised (v-1)/5.
        let s = order
            .finish(&sc([0.0, 0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 5.0, 6.0, 0.0]))
            .unwrap();
        let a = flat(&s, "a.weight");
        let b = flat(&s, "b.weight");
        let close = |x: f32, y: f64| (f64::from(x) - y).abs() < 1e-5;
        assert!(close(a[0], 3.0) && close(b[0], 2.0), "{a:?} {b:?}");
        assert!(close(a[1], 4.0), "{a:?}");
        assert!(close(b[3], 0.0), "{b:?}");
        for (i, want) in [(2, 6.0), (3, 6.2), (4, 6.4), (5, 6.6)] {
            assert!(close(a[i], want), "{a:?}");
        }
        assert!(close(b[1], 6.8) && close(b[2], 7.0), "{b:?}");

        fn after2_scores() -> Scores {
            let mut w = Weights::new();
            w.insert("a.weight".into(), ArrayD::zeros(IxDyn(&[2, 3])));
            w.insert("b.weight".into(), ArrayD::zeros(IxDyn(&[2, 2])));
            w
        }
    }
}
