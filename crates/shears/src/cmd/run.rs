//! `shears run`: the whole pipeline (train -> method -> fine-tune) for any registered method,
//! with the report users ask for: accuracy before pruning, right after it and after
//! fine-tuning, next to params, MACs and direct/effective sparsity or measured latency.

use super::{cli_progress, print_finished, print_json, run_request};
use crate::cli::RunArgs;
use anyhow::Result;
use shears_methods::config::MethodSection;
use shears_methods::registry::{MethodKind, find};
use shears_methods::{Request, RunOutcome, execute};

pub fn run(args: RunArgs) -> Result<()> {
    let mut cfg = args.over.resolve()?;
    if let Some(m) = &args.method {
        // An unstructured score goes into [prune] (the older section, kept for its keys);
        // any other method replaces [method]'s name and keeps its keys.
        if find(m)?.kind == MethodKind::Unstructured && cfg.method.is_none() {
            cfg.prune.get_or_insert_with(Default::default).method = m.parse()?;
        } else {
            let keys = cfg.method.take().map(|s| s.keys).unwrap_or_default();
            cfg.method = Some(MethodSection {
                name: m.clone(),
                keys,
            });
        }
    }
    if let Some(s) = args.sparsity {
        match &mut cfg.method {
            Some(section) => {
                section
                    .keys
                    .insert("sparsity".into(), toml::Value::Float(s));
            }
            None => cfg.prune.get_or_insert_with(Default::default).sparsity = s,
        }
    }
    if cfg.method.is_none() && cfg.prune.is_none() {
        cfg.prune = Some(Default::default());
    }
    if let Some(e) = args.finetune_epochs {
        cfg.set_finetune_epochs(e);
    }
    // This (main) thread joins the kernels' pool: the pipeline's own `set_threads` then finds it
    // with the count it asks for.
    shears_engine::device::set_threads_here(cfg.threads)?;
    let request = Request::Run {
        config: cfg,
        run: run_request(&args.run, "run"),
    };
    match execute(&request, cli_progress())? {
        RunOutcome::Finished { dir, result } => print_finished(&args.run, &dir, &result),
        RunOutcome::Done(report) => {
            if args.run.json {
                return print_json(&report);
            }
            crate::print::report(&report);
        }
    }
    Ok(())
}
