//! Times batch building: `cargo run --release -p shears-data --example loader_speed`.
//!
//! Uses synthetic CIFAR-shaped data (3x32x32) with crop (pad 4), flip and normalisation, and the
//! embedded Fashion-MNIST subset with normalisation only.

use std::time::Instant;

use shears_data::{Dataset, DatasetKind, Loader, LoaderConfig, load};

fn time_epoch(label: &str, loader: &Loader) {
    // One warm-up epoch, then the median over several.
    let mut per_batch = Vec::new();
    for epoch in 0..6 {
        let start = Instant::now();
        let mut n = 0;
        for batch in loader.epoch(epoch) {
            std::hint::black_box(&batch);
            n += 1;
        }
        if epoch > 0 {
            per_batch.push(start.elapsed().as_secs_f64() / n as f64);
        }
    }
    per_batch.sort_by(f64::total_cmp);
    println!(
        "{label}: {} batches of {}, median {:.1} us per batch",
        loader.num_batches(),
        loader.config().batch_size,
        per_batch[per_batch.len() / 2] * 1e6
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = 10_000;
    let images: Vec<u8> = (0..n * 3072).map(|i| (i * 7 % 251) as u8).collect();
    let labels: Vec<u16> = (0..n).map(|i| (i % 10) as u16).collect();
    let cifar = Dataset::new("synthetic-cifar", images, [3, 32, 32], labels, 10)?;
    let norm = DatasetKind::Cifar10
        .published_normalization()
        .ok_or("CIFAR-10 has published constants")?;
    let cfg = LoaderConfig::train(128, 0)
        .normalized(norm)
        .augmented(4, true);
    time_epoch("3x32x32 crop+flip+normalise", &Loader::new(&cifar, cfg)?);

    let start = Instant::now();
    let subset = load(DatasetKind::FashionMnistSubset, None)?;
    println!(
        "embedded subset decoded in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let cfg = LoaderConfig::train(128, 0).normalized(subset.normalization.clone());
    time_epoch("1x28x28 normalise", &Loader::new(&subset.train, cfg)?);
    Ok(())
}
