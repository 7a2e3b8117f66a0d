//! GFLOP/s of each convolution kernel on the layer shapes of ResNet-20 and VGG-11 at batch 64
//! (3x32x32 input), then of MobileNet-V2's pointwise layers, then milliseconds of its depthwise
//! layers:
//! `cargo run --release -p shears-kernels --example kernel_speed`.
//! Threads follow RAYON_NUM_THREADS.

mod common;

use common::best_of_five as time;
use shears_kernels::*;

fn main() {
    let shapes = [
        ("first 3->16 32x32", 3, 16, 32, 1),
        ("first 3->64 32x32", 3, 64, 32, 1),
        ("thin 8x32x32", 8, 8, 32, 1),
        ("thin 10x16x16", 10, 12, 16, 1),
        ("resnet-20 16x32x32", 16, 16, 32, 1),
        ("resnet-20 32x16x16", 32, 32, 16, 1),
        ("resnet-20 64x8x8", 64, 64, 8, 1),
        ("vgg-11 128x16x16", 64, 128, 16, 1),
        ("vgg-11 512x4x4", 512, 512, 4, 1),
        ("vgg-11 512x2x2", 512, 512, 2, 1),
    ];
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9}",
        "layer", "fwd", "dX", "dW", "GFLOP"
    );
    for (name, cin, cout, hw, stride) in shapes {
        let g = ConvGeometry {
            batch: 64,
            in_channels: cin,
            in_h: hw,
            in_w: hw,
            out_channels: cout,
            kernel: [3, 3],
            stride: [stride, stride],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
        };
        let flop = 2.0 * g.output_len() as f64 * g.col_rows() as f64 / 1e9;
        let [tf, tx, tw] = time_passes(&g);
        println!(
            "{name:<22} {:>9.1} {:>9.1} {:>9.1} {:>9.3}",
            flop / tf,
            flop / tx,
            flop / tw,
            flop
        );
    }
    pointwise_layers();
    depthwise_layers();
}

/// MobileNet-V2's 1x1 layers at batch 64 (CIFAR input), GFLOP/s of each pass; the weight
/// gradient also through im2col + GEMM where `pointwise_grad.rs` takes it (same process,
/// alternating).
fn pointwise_layers() {
    println!(
        "\n{:<22} {:>9} {:>9} {:>9} {:>12}",
        "pointwise layer", "fwd", "dX", "dW", "dW by GEMM"
    );
    for (name, cin, cout, hw) in [
        ("16->96 32x32", 16, 96, 32),
        ("96->24 32x32", 96, 24, 32),
        ("24->144 32x32", 24, 144, 32),
        ("144->24 32x32", 144, 24, 32),
        ("32->192 16x16", 32, 192, 16),
        ("192->32 16x16", 192, 32, 16),
        ("64->384 8x8", 64, 384, 8),
        ("960->320 4x4", 960, 320, 4),
    ] {
        let g = ConvGeometry {
            batch: 64,
            in_channels: cin,
            in_h: hw,
            in_w: hw,
            out_channels: cout,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        let flop = 2.0 * g.output_len() as f64 * g.col_rows() as f64 / 1e9;
        let [tf, tx, tw] = time_passes(&g);
        use_pointwise_grad(false);
        let tg = time_weight_gradient(&g);
        use_pointwise_grad(true);
        println!(
            "{name:<22} {:>9.1} {:>9.1} {:>9.1} {:>12.1}",
            flop / tf,
            flop / tx,
            flop / tw,
            flop / tg
        );
    }
}

/// MobileNet-V2's depthwise 3x3 layers at batch 64 (CIFAR input): memory-bound, so time, not
/// GFLOP/s.
fn depthwise_layers() {
    println!(
        "\n{:<22} {:>9} {:>9} {:>9}",
        "depthwise layer", "fwd ms", "dX ms", "dW ms"
    );
    for (name, c, hw, stride) in [
        ("96x32x32", 96, 32, 1),
        ("144x32x32 stride 2", 144, 32, 2),
        ("192x16x16", 192, 16, 1),
        ("384x8x8", 384, 8, 1),
        ("576x8x8 stride 2", 576, 8, 2),
        ("960x4x4", 960, 4, 1),
    ] {
        let g = ConvGeometry {
            batch: 64,
            in_channels: c,
            in_h: hw,
            in_w: hw,
            out_channels: c,
            kernel: [3, 3],
            stride: [stride, stride],
            padding: [1, 1],
            dilation: [1, 1],
            groups: c,
        };
        let [tf, tx, tw] = time_passes(&g);
        println!(
            "{name:<22} {:>9.2} {:>9.2} {:>9.2}",
            tf * 1e3,
            tx * 1e3,
            tw * 1e3
        );
    }
}

/// Seconds of the forward pass, the input gradient and the weight gradient of `g`, each the
/// best of five calls on constant data.
fn time_passes(g: &ConvGeometry) -> [f64; 3] {
    let x = vec![0.5f32; g.input_len()];
    let w = vec![0.1f32; g.weight_len()];
    let mut y = vec![0.0f32; g.output_len()];
    let mut dx = vec![0.0f32; g.input_len()];
    let mut dw = vec![0.0f32; g.weight_len()];
    [
        time(&mut || conv2d_forward(g, &x, &w, Epilogue::default(), &mut y)),
        time(&mut || conv2d_backward_input(g, &y, &w, &mut dx)),
        time(&mut || conv2d_backward_weight(g, &x, &y, &mut dw)),
    ]
}

/// Seconds of the weight gradient of `g` alone, as [`time_passes`] times it.
fn time_weight_gradient(g: &ConvGeometry) -> f64 {
    let x = vec![0.5f32; g.input_len()];
    let dy = vec![0.1f32; g.output_len()];
    let mut dw = vec![0.0f32; g.weight_len()];
    time(&mut || conv2d_backward_weight(g, &x, &dy, &mut dw))
}
