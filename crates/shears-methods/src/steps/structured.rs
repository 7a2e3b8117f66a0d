//! Structured (channel) pruning steps: importance -> cut (to a target or a global threshold) ->
//! physical compaction -> the gated-equals-compacted check -> fine-tuning -> a report with
//! accuracy at every stage, params and MACs before and after, and measured latency.
//! The saved artifact is the *compacted* model, a normal model directory.

use super::Runtime;
use super::eval::{eval_model, gated_accuracy};
use super::latency::{LatencyRow, LatencySettings, measure_latency};
use super::phase::train_phase;
use super::rounding::{
    LatencyMeter, LatencySearch, OVERSHOOT, RoundTo, RoundingChoice, TargetRuntime, Timer,
    choose_multiple,
};
use crate::config::TrainSection;
use crate::error::{Context, MethodError, Result};
use crate::invalid;
use crate::run_dir::{RunDir, short_hash};
use serde::{Deserialize, Serialize, Serializer};
use shears_core::artifact::{Model, save_model};
use shears_core::cost::{Convention, cost};
use shears_core::graph::{Graph, ParamKind};
use shears_core::structured::{
    ChannelGroup, ChannelSelection, Criterion, GroupScores, ImportanceOptions, MemberRole,
    Normalization, Reduction, Scope, SelectOptions, StructuredTarget, achieved_reduction,
    channel_groups, compact, compact_masks, importance, importance_from_node_scores,
    percentile_threshold, select_below_threshold, select_by_bn_votes, select_channels,
    select_channels_measured,
};
use shears_data::DataSplits;
use shears_engine::device::device_by_name;
use shears_engine::scores::ScoreBatches;
use shears_engine::taylor::taylor_node_scores;
use std::path::Path;
use std::time::Instant;

/// What a channel's importance is computed from, as `--importance` and `[method] importance`
/// name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Importance {
    /// Sum of |w| of the channel's filter slices.
    L1,
    /// Sum of w² of the channel's filter slices.
    L2,
    /// Mean |γ| over the group's BatchNorms.
    BnScale,
    /// A seeded random score (the sanity baseline).
    Random,
    /// First-order Taylor |a·∂L/∂a| on training batches (Molchanov et al. 2019).
    Taylor,
    /// Scores a method learns while it trains (PAAM's attention scores); not a criterion a
    /// one-shot cut can compute.
    #[serde(skip_deserializing)]
    Learned,
}

/// Importance names, as help texts and errors list them.
pub const IMPORTANCES: &[&str] = &["l1", "l2", "bn-scale", "random", "taylor"];

impl std::str::FromStr for Importance {
    type Err = MethodError;
    fn from_str(s: &str) -> Result<Importance> {
        Ok(match s {
            "l1" => Importance::L1,
            "l2" => Importance::L2,
            "bn-scale" => Importance::BnScale,
            "random" => Importance::Random,
            "taylor" => Importance::Taylor,
            _ => invalid!(
                "unknown importance `{s}` (known: {})",
                IMPORTANCES.join(", ")
            ),
        })
    }
}

impl Importance {
    /// The name users type.
    pub fn name(self) -> &'static str {
        match self {
            Importance::L1 => "l1",
            Importance::L2 => "l2",
            Importance::BnScale => "bn-scale",
            Importance::Random => "random",
            Importance::Taylor => "taylor",
            Importance::Learned => "learned",
        }
    }
}

/// Parses `global` or `per-layer` (also `layer`, `local`).
pub fn parse_scope(s: &str) -> Result<Scope> {
    match s {
        "global" => Ok(Scope::Global),
        "per-layer" | "layer" | "local" => Ok(Scope::PerLayer),
        other => invalid!("unknown --scope `{other}` (use global or per-layer)"),
    }
}

/// The name of a scope in reports.
pub fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::Global => "global",
        Scope::PerLayer => "per-layer",
    }
}

/// Parses `none`, `mean`, `max`, `sum` or `kind`.
pub fn parse_normalization(s: &str) -> Result<Normalization> {
    match s {
        "none" => Ok(Normalization::None),
        "mean" => Ok(Normalization::Mean),
        "max" => Ok(Normalization::Max),
        "sum" => Ok(Normalization::Sum),
        "kind" => Ok(Normalization::Kind),
        other => invalid!("unknown --normalize `{other}` (use none, mean, max, sum or kind)"),
    }
}

/// Parses a MACs convention (`conv+linear` or `all-ops`).
pub fn parse_convention(s: &str) -> Result<Convention> {
    s.parse()
        .map_err(|e: String| MethodError::Invalid(format!("--convention: {e}")))
}

fn ser_scope<S: Serializer>(s: &Scope, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(scope_name(*s))
}

fn de_scope<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Scope, D::Error> {
    let s = String::deserialize(d)?;
    parse_scope(&s).map_err(serde::de::Error::custom)
}

