//! `shears prune`: prune a freshly initialised zoo model (pruning at initialisation) or a saved
//! model (e.g. trained), with no training before. An unstructured method saves the masked model
//! and reports direct and effective sparsity, overall and per layer; a structured method saves
//! the compacted model and reports params, MACs, accuracy and measured latency.

use super::print_json;
use crate::cli::PruneArgs;
use anyhow::{Result, bail};
use shears_core::artifact::Model;
use shears_data::DataSplits;
use shears_methods::Runtime;
use shears_methods::methods::filter::default_importance;
use shears_methods::oneshot::{AfterCut, OneShot, prune_structured, prune_unstructured};
use shears_methods::registry::{MethodKind, find};
use shears_methods::steps::data::{DataSource, known_model_input, load_data_shaped};
use shears_methods::steps::model::is_saved_model;
use shears_methods::steps::model::load_or_build;
use shears_methods::steps::structured::{Spelling, StructuredSpec};
use shears_methods::steps::unstructured::UnstructuredSpec;

/// The target sparsity from `--sparsity` or `--compression`.
fn target_sparsity(args: &PruneArgs) -> Result<f64> {
    match (args.sparsity, args.compression) {
        (Some(s), None) => {
            if !(0.0..1.0).contains(&s) {
                bail!("--sparsity must be in [0, 1), got {s}");
            }
            Ok(s)
        }
        (None, Some(c)) => {
            if !c.is_finite() || c < 1.0 {
                bail!("--compression must be a finite number >= 1, got {c}");
            }
            Ok(1.0 - 1.0 / c)
        }
        _ => bail!("give exactly one of --sparsity and --compression"),
    }
}

/// The data set `--dataset` names, else the embedded subset.
fn dataset_name(args: &PruneArgs) -> &str {
    args.dataset.as_deref().unwrap_or("fashion-mnist-subset")
}

/// The data `--dataset`/`--data` name, or the embedded subset.
fn data_of(args: &PruneArgs) -> Result<DataSplits> {
    let name = dataset_name(args);
    Ok(load_data_shaped(name, args.data.as_deref(), || {
        known_model_input(&args.model, args.input.as_deref())
    })?)
}

/// The model to prune: a saved one, or a zoo model with fresh weights, shaped by the data when
/// there are data (else by `--input`/`--classes`, defaulting to the embedded data set's).
fn model_of(args: &PruneArgs, data: Option<&DataSplits>) -> Result<Model> {
    Ok(match data {
        Some(d) => load_or_build(
            &args.model,
            args.input.as_deref(),
            args.classes,
            Some(d),
            args.seed,
        )?,
        None => load_or_build(
            &args.model,
            Some(args.input.as_deref().unwrap_or("1x28x28")),
            Some(args.classes.unwrap_or(10)),
            None,
            args.seed,
        )?,
    })
}

/// The network to prune, as the flags name it.
fn job<'a>(args: &'a PruneArgs, data: Option<&'a DataSplits>) -> Result<OneShot<'a>> {
    Ok(OneShot {
        model_name: &args.model,
        model: model_of(args, data)?,
        saved: is_saved_model(&args.model),
        data,
        data_source: data.map(|_| DataSource {
            dataset: dataset_name(args).to_string(),
            dir: args.data.clone(),
        }),
        rt: Runtime {
            device: args.device.clone(),
            seed: args.seed,
        },
        out: args.out.clone(),
        runs_dir: args.runs_dir.clone(),
    })
}

pub fn run(args: PruneArgs) -> Result<()> {
    match find(&args.method)?.kind {
        MethodKind::Structured => return structured(args),
        MethodKind::Dynamic => anyhow::bail!(
            "`{}` trains per-input gates from a trained model over many epochs: run it with `shears run` and a [method] name = \"{}\" config",
            args.method,
            args.method
        ),
        MethodKind::Unstructured => {}
    }
    let target = target_sparsity(&args)?;
    let scope = args.quota.clone().unwrap_or_else(|| "global".into());
    let mut spec =
        UnstructuredSpec::new(&args.method, &scope, &args.target_kind, target, args.seed)?;
    spec.apply_effective = args.apply_effective;
    spec.keep_one_per_layer = !args.allow_collapse;
    spec.score_batches = args.score_batches;
    spec.score_batch_size = args.score_batch_size;
    spec.synflow_rounds = args.synflow_rounds;
    spec.grasp_temperature = args.temperature;
    let data: Option<DataSplits> = if spec.method.needs_data() || args.dataset.is_some() {
        Some(data_of(&args)?)
    } else {
        None
    };
    let job = job(&args, data.as_ref())?;
    let result = prune_unstructured(&job, &spec)?;
    if args.json {
        return print_json(&result);
    }
    let r = &result.report;
    println!(
        "pruned {} ({}) with {} ({}) to {} sparsity {} ({:.1}x)",
        result.model,
        result.pruned_at,
        result.method,
        result.allocation,
        result.target_kind,
        result.target,
        result.target_compression
    );
    println!(
        "  direct sparsity {:.5} (compression {:.1}x), effective sparsity {:.5} (compression {:.1}x)",
        r.direct_sparsity, r.direct_compression, r.effective_sparsity, r.effective_compression
    );
    for l in &r.layers {
        println!(
            "  {:<28} {:>10} weights  direct {:.5}  effective {:.5}",
            l.tensor, l.total, l.direct_sparsity, l.effective_sparsity
        );
    }
    println!("  saved to {}", result.run_dir);
    Ok(())
}

/// `shears prune` with a structured method: cut, compact, optionally fine-tune, measure.
fn structured(args: PruneArgs) -> Result<()> {
    let s = &args.structured;
    if args.sparsity.is_some() || args.compression.is_some() {
        bail!(
            "--sparsity and --compression apply to unstructured methods; `{}` takes --channel-ratio, --params-reduction, --macs-reduction or --percentile",
            args.method
        );
    }
    let options = shears_methods::steps::structured::StructuredOptions {
        score_batches: args.score_batches,
        score_batch_size: args.score_batch_size,
        ..s.options()
    };
    let Some(importance) = default_importance(&args.method) else {
        bail!(
            "`{}` trains before it cuts (a mask, then sparsity training): run it with `shears run --config` and `[method] name = \"{}\"`",
            args.method,
            args.method
        );
    };
    let spec = StructuredSpec::resolve(
        &args.method,
        importance,
        &options,
        args.seed,
        Spelling::Flag,
    )?;
    if s.no_eval && s.finetune_epochs > 0 {
        bail!("--finetune-epochs needs data to train and evaluate on; drop --no-eval");
    }
    let finetune = s.finetune_section()?;
    let data = if !s.no_eval || spec.needs_data() {
        Some(data_of(&args)?)
    } else {
        None
    };
    let job = job(&args, data.as_ref())?;
    let latency = s.latency.settings();
    let after = AfterCut {
        finetune,
        latency: &latency,
        save_masked: s.save_masked.as_deref(),
        dataset: Some(dataset_name(&args).to_string()),
    };
    let report = prune_structured(&job, &spec, &after)?;
    if args.json {
        return print_json(&report);
    }
    crate::print::structured(&report);
    Ok(())
}
