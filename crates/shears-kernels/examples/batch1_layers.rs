//! Microseconds per layer at batch 1 on one thread, for the 3x3 layers of VGG-11 and ResNet-20
//! on a 1x28x28 input (the shapes FTWT's dynamic inference runs image by image), through
//! `conv2d_forward` (whichever kernel it picks) and through `conv3x3_selected`:
//! `cargo run --release -p shears-kernels --example batch1_layers`.

use shears_kernels::*;
use std::time::Instant;

/// As the CLI: large buffers on cache lines (`LineAligned`), so the timings are the CLI's.
#[global_allocator]
static ALLOC: LineAligned = LineAligned;

fn median_us(f: &mut dyn FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    let mut t: Vec<f64> = (0..51)
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
    let shapes = [
        ("resnet-20 16x28x28", 16, 16, 28, 1),
        ("resnet-20 16->32 28x28 /2", 16, 32, 28, 2),
        ("resnet-20 32->64 14x14 /2", 32, 64, 14, 2),
        ("resnet-20 32x14x14", 32, 32, 14, 1),
        ("resnet-20 64x7x7", 64, 64, 7, 1),
        ("vgg-11 64->128 14x14", 64, 128, 14, 1),
        ("vgg-11 128->256 7x7", 128, 256, 7, 1),
        ("vgg-11 256->256 7x7", 256, 256, 7, 1),
        ("vgg-11 256->512 3x3", 256, 512, 3, 1),
        ("vgg-11 512->512 3x3", 512, 512, 3, 1),
        ("vgg-11 512->512 1x1", 512, 512, 1, 1),
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!(
        "{:<24} {:>10} {:>10} {:>8} {:>12} {:>14}",
        "layer", "MACs", "conv us", "GMAC/s", "selected us", "3/4 x 3/4 us"
    );
    pool.install(|| {
        for (name, ci, co, hw, stride) in shapes {
            let g = ConvGeometry {
                batch: 1,
                in_channels: ci,
                in_h: hw,
                in_w: hw,
                out_channels: co,
                kernel: [3, 3],
                stride: [stride, stride],
                padding: [1, 1],
                dilation: [1, 1],
                groups: 1,
            };
            let x: Vec<f32> = (0..g.input_len()).map(|i| (i % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..g.weight_len()).map(|i| (i % 5) as f32 * 0.01).collect();
            let b = vec![0.1f32; co];
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
            let out_hw = hw.div_ceil(stride);
            let macs = (ci * co * 9 * out_hw * out_hw) as f64;
            // Every filter and channel through the selected kernel, then three in four of each.
            let selected = |filters: &[usize], channels: &[usize]| {
                let xs = &x[..channels.len() * hw * hw];
                let mut ys = vec![0f32; filters.len() * out_hw * out_hw];
                median_us(&mut || {
                    conv3x3_selected(
                        Selection {
                            weight: &w,
                            bias: &b,
                            in_channels: ci,
                            filters,
                            channels,
                        },
                        hw,
                        hw,
                        stride,
                        xs,
                        true,
                        &mut ys,
                    )
                })
            };
            let (all_f, all_c): (Vec<usize>, Vec<usize>) = ((0..co).collect(), (0..ci).collect());
            let every = selected(&all_f, &all_c);
            let f34: Vec<usize> = (0..co).filter(|f| f % 4 != 1).collect();
            let c34: Vec<usize> = (0..ci).filter(|c| c % 4 != 2).collect();
            let gated = selected(&f34, &c34);
            println!(
                "{:<24} {:>10.0} {:>10.1} {:>8.1} {:>12.1} {:>14.1}",
                name,
                macs,
                us,
                macs / us / 1e3,
                every,
                gated
            );
        }
    });
}
