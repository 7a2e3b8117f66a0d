//! The blocked-layout kernels (`blocked.rs`) against the paths the same layers take without
//! them, in one process: GFLOP/s (all nine taps counted) of the forward pass, the input
//! gradient and the weight gradient at batch 64 (or BATCH), and the largest difference between
//! the two paths relative to the largest value. Then the blocked kernels called directly on
//! every layer, at eight lanes (AVX2) beside sixteen (AVX-512). Threads follow
//! RAYON_NUM_THREADS.
//!
//! With the argument `avx2` every kernel is held to AVX2 (the first table then compares the
//! eight-lane blocked kernels with the other paths at that width; for gemm's AVX2 micro-kernels
//! too, build without its `x86-v4` feature in `crates/shears-kernels/Cargo.toml`).
//!
//! `cargo run --release -p shears-kernels --example blocked_speed`

mod common;

use common::best_of_five as time;
use shears_kernels::*;

/// Largest |a - b| over the largest |a|.
fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    let scale = a
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Forward, input gradient and weight gradient of `g`: seconds each and the outputs.
fn passes(g: &ConvGeometry, x: &[f32], w: &[f32], dy: &[f32]) -> ([f64; 3], [Vec<f32>; 3]) {
    let mut y = vec![0f32; g.output_len()];
    let mut dx = vec![0f32; g.input_len()];
    let mut dw = vec![0f32; g.weight_len()];
    let t = [
        time(&mut || conv2d_forward(g, x, w, Epilogue::default(), &mut y)),
        time(&mut || conv2d_backward_input(g, dy, w, &mut dx)),
        time(&mut || conv2d_backward_weight(g, x, dy, &mut dw)),
    ];
    (t, [y, dx, dw])
}

/// The three blocked passes of `g` at `width`: seconds each and the outputs.
fn blocked_passes(
    width: blocked::Width,
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
) -> ([f64; 3], [Vec<f32>; 3]) {
    let mut y = vec![0f32; g.output_len()];
    let mut dx = vec![0f32; g.input_len()];
    let mut dw = vec![0f32; g.weight_len()];
    let t = [
        time(&mut || blocked::forward_at(width, g, x, w, &mut y)),
        time(&mut || blocked::backward_input_at(width, g, dy, w, &mut dx)),
        time(&mut || blocked::backward_weight_at(width, g, x, dy, &mut dw)),
    ];
    (t, [y, dx, dw])
}

/// One table row: GFLOP/s of the three passes, first timing -> second, and the largest gap
/// between their outputs.
fn print_row(
    name: &str,
    gflop: f64,
    (first, want): ([f64; 3], [Vec<f32>; 3]),
    (second, got): ([f64; 3], [Vec<f32>; 3]),
) {
    let cell = |k: usize| format!("{:.0} -> {:.0}", gflop / first[k], gflop / second[k]);
    let gap = (0..3)
        .map(|k| relative_gap(&want[k], &got[k]))
        .fold(0f32, f32::max);
    println!(
        "{:<24} {:>15} {:>15} {:>15} {:>10.1e}",
        name,
        cell(0),
        cell(1),
        cell(2),
        gap
    );
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("avx2") {
        use_avx2_only(true);
    }
    let shapes = [
        ("resnet-20 16x32x32", 16, 16, 32),
        ("16x16x16", 16, 16, 16),
        ("24x16x16", 24, 24, 16),
        ("resnet-20 32x16x16", 32, 32, 16),
        ("resnet-20 64x8x8", 64, 64, 8),
        ("small-cnn 32x28x28", 32, 32, 28),
        ("small-cnn 32->64 14x14", 32, 64, 14),
        ("small-cnn 64x14x14", 64, 64, 14),
        ("vgg-16 64x32x32", 64, 64, 32),
        ("vgg-11 64->128 16x16", 64, 128, 16),
        ("vgg-11 128->256 8x8", 128, 256, 8),
        ("vgg-11 256->256 8x8", 256, 256, 8),
        ("48->80 12x12", 48, 80, 12),
    ];
    println!(
        "GFLOP/s, other paths -> blocked layout ({} thread(s), batch {}, {:?} lanes)",
        rayon::current_num_threads(),
        std::env::var("BATCH").unwrap_or_else(|_| "64".into()),
        blocked::width()
    );
    println!(
        "{:<24} {:>15} {:>15} {:>15} {:>10}",
        "layer", "forward", "input grad", "weight grad", "max gap"
    );
    let mut eight_lanes = Vec::new();
    for (name, cin, cout, hw) in shapes {
        let g = ConvGeometry {
            batch: std::env::var("BATCH").map_or(64, |b| b.parse().expect("BATCH: a batch size")),
            in_channels: cin,
            in_h: hw,
            in_w: hw,
            out_channels: cout,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
        };
        let wave = |n: usize, k: usize, s: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * k) % 1000) as f32 * s - 500.0 * s)
                .collect()
        };
        let x = wave(g.input_len(), 7919, 1e-3);
        let w = wave(g.weight_len(), 104_729, 1e-4);
        let dy = wave(g.output_len(), 15_485_863, 1e-3);
        let gflop = 2.0 * (g.weight_len() * g.out_pixels() * g.batch) as f64 / 1e9;
        use_blocked_layout(false);
        let before = passes(&g, &x, &w, &dy);
        use_blocked_layout(true);
        let after = passes(&g, &x, &w, &dy);
        print_row(name, gflop, before, after);
        eight_lanes.push((name, g, x, w, dy, gflop));
    }
    let widths = [blocked::Width::Sixteen, blocked::Width::Eight];
    if !widths.iter().all(|w| w.runs_here()) {
        println!("\n(no eight against sixteen lanes: this CPU lacks one of AVX-512F, AVX2 + FMA)");
        return;
    }
    println!("\nGFLOP/s of the blocked kernels, sixteen lanes (AVX-512) -> eight lanes (AVX2)");
    println!(
        "{:<24} {:>15} {:>15} {:>15} {:>10}",
        "layer", "forward", "input grad", "weight grad", "max gap"
    );
    for (name, g, x, w, dy, gflop) in eight_lanes {
        let sixteen = blocked_passes(widths[0], &g, &x, &w, &dy);
        let eight = blocked_passes(widths[1], &g, &x, &w, &dy);
        print_row(name, gflop, sixteen, eight);
    }
}
