//! Unstructured pruning in the pipeline: the weights of a score (magnitude, random, LAMP, SNIP,
//! GraSP, SynFlow) cut to a direct or effective sparsity, *when* the `[prune]` keys say:
//! after training (one-shot, or `rounds` iterative rounds, optionally rewinding to the initial
//! weights), at initialisation (then the masked network trains), or gradually (cubic schedule).

use crate::config::When;
use crate::config::{ExperimentConfig, PruneSection};
use crate::error::{MethodError, Result};
use crate::method::{MethodEntry, PreparedMethod};
use crate::report::{Report, UnstructuredReport, version};
use crate::steps::baseline::dense_baseline;
use crate::steps::context::Pipeline;
use crate::steps::eval::eval_model;
use crate::steps::phase::train_phase;
use crate::steps::unstructured::{UnstructuredSpec, gradual_phase, prune, rewind, round_target};
use shears_core::artifact::save_model;
use shears_core::cost::{Convention, cost};
use shears_core::sparsity::sparsity_report;
use shears_engine::device::device_by_name;

/// An unstructured method with its schedule, checked.
pub struct Prepared {
    section: PruneSection,
    spec: UnstructuredSpec,
    when: When,
}

impl Prepared {
    /// From a `[prune]` section (the older spelling of `[method]`).
    pub fn from_section(section: PruneSection, cfg: &ExperimentConfig) -> Result<Prepared> {
        let spec = UnstructuredSpec::from_section(&section, cfg.seed, cfg.train.batch_size)?;
        let when = section.when;
        Ok(Prepared {
            section,
            spec,
            when,
        })
    }
}

/// Registry hook: `[method] name = "<score>"` takes the keys of `[prune]` but `method`.
pub fn prepare(
    entry: &MethodEntry,
    keys: &toml::Table,
    cfg: &ExperimentConfig,
) -> Result<Box<dyn PreparedMethod>> {
    let name = entry.name;
    if keys.contains_key("method") {
        crate::invalid!("[method] name already names the method; drop `method = ...`");
    }
    let mut table = keys.clone();
    table.insert("method".into(), toml::Value::String(name.to_string()));
    let section: PruneSection = table.try_into().map_err(|e: toml::de::Error| {
        MethodError::Invalid(format!("[method] of `{name}`: {}", e.message()))
    })?;
    let check = ExperimentConfig {
        prune: Some(section.clone()),
        method: None,
        ..cfg.clone()
    };
    check.validate()?;
    Ok(Box::new(Prepared::from_section(section, cfg)?))
}

impl PreparedMethod for Prepared {
    fn label(&self) -> (String, Option<f64>) {
        (
            self.section.method.name().into(),
            Some(self.section.sparsity),
        )
    }

    fn run(&self, p: &Pipeline<'_>) -> Result<Report> {
        let (cfg, rt, data, dir) = (p.cfg, &p.rt, p.data, p.dir);
        let prune_cfg = &self.section;
        let spec = &self.spec;
        let limit = p.test_limit();
        let finetune = p.finetune();
        let device = device_by_name(&rt.device)?;
        let (acc_dense, acc_pruned, tuned, finetune_epochs) = match self.when {
            When::Init => {
                // Prune the initial weights, then train the masked network.
                let model = p.initial()?;
                let (_, acc_init) = eval_model(rt, &model, data, limit)?;
                let pruned = prune(&model, spec, Some(data), &device)?.model;
                let (_, acc_pruned) = eval_model(rt, &pruned, data, limit)?;
                let (trained, _) =
                    train_phase(rt, &cfg.train, pruned, data, &dir.phase("train"), p.resume)?;
                let (tuned, epochs) = if p.explicit_finetune && finetune.epochs > 0 {
                    let (t, _) =
                        train_phase(rt, &finetune, trained, data, &dir.phase("finetune"), true)?;
                    (t, finetune.epochs)
                } else {
                    (trained, 0)
                };
                (acc_init, acc_pruned, tuned, epochs)
            }
            When::Gradual => {
                // No dense model exists: the masks grow at every epoch end of [train].
                let (gradual, _) = gradual_phase(
                    rt,
                    &cfg.train,
                    p.initial()?,
                    data,
                    &dir.phase("train"),
                    p.resume,
                    spec,
                )?;
                let (_, acc_pruned) = eval_model(rt, &gradual, data, limit)?;
                let (tuned, _) =
                    train_phase(rt, &finetune, gradual, data, &dir.phase("finetune"), true)?;
                (f64::NAN, acc_pruned, tuned, finetune.epochs)
            }
            When::After => {
                // Phase 1: the dense model (kept in `dense/` so an interrupted run does not
                // retrain it).
                let dense = dense_baseline(p)?;
                let (_, acc_dense) = eval_model(rt, &dense, data, limit)?;
                // Phase 2..: prune (measuring the damage before any retraining), then
                // fine-tune, or rewind to the initial weights and retrain with [train];
                // `rounds` times.
                let retrain = if prune_cfg.rewind {
                    &cfg.train
                } else {
                    &finetune
                };
                let mut model = dense;
                let mut acc_pruned = f64::NAN;
                for round in 1..=prune_cfg.rounds {
                    let target = round_target(prune_cfg.sparsity, round, prune_cfg.rounds);
                    let pruned =
                        prune(&model, &spec.with_target(target), Some(data), &device)?.model;
                    acc_pruned = eval_model(rt, &pruned, data, limit)?.1;
                    let next = if prune_cfg.rewind {
                        rewind(&pruned, &p.initial()?)?
                    } else {
                        pruned
                    };
                    let phase = if round == prune_cfg.rounds {
                        "finetune".to_string()
                    } else {
                        format!("round{round}")
                    };
                    model = train_phase(rt, retrain, next, data, &dir.phase(&phase), true)?.0;
                }
                (acc_dense, acc_pruned, model, retrain.epochs)
            }
        };
        let (_, acc_tuned) = eval_model(rt, &tuned, data, limit)?;
        save_model(&dir.path, &tuned)?;
        let c = cost(&tuned.graph, Convention::ConvLinear)?;
        let sp = sparsity_report(&tuned.graph, &tuned.masks)?;
        Ok(Report::Unstructured(UnstructuredReport {
            version: version(),
            run_dir: dir.path.display().to_string(),
            model: cfg.model.arch.clone(),
            dataset: cfg.data.dataset.clone(),
            seed: cfg.seed,
            config_hash: cfg.hash(),
            method: prune_cfg.method.name().into(),
            allocation: prune_cfg.scope.text.clone(),
            target_kind: prune_cfg.target_kind.text.clone(),
            target_sparsity: prune_cfg.sparsity,
            params: c.params,
            nonzero_params: c.params - (sp.total - sp.unpruned),
            macs: c.macs,
            macs_convention: Convention::ConvLinear.name(),
            direct_sparsity: sp.direct_sparsity,
            effective_sparsity: sp.effective_sparsity,
            direct_compression: sp
                .direct_compression
                .is_finite()
                .then_some(sp.direct_compression),
            effective_compression: sp
                .effective_compression
                .is_finite()
                .then_some(sp.effective_compression),
            accuracy_before_pruning: acc_dense,
            accuracy_after_pruning: acc_pruned,
            accuracy_after_finetune: acc_tuned,
            when: prune_cfg.when.name().into(),
            rewind: prune_cfg.rewind,
            rounds: prune_cfg.rounds,
            train_epochs: cfg.train.epochs,
            finetune_epochs,
            seconds: p.started.elapsed().as_secs_f64(),
            layers: sp.layers,
        }))
    }
}
