//! The `shears` command line.

mod cli;
mod cmd;
mod print;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
