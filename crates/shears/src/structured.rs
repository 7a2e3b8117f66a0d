//! Structured (channel) pruning as the commands use it: importance → selection (to a target or
//! Network Slimming's percentile threshold) → physical compaction → optional fine-tuning → a
//! report with accuracy at every stage, params and MACs before and after, and the *measured*
//! latency of the dense and the compacted model.
//!
//! `shears prune --method l1-filter|l2-filter|bn-scale|random-filter|taylor|slimming` lands in
//! [`prune`]; `shears slim` (Network Slimming from sparsity training on) reuses [`compact_and_report`].
//! The saved artifact is the *compacted* model, a normal model directory.

use crate::cli::{LatencyArgs, PruneArgs, StructuredArgs};
use crate::cmd::{print_json, thousands, version};
use crate::config::{ExperimentConfig, TrainSection};
use crate::run_dir::{RunDir, run_name};
use crate::workflow::{eval_model, executor, load_data, load_or_build, train_phase};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};
use shears_core::artifact::{Model, save_model};
use shears_core::cost::{Convention, cost};
use shears_core::graph::{Graph, ParamKind};
use shears_core::structured::{
    ChannelGroup, ChannelSelection, Criterion, GroupScores, ImportanceOptions, MemberRole,
    Normalization, Reduction, Scope, SelectOptions, StructuredTarget, channel_groups, compact,
    compact_masks, importance, importance_from_node_scores, percentile_threshold,
    select_below_threshold, select_channels, selection_gates,
};
use shears_data::DataSplits;
use shears_engine::device::device_by_name;
use shears_engine::latency::{BenchSettings, Latency, inference_latency};
use shears_engine::taylor::{TaylorOptions, taylor_node_scores};
use shears_engine::{Executor, evaluate};
use std::path::Path;
use std::time::Instant;

/// The structured methods of `shears prune`.
pub const METHODS: &[&str] = &[
    "l1-filter",
    "l2-filter",
    "bn-scale",
    "random-filter",
    "taylor",
    "slimming",
];

/// Channel importance criteria, as `--importance` accepts them.
pub const IMPORTANCES: &[&str] = &["l1", "l2", "bn-scale", "random", "taylor"];

/// True for the methods [`prune`] handles.
pub fn is_structured_method(method: &str) -> bool {
    METHODS.contains(&method)
}

/// How channels are cut once scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Cut {
    /// Select the fewest channels that reach the target (channel ratio, params or MACs).
    ChannelRatio(f64),
    ParamsReduction(f64),
    MacsReduction(f64),
    /// Network Slimming: remove every channel scoring at or below the global `p` percentile.
    Percentile(f64),
}

/// Everything that decides which channels go, resolved and validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StructuredSpec {
    pub method: String,
    pub importance: String,
    pub cut: Cut,
    /// `global` or `per-layer`.
    pub scope: String,
    /// `none`, `mean`, `max` or `sum`.
    pub normalization: String,
    pub include_consumers: bool,
    pub convention: String,
    pub round_to: usize,
    pub max_layer_ratio: f64,
    pub ignore: Vec<String>,
    pub seed: u64,
}

fn default_importance(method: &str) -> &'static str {
    match method {
        "l2-filter" => "l2",
        "bn-scale" | "slimming" => "bn-scale",
        "random-filter" => "random",
        "taylor" => "taylor",
        _ => "l1",
    }
}

fn check_fraction(flag: &str, v: f64) -> Result<f64> {
    if !(0.0..1.0).contains(&v) {
        bail!("{flag} must be in [0, 1), got {v}");
    }
    Ok(v)
}

