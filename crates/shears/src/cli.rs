//! Command-line definitions (clap derive). Every option that also exists in the config file
//! overrides it.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use shears_core::cost::Convention;
use shears_core::structured::{Normalization, Scope};
use shears_methods::config::{ExperimentConfig, TrainSection};
use shears_methods::steps::latency::LatencySettings;
use shears_methods::steps::rounding::{RoundTo, TargetRuntime};
use shears_methods::steps::structured::{
    Importance, StructuredOptions, parse_convention, parse_normalization, parse_scope,
};
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
    /// The whole pipeline for any method (`[method] name = ...`, see `inspect --methods`):
    /// train, prune, fine-tune, and report accuracy before pruning, right after it and after
    /// fine-tuning, with params, MACs, direct/effective sparsity or measured latency.
    Run(RunArgs),
    /// Prune a zoo model at initialisation or a saved (trained) model: unstructured masks
    /// (direct and effective sparsity reported, masked model saved) or structured channel
    /// pruning (the model compacted; params, MACs, accuracy and latency reported).
    Prune(PruneArgs),
    /// Evaluate a saved model on a data set's test split.
    Eval(EvalArgs),
    /// Per-layer table of a model: op, output shape, params, MACs, direct and effective sparsity.
    Inspect(InspectArgs),
    /// Measure inference (and training) latency: warm-up, repeats, median, p90.
    Bench(BenchArgs),
    /// Import an ONNX CNN (Conv, BatchNormalization, Relu, pools, Flatten, Gemm/MatMul, Add,
    /// Concat...) with its weights as a model directory; every `--model` also takes an .onnx
    /// file directly.
    Import(ImportArgs),
    /// Export a saved model (dense, masked or compacted) or an ONNX file to ONNX (opset 17,
    /// dynamic batch axis; masks applied to the weights).
    Export(ExportArgs),
    /// Network Slimming end to end: train, train with L1 on BatchNorm scales, prune channels at
    /// a global |γ| percentile, compact, fine-tune; report accuracy, params, MACs and latency.
    Slim(SlimArgs),
    /// Run a grid of experiments (methods x targets x seeds x any config key) from one sweep
    /// file: local worker processes or a Slurm job array; finished runs are skipped, interrupted
    /// ones resume; writes a results table (CSV, markdown) with mean ± std over seeds.
    Sweep(SweepArgs),
    /// Write one self-contained HTML page of a runs directory: the results table and plots of
    /// accuracy against compression, MACs and latency, per-layer widths or sparsities, and
    /// training curves.
    Report(ReportArgs),
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The sweep file: an experiment config with a `[sweep.grid]` table.
    pub file: PathBuf,
    /// Where the runs go (default: runs/<sweep name>).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Local worker processes (default: `[sweep] workers`, else 1).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Submit the runs as a Slurm job array (`sbatch`) instead of running them here.
    #[arg(long, conflicts_with = "status")]
    pub slurm: bool,
    /// Show each run's state (pending, running, done, failed) and rewrite the results tables.
    #[arg(long)]
    pub status: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A runs directory (a sweep's, or any folder holding run directories).
    pub runs_dir: PathBuf,
    /// The HTML file to write (default: RUNS_DIR/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Page title (default: the runs directory's name).
    #[arg(long)]
    pub title: Option<String>,
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
    /// fashion-mnist-subset (embedded), fashion-mnist, mnist, cifar10, cifar100, or
    /// image-folder (your own images: --data DIR with train/CLASS/*.png|jpg and test/CLASS/...).
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
    /// Exact run directory (default: `RUNS_DIR/<name>-<method>-<target>-s<seed>-<hash>`).
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
    /// Pruning sparsity (overrides `[prune]` sparsity).
    #[arg(long)]
    pub sparsity: Option<f64>,
    /// Method (overrides `[method]` name, or `[prune]` method for an unstructured one).
    #[arg(long, help = method_help("Method (overrides [method] name, or [prune] method)"))]
    pub method: Option<String>,
    /// Fine-tuning epochs (overrides `[finetune]` epochs).
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Zoo model name (pruned at initialisation) or directory of a saved model (pruned as
    /// saved, e.g. trained; its existing masks stay).
    #[arg(long)]
    pub model: String,
    /// Per-sample input shape for zoo models (default: the data set's, else 1x28x28).
    #[arg(long)]
    pub input: Option<String>,
    #[arg(long)]
    pub classes: Option<usize>,
    /// Pruning method, unstructured (masks) or structured (channels removed, model compacted).
    #[arg(long, default_value = "magnitude", help = method_help("Pruning method"))]
    pub method: String,
    /// Fraction of conv and linear weights to remove, in [0, 1).
    /// (Unstructured methods need this or --compression; structured ones take their own targets.)
    #[arg(long, conflicts_with = "compression")]
    pub sparsity: Option<f64>,
    /// Compression ratio 1/(1 - sparsity), e.g. 100 for sparsity 0.99.
    #[arg(long)]
    pub compression: Option<f64>,
    /// Layer quota (uniform, uniform+, er, erk, erk-es, igq); without it the ranking is global.
    #[arg(long)]
    pub quota: Option<String>,
    /// direct (fraction of weights removed) or effective (fraction of weights on no
    /// input→output path).
    #[arg(long, default_value = "direct")]
    pub target_kind: String,
    /// Also zero the unpruned weights on no input→output path (save the effective masks).
    #[arg(long)]
    pub apply_effective: bool,
    /// Allow a layer to lose all its weights (by default each layer keeps its best weight).
    #[arg(long)]
    pub allow_collapse: bool,
    /// Data set for snip and grasp scores and for fine-tuning (default fashion-mnist-subset,
    /// embedded; image-folder reads --data DIR/train/CLASS/*.png|jpg at the model's input size).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory holding the data set's files.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Training batches that snip and grasp average over.
    #[arg(long, default_value_t = 10)]
    pub score_batches: usize,
    #[arg(long, default_value_t = 128)]
    pub score_batch_size: usize,
    /// SynFlow pruning rounds (exponential schedule).
    #[arg(long, default_value_t = 100)]
    pub synflow_rounds: usize,
    /// GraSP logit temperature.
    #[arg(long, default_value_t = 200.0)]
    pub temperature: f64,
    /// Seeds zoo weights, random scores and the scoring batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// flex (CPU), cuda or wgpu (when built with those features).
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Replace a run directory that holds another command's result or a saved model (refused
    /// without it).
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
    /// Options of the structured methods.
    #[command(flatten)]
    pub structured: StructuredArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Directory of a saved model (a run directory).
    #[arg(long)]
    pub model: PathBuf,
    /// A data set name (see `shears train --help`); image-folder takes the model's input size.
    #[arg(long, default_value = "fashion-mnist-subset")]
    pub dataset: String,
    /// Directory holding the data set's files.
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
    #[arg(long, required_unless_present_any = ["list", "methods"])]
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
    /// List the pruning methods (name, kind, description).
    #[arg(long)]
    pub methods: bool,
    #[arg(long)]
    pub json: bool,
    /// Also list the channel dependency groups (unprunable ones with their reason).
    #[arg(long)]
    pub groups: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Zoo model name or directory of a saved model.
    #[arg(long, required_unless_present = "dynamic")]
    pub model: Option<String>,
    /// The run directory of a finished FTWT run: its dynamic inference (only the filters each
    /// test image's heads switch on) against the same network dense, on the run's test images.
    #[arg(long, conflicts_with_all = ["model", "train"])]
    pub dynamic: Option<std::path::PathBuf>,
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
    /// Convolution and BatchNorm on flex: `ours` (shears-kernels) or `burn` (Burn's own ops,
    /// to compare).
    #[arg(long, default_value = "ours")]
    pub kernels: shears_engine::fast_ops::Kernels,
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
        shears_methods::registry::check(&c)?;
        Ok(c)
    }
}

