//! What a run reports (`result.json`, `--json`): one shape for unstructured methods, one for
//! structured methods, each with accuracy before pruning, right after it and after fine-tuning.

use crate::steps::latency::LatencyRow;
use crate::steps::structured::{Accuracies, Sizes, StructuredSpec};
use serde::Serialize;

/// The report of any method.
#[derive(Debug, Clone, Serialize)]
// One per run: the size of the report does not matter.
#[allow(clippy::large_enum_variant)]
#[serde(untagged)]
pub enum Report {
    Unstructured(UnstructuredReport),
    Structured(StructuredReport),
    Dynamic(crate::methods::ftwt::FtwtReport),
}

/// `shears` version for reports.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The report of an unstructured run: masks, direct and effective sparsity.
#[derive(Debug, Clone, Serialize)]
pub struct UnstructuredReport {
    pub version: &'static str,
    pub run_dir: String,
    pub model: String,
    pub dataset: String,
    pub seed: u64,
    pub config_hash: String,
    pub method: String,
    pub allocation: String,
    pub target_kind: String,
    pub target_sparsity: f64,
    pub params: u64,
    pub nonzero_params: u64,
    pub macs: u64,
    pub macs_convention: &'static str,
    pub direct_sparsity: f64,
    pub effective_sparsity: f64,
    pub direct_compression: Option<f64>,
    pub effective_compression: Option<f64>,
    pub accuracy_before_pruning: f64,
    pub accuracy_after_pruning: f64,
    pub accuracy_after_finetune: f64,
    /// `after` training, at `init`ialisation or `gradual`; with `rewind` and `rounds`.
    pub when: String,
    pub rewind: bool,
    pub rounds: usize,
    pub train_epochs: usize,
    pub finetune_epochs: usize,
    pub seconds: f64,
    /// Direct and effective sparsity of each masked tensor of the final model.
    pub layers: Vec<shears_core::sparsity::LayerSparsity>,
}

/// The report of a structured pruning run (`result.json`, `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct StructuredReport {
    pub version: &'static str,
    pub command: &'static str,
    pub run_dir: String,
    /// The compacted model before fine-tuning.
    pub pruned_dir: String,
    pub model: String,
    pub dataset: Option<String>,
    pub seed: u64,
    /// Hash of the resolved config (`shears run`); `None` for `shears prune`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    pub spec: StructuredSpec,
    /// |γ| (or score) threshold of a percentile cut.
    pub threshold: Option<f32>,
    #[serde(flatten)]
    pub sizes: Sizes,
    #[serde(flatten)]
    pub accuracy: Accuracies,
    pub finetune_epochs: usize,
    /// Network Slimming only: accuracy of the baseline before sparsity training, λ, epochs and
    /// the share of |γ| ≤ 0.01 before and after sparsity training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slimming: Option<SlimmingReport>,
    /// MaskSparsity only: the mask, λ and what sparsity training did to masked and kept scales.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masksparsity: Option<crate::methods::masksparsity::MaskSparsityReport>,
    /// PAAM only: the scorer, the budget's steps and the learned widths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paam: Option<crate::methods::paam::PaamReport>,
    pub latency_warmup: usize,
    pub latency_repeats: usize,
    pub latency_rounds: usize,
    pub latency: Vec<LatencyRow>,
    pub seconds: f64,
}

/// What sparsity training did (Network Slimming).
#[derive(Debug, Clone, Serialize)]
pub struct SlimmingReport {
    pub lambda: f64,
    pub sparsity_epochs: usize,
    pub accuracy_baseline: Option<f64>,
    pub small_gamma_share_before: f64,
    pub small_gamma_share_after: f64,
}
