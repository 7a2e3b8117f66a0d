//! Unstructured pruning steps: a score's values (data-free in shears-core, gradient-based in
//! shears-engine), selection to a direct or effective target, the optional effective-mask
//! correction, and the schedules of *when* to prune (iterative rounds with rewinding, gradual
//! pruning with the cubic schedule of Zhu & Gupta).

use super::Runtime;
use super::phase::{PhaseStart, save_phase, start_phase};
use crate::config::{PruneSection, TrainSection};
use crate::error::{Context, Result};
use crate::invalid;
use crate::run_dir::write_metrics;
use shears_core::artifact::Model;
use shears_core::sparsity::{
    Allocation, PruneSpec, Scores, SelectOptions, SparsityReport, TargetKind, effective_masks,
    lamp_scores, magnitude_scores, prune_to_target, random_scores, sparsity_report,
};
use shears_core::{Masks, Weights};
use shears_data::DataSplits;
use shears_engine::scores::{
    GRASP_TEMPERATURE, SYNFLOW_ROUNDS, ScoreBatches, grasp_scores, snip_scores, synflow_scores,
};
use shears_engine::train::TrainHooks;
use shears_engine::{EpochMetrics, Schedule, train};
use std::path::Path;

pub use crate::config::{METHODS, Score, WHEN, When};

/// Everything one unstructured pruning step needs.
#[derive(Debug, Clone, PartialEq)]
pub struct UnstructuredSpec {
    pub method: Score,
    pub allocation: Allocation,
    pub kind: TargetKind,
    /// Target sparsity in `[0, 1)`.
    pub target: f64,
    /// Seeds random scores and the choice of scoring batches.
    pub seed: u64,
    /// Never prune a layer's last weight (guards against layer collapse).
    pub keep_one_per_layer: bool,
    /// Also remove the unpruned weights that lie on no input→output path.
    pub apply_effective: bool,
    /// Scoring batches of SNIP and GraSP.
    pub score_batches: usize,
    pub score_batch_size: usize,
    pub synflow_rounds: usize,
    pub grasp_temperature: f64,
}

impl UnstructuredSpec {
    /// Checks a score, an allocation (global or a quota), a target kind and a target.
    pub fn new(
        method: Score,
        allocation: Allocation,
        kind: TargetKind,
        target: f64,
        seed: u64,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&target) || !target.is_finite() {
            invalid!("the target sparsity must be in [0, 1), got {target}");
        }
        if method == Score::Synflow && allocation != Allocation::Global {
            invalid!(
                "synflow is a global iterative pruner: use it without a layer quota (`global`)"
            );
        }
        Ok(UnstructuredSpec {
            method,
            allocation,
            kind,
            target,
            seed,
            keep_one_per_layer: true,
            apply_effective: false,
            score_batches: 10,
            score_batch_size: 128,
            synflow_rounds: SYNFLOW_ROUNDS,
            grasp_temperature: GRASP_TEMPERATURE,
        })
    }

    /// [`UnstructuredSpec::new`] from the words users type: a score, `global` or a quota, and
    /// `direct` or `effective`.
    pub fn from_text(
        method: &str,
        scope: &str,
        kind: &str,
        target: f64,
        seed: u64,
    ) -> Result<Self> {
        let kind = kind
            .parse::<TargetKind>()
            .map_err(|e| crate::MethodError::Invalid(e.to_string()))?;
        Self::new(
            method.parse()?,
            crate::config::parse_allocation(scope)?,
            kind,
            target,
            seed,
        )
    }

    /// The spec a `[prune]` section describes (scoring batches of the training batch size).
    pub fn from_section(p: &PruneSection, seed: u64, batch_size: usize) -> Result<Self> {
        let mut spec = UnstructuredSpec::new(
            p.method,
            p.scope.value,
            p.target_kind.value,
            p.sparsity,
            seed,
        )?;
        spec.apply_effective = p.apply_effective;
        spec.score_batches = p.score_batches;
        spec.score_batch_size = batch_size;
        Ok(spec)
    }

    /// The same spec with another target.
    pub fn with_target(&self, target: f64) -> Self {
        UnstructuredSpec {
            target,
            ..self.clone()
        }
    }

    /// `global` or the quota's name.
    pub fn allocation_name(&self) -> String {
        crate::config::allocation_name(self.allocation).into()
    }
}

