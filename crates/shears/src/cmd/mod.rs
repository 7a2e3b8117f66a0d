//! One module per subcommand.

pub mod bench;
pub mod eval;
pub mod inspect;
pub mod prune;
pub mod run;
pub mod slim;
pub mod train;

use crate::cli::RunOptions;
use crate::run_dir::RunDir;
use anyhow::{Result, bail};
use serde::Serialize;
use std::path::PathBuf;

/// Prints `value` as one JSON object on stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Opens the run directory; a finished run is not re-run unless `--force`.
/// Returns `None` when the run is already finished (its result is printed instead).
pub fn open_run(opts: &RunOptions, default_name: String) -> Result<Option<RunDir>> {
    let path: PathBuf = opts
        .out
        .clone()
        .unwrap_or_else(|| opts.runs_dir.join(default_name));
    if opts.force && path.exists() {
        if !path.join(crate::run_dir::CONFIG_FILE).exists() {
            bail!(
                "refusing to --force over {}: it is not a shears run directory",
                path.display()
            );
        }
        std::fs::remove_dir_all(&path)?;
    }
    let dir = RunDir::new(path)?;
    if dir.is_finished() {
        let text = std::fs::read_to_string(dir.result_path())?;
        eprintln!(
            "{} is already finished (use --force to run it again); its result:",
            dir.path.display()
        );
        if opts.json {
            println!("{text}");
        } else {
            eprintln!("{text}");
        }
        return Ok(None);
    }
    Ok(Some(dir))
}

/// `shears` version for reports.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Formats a count with thousands separators.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