/// Options of `shears prune` for the structured methods (l1-filter, l2-filter, bn-scale,
/// random-filter, taylor, slimming): channels are removed and the model compacted.
#[derive(Args, Debug, Clone)]
pub struct StructuredArgs {
    /// Structured target: fraction of the prunable groups' channels to remove.
    #[arg(long)]
    pub channel_ratio: Option<f64>,
    /// Structured target: fraction of the trainable parameters to remove.
    #[arg(long)]
    pub params_reduction: Option<f64>,
    /// Structured target: fraction of the MACs to remove (under --convention).
    #[arg(long)]
    pub macs_reduction: Option<f64>,
    /// Structured target: fraction of the batch-1, one-thread latency to remove, measured in
    /// --latency-runtime.
    #[arg(long)]
    pub latency_reduction: Option<f64>,
    /// Where --round-to auto and --latency-reduction time candidates: onnxruntime or shears
    /// (default: onnxruntime when it is available, else shears).
    #[arg(long, value_parser = runtime_arg)]
    pub latency_runtime: Option<TargetRuntime>,
    /// Network Slimming cut: remove channels scoring at or below this global percentile (0..1).
    #[arg(long)]
    pub percentile: Option<f64>,
    /// Channel importance: l1, l2, bn-scale, random or taylor (default: the method's).
    #[arg(long, value_parser = importance_arg)]
    pub importance: Option<Importance>,
    /// global (one ranking of all channels) or per-layer (the same share in every group).
    #[arg(long, default_value = "global", value_parser = scope_arg)]
    pub scope: Scope,
    /// Per-group score normalisation: none, mean, max, sum (default: mean if global, else none).
    #[arg(long, value_parser = normalization_arg)]
    pub normalize: Option<Normalization>,
    /// l1/l2 importance: also count the consumers' input slices.
    #[arg(long)]
    pub include_consumers: bool,
    /// Round every group's kept channel count up to a multiple of this; `auto` times the
    /// multiples 1 to 32 in the target runtime and keeps the fastest.
    #[arg(long, default_value = "auto", value_parser = round_to_arg)]
    pub round_to: RoundTo,
    /// Largest fraction of one group's channels that may be removed.
    #[arg(long, default_value_t = 1.0)]
    pub max_layer_ratio: f64,
    /// Node names or op kinds (conv2d, linear) whose output channels stay, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub ignore: Vec<String>,
    /// MACs convention of --macs-reduction: conv+linear or all-ops.
    #[arg(long, default_value = "conv+linear", value_parser = convention_arg)]
    pub convention: Convention,
    /// Fine-tune the compacted model for this many epochs.
    #[arg(long, default_value_t = 0)]
    pub finetune_epochs: usize,
    #[arg(long, default_value_t = 0.01)]
    pub finetune_lr: f64,
    /// Batch size of fine-tuning.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Fine-tune on the first N training samples only.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test samples only.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Skip accuracy and data (e.g. a 3x32x32 zoo model pruned for its size and latency).
    #[arg(long)]
    pub no_eval: bool,
    /// Also save here the dense model with the removed channels zeroed (equivalent to the
    /// compacted one).
    #[arg(long)]
    pub save_masked: Option<PathBuf>,
    #[command(flatten)]
    pub latency: LatencyArgs,
}