/// How channels are cut once scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Cut {
    /// Select the fewest channels that reach the target (channel ratio, params or MACs).
    ChannelRatio(f64),
    /// Remove at least this share of the parameters.
    ParamsReduction(f64),
    /// Remove at least this share of the MACs.
    MacsReduction(f64),
    /// Remove at least this share of the batch-1 latency, measured in the target runtime.
    LatencyReduction(f64),
    /// Network Slimming: remove every channel scoring at or below the global `p` percentile.
    Percentile(f64),
    /// MaskSparsity: remove the channels whose |γ| is at or below τ, the BatchNorms of a
    /// residual group merged by vote.
    Threshold(f64),
    /// Remove exactly the channels of a given mask.
    Mask,
}

/// How option names are spelled in errors: command-line flags or config keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `--macs-reduction`
    Flag,
    /// `[method] macs_reduction`
    Key,
    /// `macs_reduction` (a keyword argument)
    Keyword,
}

impl Spelling {
    /// The option `snake_name` as the user wrote it.
    pub fn name(self, snake_name: &str) -> String {
        match self {
            Spelling::Flag => format!("--{}", snake_name.replace('_', "-")),
            Spelling::Key => format!("[method] {snake_name}"),
            Spelling::Keyword => snake_name.to_string(),
        }
    }
}

/// Checks that option `name` is a fraction in `[0, 1)`.
fn check_fraction(name: &str, v: f64) -> Result<f64> {
    shears_core::sparsity::check_fraction(name, v, false)?;
    Ok(v)
}

fn default_max_layer_ratio() -> f64 {
    1.0
}
fn default_score_batches() -> usize {
    10
}
fn default_score_batch_size() -> usize {
    128
}

/// The options of a structured method, as `shears prune` flags or `[method]` keys give them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredOptions {
    /// Keep this share of each group's channels removed (per layer) or of all (global).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_reduction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_reduction: Option<f64>,
    /// Remove this share of the batch-1, one-thread latency in `latency_runtime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_reduction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Defaults to the method's own criterion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importance: Option<Importance>,
    #[serde(default, serialize_with = "ser_scope", deserialize_with = "de_scope")]
    pub scope: Scope,
    /// Defaults to `mean` for a global ranking (except Slimming's raw |γ|), else `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalization>,
    #[serde(default)]
    pub include_consumers: bool,
    /// Kept counts rounded up to a multiple; `auto` measures which multiple runs fastest.
    #[serde(default)]
    pub round_to: RoundTo,
    /// Where `round_to = "auto"` and a latency target measure: onnxruntime (the default, when
    /// available; else shears' engine) or shears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_runtime: Option<TargetRuntime>,
    #[serde(default = "default_max_layer_ratio")]
    pub max_layer_ratio: f64,
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub convention: Convention,
    /// Taylor importance: training batches scored, and their size.
    #[serde(default = "default_score_batches")]
    pub score_batches: usize,
    #[serde(default = "default_score_batch_size")]
    pub score_batch_size: usize,
}

/// The one reduction target among `channel_ratio`, `params_reduction` and `macs_reduction`
/// (each checked to be in `[0, 1)`); more than one is an error.
pub fn reduction_target(
    channel_ratio: Option<f64>,
    params_reduction: Option<f64>,
    macs_reduction: Option<f64>,
    spelling: Spelling,
) -> Result<Option<StructuredTarget>> {
    let mut targets = Vec::new();
    for (key, v, make) in [
        (
            "channel_ratio",
            channel_ratio,
            StructuredTarget::ChannelRatio as fn(f64) -> StructuredTarget,
        ),
        (
            "params_reduction",
            params_reduction,
            StructuredTarget::ParamsReduction,
        ),
        (
            "macs_reduction",
            macs_reduction,
            StructuredTarget::MacsReduction,
        ),
    ] {
        if let Some(v) = v {
            targets.push(make(check_fraction(&spelling.name(key), v)?));
        }
    }
    if targets.len() > 1 {
        invalid!(
            "give one target: {}, {} or {}",
            spelling.name("channel_ratio"),
            spelling.name("params_reduction"),
            spelling.name("macs_reduction")
        );
    }
    Ok(targets.pop())
}

impl StructuredOptions {
    /// These options with `target` as their one reduction target.
    pub fn with_target(self, target: StructuredTarget) -> StructuredOptions {
        let (mut channel_ratio, mut params_reduction, mut macs_reduction) = (None, None, None);
        match target {
            StructuredTarget::ChannelRatio(v) => channel_ratio = Some(v),
            StructuredTarget::ParamsReduction(v) => params_reduction = Some(v),
            StructuredTarget::MacsReduction(v) => macs_reduction = Some(v),
        }
        StructuredOptions {
            channel_ratio,
            params_reduction,
            macs_reduction,
            latency_reduction: None,
            percentile: None,
            ..self
        }
    }
}

impl Default for StructuredOptions {
    fn default() -> Self {
        StructuredOptions {
            channel_ratio: None,
            params_reduction: None,
            macs_reduction: None,
            latency_reduction: None,
            percentile: None,
            importance: None,
            scope: Scope::Global,
            normalize: None,
            include_consumers: false,
            round_to: RoundTo::Auto,
            latency_runtime: None,
            max_layer_ratio: 1.0,
            ignore: Vec::new(),
            convention: Convention::ConvLinear,
            score_batches: default_score_batches(),
            score_batch_size: default_score_batch_size(),
        }
    }
}

