//! Command-line definitions (clap derive). Every option that also exists in the config file
//! overrides it.

use crate::config::ExperimentConfig;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "shears",
    version,
    about = "Prune neural networks and prove what the pruning bought"
)]
pub struct Cli {
    /// Log more (-v: debug) or only warnings (-q).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model (zoo name or saved model) and save it with its metrics in a run directory.
    Train(TrainArgs),
    /// The whole pipeline: train, prune, fine-tune, and report accuracy before pruning, right
    /// after it and after fine-tuning, with params, MACs and direct/effective sparsity.
    Run(RunArgs),
    /// Prune a trained model (unstructured masks) and save the masked model.
    Prune(PruneArgs),
    /// Evaluate a saved model on a data set's test split.
    Eval(EvalArgs),
    /// Per-layer table of a model: op, output shape, params, MACs, direct and effective sparsity.
    Inspect(InspectArgs),
    /// Measure inference (and training) latency: warm-up, repeats, median, p90.
    Bench(BenchArgs),
}

/// Options shared by commands that train.
#[derive(Args, Debug, Clone, Default)]
pub struct Overrides {
    /// Experiment config (TOML); command-line options override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Zoo model name or directory of a saved model.
    #[arg(long)]
    pub model: Option<String>,
    /// Per-sample input shape, e.g. 1x28x28 (default: the data set's).
    #[arg(long)]
    pub input: Option<String>,
    #[arg(long)]
    pub classes: Option<usize>,
    /// fashion-mnist-subset (embedded), fashion-mnist, mnist, cifar10, cifar100.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory holding the data set's files.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Train on the first N training samples only.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test samples only.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// flex (CPU), cuda or wgpu (when built with those features).
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Name of the experiment (run directory prefix).
    #[arg(long)]
    pub name: Option<String>,
}

/// Where and how a run is written.
#[derive(Args, Debug, Clone, Default)]
pub struct RunOptions {
    /// Exact run directory (default: RUNS_DIR/<name>-<method>-<target>-s<seed>-<hash>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Continue an interrupted run from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start over even if the run directory holds a finished or interrupted run.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object on stdout instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub over: Overrides,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub over: Overrides,
    #[command(flatten)]
    pub run: RunOptions,
    /// Pruning sparsity (overrides [prune] sparsity).
    #[arg(long)]
    pub sparsity: Option<f64>,
    /// Pruning method: magnitude, random, lamp.
    #[arg(long)]
    pub method: Option<String>,
    /// Fine-tuning epochs (overrides [finetune] epochs).
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Zoo model name (pruned at initialisation) or directory of a saved model.
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub input: Option<String>,
    #[arg(long)]
    pub classes: Option<usize>,
    /// magnitude, random or lamp.
    #[arg(long, default_value = "magnitude")]
    pub method: String,
    /// Fraction of conv and linear weights to remove.
    #[arg(long)]
    pub sparsity: f64,
    /// Layer quota (uniform, uniform+, er, erk, igq); without it the ranking is global.
    #[arg(long)]
    pub quota: Option<String>,
    /// direct or effective.
    #[arg(long, default_value = "direct")]
    pub target_kind: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Directory of a saved model (a run directory).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value = "fashion-mnist-subset")]
    pub dataset: String,
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub test_limit: Option<usize>,
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Zoo model name or directory of a saved model.
    #[arg(long, required_unless_present = "list")]
    pub model: Option<String>,
    /// Per-sample input shape for zoo models, e.g. 3x32x32.
    #[arg(long, default_value = "1x28x28")]
    pub input: String,
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// MACs counting convention: conv+linear or all-ops.
    #[arg(long, default_value = "conv+linear")]
    pub convention: String,
    /// List the zoo models.
    #[arg(long)]
    pub list: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Zoo model name or directory of a saved model.
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value = "1x28x28")]
    pub input: String,
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 64])]
    pub batch: Vec<usize>,
    /// Thread counts, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 2])]
    pub threads: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Also measure training steps (SGD, momentum 0.9).
    #[arg(long)]
    pub train: bool,
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
}

impl Overrides {
    /// The config file (or defaults) with command-line values applied, validated.
    pub fn resolve(&self) -> Result<ExperimentConfig> {
        let mut c = match &self.config {
            Some(p) => ExperimentConfig::from_file(p)?,
            None => ExperimentConfig::default(),
        };
        if let Some(v) = &self.name {
            c.name = v.clone();
        }
        if let Some(v) = &self.model {
            c.model.arch = v.clone();
        }
        if let Some(v) = &self.input {
            c.model.input = Some(v.clone());
        }
        if let Some(v) = self.classes {
            c.model.classes = Some(v);
        }
        if let Some(v) = &self.dataset {
            c.data.dataset = v.clone();
        }
        if let Some(v) = &self.data {
            c.data.dir = Some(v.clone());
        }
        if let Some(v) = self.epochs {
            c.train.epochs = v;
        }
        if let Some(v) = self.batch_size {
            c.train.batch_size = v;
        }
        if let Some(v) = self.lr {
            c.train.lr = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if let Some(v) = self.train_limit {
            c.train.train_limit = Some(v);
            if let Some(f) = &mut c.finetune {
                f.train_limit = Some(v);
            }
        }
        if let Some(v) = self.test_limit {
            c.train.test_limit = Some(v);
            if let Some(f) = &mut c.finetune {
                f.test_limit = Some(v);
            }
        }
        if let Some(v) = &self.device {
            c.device = v.clone();
        }
        if let Some(v) = self.threads {
            c.threads = Some(v);
        }
        c.validate()?;
        Ok(c)
    }
}
