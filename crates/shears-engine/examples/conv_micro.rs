//! Micro-benchmark of single Burn ops at ResNet-20 shapes, to see where training time goes.
//! Run: cargo run --release -p shears-engine --example conv_micro

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

fn time<F: FnMut()>(label: &str, mut f: F) {
    for _ in 0..3 {
        f();
    }
    let n = 20;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{label:<48} {:8.3} ms",
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
}

fn main() {
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    let dev = Device::flex();
    for (c, hw) in [(16usize, 32usize), (32, 16), (64, 8)] {
        let x: Tensor<4> = Tensor::random([64, c, hw, hw], Distribution::Normal(0.0, 1.0), &dev);
        let w: Tensor<4> = Tensor::random([c, c, 3, 3], Distribution::Normal(0.0, 0.1), &dev);
        let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        time(&format!("conv fwd 64x{c}x{hw}x{hw} 3x3"), || {
            let y = conv2d(x.clone(), w.clone(), None, opts.clone());
            let _ = y.into_data();
        });
        let ad = dev.clone().autodiff();
        let xa: Tensor<4> =
            Tensor::random([64, c, hw, hw], Distribution::Normal(0.0, 1.0), &ad).require_grad();
        let wa: Tensor<4> =
            Tensor::random([c, c, 3, 3], Distribution::Normal(0.0, 0.1), &ad).require_grad();
        time(&format!("conv fwd+bwd 64x{c}x{hw}x{hw} 3x3"), || {
            let y = conv2d(xa.clone(), wa.clone(), None, opts.clone());
            let g = y.sum().backward();
            let _ = wa.grad(&g).unwrap().into_data();
        });
        time(&format!("relu 64x{c}x{hw}x{hw}"), || {
            let _ = burn::tensor::activation::relu(x.clone()).into_data();
        });
    }
}