/// A pruned model and what was measured on it.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub model: Model,
    pub report: SparsityReport,
    /// Effective-sparsity evaluations the target search used.
    pub evaluations: usize,
}

/// The scores of `spec.method` for `model` (low = prune first). SynFlow returns the global order
/// of an iterative run to `spec.target`.
pub fn method_scores(
    model: &Model,
    spec: &UnstructuredSpec,
    data: Option<&DataSplits>,
    device: &shears_engine::burn::tensor::Device,
) -> Result<Scores> {
    let graph = &model.graph;
    let data_for = |m: &str| {
        data.with_context(|| {
            format!("method `{m}` scores weights with training data: give a data set")
        })
    };
    let batches = ScoreBatches {
        batches: spec.score_batches,
        batch_size: spec.score_batch_size,
        seed: spec.seed,
    };
    Ok(match spec.method {
        Score::Magnitude => magnitude_scores(graph, &model.weights)?,
        Score::Random => random_scores(graph, spec.seed),
        Score::Lamp => lamp_scores(graph, &model.weights)?,
        Score::Snip => snip_scores(model, device, data_for("snip")?, &batches)?,
        Score::Grasp => grasp_scores(
            model,
            device,
            data_for("grasp")?,
            &batches,
            spec.grasp_temperature,
        )?,
        Score::Synflow => synflow_scores(
            model,
            device,
            spec.target,
            spec.synflow_rounds,
            SelectOptions {
                keep_one_per_layer: spec.keep_one_per_layer,
            },
        )?,
    })
}

/// Prunes `model` as `spec` says; weights already pruned by `model.masks` stay pruned. Pruned
/// (and, with `apply_effective`, inactive) weights are zeroed in the returned model.
pub fn prune(
    model: &Model,
    spec: &UnstructuredSpec,
    data: Option<&DataSplits>,
    device: &shears_engine::burn::tensor::Device,
) -> Result<Pruned> {
    let graph = &model.graph;
    let scores = method_scores(model, spec, data, device)?;
    let prune_spec = PruneSpec {
        target: spec.target,
        kind: spec.kind,
        allocation: spec.allocation,
        options: SelectOptions {
            keep_one_per_layer: spec.keep_one_per_layer,
        },
    };
    let existing = (!model.masks.is_empty()).then_some(&model.masks);
    let outcome = prune_to_target(graph, &scores, &prune_spec, existing)?;
    let masks = if spec.apply_effective {
        effective_masks(graph, &outcome.masks)?
    } else {
        outcome.masks
    };
    let pruned = Model {
        graph: graph.clone(),
        weights: masked_weights(&model.weights, &masks),
        masks,
    };
    let report = sparsity_report(graph, &pruned.masks)?;
    tracing::info!(
        "pruned with {} ({}) to {} sparsity {}: direct {:.5} ({:.1}x), effective {:.5} ({:.1}x)",
        spec.method,
        spec.allocation_name(),
        spec.kind,
        spec.target,
        report.direct_sparsity,
        report.direct_compression,
        report.effective_sparsity,
        report.effective_compression
    );
    Ok(Pruned {
        model: pruned,
        report,
        evaluations: outcome.evaluations,
    })
}

/// `weights` with every weight that `masks` prunes set to 0.
pub fn masked_weights(weights: &Weights, masks: &Masks) -> Weights {
    let mut out = weights.clone();
    for (name, m) in masks {
        if let Some(w) = out.get_mut(name)
            && w.shape() == m.shape()
        {
            w.zip_mut_with(m, |w, &keep| {
                if !keep {
                    *w = 0.0
                }
            });
        }
    }
    out
}

