//! Where a batch-1 forward pass spends its time: every convolution and linear layer of a zoo
//! model timed alone through shears' kernels (`conv2d_forward` with its bias and ReLU epilogue,
//! the weights already folded), against the whole forward pass in the executor, on one thread.
//! The difference is everything else: BatchNorm, pooling, adds, and the executor's per-op
//! overhead (tensor allocation, Burn's dispatch).
//!
//! `cargo run --release -p shears-engine --example layer_profile -- small-cnn 1x28x28`

use shears_core::graph::Op;
use shears_core::shape::infer_shapes;
use shears_core::{Masks, init_weights, zoo};
use shears_engine::Executor;
use shears_engine::device::device_by_name;
use shears_engine::latency::{BenchSettings, inference_latency};
use shears_kernels::{ConvGeometry, Epilogue, conv2d_forward};
use std::time::Instant;

fn median_us(f: &mut dyn FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    let mut t: Vec<f64> = (0..101)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map_or("small-cnn", String::as_str);
    let input: Vec<usize> = args
        .get(2)
        .map_or("1x28x28", String::as_str)
        .split('x')
        .map(|d| d.parse().expect("input like 3x32x32"))
        .collect();
    let graph = zoo::build(model, &input, 10).expect("a zoo model");
    let weights = init_weights(&graph, 0);
    let shapes = infer_shapes(&graph).expect("shapes");
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
        for node in &graph.nodes {
            let (g, what) = match &node.op {
                Op::Conv2d(c) => {
                    let s = shapes.get(&node.inputs[0]);
                    let g = ConvGeometry {
                        batch: 1,
                        in_channels: c.in_channels,
                        in_h: s[1],
                        in_w: s[2],
                        out_channels: c.out_channels,
                        kernel: c.kernel,
                        stride: c.stride,
                        padding: c.padding,
                        dilation: c.dilation,
                        groups: c.groups,
                    };
                    let what = format!(
                        "{}->{} {}x{} k{} s{}{}",
                        c.in_channels,
                        c.out_channels,
                        s[1],
                        s[2],
                        c.kernel[0],
                        c.stride[0],
                        if c.groups > 1 { " dw" } else { "" }
                    );
                    (g, what)
                }
                // A linear layer is a 1x1 convolution of a 1x1 map.
                Op::Linear(l) => (
                    ConvGeometry {
                        batch: 1,
                        in_channels: l.in_features,
                        in_h: 1,
                        in_w: 1,
                        out_channels: l.out_features,
                        kernel: [1, 1],
                        stride: [1, 1],
                        padding: [0, 0],
                        dilation: [1, 1],
                        groups: 1,
                    },
                    format!("linear {}->{}", l.in_features, l.out_features),
                ),
                _ => continue,
            };
            let x = vec![0.1f32; g.input_len()];
            let w = vec![0.01f32; g.weight_len()];
            let b = vec![0.0f32; g.out_channels];
            let mut y = vec![0f32; g.output_len()];
            let us = median_us(&mut || {
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
                node.name,
                what,
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