/// Everything that decides which channels go, resolved and validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StructuredSpec {
    /// The registered method's name (`l1-filter`, `slimming`, ...).
    pub method: String,
    pub importance: Importance,
    pub cut: Cut,
    #[serde(serialize_with = "ser_scope")]
    pub scope: Scope,
    pub normalization: Normalization,
    pub include_consumers: bool,
    pub convention: Convention,
    pub round_to: RoundTo,
    /// Where `round_to = "auto"` and a latency target measure (`None`: onnxruntime when
    /// available, else shears' engine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_runtime: Option<TargetRuntime>,
    pub max_layer_ratio: f64,
    pub ignore: Vec<String>,
    pub seed: u64,
    /// Batches of Taylor importance.
    #[serde(skip)]
    pub score_batches: ScoreBatches,
}

impl StructuredSpec {
    /// Resolves a method's options: `default_importance` is the method's own criterion.
    pub fn resolve(
        method: &str,
        default_importance: Importance,
        o: &StructuredOptions,
        seed: u64,
        spelling: Spelling,
    ) -> Result<StructuredSpec> {
        let name = |n: &str| spelling.name(n);
        let mut cuts = Vec::new();
        if let Some(v) = o.channel_ratio {
            cuts.push(Cut::ChannelRatio(check_fraction(
                &name("channel_ratio"),
                v,
            )?));
        }
        if let Some(v) = o.params_reduction {
            cuts.push(Cut::ParamsReduction(check_fraction(
                &name("params_reduction"),
                v,
            )?));
        }
        if let Some(v) = o.macs_reduction {
            cuts.push(Cut::MacsReduction(check_fraction(
                &name("macs_reduction"),
                v,
            )?));
        }
        if let Some(v) = o.latency_reduction {
            cuts.push(Cut::LatencyReduction(check_fraction(
                &name("latency_reduction"),
                v,
            )?));
        }
        if let Some(v) = o.percentile {
            cuts.push(Cut::Percentile(check_fraction(&name("percentile"), v)?));
        }
        let all = [
            "channel_ratio",
            "params_reduction",
            "macs_reduction",
            "percentile",
            "latency_reduction",
        ]
        .map(name);
        let cut = match cuts.as_slice() {
            [c] => *c,
            [] if method == "slimming" => invalid!(
                "{method} needs {} (or a {}, {} or {} target)",
                all[3],
                all[0],
                all[1],
                all[2]
            ),
            [] => invalid!(
                "structured pruning needs a target: {}, {}, {} or {} (or {})",
                all[0],
                all[1],
                all[2],
                all[4],
                all[3]
            ),
            _ => invalid!(
                "give exactly one of {}, {}, {}, {} and {}",
                all[0],
                all[1],
                all[2],
                all[4],
                all[3]
            ),
        };
        let importance = o.importance.unwrap_or(default_importance);
        let spec = StructuredSpec {
            method: method.to_string(),
            importance,
            cut,
            scope: o.scope,
            // Network Slimming compares raw |γ| across layers; a global ranking of the other
            // criteria compares groups of different sizes, so their scores are normalised.
            normalization: o.normalize.unwrap_or(
                if o.scope == Scope::Global && method != "slimming" {
                    Normalization::Mean
                } else {
                    Normalization::None
                },
            ),
            include_consumers: o.include_consumers,
            convention: o.convention,
            round_to: o.round_to,
            latency_runtime: o.latency_runtime,
            max_layer_ratio: o.max_layer_ratio,
            ignore: o.ignore.clone(),
            seed,
            score_batches: ScoreBatches {
                batches: o.score_batches,
                batch_size: o.score_batch_size,
                seed,
            },
        };
        spec.validate(spelling)?;
        Ok(spec)
    }

    fn validate(&self, spelling: Spelling) -> Result<()> {
        if self.round_to == RoundTo::Multiple(0) {
            invalid!("{} must be at least 1", spelling.name("round_to"));
        }
        if !(0.0..=1.0).contains(&self.max_layer_ratio) {
            invalid!(
                "{} must be in [0, 1], got {}",
                spelling.name("max_layer_ratio"),
                self.max_layer_ratio
            );
        }
        if matches!(self.cut, Cut::Percentile(_)) && self.scope != Scope::Global {
            invalid!(
                "{} is a global threshold; it cannot be combined with {} per-layer",
                spelling.name("percentile"),
                spelling.name("scope")
            );
        }
        Ok(())
    }

    /// True when scoring needs training data (Taylor).
    pub fn needs_data(&self) -> bool {
        self.importance == Importance::Taylor
    }

    /// Short label of the cut for run names and reports, e.g. `macs0.5`.
    pub fn cut_label(&self) -> String {
        match self.cut {
            Cut::ChannelRatio(v) => format!("channels{v}"),
            Cut::ParamsReduction(v) => format!("params{v}"),
            Cut::MacsReduction(v) => format!("macs{v}"),
            Cut::LatencyReduction(v) => format!("latency{v}"),
            Cut::Percentile(v) => format!("p{v}"),
            Cut::Threshold(v) => format!("tau{v}"),
            Cut::Mask => "mask".into(),
        }
    }

