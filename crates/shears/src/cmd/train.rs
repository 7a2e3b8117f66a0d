//! `shears train`: train a model and save it, its metrics and its result in a run directory.

use super::{open_run, print_json};
use crate::cli::TrainArgs;
use anyhow::Result;
use serde::Serialize;
use shears_core::artifact::save_model;
use shears_core::cost::{Convention, cost};
use shears_methods::Runtime;
use shears_methods::report::version;
use shears_methods::run_dir::run_name;
use shears_methods::steps::data::{DataSource, load_configured, write_data_record};
use shears_methods::steps::model::configured_model;
use shears_methods::steps::phase::train_phase;
use std::time::Instant;

#[derive(Serialize)]
struct TrainResult {
    version: &'static str,
    command: &'static str,
    run_dir: String,
    model: String,
    dataset: String,
    seed: u64,
    config_hash: String,
    epochs: usize,
    params: u64,
    macs: u64,
    macs_convention: &'static str,
    test_accuracy: f64,
    test_loss: f64,
    train_loss: f64,
    seconds: f64,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let cfg = args.over.resolve()?;
    shears_engine::device::set_threads_here(cfg.threads)?;
    let name = run_name(&cfg.name, "train", None, cfg.seed, &cfg.hash());
    let config = cfg.to_toml();
    let Some((dir, _lock)) = open_run(&args.run, "train", name, &config)? else {
        return Ok(());
    };
    dir.write_config(&config)?;
    let started = Instant::now();
    let data = load_configured(&cfg)?;
    write_data_record(&dir.path, &DataSource::of(&cfg), &data)?;
    let model = configured_model(&cfg, Some(&data))?;
    let (trained, rows) = train_phase(
        &Runtime::of(&cfg),
        &cfg.train,
        model,
        &data,
        &dir.phase("train"),
        args.run.resume,
    )?;
    save_model(&dir.path, &trained)?;
    let last = rows.last();
    let c = cost(&trained.graph, Convention::ConvLinear)?;
    let result = TrainResult {
        version: version(),
        command: "train",
        run_dir: dir.path.display().to_string(),
        model: cfg.model.arch.clone(),
        dataset: cfg.data.dataset.clone(),
        seed: cfg.seed,
        config_hash: cfg.hash(),
        epochs: cfg.train.epochs,
        params: c.params,
        macs: c.macs,
        macs_convention: Convention::ConvLinear.name(),
        test_accuracy: last.map_or(f64::NAN, |m| m.test_accuracy),
        test_loss: last.map_or(f64::NAN, |m| m.test_loss),
        train_loss: last.map_or(f64::NAN, |m| m.train_loss),
        seconds: started.elapsed().as_secs_f64(),
    };
    dir.write_result(&result)?;
    if args.run.json {
        print_json(&result)?;
    } else {
        println!(
            "trained {} on {} for {} epochs",
            result.model, result.dataset, result.epochs
        );
        println!(
            "  test accuracy  {:.2}%  (loss {:.4})",
            result.test_accuracy * 100.0,
            result.test_loss
        );
        println!(
            "  params {}  MACs {} ({})",
            super::thousands(result.params),
            super::thousands(result.macs),
            result.macs_convention
        );
        println!("  saved to {}", result.run_dir);
    }
    Ok(())
}
