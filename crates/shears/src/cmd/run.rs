//! `shears run`: the whole pipeline (train → prune → fine-tune) with the report users ask for:
//! accuracy before pruning, right after it and after fine-tuning, next to params, MACs and
//! direct/effective sparsity.

use super::{open_run, print_json, thousands, version};
use crate::cli::RunArgs;
use crate::run_dir::run_name;
use crate::unstructured::{self, UnstructuredSpec, gradual_phase, rewind, round_target};
use crate::workflow::{eval_model, load_data, load_or_build, train_phase};
use anyhow::Result;
use serde::Serialize;
use shears_core::artifact::{is_model_dir, load_model, save_model};
use shears_core::cost::{Convention, cost};
use shears_core::sparsity::sparsity_report;
use shears_engine::device::device_by_name;
use std::time::Instant;

#[derive(Serialize)]
struct Report {
    version: &'static str,
    run_dir: String,
    model: String,
    dataset: String,
    seed: u64,
    config_hash: String,
    method: String,
    allocation: String,
    target_kind: String,
    target_sparsity: f64,
    params: u64,
    nonzero_params: u64,
    macs: u64,
    macs_convention: &'static str,
    direct_sparsity: f64,
    effective_sparsity: f64,
    direct_compression: Option<f64>,
    effective_compression: Option<f64>,
    accuracy_before_pruning: f64,
    accuracy_after_pruning: f64,
    accuracy_after_finetune: f64,
    /// `after` training, at `init`ialisation or `gradual`; with `rewind` and `rounds`.
    when: String,
    rewind: bool,
    rounds: usize,
    train_epochs: usize,
    finetune_epochs: usize,
    seconds: f64,
}

