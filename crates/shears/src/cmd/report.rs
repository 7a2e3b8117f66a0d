//! `shears report RUNS_DIR`: one self-contained HTML page of the runs found there.

use crate::cli::ReportArgs;
use anyhow::Result;

pub fn run(args: ReportArgs) -> Result<()> {
    let title = args.title.clone().unwrap_or_else(|| {
        args.runs_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "shears runs".into())
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.runs_dir.join("report.html"));
    if out.is_dir() {
        anyhow::bail!(
            "{} is a directory: give the HTML file to write",
            out.display()
        );
    }
    use shears_core::artifact::{GRAPH_FILE, MASKS_FILE, WEIGHTS_FILE};
    use shears_methods::run_dir::{CONFIG_FILE, FAILED_FILE, RESULT_FILE};
    use shears_methods::steps::data::DATA_FILE;
    let own = [
        RESULT_FILE,
        CONFIG_FILE,
        FAILED_FILE,
        DATA_FILE,
        "metrics.jsonl",
        GRAPH_FILE,
        WEIGHTS_FILE,
        MASKS_FILE,
    ];
    if out
        .file_name()
        .is_some_and(|n| own.iter().any(|o| n == std::ffi::OsStr::new(o)))
    {
        anyhow::bail!(
            "{} would overwrite one of shears' own files: give the report another name",
            out.display()
        );
    }
    let html = crate::html_report::render(&args.runs_dir, &title)?;
    // Two reports of one runs directory at once write one after the other.
    let _lock = shears_methods::run_dir::RunLock::wait(&out)?;
    shears_core::artifact::write_atomic(&out, html.as_bytes())?;
    println!("{}", out.display());
    Ok(())
}
