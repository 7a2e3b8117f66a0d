//! `shears prune`: prune a freshly initialised zoo model (pruning at initialisation) or a saved
//! model (e.g. trained), with no training before. An unstructured method saves the masked model
//! and reports direct and effective sparsity, overall and per layer; a structured method saves
//! the compacted model and reports params, MACs, accuracy and measured latency.

use super::print_json;
use crate::cli::PruneArgs;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use shears_core::artifact::{Model, is_model_dir, save_model};
use shears_core::sparsity::SparsityReport;
use shears_data::DataSplits;
use shears_engine::device::device_by_name;
use shears_methods::Runtime;
use shears_methods::methods::filter::{CutRequest, cut_and_report, default_importance};
use shears_methods::registry::{MethodKind, find};
use shears_methods::run_dir::{RunDir, run_name};
use shears_methods::steps::data::load_data;
use shears_methods::steps::model::{executor, load_or_build};
use shears_methods::steps::structured::{Spelling, StructuredSpec};
use shears_methods::steps::unstructured::{UnstructuredSpec, prune};
use std::path::Path;
use std::time::Instant;

#[derive(Serialize)]
struct PruneResult {
    model: String,
    /// `init` for a zoo model with fresh weights, `saved` for a loaded model.
    pruned_at: &'static str,
    method: String,
    allocation: String,
    target_kind: String,
    /// Target sparsity.
    target: f64,
    target_compression: f64,
    apply_effective: bool,
    seed: u64,
    /// Effective-sparsity evaluations of the target search.
    evaluations: usize,
    seconds: f64,
    run_dir: String,
    #[serde(flatten)]
    report: SparsityReport,
}

/// The target sparsity from `--sparsity` or `--compression`.
fn target_sparsity(args: &PruneArgs) -> Result<f64> {
    match (args.sparsity, args.compression) {
        (Some(s), None) => {
            if !(0.0..1.0).contains(&s) {
                bail!("--sparsity must be in [0, 1), got {s}");
            }
            Ok(s)
        }
        (None, Some(c)) => {
            if !c.is_finite() || c < 1.0 {
                bail!("--compression must be a finite number >= 1, got {c}");
            }
            Ok(1.0 - 1.0 / c)
        }
        _ => bail!("give exactly one of --sparsity and --compression"),
    }
}

/// The data `--dataset`/`--data` name, or the embedded subset.
fn data_of(args: &PruneArgs) -> Result<DataSplits> {
    let name = args.dataset.as_deref().unwrap_or("fashion-mnist-subset");
    Ok(load_data(name, args.data.as_deref())?)
}

/// The model to prune: a saved one, or a zoo model with fresh weights, shaped by the data when
/// there are data (else by `--input`/`--classes`, defaulting to the embedded data set's).
fn model_of(args: &PruneArgs, data: Option<&DataSplits>) -> Result<Model> {
    Ok(match data {
        Some(d) => load_or_build(
            &args.model,
            args.input.as_deref(),
            args.classes,
            Some(d),
            args.seed,
        )?,
        None => load_or_build(
            &args.model,
            Some(args.input.as_deref().unwrap_or("1x28x28")),
            Some(args.classes.unwrap_or(10)),
            None,
            args.seed,
        )?,
    })
}

