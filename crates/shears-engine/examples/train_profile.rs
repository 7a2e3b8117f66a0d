//! Where a training step spends its time: every convolution and linear layer of a zoo model
//! timed alone through shears' kernels at the training batch (forward, input gradient, weight
//! gradient), against the whole step in the executor (forward, loss, backward, SGD update). The
//! difference is everything else: BatchNorm, pooling, adds, the loss, the optimiser and the
//! executor's and autodiff's per-op overhead.
//!
//! `cargo run --release -p shears-engine --example train_profile -- vgg-11 3x32x32 64 2`
//! (model, input, batch, threads).

mod common;

use shears_core::{Masks, init_weights, zoo};
use shears_engine::Executor;
use shears_engine::device::device_by_name;
use shears_engine::latency::{BenchSettings, training_latency};
use shears_engine::optim::{Optimizer, OptimizerConfig};
use shears_kernels::{Epilogue, conv2d_backward_input, conv2d_backward_weight, conv2d_forward};

fn main() {
    // As the CLI does: freed activations are reused, not faulted in again every step.
    shears_engine::memory::keep_freed_memory();
    let model: String = common::arg(1, "resnet-20".to_string(), "a zoo model");
    let input = common::input_arg(2, "3x32x32");
    let batch: usize = common::arg(3, 64, "a batch size");
    let threads: usize = common::arg(4, 1, "a thread count");
    // `step` as a fifth argument times only the whole step (for `perf record`), over as many
    // steps as a sixth argument says (20 by default).
    let layers = std::env::args().nth(5).as_deref() != Some("step");
    let steps: usize = common::arg(6, 20, "a step count");
    let graph = zoo::build(&model, &input, 10).expect("a zoo model");
    let weights = init_weights(&graph, 0);
    // This thread in the kernels' pool, as `shears train` runs.
    shears_engine::device::set_threads_here(Some(threads)).expect("a thread count");
    println!(
        "{model}, batch {batch}, {threads} thread(s)\n{:<24} {:>24} {:>8} {:>8} {:>8} {:>8}",
        "layer", "shape", "fwd ms", "dX ms", "dW ms", "GFLOP/s"
    );
    let (mut total_ms, mut total_flop) = (0.0, 0.0);
    {
        for layer in common::layers(&graph, batch).into_iter().filter(|_| layers) {
            let (g, first) = (layer.geometry, layer.first);
            let x = vec![0.1f32; g.input_len()];
            let w = vec![0.01f32; g.weight_len()];
            let mut y = vec![0f32; g.output_len()];
            let mut dx = vec![0f32; g.input_len()];
            let mut dw = vec![0f32; g.weight_len()];
            let f = common::median_ms(1, 7, &mut || {
                conv2d_forward(&g, &x, &w, Epilogue::default(), &mut y)
            });
            // The first layer's input needs no gradient.
            let bx = if first {
                0.0
            } else {
                common::median_ms(1, 7, &mut || conv2d_backward_input(&g, &y, &w, &mut dx))
            };
            let bw = common::median_ms(1, 7, &mut || conv2d_backward_weight(&g, &x, &y, &mut dw));
            let flop = 2.0 * (g.weight_len() * g.out_pixels() * batch) as f64;
            let passes = if first { 2.0 } else { 3.0 };
            total_ms += f + bx + bw;
            total_flop += passes * flop;
            println!(
                "{:<24} {:>24} {:>8.2} {:>8.2} {:>8.2} {:>8.1}",
                layer.name,
                layer.what,
                f,
                bx,
                bw,
                passes * flop / (f + bx + bw) / 1e6
            );
        }
    }
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
        repeats: if layers { 7 } else { steps },
    };
    let whole = training_latency(&mut e, &mut opt, &settings)
        .unwrap()
        .median_ms;
    if !layers {
        println!(
            "the whole training step: {whole:.1} ms ({:.1} img/s)",
            batch as f64 / whole * 1e3
        );
        return;
    }
    println!(
        "\nconvolution and linear kernels alone: {total_ms:.1} ms ({:.1} GFLOP/s); the whole training step: {whole:.1} ms ({:.1} img/s, {:.1} GFLOP/s); everything else: {:.1} ms ({:.0}%)",
        total_flop / total_ms / 1e6,
        batch as f64 / whole * 1e3,
        total_flop / whole / 1e6,
        whole - total_ms,
        100.0 * (whole - total_ms) / whole
    );
}