    /// Short hash of the spec, for run names.
    pub fn hash(&self) -> String {
        short_hash(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }
}

/// Channel scores per group for `spec`'s importance.
pub fn group_scores(
    model: &Model,
    groups: &[ChannelGroup],
    spec: &StructuredSpec,
    data: Option<&DataSplits>,
    device_name: &str,
) -> Result<GroupScores> {
    let normalization = spec.normalization;
    let opts = |criterion, reduction| ImportanceOptions {
        criterion,
        include_consumers: spec.include_consumers,
        reduction,
        normalization,
    };
    let scores = match spec.importance {
        Importance::L1 => importance(&model.weights, groups, &opts(Criterion::L1, Reduction::Sum))?,
        Importance::L2 => importance(&model.weights, groups, &opts(Criterion::L2, Reduction::Sum))?,
        // Mean over a group's BatchNorms, so a residual group is not favoured for having many.
        Importance::BnScale => importance(
            &model.weights,
            groups,
            &opts(Criterion::BnScale, Reduction::Mean),
        )?,
        Importance::Random => importance(
            &model.weights,
            groups,
            &opts(Criterion::Random { seed: spec.seed }, Reduction::Sum),
        )?,
        Importance::Learned => invalid!(
            "learned scores come from training a method that learns them (PAAM), not from a one-shot cut"
        ),
        Importance::Taylor => {
            let data = data.context("taylor importance needs training data (drop --no-eval)")?;
            let device = device_by_name(device_name)?;
            let node_scores = taylor_node_scores(
                &model.graph,
                &model.weights,
                &model.masks,
                data,
                &device,
                &spec.score_batches,
            )?;
            importance_from_node_scores(
                &model.graph,
                groups,
                &node_scores,
                Reduction::Sum,
                normalization,
            )?
        }
    };
    Ok(scores)
}

/// What was selected, with the threshold of a percentile cut and what runtime-aware rounding
/// and a latency target measured.
pub struct Selected {
    /// The model's channel groups.
    pub groups: Vec<ChannelGroup>,
    /// The channels kept in every pruned group.
    pub selection: ChannelSelection,
    /// The score threshold of a percentile cut.
    pub threshold: Option<f32>,
    /// What `round_to = "auto"` timed and chose.
    pub rounding: Option<RoundingChoice>,
    /// What a latency target's search timed.
    pub latency_search: Option<LatencySearch>,
}

impl Selected {
    /// Channels chosen by other means (a mask, a vote, learned gates): nothing measured.
    pub fn given(groups: Vec<ChannelGroup>, selection: ChannelSelection) -> Selected {
        Selected {
            groups,
            selection,
            threshold: None,
            rounding: None,
            latency_search: None,
        }
    }
}

/// Scores and selects the channels to remove. Rounding `auto` and a latency target time
/// compacted candidates in the spec's runtime (see [`super::rounding`]).
pub fn select(
    model: &Model,
    spec: &StructuredSpec,
    data: Option<&DataSplits>,
    rt: &Runtime,
) -> Result<Selected> {
    let graph = &model.graph;
    let groups = channel_groups(graph)?;
    if !groups.iter().any(|g| g.prunable) {
        let reasons: Vec<String> = groups
            .iter()
            .filter_map(|g| g.reason.as_ref().map(|r| format!("group {}: {r}", g.id)))
            .collect();
        invalid!(
            "model `{}` has no prunable channel group ({})",
            graph.name,
            reasons.join("; ")
        );
    }
    let scores = group_scores(model, &groups, spec, data, &rt.device)?;
    let opts = |target, round_to| SelectOptions {
        target,
        scope: spec.scope,
        convention: spec.convention,
        round_to,
        max_group_ratio: spec.max_layer_ratio,
        ignore: spec.ignore.clone(),
    };
    let mut out = Selected::given(Vec::new(), ChannelSelection::default());
    // Only a timer when something is to be timed: a fixed multiple and a counted target time
    // nothing.
    let timer = || Timer::new(spec.latency_runtime, &rt.device);
    let compact = |sel: &ChannelSelection| compact_model(model, sel);
    // The cut at every multiple `round_to` allows: one, or each `auto` tries.
    let rounded = |out: &mut Selected,
                   cut: &mut dyn FnMut(usize) -> Result<ChannelSelection>|
     -> Result<ChannelSelection> {
        match spec.round_to {
            RoundTo::Multiple(m) => cut(m),
            RoundTo::Auto => {
                let (sel, choice) = choose_multiple(model, &timer()?, rt, &compact, cut)?;
                out.rounding = Some(choice);
                Ok(sel)
            }
        }
    };
    let target = match spec.cut {
        Cut::Percentile(p) => {
            let threshold = percentile_threshold(&scores, p)?;
            out.threshold = Some(threshold);
            let exact =
                select_below_threshold(graph, &groups, &scores, threshold, &spec.ignore, 1)?;
            out.selection = match spec.round_to {
                RoundTo::Multiple(m) => {
                    select_below_threshold(graph, &groups, &scores, threshold, &spec.ignore, m)?
                }
                // Rounding a threshold cut up can take back every channel it removed, and the
                // untouched network would then time fastest. So `auto` keeps the exact cut's
                // MACs saving: each multiple cuts the same global ranking to that saving.
                RoundTo::Auto => {
                    let (before, after) = (
                        cost(graph, spec.convention)?.macs,
                        cost(&compact_model(model, &exact)?.graph, spec.convention)?.macs,
                    );
                    let saving = 1.0 - after as f64 / before.max(1) as f64;
                    if exact.kept.is_empty() || saving <= 0.0 {
                        exact
                    } else {
                        let target = StructuredTarget::MacsReduction(saving);
                        rounded(&mut out, &mut |m| {
                            if m == 1 {
                                return Ok(exact.clone());
                            }
                            let sel = select_channels(graph, &groups, &scores, &opts(target, m))?;
                            let got =
                                achieved_reduction(graph, &groups, &sel, target, spec.convention)?;
                            within_overshoot(got, saving, m)?;
                            Ok(sel)
                        })?
                    }
                }
            };
            out.groups = groups;
            return Ok(out);
        }
        Cut::Threshold(tau) => {
            let selection =
                select_by_bn_votes(graph, &model.weights, &groups, tau as f32, &spec.ignore)?;
            out.selection = selection;
            out.threshold = Some(tau as f32);
            out.groups = groups;
            return Ok(out);
        }
        Cut::Mask => invalid!("a mask cut selects no channels by itself: give the mask"),
        Cut::LatencyReduction(v) => {
            let timer = timer()?;
            // The multiple first, timed at the MACs cut of the same size (latency follows MACs
            // closely enough to rank multiples); then the search at that multiple.
            let m = match spec.round_to {
                RoundTo::Multiple(m) => m,
                RoundTo::Auto => {
                    let proxy = StructuredTarget::MacsReduction(v);
                    let (_, choice) = choose_multiple(model, &timer, rt, &compact, &mut |m| {
                        Ok(select_channels(graph, &groups, &scores, &opts(proxy, m))?)
                    })?;
                    let m = choice.chosen;
                    out.rounding = Some(choice);
                    m
                }
            };
            let mut meter = LatencyMeter::new(model, &compact, &timer, rt)?;
            let what = format!(
                "latency reduction {v} (batch 1, one thread, in {})",
                timer.runtime.name()
            );
            // The search speaks CoreError; a timing failure (or a stop) is kept whole here.
            let mut failed: Option<MethodError> = None;
            let searched = select_channels_measured(
                graph,
                &groups,
                &scores,
                &opts(StructuredTarget::ChannelRatio(v), m),
                v,
                &what,
                &mut |sel| {
                    meter.reduction(sel).map_err(|e| {
                        let shown = shears_core::CoreError::value("latency target", e.to_string());
                        failed = Some(e);
                        shown
                    })
                },
            );
            let selection = match (searched, failed) {
                (Err(_), Some(e)) => return Err(e),
                (r, _) => r?,
            };
            out.latency_search = Some(meter.report(v, &selection));
            out.selection = selection;
            out.groups = groups;
            return Ok(out);
        }
        Cut::ChannelRatio(v) => StructuredTarget::ChannelRatio(v),
        Cut::ParamsReduction(v) => StructuredTarget::ParamsReduction(v),
        Cut::MacsReduction(v) => StructuredTarget::MacsReduction(v),
    };
    let goal = target.value();
    out.selection = rounded(&mut out, &mut |m| {
        let sel = select_channels(graph, &groups, &scores, &opts(target, m))?;
        if m > 1 {
            let got = achieved_reduction(graph, &groups, &sel, target, spec.convention)?;
            within_overshoot(got, goal, m)?;
        }
        Ok(sel)
    })?;
    out.groups = groups;
    Ok(out)
}

/// A rounded cut may remove more than asked (counts move in steps of the multiple); `auto`
/// passes over a multiple that overshoots by more than [`OVERSHOOT`], since it would be faster
/// for having removed more, not for its shapes.
fn within_overshoot(achieved: f64, goal: f64, m: usize) -> Result<()> {
    if achieved > goal + OVERSHOOT {
        invalid!(
            "multiples of {m} remove {:.1}% where {:.1}% was asked, more than {:.0} points over",
            achieved * 100.0,
            goal * 100.0,
            OVERSHOOT * 100.0
        );
    }
    Ok(())
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
                || matches!(
                    m.kind,
                    ParamKind::BnScale | ParamKind::BnShift | ParamKind::Scale | ParamKind::Shift
                );
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

/// One pruned group in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PrunedGroup {
    pub id: usize,
    pub producers: Vec<String>,
    pub channels: usize,
    pub kept: usize,
    /// The indices of the kept channels, ascending: with the group's members this says which
    /// rows and columns of each tensor survive (the Python bridge slices a PyTorch module by it).
    pub kept_channels: Vec<usize>,
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
    /// Largest |difference| between the compacted network and the gated dense one on one
    /// random input, in the reference interpreter (the check every compaction passes).
    pub compaction_max_abs_diff: f64,
    /// The largest |output| of that check (at least 1), against which the difference is judged.
    pub compaction_output_scale: f64,
    /// Whether `--save-masked`'s dense model with the removed channels zeroed computes what the
    /// compacted one does: not when a LayerNorm normalises over channels that were removed
    /// (zeroed channels still count in its statistics; compaction takes them out).
    pub masked_model_equivalent: bool,
}

pub fn sizes(dense: &Graph, small: &Graph, sel: &Selected) -> Result<Sizes> {
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
            kept_channels: kept.clone(),
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
        compaction_max_abs_diff: 0.0,
        compaction_output_scale: 1.0,
        masked_model_equivalent: !normalises_over_removed_channels(dense, sel),
    })
}

