//! `shears import` and `shears export`: ONNX in and out (the mapping lives in `shears-onnx`).

use super::print_json;
use crate::cli::{ExportArgs, ImportArgs};
use anyhow::{Context, Result};
use serde_json::json;
use shears_core::artifact::save_model;
use shears_core::cost::{Convention, cost};
use shears_methods::run_dir::{claim, is_within};
use shears_methods::steps::model::load_saved;

pub fn import(args: ImportArgs) -> Result<()> {
    let model = shears_onnx::import_onnx(&args.file)
        .with_context(|| format!("cannot import {}", args.file.display()))?;
    // The directory is ours while we write it, and holds nothing we would overwrite.
    let _lock = claim(&args.out, "import", args.force)?;
    save_model(&args.out, &model)
        .with_context(|| format!("cannot write the model to {}", args.out.display()))?;
    let c = cost(&model.graph, Convention::ConvLinear)?;
    print_json(&json!({
        "imported": args.file.display().to_string(),
        "model_dir": args.out.display().to_string(),
        "input": model.graph.input.shape,
        "nodes": model.graph.nodes.len(),
        "params": c.params,
        "macs": c.macs,
    }))
}

pub fn export(args: ExportArgs) -> Result<()> {
    if args.model.is_dir() && is_within(&args.out, &args.model) {
        anyhow::bail!(
            "{} is inside the model directory {} being exported: writing there could overwrite its own files; choose a path outside it",
            args.out.display(),
            args.model.display()
        );
    }
    if args.out.is_dir() {
        anyhow::bail!(
            "{} is a directory: give the path of the ONNX file to write",
            args.out.display()
        );
    }
    let model = load_saved(&args.model)?;
    // Two exports to one file take turns (each writes it whole, atomically).
    let _lock = shears_methods::run_dir::RunLock::wait(&args.out)?;
    shears_onnx::export_onnx(&model, &args.out)
        .with_context(|| format!("cannot export to {}", args.out.display()))?;
    let c = cost(&model.graph, Convention::ConvLinear)?;
    print_json(&json!({
        "exported": args.out.display().to_string(),
        "opset": shears_onnx::EXPORT_OPSET,
        "nodes": model.graph.nodes.len(),
        "params": c.params,
        "macs": c.macs,
    }))
}
