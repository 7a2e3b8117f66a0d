//! What the profiling examples share: their arguments, a median timer, and every convolution
//! and linear layer of a graph as a kernel geometry. (Each profile is an example:
//! `cargo run --release -p shears-engine --example NAME`.)

#![allow(dead_code)] // each profile uses its own subset

use shears_core::graph::{Graph, Op};
use shears_core::shape::infer_shapes;
use shears_kernels::ConvGeometry;
use std::time::Instant;

/// As the CLI: large buffers on cache lines (`LineAligned`), so the timings are the CLI's.
#[global_allocator]
static ALLOC: shears_kernels::LineAligned = shears_kernels::LineAligned;

/// Positional argument `i`, parsed, or `default` when absent.
pub fn arg<T: std::str::FromStr>(i: usize, default: T, what: &str) -> T {
    std::env::args().nth(i).map_or(default, |a| {
        a.parse()
            .unwrap_or_else(|_| panic!("argument {i} should be {what}, got `{a}`"))
    })
}

/// An input shape argument like `3x32x32` (default `default`).
pub fn input_arg(i: usize, default: &str) -> Vec<usize> {
    std::env::args()
        .nth(i)
        .unwrap_or_else(|| default.to_string())
        .split('x')
        .map(|d| d.parse().expect("input like 3x32x32"))
        .collect()
}

/// The median of `repeats` timed calls of `f` after `warmup` untimed ones, in milliseconds.
pub fn median_ms(warmup: usize, repeats: usize, f: &mut dyn FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..repeats)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// One convolution or linear layer (a 1x1 convolution of a 1x1 map) at a given batch.
pub struct Layer {
    pub name: String,
    /// A short description: channels, map, kernel, stride.
    pub what: String,
    pub geometry: ConvGeometry,
    /// Whether it reads the network's input (whose gradient training never needs).
    pub first: bool,
}

/// Every convolution and linear layer of `graph`, in order, at `batch` images.
pub fn layers(graph: &Graph, batch: usize) -> Vec<Layer> {
    let shapes = infer_shapes(graph).expect("shapes");
    graph
        .nodes
        .iter()
        .filter_map(|node| {
            let (geometry, what) = match &node.op {
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
                        match c.groups {
                            1 => "",
                            gr if gr == c.in_channels && gr == c.out_channels => " dw",
                            _ => " g",
                        }
                    );
                    (g, what)
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
                ),
                _ => return None,
            };
            Some(Layer {
                name: node.name.clone(),
                what,
                geometry,
                first: node.inputs[0] == graph.input.name,
            })
        })
        .collect()
}