/// How the dense and the compacted model are timed.
#[derive(Args, Debug, Clone)]
pub struct LatencyArgs {
    /// Batch sizes of the latency measurement, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 64])]
    pub latency_batches: Vec<usize>,
    /// Thread counts of the latency measurement, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 2])]
    pub latency_threads: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    pub latency_warmup: usize,
    /// Timed runs per round.
    #[arg(long, default_value_t = 10)]
    pub latency_repeats: usize,
    /// Rounds alternating dense and compacted; each reports its best round's median.
    #[arg(long, default_value_t = 2)]
    pub latency_rounds: usize,
    /// Seconds one batch size and thread count may take; slower models get fewer repeats
    /// and rounds, and batch sizes above 1 that cannot fit are skipped (said in the report).
    /// 0: no budget.
    #[arg(long, default_value_t = shears_methods::steps::latency::DEFAULT_BUDGET_S)]
    pub latency_budget: f64,
    /// Do not measure latency.
    #[arg(long)]
    pub no_latency: bool,
}

/// Options of `shears slim` (Network Slimming).
#[derive(Args, Debug)]
pub struct SlimArgs {
    #[command(flatten)]
    pub over: Overrides,
    #[command(flatten)]
    pub run: RunOptions,
    /// L1 strength on the BatchNorm scales during sparsity training.
    #[arg(long, default_value_t = 1e-4)]
    pub lambda: f64,
    /// Epochs of sparsity training.
    #[arg(long, default_value_t = 2)]
    pub sparsity_epochs: usize,
    /// Learning rate of sparsity training (default: the training lr).
    #[arg(long)]
    pub sparsity_lr: Option<f64>,
    /// Remove channels whose |γ| is at or below this global percentile (0..1).
    #[arg(long, default_value_t = 0.5)]
    pub percentile: f64,
    #[arg(long, default_value_t = 1)]
    pub finetune_epochs: usize,
    /// Learning rate of fine-tuning (default: `[finetune]` lr, else the training lr / 10).
    #[arg(long)]
    pub finetune_lr: Option<f64>,
    /// Round every group's kept channel count up to a multiple of this; `auto` times the
    /// multiples 1 to 32 in onnxruntime (else shears' engine) and keeps the fastest.
    #[arg(long, default_value = "auto", value_parser = round_to_arg)]
    pub round_to: RoundTo,
    /// Node names or op kinds whose output channels stay, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub ignore: Vec<String>,
    #[command(flatten)]
    pub latency: LatencyArgs,
}