/// Lottery-ticket rewinding: the initial weights (every tensor, BN statistics included) under
/// the pruned model's masks.
pub fn rewind(pruned: &Model, initial: &Model) -> Result<Model> {
    if initial.graph != pruned.graph {
        invalid!("cannot rewind: the initial model has another graph than the pruned one");
    }
    Ok(Model {
        graph: pruned.graph.clone(),
        weights: masked_weights(&initial.weights, &pruned.masks),
        masks: pruned.masks.clone(),
    })
}

/// Sparsity after round `round` of `rounds` that each remove the same fraction of the remaining
/// weights, ending at `target`: 1 − (1 − target)^{round/rounds}.
pub fn round_target(target: f64, round: usize, rounds: usize) -> f64 {
    if round >= rounds {
        // Exactly the target (1 − (1 − s) can differ from s in the last bit).
        return target;
    }
    1.0 - (1.0 - target).powf(round as f64 / rounds.max(1) as f64)
}

/// The cubic (AGP) schedule of Zhu & Gupta: sparsity after step `t` of `steps`,
/// s_t = s_f + (s_i − s_f)(1 − t/steps)³.
pub fn agp_sparsity(initial: f64, target: f64, t: usize, steps: usize) -> f64 {
    let frac = (t.min(steps) as f64 / steps.max(1) as f64).clamp(0.0, 1.0);
    target + (initial - target) * (1.0 - frac).powi(3)
}

