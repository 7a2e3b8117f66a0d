//! `shears eval`: reload a saved model (no builder code involved) and evaluate it.

use super::print_json;
use crate::cli::EvalArgs;
use anyhow::{Context, Result};
use serde::Serialize;
use shears_core::cost::{Convention, cost};
use shears_core::sparsity::sparsity_report;
use shears_methods::Runtime;
use shears_methods::steps::data::load_data_shaped;
use shears_methods::steps::eval::eval_model;
use shears_methods::steps::model::load_saved;

#[derive(Serialize)]
struct EvalResult {
    model: String,
    dataset: String,
    samples: usize,
    test_accuracy: f64,
    test_loss: f64,
    params: u64,
    macs: u64,
    macs_convention: &'static str,
    direct_sparsity: f64,
    effective_sparsity: f64,
    /// Why the accuracy may mean nothing (the data's classes are not the model's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// A warning when the model's training data (its `data.json`) named other classes, or the same
/// in another order, than the data it is evaluated on: labels would then not match outputs.
fn class_warning(model_dir: &std::path::Path, names: &[String]) -> Option<String> {
    let text =
        std::fs::read_to_string(model_dir.join(shears_methods::steps::data::DATA_FILE)).ok()?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    let trained: Vec<String> = record["class_names"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    (!trained.is_empty() && !names.is_empty() && trained != names).then(|| {
        format!(
            "the model was trained on the classes [{}] but these data have [{}]: output i is read as class i, so the accuracy may mean nothing",
            trained.join(", "),
            names.join(", ")
        )
    })
}

pub fn run(args: EvalArgs) -> Result<()> {
    let model = load_saved(&args.model)
        .with_context(|| format!("cannot load model from {}", args.model.display()))?;
    let data = load_data_shaped(&args.dataset, args.data.as_deref(), || {
        Ok(Some(model.graph.input.shape.clone()))
    })?;
    let warnings: Vec<String> = class_warning(&args.model, data.test.class_names())
        .into_iter()
        .collect();
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let rt = Runtime::new(args.device.clone(), 0);
    let (loss, acc) = eval_model(&rt, &model, &data, args.test_limit)?;
    let c = cost(&model.graph, Convention::ConvLinear)?;
    let sp = sparsity_report(&model.graph, &model.masks)?;
    let r = EvalResult {
        model: args.model.display().to_string(),
        dataset: args.dataset,
        samples: args
            .test_limit
            .map_or(data.test.len(), |l| l.min(data.test.len())),
        test_accuracy: acc,
        test_loss: loss,
        params: c.params,
        macs: c.macs,
        macs_convention: Convention::ConvLinear.name(),
        direct_sparsity: sp.direct_sparsity,
        effective_sparsity: sp.effective_sparsity,
        warnings,
    };
    if args.json {
        print_json(&r)?;
    } else {
        println!("{} on {} ({} test samples)", r.model, r.dataset, r.samples);
        println!(
            "  test accuracy {:.2}%  loss {:.4}",
            r.test_accuracy * 100.0,
            r.test_loss
        );
        println!(
            "  params {}  MACs {} ({})  sparsity direct {:.4} effective {:.4}",
            super::thousands(r.params),
            super::thousands(r.macs),
            r.macs_convention,
            r.direct_sparsity,
            r.effective_sparsity
        );
    }
    Ok(())
}