/// Whether a LayerNorm reads a value some of whose channels the selection removes.
fn normalises_over_removed_channels(dense: &Graph, sel: &Selected) -> bool {
    let removed_values: std::collections::HashSet<&str> = sel
        .selection
        .kept
        .iter()
        .filter(|(id, kept)| kept.len() < sel.groups[**id].channels)
        .flat_map(|(id, _)| sel.groups[*id].values.iter().map(|v| v.value.as_str()))
        .collect();
    dense.nodes.iter().any(|n| {
        matches!(n.op, shears_core::graph::Op::LayerNorm(_))
            && removed_values.contains(n.inputs[0].as_str())
    })
}

/// Runs the compacted and the gated dense network on one seeded random input in the reference
/// interpreter and returns the largest |difference| and the largest |output| (at least 1), or
/// an error when the difference is beyond float rounding (1e-3 of the outputs): compaction must
/// never change what the network computes.
fn check_compaction(
    dense: &Model,
    small: &Model,
    selection: &ChannelSelection,
) -> Result<(f64, f64)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut dims = vec![1];
    dims.extend_from_slice(&dense.graph.input.shape);
    let x = ndarray::ArrayD::from_shape_simple_fn(ndarray::IxDyn(&dims), || {
        rng.random_range(-1.0f32..1.0)
    });
    let gates = shears_core::structured::selection_gates(&dense.graph, selection)?;
    let gated = shears_core::reference::forward_with_channel_gates(
        &dense.graph,
        &dense.weights,
        Some(&dense.masks),
        &gates,
        &x,
    )?;
    let compacted =
        shears_core::reference::forward(&small.graph, &small.weights, Some(&small.masks), &x)?;
    let scale = gated.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = gated
        .iter()
        .zip(compacted.iter())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    if !(diff <= 1e-3 * scale) {
        invalid!(
            "compaction changed the network's output by {diff} (outputs up to {scale}): a bug in \
             shears' rules for one of this network's ops; please report it with the model"
        );
    }
    Ok((diff as f64, scale as f64))
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
pub struct CutContext<'a> {
    pub rt: &'a Runtime,
    /// Test data to evaluate at every stage (and train on when fine-tuning); `None` skips both.
    pub data: Option<&'a DataSplits>,
    /// Evaluate on the first N test samples only.
    pub test_limit: Option<usize>,
    pub dir: &'a RunDir,
    /// Continue an interrupted fine-tuning phase.
    pub resume: bool,
    pub finetune: Option<TrainSection>,
    /// `None` measures no latency.
    pub latency: Option<&'a LatencySettings>,
    /// Also save the dense model with the removed channels zeroed here.
    pub save_masked: Option<&'a Path>,
}

