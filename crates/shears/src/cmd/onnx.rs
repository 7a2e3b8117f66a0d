//! `shears import` and `shears export`: ONNX in and out (the mapping lives in `shears-onnx`).

use super::print_json;
use crate::cli::{ExportArgs, ImportArgs};
use anyhow::{Context, Result};
use serde_json::json;
use shears_core::artifact::save_model;
use shears_core::cost::{Convention, cost};
use shears_methods::steps::model::load_saved;

pub fn import(args: ImportArgs) -> Result<()> {
    let model = shears_onnx::import_onnx(&args.file)
        .with_context(|| format!("cannot import {}", args.file.display()))?;
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
    let model = load_saved(&args.model)?;
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