impl StructuredSpec {
    /// Resolves the options of `shears prune` for a structured method.
    pub fn from_args(method: &str, s: &StructuredArgs, seed: u64) -> Result<StructuredSpec> {
        if !is_structured_method(method) {
            bail!(
                "`{method}` is not a structured method (known: {})",
                METHODS.join(", ")
            );
        }
        let importance = s
            .importance
            .clone()
            .unwrap_or_else(|| default_importance(method).to_string());
        if !IMPORTANCES.contains(&importance.as_str()) {
            bail!(
                "unknown importance `{importance}` (known: {})",
                IMPORTANCES.join(", ")
            );
        }
        let mut cuts = Vec::new();
        if let Some(v) = s.channel_ratio {
            cuts.push(Cut::ChannelRatio(check_fraction("--channel-ratio", v)?));
        }
        if let Some(v) = s.params_reduction {
            cuts.push(Cut::ParamsReduction(check_fraction(
                "--params-reduction",
                v,
            )?));
        }
        if let Some(v) = s.macs_reduction {
            cuts.push(Cut::MacsReduction(check_fraction("--macs-reduction", v)?));
        }
        if let Some(v) = s.percentile {
            cuts.push(Cut::Percentile(check_fraction("--percentile", v)?));
        }
        let cut = match cuts.as_slice() {
            [c] => *c,
            [] if method == "slimming" => {
                bail!(
                    "--method slimming needs --percentile (or a --channel-ratio, --params-reduction or --macs-reduction target)"
                )
            }
            [] => bail!(
                "structured pruning needs a target: --channel-ratio, --params-reduction or --macs-reduction (or --percentile)"
            ),
            _ => bail!(
                "give exactly one of --channel-ratio, --params-reduction, --macs-reduction and --percentile"
            ),
        };
        let spec = StructuredSpec {
            method: method.to_string(),
            importance,
            cut,
            scope: s.scope.clone(),
            // Network Slimming compares raw |γ| across layers; a global ranking of the other
            // criteria compares groups of different sizes, so their scores are normalised.
            normalization: s.normalize.clone().unwrap_or_else(|| {
                if s.scope == "global" && method != "slimming" {
                    "mean"
                } else {
                    "none"
                }
                .to_string()
            }),
            include_consumers: s.include_consumers,
            convention: s.convention.clone(),
            round_to: s.round_to,
            max_layer_ratio: s.max_layer_ratio,
            ignore: s.ignore.clone(),
            seed,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Network Slimming's cut: BatchNorm-scale importance (mean |γ| over a group's BatchNorms)
    /// and a global percentile threshold.
    pub fn slimming(percentile: f64, round_to: usize, ignore: Vec<String>) -> Result<Self> {
        let spec = StructuredSpec {
            method: "slimming".into(),
            importance: "bn-scale".into(),
            cut: Cut::Percentile(check_fraction("--percentile", percentile)?),
            scope: "global".into(),
            normalization: "none".into(),
            include_consumers: false,
            convention: Convention::ConvLinear.name().into(),
            round_to,
            max_layer_ratio: 1.0,
            ignore,
            seed: 0,
        };
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<()> {
        self.scope()?;
        self.normalization()?;
        self.convention()?;
        if self.round_to == 0 {
            bail!("--round-to must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.max_layer_ratio) {
            bail!(
                "--max-layer-ratio must be in [0, 1], got {}",
                self.max_layer_ratio
            );
        }
        if matches!(self.cut, Cut::Percentile(_)) && self.scope != "global" {
            bail!(
                "--percentile is a global threshold; it cannot be combined with --scope per-layer"
            );
        }
        Ok(())
    }

    fn scope(&self) -> Result<Scope> {
        match self.scope.as_str() {
            "global" => Ok(Scope::Global),
            "per-layer" | "layer" | "local" => Ok(Scope::PerLayer),
            other => bail!("unknown --scope `{other}` (use global or per-layer)"),
        }
    }

    fn normalization(&self) -> Result<Normalization> {
        match self.normalization.as_str() {
            "none" => Ok(Normalization::None),
            "mean" => Ok(Normalization::Mean),
            "max" => Ok(Normalization::Max),
            "sum" => Ok(Normalization::Sum),
            other => bail!("unknown --normalize `{other}` (use none, mean, max or sum)"),
        }
    }

    fn convention(&self) -> Result<Convention> {
        self.convention
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--convention: {e}"))
    }

    /// True when scoring needs training data (Taylor).
    pub fn needs_data(&self) -> bool {
        self.importance == "taylor"
    }

    /// Short label of the cut for run names and reports, e.g. `macs0.5`.
    pub fn cut_label(&self) -> String {
        match self.cut {
            Cut::ChannelRatio(v) => format!("channels{v}"),
            Cut::ParamsReduction(v) => format!("params{v}"),
            Cut::MacsReduction(v) => format!("macs{v}"),
            Cut::Percentile(v) => format!("p{v}"),
        }
    }

    /// Short hash of the spec, for run names.
    pub fn hash(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        Sha256::digest(json.as_bytes())
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Channel scores per group for `spec`'s importance.
pub fn group_scores(
    model: &Model,
    groups: &[ChannelGroup],
    spec: &StructuredSpec,
    data: Option<&DataSplits>,
    device_name: &str,
    taylor: &TaylorOptions,
) -> Result<GroupScores> {
    let normalization = spec.normalization()?;
    let opts = |criterion, reduction| ImportanceOptions {
        criterion,
        include_consumers: spec.include_consumers,
        reduction,
        normalization,
    };
    let scores = match spec.importance.as_str() {
        "l1" => importance(&model.weights, groups, &opts(Criterion::L1, Reduction::Sum))?,
        "l2" => importance(&model.weights, groups, &opts(Criterion::L2, Reduction::Sum))?,
        // Mean over a group's BatchNorms, so a residual group is not favoured for having many.
        "bn-scale" => importance(
            &model.weights,
            groups,
            &opts(Criterion::BnScale, Reduction::Mean),
        )?,
        "random" => importance(
            &model.weights,
            groups,
            &opts(Criterion::Random { seed: spec.seed }, Reduction::Sum),
        )?,
        "taylor" => {
            let data = data.context("taylor importance needs training data (drop --no-eval)")?;
            let device = device_by_name(device_name)?;
            let node_scores = taylor_node_scores(
                &model.graph,
                &model.weights,
                &model.masks,
                data,
                &device,
                taylor,
            )?;
            importance_from_node_scores(
                &model.graph,
                groups,
                &node_scores,
                Reduction::Sum,
                normalization,
            )?
        }
        other => bail!(
            "unknown importance `{other}` (known: {})",
            IMPORTANCES.join(", ")
        ),
    };
    Ok(scores)
}

/// Rounds each group's kept count up to a multiple of `m` by taking back its best removed channels.
fn round_up_kept(
    groups: &[ChannelGroup],
    scores: &GroupScores,
    sel: &mut ChannelSelection,
    m: usize,
) {
    if m <= 1 {
        return;
    }
    let mut full = Vec::new();
    for (gid, kept) in sel.kept.iter_mut() {
        let c = groups[*gid].channels;
        let want = kept.len().div_ceil(m).saturating_mul(m).min(c);
        if want >= c {
            full.push(*gid);
            continue;
        }
        let Some(s) = scores.get(gid) else { continue };
        let mut removed: Vec<usize> = (0..c).filter(|j| !kept.contains(j)).collect();
        removed.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
        kept.extend(removed.into_iter().take(want - kept.len()));
        kept.sort_unstable();
    }
    for gid in full {
        sel.kept.remove(&gid);
    }
}

/// What was selected, with the threshold of a percentile cut.
pub struct Selected {
    pub groups: Vec<ChannelGroup>,
    pub selection: ChannelSelection,
    pub threshold: Option<f32>,
}

/// Scores and selects the channels to remove.
pub fn select(
    model: &Model,
    spec: &StructuredSpec,
    data: Option<&DataSplits>,
    device_name: &str,
    taylor: &TaylorOptions,
) -> Result<Selected> {
    let graph = &model.graph;
    let groups = channel_groups(graph)?;
    if !groups.iter().any(|g| g.prunable) {
        let reasons: Vec<String> = groups
            .iter()
            .filter_map(|g| g.reason.as_ref().map(|r| format!("group {}: {r}", g.id)))
            .collect();
        bail!(
            "model `{}` has no prunable channel group ({})",
            graph.name,
            reasons.join("; ")
        );
    }
    let scores = group_scores(model, &groups, spec, data, device_name, taylor)?;
    let target = match spec.cut {
        Cut::Percentile(p) => {
            let threshold = percentile_threshold(&scores, p)?;
            let mut selection =
                select_below_threshold(graph, &groups, &scores, threshold, &spec.ignore)?;
            round_up_kept(&groups, &scores, &mut selection, spec.round_to);
            return Ok(Selected {
                groups,
                selection,
                threshold: Some(threshold),
            });
        }
        Cut::ChannelRatio(v) => StructuredTarget::ChannelRatio(v),
        Cut::ParamsReduction(v) => StructuredTarget::ParamsReduction(v),
        Cut::MacsReduction(v) => StructuredTarget::MacsReduction(v),
    };
    let opts = SelectOptions {
        target,
        scope: spec.scope()?,
        convention: spec.convention()?,
        round_to: spec.round_to,
        max_group_ratio: spec.max_layer_ratio,
        ignore: spec.ignore.clone(),
    };
    let selection = select_channels(graph, &groups, &scores, &opts)?;
    let threshold = None;
    Ok(Selected {
        groups,
        selection,
        threshold,
    })
}

/// The compacted model; unstructured masks are sliced with their tensors.
pub fn compact_model(model: &Model, selection: &ChannelSelection) -> Result<Model> {
    let (graph, weights) = compact(&model.graph, &model.weights, selection)?;
    let masks = if model.masks.is_empty() {
        model.masks.clone()
    } else {
        compact_masks(&model.graph, &model.masks, selection)?
    };
    Ok(Model {
        graph,
        weights,
        masks,
    })
}

/// The dense model with every removed channel zeroed at its source: producer filters and
/// biases, BatchNorm scales and shifts. Every value slice of a removed channel is then exactly
/// zero, which is the gated network compaction is equivalent to.
pub fn zeroed_model(
    model: &Model,
    groups: &[ChannelGroup],
    selection: &ChannelSelection,
) -> Result<Model> {
    let mut weights = model.weights.clone();
    for (gid, kept) in &selection.kept {
        let g = &groups[*gid];
        let removed: Vec<usize> = (0..g.channels).filter(|j| !kept.contains(j)).collect();
        for m in &g.members {
            let source = matches!(m.role, MemberRole::Filter | MemberRole::Bias)
                || matches!(m.kind, ParamKind::BnScale | ParamKind::BnShift);
            if !source {
                continue;
            }
            let t = weights
                .get_mut(&m.tensor)
                .with_context(|| format!("tensor `{}` is missing from the weights", m.tensor))?;
            for &j in &removed {
                for i in m.indices(j) {
                    t.index_axis_mut(ndarray::Axis(m.axis), i).fill(0.0);
                }
            }
        }
    }
    Ok(Model {
        graph: model.graph.clone(),
        weights,
        masks: model.masks.clone(),
    })
}

/// Accuracy of the dense model with the removed channels gated to zero in the engine.
fn gated_accuracy(
    cfg: &ExperimentConfig,
    dense: &Model,
    selection: &ChannelSelection,
    data: &DataSplits,
    limit: Option<usize>,
) -> Result<f64> {
    let gates = selection_gates(&dense.graph, selection)?;
    let mut exec = executor(cfg, dense, false)?;
    for (value, gate) in &gates {
        if *value != dense.graph.input.name {
            exec.set_gate(value, Some(gate))?;
        }
    }
    let (_, acc) = evaluate(&mut exec, &data.test, &data.normalization, 256, limit)?;
    Ok(acc)
}

/// Dense and compacted latency at one batch size and thread count.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    pub batch: usize,
    pub threads: usize,
    pub dense_median_ms: f64,
    pub dense_p90_ms: f64,
    pub compacted_median_ms: f64,
    pub compacted_p90_ms: f64,
    /// Wall-clock ratio dense / compacted (median batch times).
    pub latency_ratio: f64,
    /// MACs ratio dense / compacted.
    pub macs_ratio: f64,
    /// latency_ratio / macs_ratio: 1 means the MACs saving turned fully into time.
    pub ratio_of_ratios: f64,
}

/// The round with the lowest median.
fn best(a: Option<Latency>, b: Latency) -> Option<Latency> {
    match a {
        Some(a) if a.median_ms <= b.median_ms => Some(a),
        _ => Some(b),
    }
}

/// Measures inference latency of both models, alternating them round by round so drifting
/// machine load affects both alike; each reports its best round's median (and that round's p90).
pub fn measure_latency(
    dense: &Model,
    small: &Model,
    device_name: &str,
    l: &LatencyArgs,
    macs_ratio: f64,
) -> Result<Vec<LatencyRow>> {
    if l.latency_rounds == 0 || l.latency_repeats == 0 {
        bail!("--latency-rounds and --latency-repeats must be at least 1");
    }
    let device = device_by_name(device_name)?;
    let mut rows = Vec::new();
    for &threads in &l.latency_threads {
        for &batch in &l.latency_batches {
            let s = BenchSettings {
                batch,
                threads,
                warmup: l.latency_warmup,
                repeats: l.latency_repeats,
            };
            let mut de = Executor::new(&dense.graph, &dense.weights, &dense.masks, &device)?;
            let mut ce = Executor::new(&small.graph, &small.weights, &small.masks, &device)?;
            let (mut bd, mut bc) = (None, None);
            for _ in 0..l.latency_rounds {
                bd = best(bd, inference_latency(&mut de, &s)?);
                bc = best(bc, inference_latency(&mut ce, &s)?);
            }
            let (d, c) = (
                bd.context("no latency round ran")?,
                bc.context("no latency round ran")?,
            );
            let latency_ratio = d.median_ms / c.median_ms;
            rows.push(LatencyRow {
                batch,
                threads,
                dense_median_ms: d.median_ms,
                dense_p90_ms: d.p90_ms,
                compacted_median_ms: c.median_ms,
                compacted_p90_ms: c.p90_ms,
                latency_ratio,
                macs_ratio,
                ratio_of_ratios: latency_ratio / macs_ratio,
            });
        }
    }
    Ok(rows)
}

/// One pruned group in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PrunedGroup {
    pub id: usize,
    pub producers: Vec<String>,
    pub channels: usize,
    pub kept: usize,
}

/// Params, MACs and channels before and after compaction.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub params_before: u64,
    pub params_after: u64,
    pub params_reduction: f64,
    pub macs_before: u64,
    pub macs_after: u64,
    pub macs_reduction: f64,
    /// MACs before / after.
    pub macs_ratio: f64,
    pub macs_convention: &'static str,
    pub macs_all_ops_before: u64,
    pub macs_all_ops_after: u64,
    pub groups: usize,
    pub prunable_groups: usize,
    /// Channels of the prunable groups before and after.
    pub channels_before: usize,
    pub channels_after: usize,
    pub pruned_groups: Vec<PrunedGroup>,
}

fn sizes(dense: &Graph, small: &Graph, sel: &Selected) -> Result<Sizes> {
    let (b, a) = (
        cost(dense, Convention::ConvLinear)?,
        cost(small, Convention::ConvLinear)?,
    );
    let (ba, aa) = (
        cost(dense, Convention::AllOps)?,
        cost(small, Convention::AllOps)?,
    );
    let prunable: Vec<&ChannelGroup> = sel.groups.iter().filter(|g| g.prunable).collect();
    let channels_before: usize = prunable.iter().map(|g| g.channels).sum();
    let pruned_groups: Vec<PrunedGroup> = sel
        .selection
        .kept
        .iter()
        .map(|(&id, kept)| PrunedGroup {
            id,
            producers: sel.groups[id].producers.clone(),
            channels: sel.groups[id].channels,
            kept: kept.len(),
        })
        .collect();
    Ok(Sizes {
        params_before: b.params,
        params_after: a.params,
        params_reduction: 1.0 - a.params as f64 / b.params.max(1) as f64,
        macs_before: b.macs,
        macs_after: a.macs,
        macs_reduction: 1.0 - a.macs as f64 / b.macs.max(1) as f64,
        macs_ratio: b.macs as f64 / a.macs.max(1) as f64,
        macs_convention: Convention::ConvLinear.name(),
        macs_all_ops_before: ba.macs,
        macs_all_ops_after: aa.macs,
        groups: sel.groups.len(),
        prunable_groups: prunable.len(),
        channels_before,
        channels_after: channels_before - sel.selection.removed_channels(&sel.groups),
        pruned_groups,
    })
}

/// Accuracy at each stage (test split, `test_samples` of them).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Accuracies {
    pub test_samples: Option<usize>,
    pub accuracy_before_pruning: Option<f64>,
    /// The compacted model, before any fine-tuning.
    pub accuracy_after_pruning: Option<f64>,
    /// The dense model with the removed channels gated to zero (must equal the line above).
    pub accuracy_after_pruning_gated: Option<f64>,
    pub accuracy_after_finetune: Option<f64>,
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

/// Share of BatchNorm scales with |γ| ≤ 0.01.
pub fn small_gamma_share(model: &Model) -> f64 {
    let (mut small, mut all) = (0usize, 0usize);
    for spec in model.graph.param_specs() {
        if spec.kind == ParamKind::BnScale
            && let Some(t) = model.weights.get(&spec.name)
        {
            small += t.iter().filter(|v| v.abs() <= 0.01).count();
            all += t.len();
        }
    }
    small as f64 / all.max(1) as f64
}

/// Where and how the shared tail of a structured run works.
pub struct RunContext<'a> {
    pub cfg: &'a ExperimentConfig,
    pub data: Option<&'a DataSplits>,
    pub dir: &'a RunDir,
    /// Continue an interrupted fine-tuning phase.
    pub resume: bool,
    pub finetune: Option<TrainSection>,
    pub latency: &'a LatencyArgs,
    pub save_masked: Option<&'a Path>,
}

/// What [`compact_and_report`] found and measured.
pub struct Outcome {
    pub selected: Selected,
    pub sizes: Sizes,
    pub accuracy: Accuracies,
    pub latency: Vec<LatencyRow>,
}

/// Selects, compacts, evaluates, fine-tunes and measures: everything after the dense model.
/// Saves the compacted model in `dir/pruned` and the final one (fine-tuned if asked) in `dir`.
pub fn compact_and_report(
    ctx: &RunContext<'_>,
    dense: &Model,
    spec: &StructuredSpec,
    taylor: &TaylorOptions,
) -> Result<Outcome> {
    let cfg = ctx.cfg;
    let limit = cfg.train.test_limit;
    let mut acc = Accuracies::default();
    if let Some(data) = ctx.data {
        acc.test_samples = Some(limit.map_or(data.test.len(), |l| l.min(data.test.len())));
        acc.accuracy_before_pruning = Some(eval_model(cfg, dense, data, limit)?.1);
    }
    let t = Instant::now();
    let sel = select(dense, spec, ctx.data, &cfg.device, taylor)?;
    let small = compact_model(dense, &sel.selection)?;
    tracing::info!(
        "selected and compacted in {:.3} s: {} channels removed",
        t.elapsed().as_secs_f64(),
        sel.selection.removed_channels(&sel.groups)
    );
    let sizes = sizes(&dense.graph, &small.graph, &sel)?;
    let pruned_dir = ctx.dir.phase("pruned");
    save_model(&pruned_dir, &small)?;
    if let Some(path) = ctx.save_masked {
        save_model(path, &zeroed_model(dense, &sel.groups, &sel.selection)?)?;
    }
    if let Some(data) = ctx.data {
        acc.accuracy_after_pruning = Some(eval_model(cfg, &small, data, limit)?.1);
        acc.accuracy_after_pruning_gated =
            Some(gated_accuracy(cfg, dense, &sel.selection, data, limit)?);
    }
    let final_model = match (&ctx.finetune, ctx.data) {
        (Some(section), Some(data)) if section.epochs > 0 => {
            let (tuned, _) = train_phase(
                cfg,
                section,
                small,
                data,
                &ctx.dir.phase("finetune"),
                ctx.resume,
            )?;
            acc.accuracy_after_finetune = Some(eval_model(cfg, &tuned, data, limit)?.1);
            tuned
        }
        (Some(section), None) if section.epochs > 0 => {
            bail!("fine-tuning needs data (drop --no-eval)")
        }
        _ => small,
    };
    save_model(&ctx.dir.path, &final_model)?;
    let latency = if ctx.latency.no_latency {
        Vec::new()
    } else {
        measure_latency(
            dense,
            &final_model,
            &cfg.device,
            ctx.latency,
            sizes.macs_ratio,
        )?
    };
    Ok(Outcome {
        selected: sel,
        sizes,
        accuracy: acc,
        latency,
    })
}

fn finetune_section(s: &StructuredArgs) -> TrainSection {
    TrainSection {
        epochs: s.finetune_epochs,
        batch_size: s.batch_size,
        lr: s.finetune_lr,
        train_limit: s.train_limit,
        test_limit: s.test_limit,
        ..TrainSection::default()
    }
}

/// `shears prune` with a structured method.
pub fn prune(args: PruneArgs) -> Result<()> {
    let started = Instant::now();
    let s = &args.structured;
    if args.sparsity.is_some() || args.compression.is_some() {
        bail!(
            "--sparsity and --compression apply to unstructured methods; `{}` takes --channel-ratio, --params-reduction, --macs-reduction or --percentile",
            args.method
        );
    }
    let spec = StructuredSpec::from_args(&args.method, s, args.seed)?;
    if s.no_eval && s.finetune_epochs > 0 {
        bail!("--finetune-epochs needs data to train and evaluate on; drop --no-eval");
    }
    let section = finetune_section(s);
    let mut cfg = ExperimentConfig {
        name: "prune".into(),
        seed: args.seed,
        device: args.device.clone(),
        ..ExperimentConfig::default()
    };
    if let Some(d) = &args.dataset {
        cfg.data.dataset = d.clone();
    }
    cfg.data.dir = args.data.clone();
    cfg.train.test_limit = s.test_limit;
    cfg.train.train_limit = s.train_limit;
    cfg.finetune = Some(section.clone());
    cfg.validate()?;
    let data = if !s.no_eval || spec.needs_data() {
        Some(load_data(&cfg)?)
    } else {
        None
    };
    let model = match &data {
        Some(d) => load_or_build(
            &args.model,
            args.input.as_deref(),
            args.classes,
            Some(d),
            args.seed,
        )?,
        None => load_or_build(
            &args.model,
            Some(args.input.as_deref().unwrap_or("1x28x28")),
            Some(args.classes.unwrap_or(10)),
            None,
            args.seed,
        )?,
    };
    if let Some(d) = &data {
        let probe = executor(&cfg, &model, false)?;
        shears_engine::train::check_data_fits(&probe, &d.test)
            .context("pass --no-eval to prune without evaluating on data")?;
    }
    let base = Path::new(&args.model)
        .file_name()
        .map_or(args.model.clone(), |s| s.to_string_lossy().into());
    let name = run_name(
        &base,
        &format!("{}-{}", spec.method, spec.cut_label()),
        None,
        args.seed,
        &spec.hash(),
    );
    let dir = RunDir::new(args.out.clone().unwrap_or_else(|| args.runs_dir.join(name)))?;
    // `prune` always starts over: a fine-tuning checkpoint left by an earlier run of another
    // selection must not be resumed into this one.
    let stale = dir.phase("finetune");
    if stale.exists() {
        std::fs::remove_dir_all(&stale)
            .with_context(|| format!("cannot clear {}", stale.display()))?;
    }
    let taylor = TaylorOptions {
        batches: args.score_batches,
        batch_size: args.score_batch_size,
        seed: args.seed,
    };
    let ctx = RunContext {
        cfg: &cfg,
        data: data.as_ref(),
        dir: &dir,
        resume: false,
        finetune: Some(section),
        latency: &s.latency,
        save_masked: s.save_masked.as_deref(),
    };
    let Outcome {
        selected: sel,
        sizes,
        accuracy,
        latency,
    } = compact_and_report(&ctx, &model, &spec, &taylor)?;
    let report = StructuredReport {
        version: version(),
        command: "prune",
        run_dir: dir.path.display().to_string(),
        pruned_dir: dir.phase("pruned").display().to_string(),
        model: args.model.clone(),
        dataset: data.as_ref().map(|_| cfg.data.dataset.clone()),
        seed: args.seed,
        spec,
        threshold: sel.threshold,
        sizes,
        accuracy,
        finetune_epochs: s.finetune_epochs,
        slimming: None,
        latency_warmup: s.latency.latency_warmup,
        latency_repeats: s.latency.latency_repeats,
        latency_rounds: s.latency.latency_rounds,
        latency,
        seconds: started.elapsed().as_secs_f64(),
    };
    dir.write_result(&report)?;
    if args.json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

/// The human-readable report on stdout.
pub fn print_report(r: &StructuredReport) {
    let s = &r.sizes;
    let cut = match r.spec.cut {
        Cut::ChannelRatio(v) => format!("channel ratio {v}"),
        Cut::ParamsReduction(v) => format!("params reduction {v}"),
        Cut::MacsReduction(v) => format!("MACs reduction {v} ({})", r.spec.convention),
        Cut::Percentile(v) => format!(
            "global percentile {v} of the scores (threshold {})",
            r.threshold.map_or("-".into(), |t| format!("{t:.4e}"))
        ),
    };
    println!(
        "structured pruning of {}: {} (importance {}, {} scope, normalisation {}) to {}",
        r.model, r.spec.method, r.spec.importance, r.spec.scope, r.spec.normalization, cut
    );
    println!(
        "  params    {} -> {}  ({:.1}% removed)",
        thousands(s.params_before),
        thousands(s.params_after),
        s.params_reduction * 100.0
    );
    println!(
        "  MACs      {} -> {}  ({:.1}% removed, MACs ratio {:.2}, {})",
        thousands(s.macs_before),
        thousands(s.macs_after),
        s.macs_reduction * 100.0,
        s.macs_ratio,
        s.macs_convention
    );
    println!(
        "  channels  {} -> {} in {} prunable groups ({} pruned, {} groups in all)",
        s.channels_before,
        s.channels_after,
        s.prunable_groups,
        s.pruned_groups.len(),
        s.groups
    );
    if let Some(sl) = &r.slimming {
        println!(
            "  sparsity training: λ {} for {} epochs; |γ| ≤ 0.01: {:.1}% -> {:.1}% of BatchNorm scales; baseline accuracy {}",
            sl.lambda,
            sl.sparsity_epochs,
            sl.small_gamma_share_before * 100.0,
            sl.small_gamma_share_after * 100.0,
            pct(sl.accuracy_baseline)
        );
    }
    let a = &r.accuracy;
    if a.accuracy_before_pruning.is_some() {
        println!(
            "  accuracy  before pruning {}  right after {} (gated dense {})  after fine-tuning {}  ({} test samples)",
            pct(a.accuracy_before_pruning),
            pct(a.accuracy_after_pruning),
            pct(a.accuracy_after_pruning_gated),
            pct(a.accuracy_after_finetune),
            a.test_samples.unwrap_or(0)
        );
    }
    if !r.latency.is_empty() {
        println!(
            "  latency (inference, median ms; warm-up {}, {} repeats, best of {} rounds):",
            r.latency_warmup, r.latency_repeats, r.latency_rounds
        );
        println!(
            "    {:>5} {:>7} {:>10} {:>10} {:>14} {:>10} {:>13}",
            "batch", "threads", "dense", "compacted", "latency ratio", "MACs ratio", "lat/MACs"
        );
        for l in &r.latency {
            println!(
                "    {:>5} {:>7} {:>10.3} {:>10.3} {:>14.2} {:>10.2} {:>13.2}",
                l.batch,
                l.threads,
                l.dense_median_ms,
                l.compacted_median_ms,
                l.latency_ratio,
                l.macs_ratio,
                l.ratio_of_ratios
            );
        }
    }
    println!(
        "  saved the compacted model to {} (before fine-tuning: {})  ({:.1} s)",
        r.run_dir, r.pruned_dir, r.seconds
    );
}

/// One channel group as `shears inspect --groups` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    pub id: usize,
    pub channels: usize,
    pub prunable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub producers: Vec<String>,
    pub batchnorms: Vec<String>,
    pub consumers: Vec<String>,
    pub values: Vec<String>,
}

/// The channel groups of a graph, for `shears inspect --groups`.
pub fn group_infos(graph: &Graph) -> Result<Vec<GroupInfo>> {
    let groups = channel_groups(graph)?;
    let uniq = |it: &mut dyn Iterator<Item = &str>| {
        let mut v: Vec<String> = Vec::new();
        for s in it {
            if !v.iter().any(|x| x == s) {
                v.push(s.to_string());
            }
        }
        v
    };
    Ok(groups
        .iter()
        .map(|g| GroupInfo {
            id: g.id,
            channels: g.channels,
            prunable: g.prunable,
            reason: g.reason.clone(),
            producers: g.producers.clone(),
            batchnorms: uniq(
                &mut g
                    .members
                    .iter()
                    .filter(|m| m.kind == ParamKind::BnScale)
                    .map(|m| m.node.as_str()),
            ),
            consumers: uniq(
                &mut g
                    .members_with(MemberRole::InputChannels)
                    .map(|m| m.node.as_str()),
            ),
            values: g.values.iter().map(|v| v.value.clone()).collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};
    use shears_core::reference::forward;
    use shears_core::{Masks, init_weights, zoo};

    fn resnet() -> Model {
        let graph = zoo::build("resnet-20", &[3, 8, 8], 10).unwrap();
        let mut weights = init_weights(&graph, 2);
        // Non-trivial BatchNorm shifts and statistics, so a zeroed filter alone is not enough.
        for (name, t) in weights.iter_mut() {
            if name.ends_with(".bias") || name.ends_with(".running_mean") {
                t.mapv_inplace(|_| 0.2);
            }
        }
        Model {
            graph,
            weights,
            masks: Masks::new(),
        }
    }

    fn args() -> StructuredArgs {
        StructuredArgs {
            channel_ratio: None,
            params_reduction: None,
            macs_reduction: Some(0.4),
            percentile: None,
            importance: None,
            scope: "global".into(),
            normalize: None,
            include_consumers: false,
            round_to: 1,
            max_layer_ratio: 1.0,
            ignore: Vec::new(),
            convention: "conv+linear".into(),
            finetune_epochs: 0,
            finetune_lr: 0.01,
            batch_size: 64,
            train_limit: None,
            test_limit: None,
            no_eval: true,
            save_masked: None,
            latency: LatencyArgs {
                latency_batches: vec![1],
                latency_threads: vec![1],
                latency_warmup: 0,
                latency_repeats: 1,
                latency_rounds: 1,
                no_latency: true,
            },
        }
    }

    #[test]
    fn zeroed_dense_model_equals_the_compacted_one() {
        let m = resnet();
        let spec = StructuredSpec::from_args("l1-filter", &args(), 0).unwrap();
        let sel = select(&m, &spec, None, "flex", &TaylorOptions::default()).unwrap();
        assert!(!sel.selection.kept.is_empty());
        let small = compact_model(&m, &sel.selection).unwrap();
        let zeroed = zeroed_model(&m, &sel.groups, &sel.selection).unwrap();
        let x = ArrayD::from_shape_fn(IxDyn(&[2, 3, 8, 8]), |i| {
            ((i[0] * 5 + i[1] * 7 + i[2] * 3 + i[3]) % 13) as f32 / 13.0 - 0.5
        });
        let a = forward(&small.graph, &small.weights, None, &x).unwrap();
        let b = forward(&zeroed.graph, &zeroed.weights, None, &x).unwrap();
        let c = forward(&m.graph, &m.weights, None, &x).unwrap();
        let scale = b.iter().fold(0f32, |s, v| s.max(v.abs()));
        let diff = |p: &ArrayD<f32>, q: &ArrayD<f32>| {
            p.iter()
                .zip(q.iter())
                .fold(0f32, |s, (u, v)| s.max((u - v).abs()))
        };
        assert!(diff(&a, &b) <= 1e-4 * scale, "{} vs {scale}", diff(&a, &b));
        // And pruning changed the function, so the comparison above means something.
        assert!(diff(&b, &c) > 1e-3 * scale);
        let s = sizes(&m.graph, &small.graph, &sel).unwrap();
        assert!(s.macs_reduction >= 0.4, "{}", s.macs_reduction);
        assert_eq!(
            s.channels_before - s.channels_after,
            sel.selection.removed_channels(&sel.groups)
        );
    }

    #[test]
    fn spec_errors_name_the_flag() {
        let mut a = args();
        a.importance = Some("l3".into());
        let e = StructuredSpec::from_args("l1-filter", &a, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown importance `l3`") && e.contains("taylor"),
            "{e}"
        );
        let mut a = args();
        a.macs_reduction = Some(1.5);
        let e = StructuredSpec::from_args("l1-filter", &a, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--macs-reduction must be in [0, 1), got 1.5"),
            "{e}"
        );
        let mut a = args();
        a.channel_ratio = Some(0.2);
        let e = StructuredSpec::from_args("l1-filter", &a, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one of"), "{e}");
        let mut a = args();
        a.macs_reduction = None;
        let e = StructuredSpec::from_args("slimming", &a, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--percentile"), "{e}");
        let mut a = args();
        a.scope = "layerwise".into();
        let e = StructuredSpec::from_args("l1-filter", &a, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown --scope `layerwise`"), "{e}");
        let mut a = args();
        a.round_to = 0;
        assert!(StructuredSpec::from_args("l1-filter", &a, 0).is_err());
        // Defaults follow the method; normalisation defaults to mean for a global ranking.
        let s = StructuredSpec::from_args("random-filter", &args(), 0).unwrap();
        assert_eq!(
            (s.importance.as_str(), s.normalization.as_str()),
            ("random", "mean")
        );
        // ... except Network Slimming, whose percentile compares raw |γ|.
        let mut a = args();
        a.macs_reduction = None;
        a.percentile = Some(0.5);
        let s = StructuredSpec::from_args("slimming", &a, 0).unwrap();
        assert_eq!(
            (s.importance.as_str(), s.normalization.as_str()),
            ("bn-scale", "none")
        );
        assert_eq!(s.cut, Cut::Percentile(0.5));
    }

    #[test]
    fn rounding_takes_back_the_best_removed_channels() {
        let m = resnet();
        let groups = channel_groups(&m.graph).unwrap();
        let g = groups
            .iter()
            .find(|g| g.prunable && g.channels == 16)
            .unwrap();
        let mut scores = GroupScores::new();
        scores.insert(g.id, (0..16).map(|j| j as f32).collect());
        let mut sel = ChannelSelection::default();
        sel.kept.insert(g.id, vec![0, 15, 3]);
        sel.kept.get_mut(&g.id).unwrap().sort_unstable();
        round_up_kept(&groups, &scores, &mut sel, 4);
        // Three kept round up to four: the best removed channel (14) comes back.
        assert_eq!(sel.kept[&g.id], vec![0, 3, 14, 15]);
        sel.kept.insert(g.id, (0..13).collect());
        round_up_kept(&groups, &scores, &mut sel, 8);
        assert!(!sel.kept.contains_key(&g.id));
    }

    #[test]
    fn percentile_cut_removes_small_gammas_and_counts_them() {
        let mut m = resnet();
        // Zero half of every BatchNorm's scales: a 0.4 percentile lands on zero and removes
        // exactly the zeroed channels of groups with one BatchNorm.
        for spec in m.graph.param_specs() {
            if spec.kind == ParamKind::BnScale {
                let t = m.weights.get_mut(&spec.name).unwrap();
                let n = t.len();
                for (i, v) in t.iter_mut().enumerate() {
                    *v = if i < n / 2 { 0.0 } else { 1.0 };
                }
            }
        }
        assert!((small_gamma_share(&m) - 0.5).abs() < 1e-9);
        let spec = StructuredSpec::slimming(0.4, 1, Vec::new()).unwrap();
        let sel = select(&m, &spec, None, "flex", &TaylorOptions::default()).unwrap();
        assert_eq!(sel.threshold, Some(0.0));
        for (gid, kept) in &sel.selection.kept {
            let c = sel.groups[*gid].channels;
            assert_eq!(kept, &(c / 2..c).collect::<Vec<_>>(), "group {gid}");
        }
        assert!(!sel.selection.kept.is_empty());
    }
}