/// What [`cut_compact_finetune`] found and measured.
pub struct Outcome {
    pub selected: Selected,
    pub sizes: Sizes,
    pub accuracy: Accuracies,
    pub latency: Vec<LatencyRow>,
    /// What became of the onnxruntime latency column, and what the time budget changed
    /// (`None` when latency was not measured).
    pub onnxruntime: Option<(String, Vec<String>)>,
}

/// Selects, compacts, checks the gated model against the compacted one, fine-tunes and
/// measures: everything after the dense model. Saves the compacted model in `dir/pruned` and the
/// final one (fine-tuned if asked) in `dir`.
pub fn cut_compact_finetune(
    ctx: &CutContext<'_>,
    dense: &Model,
    spec: &StructuredSpec,
) -> Result<Outcome> {
    ctx.rt.stage("selecting and compacting")?;
    let sel = select(dense, spec, ctx.data, ctx.rt)?;
    compact_finetune(ctx, dense, sel)
}

/// [`cut_compact_finetune`] for channels already selected (a mask, a vote).
pub fn compact_finetune(ctx: &CutContext<'_>, dense: &Model, sel: Selected) -> Result<Outcome> {
    let rt = ctx.rt;
    let limit = ctx.test_limit;
    let mut acc = Accuracies::default();
    if let Some(data) = ctx.data {
        acc.test_samples = Some(limit.map_or(data.test.len(), |l| l.min(data.test.len())));
        acc.accuracy_before_pruning = Some(eval_model(rt, dense, data, limit)?.1);
    }
    let t = Instant::now();
    let small = compact_model(dense, &sel.selection)?;
    tracing::info!(
        "selected and compacted in {:.3} s: {} channels removed",
        t.elapsed().as_secs_f64(),
        sel.selection.removed_channels(&sel.groups)
    );
    let mut sizes = sizes(&dense.graph, &small.graph, &sel)?;
    (sizes.compaction_max_abs_diff, sizes.compaction_output_scale) =
        check_compaction(dense, &small, &sel.selection)?;
    let pruned_dir = ctx.dir.phase("pruned");
    save_model(&pruned_dir, &small)?;
    if let Some(path) = ctx.save_masked {
        if !sizes.masked_model_equivalent {
            tracing::warn!(
                "the masked model saved to {} is not equivalent to the compacted one: a \
                 LayerNorm normalises over removed channels, which it still counts when they are \
                 zeroed (compaction takes them out of its statistics)",
                path.display()
            );
        }
        save_model(path, &zeroed_model(dense, &sel.groups, &sel.selection)?)?;
    }
    if let Some(data) = ctx.data {
        acc.accuracy_after_pruning = Some(eval_model(rt, &small, data, limit)?.1);
        acc.accuracy_after_pruning_gated =
            Some(gated_accuracy(rt, dense, &sel.selection, data, limit)?);
    }
    let final_model = match (&ctx.finetune, ctx.data) {
        (Some(section), Some(data)) if section.epochs > 0 => {
            let (tuned, _) = train_phase(
                rt,
                section,
                small,
                data,
                &ctx.dir.phase("finetune"),
                ctx.resume,
            )?;
            acc.accuracy_after_finetune = Some(eval_model(rt, &tuned, data, limit)?.1);
            tuned
        }
        (Some(section), None) if section.epochs > 0 => {
            invalid!("fine-tuning needs data (drop --no-eval)")
        }
        _ => small,
    };
    save_model(&ctx.dir.path, &final_model)?;
    let (latency, onnxruntime) = match ctx.latency {
        None => (Vec::new(), None),
        Some(l) => {
            let m = measure_latency(
                dense,
                &final_model,
                &rt.device,
                l,
                sizes.macs_ratio,
                rt.progress.as_ref(),
            )?;
            (m.rows, Some((m.onnxruntime, m.notes)))
        }
    };
    Ok(Outcome {
        selected: sel,
        sizes,
        accuracy: acc,
        latency,
        onnxruntime,
    })
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

    fn args() -> StructuredOptions {
        StructuredOptions {
            macs_reduction: Some(0.4),
            ..StructuredOptions::default()
        }
    }

    fn from_args(method: &str, o: &StructuredOptions) -> Result<StructuredSpec> {
        StructuredSpec::resolve(
            method,
            crate::registry::find(method).unwrap().one_shot.unwrap(),
            o,
            0,
            Spelling::Flag,
        )
    }

    #[test]
    fn zeroed_dense_model_equals_the_compacted_one() {
        let m = resnet();
        let spec = from_args("l1-filter", &args()).unwrap();
        let sel = select(&m, &spec, None, &Runtime::new("flex", 0)).unwrap();
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
        let e = "l3".parse::<Importance>().unwrap_err().to_string();
        assert!(
            e.contains("unknown importance `l3`") && e.contains("taylor"),
            "{e}"
        );
        let mut a = args();
        a.macs_reduction = Some(1.5);
        let e = from_args("l1-filter", &a).unwrap_err().to_string();
        assert!(
            e.contains("--macs-reduction must be in [0, 1), got 1.5"),
            "{e}"
        );
        let mut a = args();
        a.channel_ratio = Some(0.2);
        let e = from_args("l1-filter", &a).unwrap_err().to_string();
        assert!(e.contains("exactly one of"), "{e}");
        let mut a = args();
        a.macs_reduction = None;
        let e = from_args("slimming", &a).unwrap_err().to_string();
        assert!(e.contains("--percentile"), "{e}");
        let e = parse_scope("layerwise").unwrap_err().to_string();
        assert!(e.contains("unknown --scope `layerwise`"), "{e}");
        let mut a = args();
        a.round_to = RoundTo::Multiple(0);
        assert!(from_args("l1-filter", &a).is_err());
        // Defaults follow the method; normalisation defaults to mean for a global ranking.
        let s = from_args("random-filter", &args()).unwrap();
        assert_eq!(
            (s.importance, s.normalization),
            (Importance::Random, Normalization::Mean)
        );
        // ... except Network Slimming, whose percentile compares raw |γ|.
        let mut a = args();
        a.macs_reduction = None;
        a.percentile = Some(0.5);
        let s = from_args("slimming", &a).unwrap();
        assert_eq!(
            (s.importance, s.normalization),
            (Importance::BnScale, Normalization::None)
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
        // Channels 0, 3 and 15 score above the threshold; of the rest, 14 scores best.
        let mut s: Vec<f32> = (0..16).map(|j| j as f32).collect();
        s[0] = 100.0;
        s[3] = 101.0;
        s[15] = 102.0;
        let mut scores = GroupScores::new();
        scores.insert(g.id, s);
        let sel = select_below_threshold(&m.graph, &groups, &scores, 50.0, &[], 4).unwrap();
        // Three kept round up to four: the best removed channel (14) comes back.
        assert_eq!(sel.kept[&g.id], vec![0, 3, 14, 15]);
        // Thirteen kept round up to sixteen: the group stays whole.
        let sel = select_below_threshold(&m.graph, &groups, &scores, 2.5, &[], 8).unwrap();
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
        let o = StructuredOptions {
            percentile: Some(0.4),
            round_to: RoundTo::Multiple(1),
            ..StructuredOptions::default()
        };
        let spec = from_args("slimming", &o).unwrap();
        let sel = select(&m, &spec, None, &Runtime::new("flex", 0)).unwrap();
        assert_eq!(sel.threshold, Some(0.0));
        for (gid, kept) in &sel.selection.kept {
            let c = sel.groups[*gid].channels;
            assert_eq!(kept, &(c / 2..c).collect::<Vec<_>>(), "group {gid}");
        }
        assert!(!sel.selection.kept.is_empty());
    }

    /// Kept counts are multiples of `m` unless a group stays whole.
    fn counts_are_multiples(sel: &Selected, m: usize) -> bool {
        sel.selection
            .kept
            .iter()
            .all(|(g, k)| k.len() % m == 0 || k.len() == sel.groups[*g].channels)
    }

    #[test]
    fn auto_rounding_times_every_multiple_and_keeps_the_chosen_cut() {
        let m = resnet();
        let o = StructuredOptions {
            latency_runtime: Some(TargetRuntime::Shears),
            ..args()
        };
        assert_eq!(o.round_to, RoundTo::Auto, "auto is the default");
        let spec = from_args("l1-filter", &o).unwrap();
        let sel = select(&m, &spec, None, &Runtime::new("flex", 0)).unwrap();
        let c = sel.rounding.as_ref().expect("auto reports what it timed");
        assert_eq!(c.runtime, "shears");
        let tried: Vec<usize> = c.tried.iter().map(|t| t.multiple).collect();
        assert_eq!(tried, super::super::rounding::AUTO_MULTIPLES.to_vec());
        assert!(c.dense_ms > 0.0);
        // The chosen multiple was timed, no multiple timed within 3 % was smaller, and the
        // selection is that multiple's cut.
        let timed: Vec<(usize, f64)> = c
            .tried
            .iter()
            .filter_map(|t| t.median_ms.map(|ms| (t.multiple, ms)))
            .collect();
        assert!(timed.iter().any(|t| t.0 == c.chosen));
        assert_eq!(
            super::super::rounding::fastest_multiple(&timed),
            Some(c.chosen)
        );
        assert!(counts_are_multiples(&sel, c.chosen));
        let fixed = StructuredOptions {
            round_to: RoundTo::Multiple(c.chosen),
            ..args()
        };
        let again = select(
            &m,
            &from_args("l1-filter", &fixed).unwrap(),
            None,
            &Runtime::new("flex", 0),
        )
        .unwrap();
        assert_eq!(again.selection, sel.selection);
        assert!(again.rounding.is_none(), "a fixed multiple times nothing");
        // The MACs target still holds at the chosen multiple.
        let small = compact_model(&m, &sel.selection).unwrap();
        let (b, a) = (
            cost(&m.graph, Convention::ConvLinear).unwrap().macs,
            cost(&small.graph, Convention::ConvLinear).unwrap().macs,
        );
        assert!(1.0 - a as f64 / b as f64 >= 0.4 - 1e-9);
    }

    #[test]
    fn a_latency_target_is_met_as_measured() {
        // A network whose time is mostly convolution work, so a cut can save a third of it.
        let graph = zoo::build("small-cnn", &[1, 28, 28], 10).unwrap();
        let weights = init_weights(&graph, 2);
        let m = Model {
            graph,
            weights,
            masks: Masks::new(),
        };
        let o = StructuredOptions {
            macs_reduction: None,
            latency_reduction: Some(0.3),
            latency_runtime: Some(TargetRuntime::Shears),
            round_to: RoundTo::Multiple(2),
            ..StructuredOptions::default()
        };
        let spec = from_args("l1-filter", &o).unwrap();
        assert_eq!(spec.cut, Cut::LatencyReduction(0.3));
        assert_eq!(spec.cut_label(), "latency0.3");
        let sel = select(&m, &spec, None, &Runtime::new("flex", 0)).unwrap();
        let l = sel.latency_search.as_ref().expect("the search reports");
        assert_eq!((l.runtime, l.target), ("shears", 0.3));
        assert!(l.evaluations >= 1);
        assert!(l.reduction >= 0.3, "{l:?}");
        assert!((l.reduction - (1.0 - l.compacted_ms / l.dense_ms)).abs() < 1e-12);
        assert!(!sel.selection.kept.is_empty());
        assert!(counts_are_multiples(&sel, 2));
        // Two targets at once are refused, naming both.
        let both = StructuredOptions {
            macs_reduction: Some(0.5),
            ..o
        };
        let e = from_args("l1-filter", &both).unwrap_err().to_string();
        assert!(
            e.contains("--latency-reduction") && e.contains("--macs-reduction"),
            "{e}"
        );
    }
}
