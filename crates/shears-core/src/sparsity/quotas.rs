//! Layer quotas: how a global sparsity target is split into per-layer sparsities.
//!
//! All quotas return real-valued sparsities whose weighted sum hits the global budget
//! (`Σ s_l n_l = s N`) up to floating-point error, IGQ up to its bisection tolerance of one weight.
//! A target a quota cannot reach (only uniform+ has such targets) is an error, which the effective
//! target search uses to find the valid range.

use crate::error::{CoreError, Result};
use crate::graph::Graph;
use crate::sparsity::check_fraction;
use std::fmt;
use std::str::FromStr;

/// A rule that turns a global sparsity into per-layer sparsities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quota {
    /// Every layer gets the global sparsity.
    Uniform,
    /// Gale et al.: first layer dense, last layer at most 80% sparse, the rest uniform.
    UniformPlus,
    /// Erdős–Rényi: density ∝ (n_in + n_out)/(n_in n_out), kernel dims ignored.
    Er,
    /// Erdős–Rényi-Kernel: density ∝ Σ dims / Π dims of the weight tensor; a layer that would
    /// exceed density 1 is made dense and the rest rescaled (RigL's and LAMP's rule).
    Erk,
    /// ERK as the effective-sparsity paper's code computes it: the same densities, but a layer
    /// over density 1 pushes its excess weights onto the layer before it (last to first).
    ErkEs,
    /// Ideal Gas Quotas: density 1/(1 + F n_l) with one force F for all layers.
    Igq,
}

impl Quota {
    /// Every quota, in documentation order.
    pub const ALL: [Quota; 6] = [
        Quota::Uniform,
        Quota::UniformPlus,
        Quota::Er,
        Quota::Erk,
        Quota::ErkEs,
        Quota::Igq,
    ];

    /// Canonical name (what [`FromStr`] accepts and [`fmt::Display`] prints).
    pub fn name(self) -> &'static str {
        match self {
            Quota::Uniform => "uniform",
            Quota::UniformPlus => "uniform+",
            Quota::Er => "er",
            Quota::Erk => "erk",
            Quota::ErkEs => "erk-es",
            Quota::Igq => "igq",
        }
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Quota {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "uniform" => Ok(Quota::Uniform),
            "uniform+" | "uniform_plus" | "uniform-plus" | "uniformplus" => Ok(Quota::UniformPlus),
            "er" => Ok(Quota::Er),
            "erk" => Ok(Quota::Erk),
            "erk-es" | "erk_es" | "erkes" => Ok(Quota::ErkEs),
            "igq" => Ok(Quota::Igq),
            _ => {
                let known: Vec<&str> = Quota::ALL.iter().map(|q| q.name()).collect();
                Err(CoreError::value(
                    "layer quota",
                    format!("unknown quota `{s}` (known: {})", known.join(", ")),
                ))
            }
        }
    }
}

/// Name and shape of one prunable weight tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

