//! What a run reports (`result.json`, `--json`): one shape per kind of method (unstructured,
//! structured, dynamic), each with accuracy before pruning, right after it and after fine-tuning.
//! What only one method measures is that method's own [`MethodDetails`]: this module knows no
//! method.

use crate::steps::latency::LatencyRow;
use crate::steps::structured::{Accuracies, Sizes, StructuredSpec};
use serde::Serialize;
use serde::ser::SerializeMap;
use shears_core::sparsity::SparsityReport;
use std::sync::Arc;

/// The report of any method.
#[derive(Debug, Clone, Serialize)]
// One per run: the size of the report does not matter.
#[allow(clippy::large_enum_variant)]
#[serde(untagged)]
pub enum Report {
    Unstructured(UnstructuredReport),
    Structured(StructuredReport),
    Dynamic(DynamicReport),
    /// `shears prune` with an unstructured method: the masked model's sparsity, no training.
    OneShot(UnstructuredPruneReport),
}

/// A method's own part of a report: its fields (under `key` in `result.json`) and the lines
/// the printed report shows for them. The method builds both; the report only carries them,
/// serialising the method's own type as it is (its field order kept).
#[derive(Clone)]
pub struct MethodDetails {
    pub key: &'static str,
    pub value: Arc<dyn erased_serde::Serialize + Send + Sync>,
    pub lines: Vec<String>,
}

impl MethodDetails {
    /// `details` serialised under `key`, printed as `lines`.
    pub fn new<T: Serialize + Send + Sync + 'static>(
        key: &'static str,
        details: T,
        lines: Vec<String>,
    ) -> Self {
        MethodDetails {
            key,
            value: Arc::new(details),
            lines,
        }
    }
}

impl std::fmt::Debug for MethodDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodDetails")
            .field("key", &self.key)
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl Serialize for MethodDetails {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.key, &*self.value)?;
        map.end()
    }
}

/// The report of a dynamic method (FTWT): the method's own report, serialised flat as it is,
/// and its printed lines.
#[derive(Clone)]
pub struct DynamicReport {
    pub value: Arc<dyn erased_serde::Serialize + Send + Sync>,
    pub lines: Vec<String>,
}

impl DynamicReport {
    /// `report` serialised as it is, printed as `lines`.
    pub fn new<T: Serialize + Send + Sync + 'static>(report: T, lines: Vec<String>) -> Self {
        DynamicReport {
            value: Arc::new(report),
            lines,
        }
    }
}

impl std::fmt::Debug for DynamicReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicReport")
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl Serialize for DynamicReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

/// A count with thousands separators (`18,289,792`), as the printed reports show counts.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A share as a percentage with two decimals (`83.90%`), `-` when there is none.
pub fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

/// The report of an unstructured one-shot prune (`shears prune`).
#[derive(Debug, Clone, Serialize)]
pub struct UnstructuredPruneReport {
    /// `prune`: which command wrote the run directory.
    pub command: &'static str,
    pub model: String,
    /// `init` for a zoo model with fresh weights, `saved` for a loaded model.
    pub pruned_at: &'static str,
    pub method: String,
    pub allocation: String,
    pub target_kind: String,
    /// Target sparsity.
    pub target: f64,
    pub target_compression: f64,
    pub apply_effective: bool,
    pub seed: u64,
    /// Effective-sparsity evaluations of the target search.
    pub evaluations: usize,
    pub seconds: f64,
    pub run_dir: String,
    #[serde(flatten)]
    pub report: SparsityReport,
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
    /// What `round_to = "auto"` timed and chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounding: Option<crate::steps::rounding::RoundingChoice>,
    /// What a latency target's search timed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_search: Option<crate::steps::rounding::LatencySearch>,
    #[serde(flatten)]
    pub sizes: Sizes,
    #[serde(flatten)]
    pub accuracy: Accuracies,
    pub finetune_epochs: usize,
    /// What the method itself measured (Network Slimming's sparsity training, MaskSparsity's
    /// mask, PAAM's learned widths), under the method's key.
    #[serde(flatten)]
    pub details: Option<MethodDetails>,
    pub latency_warmup: usize,
    pub latency_repeats: usize,
    pub latency_rounds: usize,
    pub latency: Vec<LatencyRow>,
    /// What the latency time budget changed (measurements shortened or skipped, and why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_notes: Vec<String>,
    /// `measured with <libonnxruntime>` when each latency row has its onnxruntime column, or
    /// why it has none; absent when latency was not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime: Option<String>,
    pub seconds: f64,
}