fn importance_arg(s: &str) -> std::result::Result<Importance, String> {
    s.parse()
        .map_err(|e: shears_methods::MethodError| e.to_string())
}
fn round_to_arg(s: &str) -> std::result::Result<RoundTo, String> {
    s.parse()
        .map_err(|e: shears_methods::MethodError| e.to_string())
}
fn runtime_arg(s: &str) -> std::result::Result<TargetRuntime, String> {
    s.parse()
        .map_err(|e: shears_methods::MethodError| e.to_string())
}
fn scope_arg(s: &str) -> std::result::Result<Scope, String> {
    parse_scope(s).map_err(|e| e.to_string())
}
fn normalization_arg(s: &str) -> std::result::Result<Normalization, String> {
    parse_normalization(s).map_err(|e| e.to_string())
}
fn convention_arg(s: &str) -> std::result::Result<Convention, String> {
    parse_convention(s).map_err(|e| e.to_string())
}

/// `what`, then the registered methods by kind (help texts list from the registry).
fn method_help(what: &str) -> String {
    use shears_methods::registry::{MethodKind, names};
    format!(
        "{what}. Unstructured: {}. Structured: {}. Dynamic: {}",
        names(MethodKind::Unstructured).join(", "),
        names(MethodKind::Structured).join(", "),
        names(MethodKind::Dynamic).join(", ")
    )
}

impl StructuredArgs {
    /// The method options these flags give (Taylor's scoring batches are `shears prune`'s).
    pub fn options(&self) -> StructuredOptions {
        StructuredOptions {
            channel_ratio: self.channel_ratio,
            params_reduction: self.params_reduction,
            macs_reduction: self.macs_reduction,
            latency_reduction: self.latency_reduction,
            latency_runtime: self.latency_runtime,
            percentile: self.percentile,
            importance: self.importance,
            scope: self.scope,
            normalize: self.normalize,
            include_consumers: self.include_consumers,
            round_to: self.round_to,
            max_layer_ratio: self.max_layer_ratio,
            ignore: self.ignore.clone(),
            convention: self.convention,
            ..StructuredOptions::default()
        }
    }

    /// The fine-tuning phase these flags describe, checked.
    pub fn finetune_section(&self) -> Result<TrainSection> {
        let section = TrainSection {
            epochs: self.finetune_epochs,
            batch_size: self.batch_size,
            lr: self.finetune_lr,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            ..TrainSection::default()
        };
        section.validate("finetune")?;
        Ok(section)
    }
}

impl LatencyArgs {
    /// The latency settings these flags give.
    pub fn settings(&self) -> LatencySettings {
        LatencySettings {
            enabled: !self.no_latency,
            batches: self.latency_batches.clone(),
            threads: self.latency_threads.clone(),
            warmup: self.latency_warmup,
            repeats: self.latency_repeats,
            rounds: self.latency_rounds,
            budget_s: self.latency_budget,
        }
    }
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The ONNX file.
    pub file: PathBuf,
    /// The model directory to write (graph.json + weights.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a directory that already holds a model or a run's result (refused without it).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A saved model directory (or an ONNX file).
    pub model: PathBuf,
    /// The ONNX file to write.
    pub out: PathBuf,
}