/// Trains one phase while pruning gradually: after every epoch t of T the masks go to
/// `agp_sparsity(0, spec.target, t, T)`, scored on the current weights (pruned weights stay
/// pruned). Checkpoints (with the masks) after every epoch's pruning, so `resume` continues where
/// it stopped. Each epoch's test metrics are measured before that epoch's pruning.
pub fn gradual_phase(
    rt: &Runtime,
    section: &TrainSection,
    model: Model,
    data: &DataSplits,
    dir: &Path,
    resume: bool,
    spec: &UnstructuredSpec,
) -> Result<(Model, Vec<EpochMetrics>)> {
    let PhaseStart {
        mut exec,
        mut opt,
        start,
        mut rows,
        checkpoint: ckpt,
        ..
    } = start_phase(rt, section, model, dir, resume)?;
    let device = shears_engine::device::device_by_name(&rt.device)?;
    let mut hooks = TrainHooks::default();
    let epochs = section.epochs;
    for epoch in start..epochs {
        // One epoch at a time at the rate the full schedule gives it; the loader and dropout
        // seeds depend on the epoch index only, so batches match an uninterrupted run.
        let mut one = section.to_engine(rt.seed);
        one.epochs = epoch + 1;
        one.lr = section.schedule.lr(section.lr, epoch, epochs);
        one.schedule = Schedule::Constant;
        let metrics = train(
            &mut exec,
            data,
            &one,
            &mut opt,
            epoch,
            &mut hooks,
            &mut |_, _, _, _| Ok(()),
        )?;
        let current = exec.model();
        let target = agp_sparsity(0.0, spec.target, epoch + 1, epochs);
        let pruned = prune(&current, &spec.with_target(target), Some(data), &device)?;
        exec.set_masks(&pruned.model.masks)?;
        rows.extend(metrics);
        write_metrics(dir, &rows)?;
        save_phase(&ckpt, &exec, &opt, &hooks, epoch + 1)?;
    }
    Ok((exec.model(), rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shears_core::GraphBuilder;
    use shears_core::sparsity::Quota;

    #[test]
    fn agp_schedule_is_cubic_and_ends_at_the_target() {
        assert_eq!(agp_sparsity(0.0, 0.9, 0, 4), 0.0);
        assert_eq!(agp_sparsity(0.0, 0.9, 4, 4), 0.9);
        // t/T = 1/2: 0.9 − 0.9·(1/2)³ = 0.7875.
        assert!((agp_sparsity(0.0, 0.9, 2, 4) - 0.7875).abs() < 1e-12);
        assert!((agp_sparsity(0.5, 0.9, 1, 4) - (0.9 - 0.4 * 0.421875)).abs() < 1e-12);
        // Monotone and fastest at the start.
        let s: Vec<f64> = (0..=4).map(|t| agp_sparsity(0.0, 0.9, t, 4)).collect();
        assert!(s.windows(3).all(|w| w[1] - w[0] > w[2] - w[1]), "{s:?}");
    }

    #[test]
    fn rounds_remove_the_same_fraction_of_what_remains() {
        assert!((round_target(0.99, 1, 2) - 0.9).abs() < 1e-12);
        assert!((round_target(0.99, 2, 2) - 0.99).abs() < 1e-12);
        assert_eq!(round_target(0.8, 1, 1), 0.8);
        assert_eq!(round_target(0.7, 3, 3), 0.7);
        assert!((round_target(0.875, 1, 3) - 0.5).abs() < 1e-12);
    }

    fn net() -> Model {
        let mut b = GraphBuilder::new("n", &[3]);
        let x = b.input();
        let h = b.linear("a", &x, 2, true);
        let y = b.linear("b", &h, 2, false);
        let graph = b.finish(&y);
        let weights = shears_core::init_weights(&graph, 0);
        Model {
            graph,
            weights,
            masks: Masks::new(),
        }
    }

    #[test]
    fn specs_are_checked() {
        let e = UnstructuredSpec::from_text("snap", "global", "direct", 0.5, 0).unwrap_err();
        assert!(
            e.to_string().contains("snap") && e.to_string().contains("synflow"),
            "{e}"
        );
        let e = UnstructuredSpec::from_text("synflow", "igq", "direct", 0.5, 0).unwrap_err();
        assert!(e.to_string().contains("global"), "{e}");
        let e = UnstructuredSpec::from_text("random", "igq", "direct", 1.0, 0).unwrap_err();
        assert!(e.to_string().contains("[0, 1)"), "{e}");
        let s = UnstructuredSpec::from_text("random", "uniform+", "effective", 0.5, 0).unwrap();
        assert_eq!(s.allocation, Allocation::Layerwise(Quota::UniformPlus));
        assert_eq!(s.kind, TargetKind::Effective);
        let e = method_scores(
            &net(),
            &UnstructuredSpec::from_text("snip", "global", "direct", 0.5, 0).unwrap(),
            None,
            &shears_engine::burn::tensor::Device::flex(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("training data"), "{e}");
    }

    #[test]
    fn apply_effective_zeroes_disconnected_weights_and_rewind_restores_the_rest() {
        let model = net();
        // Prune a's row 1 by hand: b's column 1 then reads a dead unit and is inactive.
        let mut m = model.weights["a.weight"].mapv(|_| true);
        for i in 0..3 {
            m[[1, i]] = false;
        }
        let mut start = model.clone();
        start.masks.insert("a.weight".into(), m);
        start.weights = masked_weights(&start.weights, &start.masks);
        let mut spec =
            UnstructuredSpec::from_text("magnitude", "global", "direct", 0.0, 0).unwrap();
        spec.apply_effective = true;
        let p = prune(
            &start,
            &spec,
            None,
            &shears_engine::burn::tensor::Device::flex(),
        )
        .unwrap();
        assert_eq!(p.report.direct_sparsity, p.report.effective_sparsity);
        assert_eq!(p.report.unpruned, 3 + 2, "{:?}", p.report);
        let b = &p.model.weights["b.weight"];
        assert_eq!(b[[0, 1]], 0.0);
        assert_eq!(b[[1, 1]], 0.0);
        assert_eq!(b[[0, 0]], model.weights["b.weight"][[0, 0]]);
        // Rewinding brings back initial values under the new masks only.
        let mut initial = model.clone();
        initial.weights.get_mut("b.weight").unwrap().fill(7.0);
        let r = rewind(&p.model, &initial).unwrap();
        assert_eq!(r.weights["b.weight"][[0, 0]], 7.0);
        assert_eq!(r.weights["b.weight"][[0, 1]], 0.0);
        assert_eq!(r.masks, p.model.masks);
    }
}
