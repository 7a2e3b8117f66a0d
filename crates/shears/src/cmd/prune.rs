//! `shears prune`: unstructured pruning of a freshly initialised zoo model (pruning at
//! initialisation) or of a saved model (e.g. trained); saves the masked model and reports direct
//! and effective sparsity, overall and per layer.

use super::print_json;
use crate::cli::PruneArgs;
use crate::run_dir::{RunDir, run_name};
use crate::unstructured::{UnstructuredSpec, needs_data, prune};
use crate::workflow::load_or_build;
use anyhow::{Result, bail};
use serde::Serialize;
use shears_core::artifact::{is_model_dir, save_model};
use shears_core::sparsity::SparsityReport;
use shears_data::{DataSplits, DatasetKind};
use shears_engine::device::device_by_name;
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

pub fn run(args: PruneArgs) -> Result<()> {
    if crate::structured::is_structured_method(&args.method) {
        return crate::structured::prune(args);
    }
    if !crate::unstructured::METHODS.contains(&args.method.as_str()) {
        bail!(
            "unknown pruning method `{}` (unstructured: {}; structured: {})",
            args.method,
            crate::unstructured::METHODS.join(", "),
            crate::structured::METHODS.join(", ")
        );
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
    let data: Option<DataSplits> = if needs_data(&args.method) || args.dataset.is_some() {
        let name = args.dataset.as_deref().unwrap_or("fashion-mnist-subset");
        let kind: DatasetKind = name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        Some(shears_data::load(kind, args.data.as_deref())?)
    } else {
        None
    };
    let saved = is_model_dir(Path::new(&args.model));
    let model = match (&data, &args.input) {
        (Some(d), _) => load_or_build(
            &args.model,
            args.input.as_deref(),
            args.classes,
            Some(d),
            args.seed,
        )?,
        // Without data, a zoo model takes the embedded data set's shape and classes.
        (None, input) => load_or_build(
            &args.model,
            Some(input.as_deref().unwrap_or("1x28x28")),
            Some(args.classes.unwrap_or(10)),
            None,
            args.seed,
        )?,
    };
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
