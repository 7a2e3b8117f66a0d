//! `shears prune`: prune a freshly initialised zoo model (pruning at initialisation) or a saved
//! model (e.g. trained), with no training before. An unstructured method saves the masked model
//! and reports direct and effective sparsity, overall and per layer; a structured method saves
//! the compacted model and reports params, MACs, accuracy and measured latency.

use super::{cli_progress, print_json};
use crate::cli::PruneArgs;
use anyhow::Result;
use shears_methods::config::parse_allocation;
use shears_methods::oneshot::{ModelSource, PruneRequest, UnstructuredSettings};
use shears_methods::{Report, Request, RunOutcome, execute};

/// The library's request for these flags.
fn request(args: &PruneArgs) -> Result<PruneRequest> {
    let s = &args.structured;
    let mut req = PruneRequest::new(ModelSource::Named(args.model.clone()), args.method.clone());
    req.input = args.input.clone();
    req.classes = args.classes;
    req.sparsity = args.sparsity;
    req.compression = args.compression;
    req.unstructured = UnstructuredSettings {
        allocation: parse_allocation(args.quota.as_deref().unwrap_or("global"))?,
        target_kind: args.target_kind.parse()?,
        apply_effective: args.apply_effective,
        allow_collapse: args.allow_collapse,
        synflow_rounds: args.synflow_rounds,
        grasp_temperature: args.temperature,
    };
    req.structured = s.options();
    req.score_batches = args.score_batches;
    req.score_batch_size = args.score_batch_size;
    req.evaluate = !s.no_eval;
    // The fine-tuning flags apply to structured methods only (checked only for them).
    if shears_methods::registry::find(&args.method)?.kind == shears_methods::MethodKind::Structured
    {
        req.finetune = s.finetune_section()?;
    }
    req.latency = s.latency.settings();
    req.save_masked = s.save_masked.clone();
    req.dataset = args.dataset.clone();
    req.data = args.data.clone();
    req.seed = args.seed;
    req.device = args.device.clone();
    req.out = args.out.clone();
    req.runs_dir = args.runs_dir.clone();
    req.force = args.force;
    Ok(req)
}

pub fn run(args: PruneArgs) -> Result<()> {
    let req = request(&args)?;
    let report = match execute(&Request::Prune(req), cli_progress())? {
        RunOutcome::Done(report) => report,
        RunOutcome::Finished { dir, .. } => {
            anyhow::bail!(
                "{} had finished before: a one-shot prune always runs anew",
                dir.display()
            )
        }
    };
    if args.json {
        return print_json(&report);
    }
    match &report {
        Report::OneShot(result) => {
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
                r.direct_sparsity,
                r.direct_compression,
                r.effective_sparsity,
                r.effective_compression
            );
            for l in &r.layers {
                println!(
                    "  {:<28} {:>10} weights  direct {:.5}  effective {:.5}",
                    l.tensor, l.total, l.direct_sparsity, l.effective_sparsity
                );
            }
            println!("  saved to {}", result.run_dir);
        }
        other => crate::print::report(other),
    }
    Ok(())
}
