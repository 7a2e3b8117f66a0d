//! `shears bench`: measured latency, never inferred from MACs.

use super::print_json;
use crate::cli::BenchArgs;
use anyhow::Result;
use serde::Serialize;
use shears_core::cost::{Convention, cost};
use shears_engine::device::device_by_name;
use shears_engine::latency::{BenchSettings, Latency, inference_latency, training_latency};
use shears_engine::{Executor, Optimizer, OptimizerConfig};
use shears_methods::steps::latency::onnx_for_onnxruntime;
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
    /// `measured with <libonnxruntime>` when the results have `onnxruntime` rows (the same
    /// model exported to ONNX), or why they have none.
    onnxruntime: String,
}

/// The model in onnxruntime at one batch size and thread count, as an `onnxruntime` row.
fn ort_row(
    onnx: &[u8],
    shape: &[usize],
    s: &BenchSettings,
) -> Result<Latency, shears_ort::OrtError> {
    let mut bench = shears_ort::Bench::new(onnx, shape, s.batch, s.threads)?;
    let t = bench.time(s.warmup, s.repeats)?;
    Ok(Latency {
        mode: "onnxruntime".into(),
        batch: s.batch,
        threads: s.threads,
        warmup: s.warmup,
        repeats: s.repeats,
        median_ms: t.median_ms,
        p90_ms: t.p90_ms,
        mean_ms: t.mean_ms,
        min_ms: t.min_ms,
        images_per_s: s.batch as f64 / (t.median_ms / 1e3),
    })
}

pub fn run(args: BenchArgs) -> Result<()> {
    // One thread count: this thread and the kernels' pool run the steps as `shears train` does
    // (see `shears_engine::latency`); several: a pool each.
    if let [threads] = args.threads[..] {
        shears_engine::device::set_threads_here(Some(threads))?;
    }
    if let Some(dir) = &args.dynamic {
        return dynamic(dir, &args);
    }
    let name = args
        .model
        .clone()
        .expect("clap requires --model without --dynamic");
    let model = load_or_build(&name, Some(&args.input), Some(args.classes), None, 0)?;
    let c = cost(&model.graph, Convention::ConvLinear)?;
    let device = device_by_name(&args.device)?;
    shears_engine::fast_ops::set_default(args.kernels);
    // The same model in onnxruntime, where there is one (a note says why not otherwise).
    let (onnx_models, mut onnxruntime) = onnx_for_onnxruntime(&[&model]);
    let mut onnx = onnx_models.and_then(|mut m| m.pop());
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
            if let Some(bytes) = &onnx {
                match ort_row(bytes, &model.graph.input.shape, &s) {
                    Ok(row) => results.push(row),
                    Err(e) => {
                        onnxruntime = format!("not measured: {e}");
                        onnx = None;
                    }
                }
            }
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
        model: name,
        input: model.graph.input.shape.clone(),
        device: args.device,
        kernels: format!("{:?}", args.kernels).to_lowercase(),
        params: c.params,
        macs: c.macs,
        macs_convention: Convention::ConvLinear.name(),
        results,
        onnxruntime,
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
        "{:<12} {:>6} {:>8} {:>11} {:>11} {:>12}",
        "mode", "batch", "threads", "median ms", "p90 ms", "images/s"
    );
    for r in &out.results {
        println!(
            "{:<12} {:>6} {:>8} {:>11.3} {:>11.3} {:>12.1}",
            r.mode, r.batch, r.threads, r.median_ms, r.p90_ms, r.images_per_s
        );
    }
    println!(
        "(warm-up {} runs, median and p90 of {} timed runs each; onnxruntime: {})",
        args.warmup, args.repeats, out.onnxruntime
    );
    Ok(())
}

/// `shears bench --dynamic RUN_DIR`: FTWT's dynamic inference against the dense network.
fn dynamic(dir: &std::path::Path, args: &BenchArgs) -> Result<()> {
    let b = shears_methods::methods::ftwt::bench::bench_dynamic(
        dir,
        &args.batch,
        &args.threads,
        args.warmup,
        args.repeats,
    )?;
    if args.json {
        return print_json(&b);
    }
    println!(
        "{} dynamic inference ({}, {} test images)",
        b.model, b.run_dir, b.samples
    );
    println!(
        "  MACs/sample    dense {}  dynamic {} (as run)  reduction {:.1}%",
        super::thousands(b.dense_macs),
        super::thousands(b.dynamic_macs.round() as u64),
        100.0 * b.macs_reduction
    );
    println!(
        "  accuracy       dense {:.2}%  dynamic {:.2}% on these images",
        100.0 * b.accuracy_dense_on_measured,
        100.0 * b.accuracy_dynamic_on_measured
    );
    let ort = b.results.iter().all(|r| r.onnxruntime_dense_ms.is_some());
    print!(
        "{:>6} {:>8} {:>10} {:>12} {:>10} {:>16} {:>11} {:>15}",
        "batch",
        "threads",
        "dense ms",
        "dynamic ms",
        "time red.",
        "time / MACs red.",
        "ungated ms",
        "red. vs ungated"
    );
    if ort {
        print!(" {:>12} {:>11}", "ORT dense ms", "red. vs ORT");
    }
    println!();
    for r in &b.results {
        print!(
            "{:>6} {:>8} {:>10.3} {:>12.3} {:>9.1}% {:>16.2} {:>11.3} {:>14.1}%",
            r.batch,
            r.threads,
            r.dense_ms,
            r.dynamic_ms,
            100.0 * r.time_reduction,
            r.time_reduction / b.macs_reduction,
            r.ungated_ms,
            100.0 * r.skip_time_reduction
        );
        if let (true, Some(o), Some(red)) =
            (ort, r.onnxruntime_dense_ms, r.time_reduction_vs_onnxruntime)
        {
            print!(" {o:>12.3} {:>10.1}%", 100.0 * red);
        }
        println!();
    }
    println!("  onnxruntime: {}", b.onnxruntime);
    println!(
        "(ungated: the dynamic engine with every filter on; its gap to dense is the engine's own overhead)"
    );
    println!(
        "(batch 1: median over {} images one at a time; larger batches: median of {} runs; warm-up {})",
        b.repeats, b.repeats, b.warmup
    );
    Ok(())
}