pub fn run(args: PruneArgs) -> Result<()> {
    if find(&args.method)?.kind == MethodKind::Structured {
        return structured(args);
    }
    let started = Instant::now();
    let target = target_sparsity(&args)?;
    let scope = args.quota.clone().unwrap_or_else(|| "global".into());
    let mut spec =
        UnstructuredSpec::new(&args.method, &scope, &args.target_kind, target, args.seed)?;
    spec.apply_effective = args.apply_effective;
    spec.keep_one_per_layer = !args.allow_collapse;
    spec.score_batches = args.score_batches;
    spec.score_batch_size = args.score_batch_size;
    spec.synflow_rounds = args.synflow_rounds;
    spec.grasp_temperature = args.temperature;
    let data: Option<DataSplits> = if spec.method.needs_data() || args.dataset.is_some() {
        Some(data_of(&args)?)
    } else {
        None
    };
    let saved = is_model_dir(Path::new(&args.model));
    let model = model_of(&args, data.as_ref())?;
    let device = device_by_name(&args.device)?;
    let pruned = prune(&model, &spec, data.as_ref(), &device)?;
    let base = Path::new(&args.model)
        .file_name()
        .map_or(args.model.clone(), |s| s.to_string_lossy().into());
    let name = run_name(
        &base,
        &format!("{}-{}", args.method, scope),
        Some(target),
        args.seed,
        &args.target_kind,
    );
    let dir = RunDir::new(args.out.clone().unwrap_or_else(|| args.runs_dir.join(name)))?;
    save_model(&dir.path, &pruned.model)?;
    let result = PruneResult {
        model: args.model.clone(),
        pruned_at: if saved { "saved" } else { "init" },
        method: args.method.clone(),
        allocation: spec.allocation_name(),
        target_kind: spec.kind.name().into(),
        target,
        target_compression: 1.0 / (1.0 - target),
        apply_effective: args.apply_effective,
        seed: args.seed,
        evaluations: pruned.evaluations,
        seconds: started.elapsed().as_secs_f64(),
        run_dir: dir.path.display().to_string(),
        report: pruned.report,
    };
    dir.write_result(&result)?;
    if args.json {
        return print_json(&result);
    }
    let r = &result.report;
    println!(
        "pruned {} ({}) with {} ({}) to {} sparsity {} ({:.1}x)",
        result.model,
        result.pruned_at,
        result.method,
        result.allocation,
        result.target_kind,
        result.target,
        result.target_compression
    );
    println!(
        "  direct sparsity {:.5} (compression {:.1}x), effective sparsity {:.5} (compression {:.1}x)",
        r.direct_sparsity, r.direct_compression, r.effective_sparsity, r.effective_compression
    );
    for l in &r.layers {
        println!(
            "  {:<28} {:>10} weights  direct {:.5}  effective {:.5}",
            l.tensor, l.total, l.direct_sparsity, l.effective_sparsity
        );
    }
    println!("  saved to {}", result.run_dir);
    Ok(())
}

/// `shears prune` with a structured method: cut, compact, optionally fine-tune, measure.
fn structured(args: PruneArgs) -> Result<()> {
    let started = Instant::now();
    let s = &args.structured;
    if args.sparsity.is_some() || args.compression.is_some() {
        bail!(
            "--sparsity and --compression apply to unstructured methods; `{}` takes --channel-ratio, --params-reduction, --macs-reduction or --percentile",
            args.method
        );
    }
    let options = shears_methods::steps::structured::StructuredOptions {
        score_batches: args.score_batches,
        score_batch_size: args.score_batch_size,
        ..s.options()
    };
    let Some(importance) = default_importance(&args.method) else {
        bail!(
            "`{}` trains before it cuts (a mask, then sparsity training): run it with `shears run --config` and `[method] name = \"{}\"`",
            args.method,
            args.method
        );
    };
    let spec = StructuredSpec::resolve(
        &args.method,
        importance,
        &options,
        args.seed,
        Spelling::Flag,
    )?;
    if s.no_eval && s.finetune_epochs > 0 {
        bail!("--finetune-epochs needs data to train and evaluate on; drop --no-eval");
    }
    let finetune = s.finetune_section()?;
    let data = if !s.no_eval || spec.needs_data() {
        Some(data_of(&args)?)
    } else {
        None
    };
    let model = model_of(&args, data.as_ref())?;
    let rt = Runtime {
        device: args.device.clone(),
        seed: args.seed,
    };
    if let Some(d) = &data {
        let probe = executor(&rt, &model, false)?;
        shears_engine::train::check_data_fits(&probe, &d.test)
            .context("pass --no-eval to prune without evaluating on data")?;
    }
    let base = Path::new(&args.model)
        .file_name()
        .map_or(args.model.clone(), |s| s.to_string_lossy().into());
    let name = run_name(
        &base,
        &format!("{}-{}", spec.method, spec.cut_label()),
        None,
        args.seed,
        &spec.hash(),
    );
    let dir = RunDir::new(args.out.clone().unwrap_or_else(|| args.runs_dir.join(name)))?;
    // `prune` always starts over: a fine-tuning checkpoint left by an earlier run of another
    // selection must not be resumed into this one.
    let stale = dir.phase("finetune");
    if stale.exists() {
        std::fs::remove_dir_all(&stale)
            .with_context(|| format!("cannot clear {}", stale.display()))?;
    }
    let latency = s.latency.settings();
    let req = CutRequest {
        rt: &rt,
        data: data.as_ref(),
        test_limit: s.test_limit,
        dir: &dir,
        finetune: Some(finetune),
        latency: latency.enabled.then_some(&latency),
        save_masked: s.save_masked.as_deref(),
        command: "prune",
        model_name: args.model.clone(),
        dataset: data
            .as_ref()
            .map(|_| args.dataset.clone().unwrap_or("fashion-mnist-subset".into())),
        config_hash: None,
    };
    let report = cut_and_report(&req, &model, &spec, None, false, started)?;
    dir.write_result(&report)?;
    if args.json {
        return print_json(&report);
    }
    crate::print::structured(&report);
    Ok(())
}
