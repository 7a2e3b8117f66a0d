//! `shears bench`: measured latency, never inferred from MACs.

use super::print_json;
use crate::cli::BenchArgs;
use anyhow::Result;
use serde::Serialize;
use shears_core::cost::{Convention, cost};
use shears_engine::device::device_by_name;
use shears_engine::latency::{BenchSettings, Latency, inference_latency, training_latency};
use shears_engine::{Executor, Optimizer, OptimizerConfig};
use shears_methods::steps::model::load_or_build;

#[derive(Serialize)]
struct Bench {
    model: String,
    input: Vec<usize>,
    device: String,
    kernels: String,
    params: u64,
    macs: u64,
    macs_convention: &'static str,
    results: Vec<Latency>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let model = load_or_build(&args.model, Some(&args.input), Some(args.classes), None, 0)?;
    let c = cost(&model.graph, Convention::ConvLinear)?;
    let device = device_by_name(&args.device)?;
    shears_engine::fast_ops::set_default(args.kernels);
    let mut results = Vec::new();
    for &threads in &args.threads {
        for &batch in &args.batch {
            let s = BenchSettings {
                batch,
                threads,
                warmup: args.warmup,
                repeats: args.repeats,
            };
            let mut exec = Executor::new(&model.graph, &model.weights, &model.masks, &device)?;
            results.push(inference_latency(&mut exec, &s)?);
            if args.train {
                let mut exec = Executor::new(
                    &model.graph,
                    &model.weights,
                    &model.masks,
                    &device.clone().autodiff(),
                )?;
                let cfg = OptimizerConfig::Sgd {
                    momentum: 0.9,
                    nesterov: false,
                    weight_decay: 5e-4,
                };
                let mut opt = Optimizer::new(cfg, exec.params.len())?;
                results.push(training_latency(&mut exec, &mut opt, &s)?);
            }
        }
    }
    let out = Bench {
        model: args.model,
        input: model.graph.input.shape.clone(),
        device: args.device,
        kernels: format!("{:?}", args.kernels).to_lowercase(),
        params: c.params,
        macs: c.macs,
        macs_convention: Convention::ConvLinear.name(),
        results,
    };
    if args.json {
        return print_json(&out);
    }
    println!(
        "{} ({:?}, {} params, {} MACs {}) on {}",
        out.model,
        out.input,
        super::thousands(out.params),
        super::thousands(out.macs),
        out.macs_convention,
        out.device
    );
    println!(
        "{:<10} {:>6} {:>8} {:>11} {:>11} {:>12}",
        "mode", "batch", "threads", "median ms", "p90 ms", "images/s"
    );
    for r in &out.results {
        println!(
            "{:<10} {:>6} {:>8} {:>11.3} {:>11.3} {:>12.1}",
            r.mode, r.batch, r.threads, r.median_ms, r.p90_ms, r.images_per_s
        );
    }
    println!(
        "(warm-up {} runs, median and p90 of {} timed runs each)",
        args.warmup, args.repeats
    );
    Ok(())
}
