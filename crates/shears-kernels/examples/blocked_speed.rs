//! Blocked-layout 3x3 kernels against the current paths, GFLOP/s (threads: RAYON_NUM_THREADS).
use shears_kernels::*;
use std::time::Instant;

fn time(f: &mut dyn FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let shapes = [
        ("resnet-20 16x32x32", 16, 16, 32),
        ("resnet-20 32x16x16", 32, 32, 16),
        ("resnet-20 64x8x8", 64, 64, 8),
        ("vgg-11 64->128 16x16", 64, 128, 16),
        ("vgg-11 128->256 8x8", 128, 256, 8),
        ("vgg-11 256->256 8x8", 256, 256, 8),
        ("vgg-11 256->512 4x4", 256, 512, 4),
        ("wide 64x32x32", 64, 64, 32),
        ("128x16x16", 128, 128, 16),
        ("odd 48->80 12x12", 48, 80, 12),
    ];
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "layer", "fwd", "blk fwd", "dX", "blk dX", "max diff"
    );
    println!("(then dW, blk dW, diff)");
    for (name, cin, cout, hw) in shapes {
        let g = ConvGeometry {
            batch: 64,
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
        let x: Vec<f32> = (0..g.input_len())
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..g.weight_len())
            .map(|i| ((i * 104729) % 1000) as f32 / 10000.0 - 0.05)
            .collect();
        let mut y = vec![0f32; g.output_len()];
        let mut y2 = vec![0f32; g.output_len()];
        let mut dx = vec![0f32; g.input_len()];
        let mut dx2 = vec![0f32; g.input_len()];
        let flop = 2.0 * (g.weight_len() * g.out_pixels() * g.batch) as f64 / 1e9;
        let f = time(&mut || conv2d_forward(&g, &x, &w, Epilogue::default(), &mut y));
        let fb = time(&mut || blocked::forward(&g, &x, &w, &mut y2));
        let d = time(&mut || conv2d_backward_input(&g, &y, &w, &mut dx));
        let db = time(&mut || blocked::backward_input(&g, &y, &w, &mut dx2));
        let diff = y
            .iter()
            .zip(&y2)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
            .max(
                dx.iter()
                    .zip(&dx2)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max),
            );
        println!(
            "{:<24} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>10.2e}",
            name,
            flop / f,
            flop / fb,
            flop / d,
            flop / db,
            diff
        );
        let mut dw = vec![0f32; g.weight_len()];
        let mut dw2 = vec![0f32; g.weight_len()];
        let ww = time(&mut || conv2d_backward_weight(&g, &x, &y, &mut dw));
        let wb = time(&mut || blocked::backward_weight(&g, &x, &y, &mut dw2));
        let scale = dw.iter().map(|a| a.abs()).fold(0f32, f32::max);
        let dd = dw
            .iter()
            .zip(&dw2)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
            / scale;
        println!(
            "{:<24} {:>8.1} {:>8.1} {:>10.2e}",
            "",
            flop / ww,
            flop / wb,
            dd
        );
    }
}
