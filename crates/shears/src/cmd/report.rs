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
    let html = crate::html_report::render(&args.runs_dir, &title)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.runs_dir.join("report.html"));
    shears_core::artifact::write_atomic(&out, html.as_bytes())?;
    println!("{}", out.display());
    Ok(())
}
