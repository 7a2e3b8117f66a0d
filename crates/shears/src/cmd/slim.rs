//! `shears slim`: Network Slimming (Liu et al., ICCV 2017) end to end. Train the baseline (or
//! load a trained model), train with an L1 penalty on every BatchNorm scale (`λ·sign(γ)` added to
//! the gradient), remove the channels whose |γ| is at or below the global `p` percentile, compact,
//! fine-tune, and report accuracy at every stage, params, MACs and measured latency.
//!
//! Phases are kept in the run directory (`dense/`, `sparse/`, `pruned/`, and the `train`,
//! `sparsity`, `finetune` checkpoints), so `--resume` continues an interrupted run.

use super::{open_run, print_json, version};
use crate::cli::SlimArgs;
use crate::run_dir::run_name;
use crate::structured::{
    Outcome, RunContext, SlimmingReport, StructuredReport, StructuredSpec, compact_and_report,
    print_report, small_gamma_share,
};
use crate::workflow::{eval_model, load_data, load_or_build, train_phase, train_phase_with};
use anyhow::Result;
use sha2::{Digest, Sha256};
use shears_core::artifact::{is_model_dir, load_model, save_model};
use shears_engine::regularize::BnScaleL1;
use shears_engine::taylor::TaylorOptions;
use std::path::Path;
use std::time::Instant;

pub fn run(args: SlimArgs) -> Result<()> {
    let started = Instant::now();
    let mut cfg = args.over.resolve()?;
    let spec = StructuredSpec::slimming(args.percentile, args.round_to, args.ignore.clone())?;
    let l1 = BnScaleL1::all(args.lambda)?;
    let mut sparsity = cfg.train.clone();
    sparsity.epochs = args.sparsity_epochs;
    if let Some(lr) = args.sparsity_lr {
        sparsity.lr = lr;
    }
    let mut finetune = cfg.finetune.clone().unwrap_or_else(|| {
        let mut f = cfg.train.clone();
        f.lr = cfg.train.lr / 10.0;
        f
    });
    finetune.epochs = args.finetune_epochs;
    if let Some(lr) = args.finetune_lr {
        finetune.lr = lr;
    }
    cfg.finetune = Some(finetune.clone());
    cfg.validate()?;
    crate::apply_threads(&cfg)?;
    let settings = format!(
        "# shears slim: lambda = {}, sparsity_epochs = {}, sparsity_lr = {}, percentile = {}, round_to = {}, ignore = {:?}\n",
        args.lambda, sparsity.epochs, sparsity.lr, args.percentile, args.round_to, args.ignore
    );
    let config_text = format!("{settings}{}", cfg.to_toml());
    let hash: String = Sha256::digest(config_text.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = run_name(&cfg.name, "slim", Some(args.percentile), cfg.seed, &hash);
    let Some(dir) = open_run(&args.run, name)? else {
        return Ok(());
    };
    dir.write_config(&config_text)?;
    let data = load_data(&cfg)?;
    let limit = cfg.train.test_limit;
    let resume = args.run.resume;

    // Baseline: a saved model is used as it is; a zoo model is trained for `--epochs` first.
    let dense_dir = dir.phase("dense");
    let dense = if is_model_dir(&dense_dir) {
        load_model(&dense_dir)?
    } else {
        let from_saved = is_model_dir(Path::new(&cfg.model.arch));
        let model = load_or_build(
            &cfg.model.arch,
            cfg.model.input.as_deref(),
            cfg.model.classes,
            Some(&data),
            cfg.seed,
        )?;
        let model = if from_saved || cfg.train.epochs == 0 {
            model
        } else {
            train_phase(&cfg, &cfg.train, model, &data, &dir.phase("train"), resume)?.0
        };
        save_model(&dense_dir, &model)?;
        model
    };
    let accuracy_baseline = eval_model(&cfg, &dense, &data, limit)?.1;

    // Sparsity training: L1 on every BatchNorm scale.
    let sparse_dir = dir.phase("sparse");
    let sparse = if is_model_dir(&sparse_dir) {
        load_model(&sparse_dir)?
    } else {
        let model = if sparsity.epochs == 0 {
            dense.clone()
        } else {
            train_phase_with(
                &cfg,
                &sparsity,
                dense.clone(),
                &data,
                &dir.phase("sparsity"),
                resume,
                &[&l1],
            )?
            .0
        };
        save_model(&sparse_dir, &model)?;
        model
    };
    let slimming = SlimmingReport {
        lambda: args.lambda,
        sparsity_epochs: sparsity.epochs,
        accuracy_baseline: Some(accuracy_baseline),
        small_gamma_share_before: small_gamma_share(&dense),
        small_gamma_share_after: small_gamma_share(&sparse),
    };

    // Percentile threshold, compaction, fine-tuning, latency.
    let ctx = RunContext {
        cfg: &cfg,
        data: Some(&data),
        dir: &dir,
        resume,
        finetune: Some(finetune.clone()),
        latency: &args.latency,
        save_masked: args.save_masked.as_deref(),
    };
    let Outcome {
        selected: sel,
        sizes,
        accuracy,
        latency,
    } = compact_and_report(&ctx, &sparse, &spec, &TaylorOptions::default())?;
    let report = StructuredReport {
        version: version(),
        command: "slim",
        run_dir: dir.path.display().to_string(),
        pruned_dir: dir.phase("pruned").display().to_string(),
        model: cfg.model.arch.clone(),
        dataset: Some(cfg.data.dataset.clone()),
        seed: cfg.seed,
        spec,
        threshold: sel.threshold,
        sizes,
        accuracy,
        finetune_epochs: finetune.epochs,
        slimming: Some(slimming),
        latency_warmup: args.latency.latency_warmup,
        latency_repeats: args.latency.latency_repeats,
        latency_rounds: args.latency.latency_rounds,
        latency,
        seconds: started.elapsed().as_secs_f64(),
    };
    dir.write_result(&report)?;
    if args.run.json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}