pub fn run(args: RunArgs) -> Result<()> {
    let mut cfg = args.over.resolve()?;
    let mut prune = cfg.prune.clone().unwrap_or_default();
    if let Some(s) = args.sparsity {
        prune.sparsity = s;
    }
    if let Some(m) = &args.method {
        prune.method = m.clone();
    }
    cfg.prune = Some(prune.clone());
    // Pruning at initialisation fine-tunes only when asked to: its main phase is [train].
    let explicit_finetune = cfg.finetune.is_some() || args.finetune_epochs.is_some();
    let mut finetune = cfg.finetune.clone().unwrap_or_else(|| {
        let mut f = cfg.train.clone();
        f.epochs = 1;
        f.lr = cfg.train.lr / 10.0;
        f
    });
    if let Some(e) = args.finetune_epochs {
        finetune.epochs = e;
    }
    cfg.finetune = Some(finetune.clone());
    cfg.validate()?;
    crate::apply_threads(&cfg)?;
    let name = run_name(
        &cfg.name,
        &prune.method,
        Some(prune.sparsity),
        cfg.seed,
        &cfg.hash(),
    );
    let Some(dir) = open_run(&args.run, name)? else {
        return Ok(());
    };
    dir.write_config(&cfg.to_toml())?;
    let started = Instant::now();
    let data = load_data(&cfg)?;
    let limit = cfg.train.test_limit;
    let spec = UnstructuredSpec::from_section(&prune, cfg.seed, cfg.train.batch_size)?;
    let device = device_by_name(&cfg.device)?;
    let initial = || {
        load_or_build(
            &cfg.model.arch,
            cfg.model.input.as_deref(),
            cfg.model.classes,
            Some(&data),
            cfg.seed,
        )
    };

    let (acc_dense, acc_pruned, tuned, finetune_epochs) = match prune.when.as_str() {
        "init" => {
            // Prune the initial weights, then train the masked network.
            let model = initial()?;
            let (_, acc_init) = eval_model(&cfg, &model, &data, limit)?;
            let pruned = unstructured::prune(&model, &spec, Some(&data), &device)?.model;
            let (_, acc_pruned) = eval_model(&cfg, &pruned, &data, limit)?;
            let (trained, _) = train_phase(
                &cfg,
                &cfg.train,
                pruned,
                &data,
                &dir.phase("train"),
                args.run.resume,
            )?;
            let (tuned, epochs) = if explicit_finetune && finetune.epochs > 0 {
                let (t, _) = train_phase(
                    &cfg,
                    &finetune,
                    trained,
                    &data,
                    &dir.phase("finetune"),
                    true,
                )?;
                (t, finetune.epochs)
            } else {
                (trained, 0)
            };
            (acc_init, acc_pruned, tuned, epochs)
        }
        "gradual" => {
            // No dense model exists: the masks grow at every epoch end of [train].
            let model = initial()?;
            let (gradual, _) = gradual_phase(
                &cfg,
                &cfg.train,
                model,
                &data,
                &dir.phase("train"),
                args.run.resume,
                &spec,
            )?;
            let (_, acc_pruned) = eval_model(&cfg, &gradual, &data, limit)?;
            let (tuned, _) = train_phase(
                &cfg,
                &finetune,
                gradual,
                &data,
                &dir.phase("finetune"),
                true,
            )?;
            (f64::NAN, acc_pruned, tuned, finetune.epochs)
        }
        _ => {
            // Phase 1: the dense model (kept in `dense/` so an interrupted run does not
            // retrain it).
            let dense_dir = dir.phase("dense");
            let dense = if is_model_dir(&dense_dir) {
                load_model(&dense_dir)?
            } else {
                let (trained, _) = train_phase(
                    &cfg,
                    &cfg.train,
                    initial()?,
                    &data,
                    &dir.phase("train"),
                    args.run.resume,
                )?;
                save_model(&dense_dir, &trained)?;
                trained
            };
            let (_, acc_dense) = eval_model(&cfg, &dense, &data, limit)?;
            // Phase 2..: prune (measuring the damage before any retraining), then fine-tune,
            // or rewind to the initial weights and retrain with [train]; `rounds` times.
            let retrain = if prune.rewind { &cfg.train } else { &finetune };
            let mut model = dense;
            let mut acc_pruned = f64::NAN;
            for round in 1..=prune.rounds {
                let target = round_target(prune.sparsity, round, prune.rounds);
                let pruned =
                    unstructured::prune(&model, &spec.with_target(target), Some(&data), &device)?
                        .model;
                acc_pruned = eval_model(&cfg, &pruned, &data, limit)?.1;
                let next = if prune.rewind {
                    rewind(&pruned, &initial()?)?
                } else {
                    pruned
                };
                let phase = if round == prune.rounds {
                    "finetune".to_string()
                } else {
                    format!("round{round}")
                };
                model = train_phase(&cfg, retrain, next, &data, &dir.phase(&phase), true)?.0;
            }
            (acc_dense, acc_pruned, model, retrain.epochs)
        }
    };
    let (_, acc_tuned) = eval_model(&cfg, &tuned, &data, limit)?;
    save_model(&dir.path, &tuned)?;

    let c = cost(&tuned.graph, Convention::ConvLinear)?;
    let sp = sparsity_report(&tuned.graph, &tuned.masks)?;
    let report = Report {
        version: version(),
        run_dir: dir.path.display().to_string(),
        model: cfg.model.arch.clone(),
        dataset: cfg.data.dataset.clone(),
        seed: cfg.seed,
        config_hash: cfg.hash(),
        method: prune.method.clone(),
        allocation: prune.scope.clone(),
        target_kind: prune.target_kind.clone(),
        target_sparsity: prune.sparsity,
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
        when: prune.when.clone(),
        rewind: prune.rewind,
        rounds: prune.rounds,
        train_epochs: cfg.train.epochs,
        finetune_epochs,
        seconds: started.elapsed().as_secs_f64(),
    };
    dir.write_result(&report)?;
    if args.run.json {
        return print_json(&report);
    }
    let r = &report;
    println!(
        "shears run: {} on {} (seed {}, config {})",
        r.model, r.dataset, r.seed, r.config_hash
    );
    println!(
        "  pruning        {} {} to {} sparsity {} ({}{}{})",
        r.method,
        r.allocation,
        r.target_kind,
        r.target_sparsity,
        r.when,
        if r.rewind { ", rewinding" } else { "" },
        if r.rounds > 1 {
            format!(", {} rounds", r.rounds)
        } else {
            String::new()
        }
    );
    let pct = |v: f64| {
        if v.is_nan() {
            "-".to_string()
        } else {
            format!("{:.2}%", v * 100.0)
        }
    };
    println!(
        "  accuracy       before pruning {}  right after {}  after fine-tuning {}",
        pct(r.accuracy_before_pruning),
        pct(r.accuracy_after_pruning),
        pct(r.accuracy_after_finetune)
    );
    println!(
        "  params         {} total, {} non-zero",
        thousands(r.params),
        thousands(r.nonzero_params)
    );
    println!(
        "  sparsity       direct {:.4} ({:.1}x), effective {:.4} ({:.1}x) of conv+linear weights",
        r.direct_sparsity, sp.direct_compression, r.effective_sparsity, sp.effective_compression
    );
    println!(
        "  dense MACs     {} ({}); unstructured masks do not reduce measured latency",
        thousands(r.macs),
        r.macs_convention
    );
    println!("  run directory  {}  ({:.0} s)", r.run_dir, r.seconds);
    Ok(())
}
