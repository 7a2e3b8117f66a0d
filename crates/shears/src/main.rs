//! The `shears` command line.

mod cli;
mod cmd;
mod html_report;
mod print;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

/// Activations and gradients on cache lines (the kernels' AVX-512 loads: MobileNet-V2's
/// training step 5 % shorter, `shears_kernels::LineAligned`).
#[global_allocator]
static ALLOC: shears_engine::memory::LineAligned = shears_engine::memory::LineAligned;

/// Exit status of a run whose directory another process is running (sysexits' EX_TEMPFAIL).
pub const EXIT_BUSY: u8 = 75;

fn main() -> ExitCode {
    shears_engine::memory::keep_freed_memory();
    let cli = Cli::parse();
    let level = if cli.quiet {
        "warn"
    } else if cli.verbose > 0 {
        "debug"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHEARS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Prune(a) => cmd::prune::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Slim(a) => cmd::slim::run(a),
        Command::Import(a) => cmd::onnx::import(a),
        Command::Export(a) => cmd::onnx::export(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Report(a) => cmd::report::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let busy = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<shears_methods::MethodError>(),
                    Some(shears_methods::MethodError::RunBusy { .. })
                )
            });
            // EX_TEMPFAIL: a sweep worker waits for the other process instead of failing.
            if busy {
                ExitCode::from(EXIT_BUSY)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
