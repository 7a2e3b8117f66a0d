//! `shears inspect`: the per-layer table of a model.

use super::{print_json, thousands};
use crate::cli::InspectArgs;
use anyhow::Result;
use serde::Serialize;
use shears_core::cost::{Convention, cost};
use shears_core::sparsity::sparsity_report;
use shears_core::zoo;
use shears_methods::steps::model::load_or_build;
use std::collections::HashMap;

#[derive(Serialize)]
struct Layer {
    name: String,
    op: String,
    output_shape: Vec<usize>,
    params: u64,
    macs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    direct_sparsity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    effective_sparsity: Option<f64>,
}

#[derive(Serialize)]
struct Inspection {
    model: String,
    input: Vec<usize>,
    params: u64,
    macs: u64,
    macs_convention: &'static str,
    direct_sparsity: f64,
    effective_sparsity: f64,
    layers: Vec<Layer>,
    /// Channel dependency groups (`--groups`).
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<shears_methods::steps::structured::GroupInfo>>,
}

pub fn run(args: InspectArgs) -> Result<()> {
    if args.list {
        for name in zoo::MODEL_NAMES {
            println!("{name:<14} {}", zoo::describe(name).unwrap_or(""));
        }
        return Ok(());
    }
    if args.methods {
        for m in shears_methods::METHODS {
            println!("{:<14} {:<13} {}", m.name, m.kind.name(), m.description);
        }
        return Ok(());
    }
    let name = args.model.clone().unwrap_or_default();
    let convention: Convention = args
        .convention
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let model = load_or_build(&name, Some(&args.input), Some(args.classes), None, 0)?;
    let c = cost(&model.graph, convention)?;
    let sp = sparsity_report(&model.graph, &model.masks)?;
    let by_tensor: HashMap<&str, (f64, f64)> = sp
        .layers
        .iter()
        .map(|l| (l.tensor.as_str(), (l.direct_sparsity, l.effective_sparsity)))
        .collect();
    let layers: Vec<Layer> = c
        .nodes
        .iter()
        .map(|n| {
            let s = by_tensor
                .get(format!("{}.weight", n.name).as_str())
                .copied();
            Layer {
                name: n.name.clone(),
                op: n.op.clone(),
                output_shape: n.output_shape.clone(),
                params: n.params,
                macs: n.macs,
                direct_sparsity: s.map(|s| s.0),
                effective_sparsity: s.map(|s| s.1),
            }
        })
        .collect();
    let out = Inspection {
        model: name,
        input: model.graph.input.shape.clone(),
        params: c.params,
        macs: c.macs,
        macs_convention: convention.name(),
        direct_sparsity: sp.direct_sparsity,
        effective_sparsity: sp.effective_sparsity,
        layers,
        groups: if args.groups {
            Some(shears_methods::steps::structured::group_infos(
                &model.graph,
            )?)
        } else {
            None
        },
    };
    if args.json {
        return print_json(&out);
    }
    println!(
        "{:<28} {:<14} {:<14} {:>12} {:>14} {:>8} {:>8}",
        "layer", "op", "output", "params", "MACs", "direct", "effect."
    );
    for l in &out.layers {
        let shape = l
            .output_shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let f = |v: Option<f64>| v.map_or(String::from("-"), |v| format!("{v:.4}"));
        println!(
            "{:<28} {:<14} {:<14} {:>12} {:>14} {:>8} {:>8}",
            l.name,
            l.op,
            shape,
            thousands(l.params),
            thousands(l.macs),
            f(l.direct_sparsity),
            f(l.effective_sparsity)
        );
    }
    println!(
        "total: {} params, {} MACs ({}), sparsity of conv+linear weights: direct {:.4}, effective {:.4}",
        thousands(out.params),
        thousands(out.macs),
        out.macs_convention,
        out.direct_sparsity,
        out.effective_sparsity
    );
    if args.groups {
        let groups = shears_core::structured::channel_groups(&model.graph)?;
        println!("\nchannel dependency groups:");
        print!("{}", shears_core::structured::groups_table(&groups));
    }
    Ok(())
}
