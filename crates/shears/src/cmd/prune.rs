//! `shears prune`: unstructured pruning of a saved or freshly initialised model; saves the masked
//! model and reports direct and effective sparsity.

use super::print_json;
use crate::cli::PruneArgs;
use crate::config::PruneSection;
use crate::run_dir::{RunDir, run_name};
use crate::workflow::{load_or_build, prune_unstructured};
use anyhow::Result;
use serde::Serialize;
use shears_core::artifact::save_model;
use shears_core::sparsity::{SparsityReport, sparsity_report};

#[derive(Serialize)]
struct PruneResult {
    model: String,
    method: String,
    allocation: String,
    target_kind: String,
    target: f64,
    run_dir: String,
    #[serde(flatten)]
    report: SparsityReport,
}

pub fn run(args: PruneArgs) -> Result<()> {
    let section = PruneSection {
        method: args.method.clone(),
        scope: args.quota.clone().unwrap_or_else(|| "global".into()),
        sparsity: args.sparsity,
        target_kind: args.target_kind.clone(),
    };
    if !(0.0..1.0).contains(&args.sparsity) {
        anyhow::bail!("--sparsity must be in [0, 1), got {}", args.sparsity);
    }
    let model = load_or_build(
        &args.model,
        args.input.as_deref(),
        args.classes,
        None,
        args.seed,
    )
    .or_else(|e| {
        // A zoo model without --input gets the embedded data set's shape.
        if args.input.is_none() && shears_core::zoo::MODEL_NAMES.contains(&args.model.as_str()) {
            load_or_build(
                &args.model,
                Some("1x28x28"),
                Some(args.classes.unwrap_or(10)),
                None,
                args.seed,
            )
        } else {
            Err(e)
        }
    })?;
    let pruned = prune_unstructured(&model, &section, args.seed)?;
    let report = sparsity_report(&pruned.graph, &pruned.masks)?;
    let base = std::path::Path::new(&args.model)
        .file_name()
        .map_or(args.model.clone(), |s| s.to_string_lossy().into());
    let name = run_name(
        &base,
        &format!("{}-{}", args.method, section.scope),
        Some(args.sparsity),
        args.seed,
        &args.target_kind,
    );
    let dir = RunDir::new(args.out.clone().unwrap_or_else(|| args.runs_dir.join(name)))?;
    save_model(&dir.path, &pruned)?;
    let result = PruneResult {
        model: args.model.clone(),
        method: args.method.clone(),
        allocation: section.scope.clone(),
        target_kind: args.target_kind.clone(),
        target: args.sparsity,
        run_dir: dir.path.display().to_string(),
        report,
    };
    dir.write_result(&result)?;
    if args.json {
        return print_json(&result);
    }
    let r = &result.report;
    println!(
        "pruned {} with {} ({}) to {} sparsity {}",
        result.model, result.method, result.allocation, result.target_kind, result.target
    );
    println!(
        "  direct sparsity {:.4} (compression {:.1}x), effective sparsity {:.4} (compression {:.1}x)",
        r.direct_sparsity, r.direct_compression, r.effective_sparsity, r.effective_compression
    );
    for l in &r.layers {
        println!(
            "  {:<28} {:>10} weights  direct {:.4}  effective {:.4}",
            l.tensor, l.total, l.direct_sparsity, l.effective_sparsity
        );
    }
    println!("  saved to {}", result.run_dir);
    Ok(())
}
