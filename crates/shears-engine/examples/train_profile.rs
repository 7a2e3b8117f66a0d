//! Where a training step spends its time: every convolution and linear layer of a zoo model
//! timed alone through shears' kernels at the training batch (forward, input gradient, weight
//! gradient), against the whole step in the executor (forward, loss, backward, SGD update). The
//! difference is everything else: BatchNorm, pooling, adds, the loss, the optimiser and the
//! executor's and autodiff's per-op overhead.
//!
//! `cargo run --release -p shears-engine --example train_profile -- vgg-11 3x32x32 64 2`
//! (model, input, batch, threads).

use shears_core::graph::Op;
use shears_core::shape::infer_shapes;
use shears_core::{Masks, init_weights, zoo};
use shears_engine::Executor;
use shears_engine::device::device_by_name;
use shears_engine::latency::{BenchSettings, training_latency};
use shears_engine::optim::{Optimizer, OptimizerConfig};
use shears_kernels::{
    ConvGeometry, Epilogue, conv2d_backward_input, conv2d_backward_weight, conv2d_forward,
};
use std::time::Instant;

fn median_ms(f: &mut dyn FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..7)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map_or("resnet-20", String::as_str);
    let input: Vec<usize> = args
        .get(2)
        .map_or("3x32x32", String::as_str)
        .split('x')
        .map(|d| d.parse().expect("input like 3x32x32"))
        .collect();
    let batch: usize = args.get(3).map_or(64, |b| b.parse().expect("a batch size"));
    let threads: usize = args
        .get(4)
        .map_or(1, |t| t.parse().expect("a thread count"));
    // `step` as a fifth argument times only the whole step (for `perf record`).
    let layers = args.get(5).map(String::as_str) != Some("step");
    let graph = zoo::build(model, &input, 10).expect("a zoo model");
    let weights = init_weights(&graph, 0);
    let shapes = infer_shapes(&graph).expect("shapes");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    println!(
        "{model}, batch {batch}, {threads} thread(s)\n{:<24} {:>24} {:>8} {:>8} {:>8} {:>8}",
        "layer", "shape", "fwd ms", "dX ms", "dW ms", "GFLOP/s"
    );
    let (mut total_ms, mut total_flop) = (0.0, 0.0);
    pool.install(|| {
        for node in &graph.nodes {
            let (g, what, first) = match &node.op {
                Op::Conv2d(c) => {
                    let s = shapes.get(&node.inputs[0]);
                    let g = ConvGeometry {
                        batch,
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
                        if c.groups > 1 { " g" } else { "" }
                    );
                    (g, what, node.inputs[0] == graph.input.name)
                }
                Op::Linear(l) => (
                    ConvGeometry {
                        batch,
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
                    false,
                ),
                _ => continue,
            };
            if !layers {
                continue;
            }
            let x = vec![0.1f32; g.input_len()];
            let w = vec![0.01f32; g.weight_len()];
            let mut y = vec![0f32; g.output_len()];
            let mut dx = vec![0f32; g.input_len()];
            let mut dw = vec![0f32; g.weight_len()];
            let f = median_ms(&mut || conv2d_forward(&g, &x, &w, Epilogue::default(), &mut y));
            // The first layer's input needs no gradient.
            let bx = if first {
                0.0
            } else {
                median_ms(&mut || conv2d_backward_input(&g, &y, &w, &mut dx))
            };
            let bw = median_ms(&mut || conv2d_backward_weight(&g, &x, &y, &mut dw));
            let flop = 2.0 * (g.weight_len() * g.out_pixels() * batch) as f64;
            let passes = if first { 2.0 } else { 3.0 };
            total_ms += f + bx + bw;
            total_flop += passes * flop;
            println!(
                "{:<24} {:>24} {:>8.2} {:>8.2} {:>8.2} {:>8.1}",
                node.name,
                what,
                f,
                bx,
                bw,
                passes * flop / (f + bx + bw) / 1e6
            );
        }
    });
    let device = device_by_name("flex").unwrap().autodiff();
    let mut e = Executor::new(&graph, &weights, &Masks::new(), &device).unwrap();
    let cfg = OptimizerConfig::Sgd {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 5e-4,
    };
    let mut opt = Optimizer::new(cfg, e.params.len()).unwrap();
    let settings = BenchSettings {
        batch,
        threads,
        warmup: 2,
        repeats: if layers { 7 } else { 20 },
    };
    let whole = training_latency(&mut e, &mut opt, &settings)
        .unwrap()
        .median_ms;
    println!(
        "\nconvolution and linear kernels alone: {total_ms:.1} ms ({:.1} GFLOP/s); the whole training step: {whole:.1} ms ({:.1} img/s, {:.1} GFLOP/s); everything else: {:.1} ms ({:.0}%)",
        total_flop / total_ms / 1e6,
        batch as f64 / whole * 1e3,
        total_flop / whole / 1e6,
        whole - total_ms,
        100.0 * (whole - total_ms) / whole
    );
}
