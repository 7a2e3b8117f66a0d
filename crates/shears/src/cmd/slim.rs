//! `shears slim`: Network Slimming end to end, the shortcut for `shears run` with
//! `[method] name = "slimming"` (see `shears_methods::methods::slimming`).

use super::{print_finished, print_json, run_request};
use crate::cli::SlimArgs;
use anyhow::Result;
use shears_methods::methods::slimming::SlimmingOptions;
use shears_methods::pipeline::default_finetune;
use shears_methods::{Report, RunOutcome};

pub fn run(args: SlimArgs) -> Result<()> {
    let mut cfg = args.over.resolve()?;
    let opts = SlimmingOptions {
        lambda: args.lambda,
        sparsity_epochs: args.sparsity_epochs,
        sparsity_lr: args.sparsity_lr,
        percentile: Some(args.percentile),
        round_to: args.round_to,
        ignore: args.ignore.clone(),
        ..SlimmingOptions::default()
    };
    cfg.prune = None;
    cfg.method = Some(opts.to_section());
    let mut finetune = cfg
        .finetune
        .clone()
        .unwrap_or_else(|| default_finetune(&cfg.train));
    finetune.epochs = args.finetune_epochs;
    if let Some(lr) = args.finetune_lr {
        finetune.lr = lr;
    }
    cfg.finetune = Some(finetune);
    cfg.latency = Some(args.latency.settings());
    match shears_methods::run(&cfg, &run_request(&args.run, "slim"))? {
        RunOutcome::Finished { dir, result } => print_finished(&args.run, &dir, &result),
        RunOutcome::Done(report) => {
            if args.run.json {
                return print_json(&report);
            }
            match &report {
                Report::Structured(r) => crate::print::structured(r),
                Report::Dynamic(r) => crate::print::dynamic(r),
                Report::Unstructured(r) => crate::print::unstructured(r),
            }
        }
    }
    Ok(())
}