impl LayerInfo {
    /// Number of weights in the tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The prunable tensors of a graph (conv and linear weights) in node order.
pub fn layer_infos(graph: &Graph) -> Vec<LayerInfo> {
    graph
        .nodes
        .iter()
        .filter(|n| n.op.is_weighted_layer())
        .flat_map(|n| n.op.param_specs(&n.name).into_iter().take(1))
        .map(|spec| LayerInfo {
            name: spec.name,
            shape: spec.shape,
        })
        .collect()
}

/// Per-layer sparsities (same order as `layers`) for a global `target` in `[0, 1)`.
pub fn layer_sparsities(quota: Quota, layers: &[LayerInfo], target: f64) -> Result<Vec<f64>> {
    check_fraction("target sparsity", target, false)?;
    if layers.is_empty() {
        return Err(CoreError::value(
            "layer quota",
            "the network has no prunable (conv or linear) layers",
        ));
    }
    if let Some(l) = layers.iter().find(|l| l.numel() == 0 || l.shape.len() < 2) {
        return Err(CoreError::tensor(
            &l.name,
            format!(
                "shape {:?} is not a conv or linear weight with at least one element",
                l.shape
            ),
        ));
    }
    let counts: Vec<f64> = layers.iter().map(|l| l.numel() as f64).collect();
    let sparsities = match quota {
        Quota::Uniform => vec![target; layers.len()],
        Quota::UniformPlus => uniform_plus(&counts, target)?,
        Quota::Er => {
            let ratios: Vec<f64> = layers
                .iter()
                .map(|l| {
                    let (o, i) = (l.shape[0] as f64, l.shape[1] as f64);
                    (o + i) / (o * i)
                })
                .collect();
            erdos_renyi(&counts, &ratios, target)
        }
        Quota::Erk => erdos_renyi(&counts, &kernel_ratios(layers), target),
        Quota::ErkEs => erk_previous_layer(&counts, &kernel_ratios(layers), target)?,
        Quota::Igq => igq(&counts, target)?,
    };
    Ok(sparsities)
}

/// ERK's ratio of each layer: the sum of its weight tensor's dims over their product.
fn kernel_ratios(layers: &[LayerInfo]) -> Vec<f64> {
    layers
        .iter()
        .map(|l| {
            let sum: usize = l.shape.iter().sum();
            sum as f64 / l.numel() as f64
        })
        .collect()
}

/// ES `erk_quotas` with `redistribute_invalid_quotas`: density ε·ratio_l with one ε for the
/// budget; walking from the last layer to the first, a layer over density 1 becomes dense and the
/// weights it cannot hold are kept by the layer before it. The first layer has no layer before it:
/// more than two weights left over there make the target unreachable (ES warns at that point).
fn erk_previous_layer(counts: &[f64], ratios: &[f64], target: f64) -> Result<Vec<f64>> {
    let total: f64 = counts.iter().sum();
    let weight: f64 = counts.iter().zip(ratios).map(|(n, r)| n * r).sum();
    let eps = (1.0 - target) * total / weight;
    let mut s: Vec<f64> = ratios.iter().map(|r| 1.0 - eps * r).collect();
    for l in (1..s.len()).rev() {
        if s[l] < 0.0 {
            s[l - 1] += s[l] * counts[l] / counts[l - 1];
            s[l] = 0.0;
        }
    }
    if s[0] < 0.0 {
        if -s[0] * counts[0] > 2.0 {
            return Err(unreachable(
                Quota::ErkEs,
                target,
                "the first layer would have to keep more weights than it has",
            ));
        }
        s[0] = 0.0;
    }
    Ok(s)
}

fn unreachable(quota: Quota, target: f64, why: &str) -> CoreError {
    CoreError::value(
        "target sparsity",
        format!("{quota} cannot reach {target}: {why}"),
    )
}

/// ES `uniform_plus_quotas`: first layer dense, s' = sN/(N - n_1) elsewhere, last layer capped at
/// 0.8 and its excess spread evenly (per weight) over the middle layers.
fn uniform_plus(counts: &[f64], target: f64) -> Result<Vec<f64>> {
    let q = Quota::UniformPlus;
    let total: f64 = counts.iter().sum();
    let n = counts.len();
    if n == 1 {
        return if target == 0.0 {
            Ok(vec![0.0])
        } else {
            Err(unreachable(
                q,
                target,
                "its only layer is the first layer, kept dense",
            ))
        };
    }
    let rest = target * total / (total - counts[0]);
    if rest > 1.0 {
        return Err(unreachable(
            q,
            target,
            "more than all weights outside the dense first layer",
        ));
    }
    let last = counts[n - 1];
    let excess = ((rest - 0.8) * last).max(0.0);
    let middle: f64 = counts[1..n - 1].iter().sum();
    let extra = if excess > 0.0 {
        if middle == 0.0 {
            return Err(unreachable(
                q,
                target,
                "the last layer is capped at 0.8 and there are no middle layers to take the rest",
            ));
        }
        excess / middle
    } else {
        0.0
    };
    if rest + extra > 1.0 {
        return Err(unreachable(
            q,
            target,
            "the middle layers would need more than all their weights pruned",
        ));
    }
    let mut s = vec![rest + extra; n];
    s[0] = 0.0;
    s[n - 1] = rest.min(0.8);
    Ok(s)
}

/// Density d_l = ε·ratio_l with ε set by the budget; any layer that would exceed density 1 is made
/// dense (largest ratio first, one at a time) and ε recomputed (LAMP/RigL `_amounts_from_eps`).
fn erdos_renyi(counts: &[f64], ratios: &[f64], target: f64) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    let keep_total = (1.0 - target) * total;
    let mut dense = vec![false; counts.len()];
    loop {
        let dense_count: f64 = (0..counts.len())
            .filter(|&l| dense[l])
            .map(|l| counts[l])
            .sum();
        let weight: f64 = (0..counts.len())
            .filter(|&l| !dense[l])
            .map(|l| ratios[l] * counts[l])
            .sum();
        if weight == 0.0 {
            return vec![0.0; counts.len()];
        }
        let eps = (keep_total - dense_count) / weight;
        // A relative slack keeps the all-dense limit (target 0) from flagging layers at 1 + 1e-16.
        let worst = (0..counts.len())
            .filter(|&l| !dense[l] && eps * ratios[l] > 1.0 + 1e-12)
            .max_by(|&a, &b| ratios[a].total_cmp(&ratios[b]));
        match worst {
            Some(l) => dense[l] = true,
            None => {
                return (0..counts.len())
                    .map(|l| {
                        if dense[l] {
                            0.0
                        } else {
                            (1.0 - eps * ratios[l]).clamp(0.0, 1.0)
                        }
                    })
                    .collect();
            }
        }
    }
}

