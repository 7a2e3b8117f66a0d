//! Where a batch-1 forward pass spends its time: every convolution and linear layer of a zoo
//! model timed alone through shears' kernels (`conv2d_forward` with its bias and ReLU epilogue,
//! the weights already folded), against the whole forward pass in the executor, on one thread.
//! The difference is everything else: BatchNorm, pooling, adds, and the executor's per-op
//! overhead (tensor allocation, Burn's dispatch).
//!
//! `cargo run --release -p shears-engine --example layer_profile -- small-cnn 1x28x28`

mod common;

use shears_core::{Masks, init_weights, zoo};
use shears_engine::Executor;
use shears_engine::device::device_by_name;
use shears_engine::latency::{BenchSettings, inference_latency};
use shears_kernels::{Epilogue, conv2d_forward};

fn main() {
    let model: String = common::arg(1, "small-cnn".to_string(), "a zoo model");
    let input = common::input_arg(2, "1x28x28");
    let graph = zoo::build(&model, &input, 10).expect("a zoo model");
    let weights = init_weights(&graph, 0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!(
        "{:<28} {:>22} {:>10} {:>9} {:>8}",
        "layer", "shape", "MACs", "us", "GMAC/s"
    );
    let (mut total_us, mut total_macs) = (0.0, 0u64);
    pool.install(|| {
        for layer in common::layers(&graph, 1) {
            let g = layer.geometry;
            let x = vec![0.1f32; g.input_len()];
            let w = vec![0.01f32; g.weight_len()];
            let b = vec![0.0f32; g.out_channels];
            let mut y = vec![0f32; g.output_len()];
            let us = 1e3
                * common::median_ms(5, 101, &mut || {
                    conv2d_forward(
                        &g,
                        &x,
                        &w,
                        Epilogue {
                            bias: Some(&b),
                            residual: None,
                            relu: true,
                        },
                        &mut y,
                    )
                });
            let macs = (g.weight_len() * g.out_pixels()) as u64;
            total_us += us;
            total_macs += macs;
            println!(
                "{:<28} {:>22} {:>10} {:>9.1} {:>8.1}",
                layer.name,
                layer.what,
                macs,
                us,
                macs as f64 / us / 1e3
            );
        }
    });
    let device = device_by_name("flex").unwrap();
    let mut e = Executor::new(&graph, &weights, &Masks::new(), &device).unwrap();
    let whole = inference_latency(
        &mut e,
        &BenchSettings {
            batch: 1,
            threads: 1,
            warmup: 10,
            repeats: 101,
        },
    )
    .unwrap()
    .median_ms
        * 1e3;
    println!(
        "\nconvolution and linear kernels alone: {total_us:.1} us ({:.1} GMAC/s); the whole forward pass in the executor: {whole:.1} us; everything else: {:.1} us ({:.0}%)",
        total_macs as f64 / total_us / 1e3,
        whole - total_us,
        100.0 * (whole - total_us) / whole
    );
}
