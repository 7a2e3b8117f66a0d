//! One module per subcommand.

pub mod bench;
pub mod eval;
pub mod inspect;
pub mod onnx;
pub mod prune;
pub mod report;
pub mod run;
pub mod slim;
pub mod sweep;
pub mod train;

use crate::cli::RunOptions;
use anyhow::Result;
use serde::Serialize;
use shears_methods::RunRequest;
use shears_methods::run_dir::{Opened, RunDir, RunLock, claim, open_run as open_run_dir};
use std::path::PathBuf;

/// Prints `value` as one JSON object on stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Opens the run directory of the run whose resolved config is `config`; a finished run is not
/// re-run unless `--force`. Returns `None` when the run is already finished (its result is
/// printed instead).
/// The directory is claimed for `command` (its lock held while the returned guard lives;
/// another command's finished result there is refused without `--force`).
pub fn open_run(
    opts: &RunOptions,
    command: &str,
    default_name: String,
    config: &str,
) -> Result<Option<(RunDir, RunLock)>> {
    let path: PathBuf = opts
        .out
        .clone()
        .unwrap_or_else(|| opts.runs_dir.join(default_name));
    let lock = claim(&path, command, opts.force)?;
    match open_run_dir(path, opts.force, config)? {
        Opened::Fresh(dir) => Ok(Some((dir, lock))),
        Opened::Finished { dir, result } => {
            print_finished(opts, &dir.path, &result);
            Ok(None)
        }
    }
}

/// Says that a run had finished before, and shows its result.
pub fn print_finished(opts: &RunOptions, dir: &std::path::Path, result: &str) {
    eprintln!(
        "{} is already finished (use --force to run it again); its result:",
        dir.display()
    );
    if opts.json {
        println!("{result}");
    } else {
        eprintln!("{result}");
    }
}

/// The library's view of `--out`, `--runs-dir`, `--resume` and `--force`.
pub fn run_request(opts: &RunOptions, command: &'static str) -> RunRequest {
    RunRequest {
        out: opts.out.clone(),
        runs_dir: opts.runs_dir.clone(),
        resume: opts.resume,
        force: opts.force,
        command,
    }
}

pub use shears_methods::report::thousands;

/// What the CLI shows of a run's progress: each stage as a log line (training steps have their
/// own bar in the engine).
struct CliProgress;

impl shears_methods::Progress for CliProgress {
    fn stage(&self, name: &str) {
        tracing::info!("{name}");
        // Fault injection for the tests: die here as a crash or kill -9 would (no unwinding,
        // no cleanup, locks released by the OS), so that resuming from every stage is tested.
        if let Ok(at) = std::env::var(ABORT_ENV)
            && !at.is_empty()
            && name.contains(at.as_str())
        {
            eprintln!("{ABORT_ENV}: aborting at stage `{name}`");
            std::process::abort();
        }
    }
}

/// Tests set this to part of a stage's name to abort the process when that stage begins.
pub const ABORT_ENV: &str = "SHEARS_ABORT_AT_STAGE";

/// The CLI's progress display for [`shears_methods::execute`].
pub fn cli_progress() -> std::sync::Arc<dyn shears_methods::Progress> {
    std::sync::Arc::new(CliProgress)
}