/// ES `igq_quotas`/`bs_force_igq`: bisection of the force F on [0, 1e20] until the overall
/// sparsity is within 1/N of the target.
fn igq(counts: &[f64], target: f64) -> Result<Vec<f64>> {
    let total: f64 = counts.iter().sum();
    let tolerance = 1.0 / total;
    let sparsity_at = |force: f64| -> f64 {
        let kept: f64 = counts.iter().map(|&n| n / (1.0 + force * n)).sum();
        1.0 - kept / total
    };
    let layer_sparsities = |force: f64| -> Vec<f64> {
        counts
            .iter()
            .map(|&n| force * n / (1.0 + force * n))
            .collect()
    };
    let (mut lo, mut hi) = (0.0f64, 1e20f64);
    for force in [lo, hi] {
        if (sparsity_at(force) - target).abs() < tolerance {
            return Ok(layer_sparsities(force));
        }
    }
    // f64 bisection from 1e20 down to any useful force takes well under 200 halvings.
    for _ in 0..2000 {
        let mid = 0.5 * (lo + hi);
        let s = sparsity_at(mid);
        if (s - target).abs() < tolerance {
            return Ok(layer_sparsities(mid));
        }
        if mid <= lo || mid >= hi {
            break;
        }
        if s < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Err(unreachable(
        Quota::Igq,
        target,
        "no force in [0, 1e20] reaches it within one weight",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, shape: &[usize]) -> LayerInfo {
        LayerInfo {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }

    /// A small conv net's tensors: first conv, two middle convs of different size, a classifier.
    fn convnet() -> Vec<LayerInfo> {
        vec![
            layer("c1.weight", &[16, 3, 3, 3]),
            layer("c2.weight", &[32, 16, 3, 3]),
            layer("c3.weight", &[64, 32, 3, 3]),
            layer("fc.weight", &[10, 64]),
        ]
    }

    fn mlp() -> Vec<LayerInfo> {
        vec![
            layer("l1.weight", &[300, 784]),
            layer("l2.weight", &[100, 300]),
            layer("l3.weight", &[10, 100]),
        ]
    }

    fn pruned(layers: &[LayerInfo], s: &[f64]) -> f64 {
        layers
            .iter()
            .zip(s)
            .map(|(l, s)| s * l.numel() as f64)
            .sum()
    }

    #[test]
    fn every_quota_hits_the_budget_within_one_weight() {
        for layers in [convnet(), mlp()] {
            let n: f64 = layers.iter().map(|l| l.numel() as f64).sum();
            for q in Quota::ALL {
                for target in [0.0, 0.1, 0.5, 0.8, 0.9, 0.99, 0.999] {
                    let s = match layer_sparsities(q, &layers, target) {
                        Ok(s) => s,
                        // uniform+ keeps the MLP's big first layer dense: 0.9+ is unreachable.
                        Err(e) if q == Quota::UniformPlus => {
                            assert!(e.to_string().contains("uniform+ cannot reach"), "{e}");
                            assert!(target >= 0.1, "uniform+ failed at {target}: {e}");
                            continue;
                        }
                        // The paper's ERK only moves excess backwards: at low sparsity the
                        // first layer cannot absorb it (ES's code stops there too).
                        Err(e) if q == Quota::ErkEs => {
                            assert!(e.to_string().contains("erk-es cannot reach"), "{e}");
                            assert!(target < 0.99, "erk-es failed at {target}: {e}");
                            continue;
                        }
                        Err(e) => panic!("{q} at {target}: {e}"),
                    };
                    assert_eq!(s.len(), layers.len());
                    assert!(
                        s.iter().all(|&x| (0.0..=1.0).contains(&x)),
                        "{q} {target}: {s:?}"
                    );
                    let diff = (pruned(&layers, &s) - target * n).abs();
                    assert!(diff < 1.0, "{q} at {target}: off by {diff} weights ({s:?})");
                }
            }
        }
    }

    #[test]
    fn uniform_plus_hand_computed() {
        // counts 10, 20, 30, 40 (N = 100): s' = 0.9·100/90 = 1.0 is too much for the middle layers.
        let layers = vec![
            layer("a", &[10, 1]),
            layer("b", &[20, 1]),
            layer("c", &[30, 1]),
            layer("d", &[40, 1]),
        ];
        let s = layer_sparsities(Quota::UniformPlus, &layers, 0.45).unwrap();
        // s' = 0.45·100/90 = 0.5 ≤ 0.8: no cap.
        for (got, want) in s.iter().zip([0.0, 0.5, 0.5, 0.5]) {
            assert!((got - want).abs() < 1e-12, "{s:?}");
        }
        let s = layer_sparsities(Quota::UniformPlus, &layers, 0.81).unwrap();
        // s' = 0.9; excess (0.9 - 0.8)·40 = 4 over 50 middle weights = +0.08.
        for (got, want) in s.iter().zip([0.0, 0.98, 0.98, 0.8]) {
            assert!((got - want).abs() < 1e-12, "{s:?}");
        }
        let e = layer_sparsities(Quota::UniformPlus, &layers, 0.85).unwrap_err();
        assert!(e.to_string().contains("middle layers"), "{e}");
        assert!(layer_sparsities(Quota::UniformPlus, &layers[..1], 0.5).is_err());
        assert!(layer_sparsities(Quota::UniformPlus, &layers[..2], 0.8).is_err());
    }

    #[test]
    fn uniform_plus_keeps_the_first_layer_dense() {
        for target in [0.1, 0.5, 0.9] {
            let s = layer_sparsities(Quota::UniformPlus, &convnet(), target).unwrap();
            assert_eq!(s[0], 0.0);
            assert!(s[3] <= 0.8);
        }
    }

    #[test]
    fn igq_densities_in_unit_interval_and_bigger_layers_pruned_harder() {
        let layers = convnet();
        for target in [0.01, 0.3, 0.7, 0.95, 0.9999] {
            let s = layer_sparsities(Quota::Igq, &layers, target).unwrap();
            assert!(s.iter().all(|x| (0.0..1.0).contains(x)), "{target}: {s:?}");
            // Sizes: c1 432 < fc 640 < c2 4608 < c3 18432.
            assert!(s[0] < s[3] && s[3] < s[1] && s[1] < s[2], "{target}: {s:?}");
            // d_l = 1/(1 + F n_l) for a single F: recover F from each layer and compare.
            let forces: Vec<f64> = layers
                .iter()
                .zip(&s)
                .map(|(l, s)| s / (1.0 - s) / l.numel() as f64)
                .collect();
            for f in &forces {
                assert!((f / forces[0] - 1.0).abs() < 1e-6, "{forces:?}");
            }
        }
    }

    #[test]
    fn erk_prunes_bigger_layers_harder_and_redistributes() {
        let layers = convnet();
        let s = layer_sparsities(Quota::Erk, &layers, 0.9).unwrap();
        assert!(s[0] < s[1] && s[1] < s[2], "{s:?}");
        // Hand check: Σdims = 25, 54, 102, 74 and N = 24112, so ε = 2411.2/255 = 9.46 and fc
        // (ratio 74/640) would get density 1.09: it is made dense and ε recomputed.
        assert_eq!(s[3], 0.0, "{s:?}");
        let eps = (2411.2 - 640.0) / (25.0 + 54.0 + 102.0);
        for (l, sum) in [(0, 25.0), (1, 54.0), (2, 102.0)] {
            let want = 1.0 - eps * sum / layers[l].numel() as f64;
            assert!((s[l] - want).abs() < 1e-12, "layer {l}: {} vs {want}", s[l]);
        }
    }

    /// The paper's variant keeps ERK's densities where they are valid and moves a dense layer's
    /// excess to the layer before it, where RigL's rescales every other layer.
    #[test]
    fn erk_es_pushes_the_excess_to_the_previous_layer() {
        let layers = convnet();
        let s = layer_sparsities(Quota::ErkEs, &layers, 0.9).unwrap();
        // Same hand numbers as above: ε = 2411.2/255 for every layer, fc would keep
        // 9.46·74 = 699.7 of its 640 weights: dense, and conv3 keeps the other 59.7.
        let eps = 2411.2 / 255.0;
        assert_eq!(s[3], 0.0, "{s:?}");
        for (l, sum) in [(0, 25.0), (1, 54.0)] {
            let want = 1.0 - eps * sum / layers[l].numel() as f64;
            assert!((s[l] - want).abs() < 1e-12, "layer {l}: {} vs {want}", s[l]);
        }
        let excess = eps * 74.0 - 640.0;
        let want = 1.0 - (eps * 102.0 + excess) / layers[2].numel() as f64;
        assert!((s[2] - want).abs() < 1e-12, "{} vs {want}", s[2]);
        let kept: f64 = layers
            .iter()
            .zip(&s)
            .map(|(l, s)| (1.0 - s) * l.numel() as f64)
            .sum();
        assert!((kept - 2411.2).abs() < 1e-6, "{kept}");
        assert_eq!("erk-es".parse::<Quota>().unwrap(), Quota::ErkEs);
        // Where no layer overflows, the two ERKs agree.
        let (a, b) = (
            layer_sparsities(Quota::Erk, &layers, 0.99).unwrap(),
            layer_sparsities(Quota::ErkEs, &layers, 0.99).unwrap(),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12, "{a:?} {b:?}");
        }
        // A budget the first layer cannot absorb is refused.
        let tiny = vec![layer("a", &[2, 2]), layer("b", &[400, 400])];
        assert!(layer_sparsities(Quota::ErkEs, &tiny, 0.0001).is_err());
    }

    #[test]
    fn er_ignores_kernel_dims() {
        // Two convs with the same channels but different kernels get the same ER density,
        // while ERK gives the bigger kernel a lower density.
        let layers = vec![layer("a", &[8, 8, 1, 1]), layer("b", &[8, 8, 5, 5])];
        let er = layer_sparsities(Quota::Er, &layers, 0.5).unwrap();
        assert!((er[0] - er[1]).abs() < 1e-12, "{er:?}");
        assert!((er[0] - 0.5).abs() < 1e-12);
        let erk = layer_sparsities(Quota::Erk, &layers, 0.5).unwrap();
        assert!(erk[1] > erk[0], "{erk:?}");
        // Hand check: ratios 16/64 and 26/1600, ε·(16 + 26) = 832 kept -> ε = 832/42.
        // a would get density 832/42/4 = 4.95 > 1 → dense; b keeps 832 - 64 = 768 of 1600.
        assert_eq!(erk[0], 0.0);
        assert!((erk[1] - (1.0 - 768.0 / 1600.0)).abs() < 1e-12, "{erk:?}");
    }

    #[test]
    fn targets_outside_unit_interval_and_bad_names_are_errors() {
        for t in [-0.1, 1.0, 1.5, f64::NAN] {
            let e = layer_sparsities(Quota::Uniform, &mlp(), t)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("target sparsity") && e.contains("must be in [0, 1)"),
                "{e}"
            );
        }
        let e = "magnitude".parse::<Quota>().unwrap_err().to_string();
        assert!(
            e.contains("magnitude") && e.contains("uniform+, er, erk, erk-es, igq"),
            "{e}"
        );
        assert_eq!("Uniform+".parse::<Quota>().unwrap(), Quota::UniformPlus);
        for q in Quota::ALL {
            assert_eq!(q.to_string().parse::<Quota>().unwrap(), q);
        }
    }
}
