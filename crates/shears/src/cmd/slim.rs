//! `shears slim`: Network Slimming end to end, the shortcut for `shears run` with
//! `[method] name = "slimming"` (see `shears_methods::methods::slimming`).

use super::{cli_progress, print_finished, print_json, run_request};
use crate::cli::SlimArgs;
use anyhow::Result;
use shears_methods::methods::slimming::SlimmingOptions;
use shears_methods::{Request, RunOutcome, execute};

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
    let mut finetune = cfg.finetune();
    finetune.epochs = args.finetune_epochs;
    if let Some(lr) = args.finetune_lr {
        finetune.lr = lr;
    }
    cfg.finetune = Some(finetune);
    cfg.latency = Some(args.latency.settings());
    let request = Request::Run {
        config: cfg,
        run: run_request(&args.run, "slim"),
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
