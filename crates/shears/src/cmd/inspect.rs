//! `shears inspect`: the per-layer table of a model.

use super::{print_json, thousands};
use crate::cli::InspectArgs;
use anyhow::Result;
use shears_core::cost::Convention;
use shears_core::zoo;
use shears_methods::inspect::inspect;
use shears_methods::steps::model::load_or_build;

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
    let out = inspect(&model, &name, convention, args.groups)?;
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
