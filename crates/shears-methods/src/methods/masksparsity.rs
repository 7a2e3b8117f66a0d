//! MaskSparsity (Jiang et al., "Pruning-aware Sparse Regularization for Network Pruning"):
//! Network Slimming's L1 penalty on BatchNorm scales, but only on the channels a pruning mask
//! chose, so the channels that stay train freely while the doomed ones are driven to zero
//! before the cut, and cutting them barely changes the network.
//!
//! Stages, each kept in the run directory so a resumed run continues where it stopped:
//! 1. the dense baseline (`dense/`);
//! 2. the mask (`mask.json`): global sparsity training (Network Slimming, `global-sparse/`) then
//!    a |γ| threshold or a channel / params / MACs target; or a uniform share of every group; or a
//!    mask file. BatchNorms of one residual sum share one mask (the vote rule of the official code);
//! 3. MaskSparsity training **from the baseline weights** with `λ·sign(γ)` added to the gradient
//!    of the masked scales only (`sparse/`);
//! 4. the cut: the mask itself, or |γ| ≤ τ recomputed with the residual vote;
//! 5. compaction, the gated-equals-compacted check, fine-tuning, measured latency.

use crate::config::ExperimentConfig;
use crate::error::{MethodError, Result};
use crate::invalid;
use crate::method::{MethodEntry, PreparedMethod};
use crate::report::{MethodDetails, Report};
use crate::steps::baseline::dense_baseline;
use crate::steps::channel_mask::{read_mask, write_mask};
use crate::steps::context::Pipeline;
use crate::steps::cut::pipeline_cut;
use crate::steps::eval::eval_model;
use crate::steps::phase::cached_phase;
use crate::steps::rounding::RoundTo;
use crate::steps::structured::{
    Cut, Importance, Selected, Spelling, StructuredOptions, StructuredSpec, reduction_target,
    select,
};
use serde::{Deserialize, Serialize};
use shears_core::artifact::Model;
use shears_core::graph::ParamKind;
use shears_core::structured::{
    ChannelGroup, ChannelSelection, GroupScores, Scope, SelectOptions, StructuredTarget,
    channel_groups, select_by_bn_votes, select_channels,
};
use shears_engine::EpochMetrics;
use shears_engine::regularize::{BnScaleL1, penalty_masks_from_selection};
use shears_engine::train::TrainHooks;
use std::path::PathBuf;

/// Where the pruning mask comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskSource {
    /// Global sparsity training (Network Slimming) from the baseline, then `mask_tau` or a target.
    Slimming,
    /// The same share of every group, by index (the last channels go): the official code's
    /// control for whether the mask's choice matters.
    Uniform,
    /// A mask file (`mask_file`), e.g. the `mask.json` of an earlier run.
    File,
}

impl MaskSource {
    /// The name `[method] mask` takes.
    pub fn name(self) -> &'static str {
        match self {
            MaskSource::Slimming => "slimming",
            MaskSource::Uniform => "uniform",
            MaskSource::File => "file",
        }
    }
}

/// How channels are cut after MaskSparsity training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutRule {
    /// Exactly the mask's channels.
    Mask,
    /// |γ| ≤ `tau` recomputed on the trained scales, merged over residual groups by vote.
    Threshold,
}

fn default_lambda() -> f64 {
    1e-4
}
fn default_epochs() -> usize {
    2
}
fn default_tau() -> f64 {
    0.01
}
fn default_source() -> MaskSource {
    MaskSource::Slimming
}
fn default_cut() -> CutRule {
    CutRule::Mask
}

/// The keys of `[method] name = "masksparsity"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskSparsityOptions {
    /// Strength of the L1 penalty on the masked BatchNorm scales.
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// Epochs of MaskSparsity training (from the baseline weights).
    #[serde(default = "default_epochs")]
    pub sparsity_epochs: usize,
    /// Learning rate of MaskSparsity training (default: `[train] lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity_lr: Option<f64>,
    /// Where the mask comes from.
    #[serde(default = "default_source")]
    pub mask: MaskSource,
    /// `mask = "slimming"`: the global L1 strength (default: `lambda`) and epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_lambda: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_epochs: Option<usize>,
    /// `mask = "slimming"`: mark the channels with |γ| ≤ this after global sparsity training
    /// (instead of a target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_tau: Option<f64>,
    /// The mask's target (`slimming` and `uniform`): exactly one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_reduction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_reduction: Option<f64>,
    /// `mask = "file"`: the JSON mask (see `steps::channel_mask`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_file: Option<PathBuf>,
    /// How channels are cut after MaskSparsity training.
    #[serde(default = "default_cut")]
    pub cut: CutRule,
    /// The cut's |γ| threshold with `cut = "threshold"`.
    #[serde(default = "default_tau")]
    pub tau: f64,
    /// Node names or op kinds never pruned.
    #[serde(default)]
    pub ignore: Vec<String>,
}

/// What MaskSparsity did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct MaskSparsityReport {
    pub lambda: f64,
    pub mask_source: MaskSource,
    pub cut_rule: CutRule,
    pub sparsity_epochs: usize,
    /// Channels the mask marks, and all channels of the prunable groups.
    pub masked_channels: usize,
    pub prunable_channels: usize,
    pub accuracy_baseline: f64,
    /// Mean |γ| of the masked and of the kept channels, before and after MaskSparsity training.
    pub masked_gamma_before: f64,
    pub masked_gamma_after: f64,
    pub kept_gamma_before: f64,
    pub kept_gamma_after: f64,
    /// Share of the masked channels with |γ| ≤ τ after MaskSparsity training.
    pub masked_below_tau_after: f64,
    /// Training loss of the last MaskSparsity epoch (the network just before the cut).
    pub train_loss_before_cut: Option<f64>,
    /// Where the mask was written.
    pub mask_path: String,
}

impl MaskSparsityReport {
    /// The printed report's lines.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "  mask      {}: {} of {} prunable channels; baseline accuracy {:.2}%",
                self.mask_source.name(),
                self.masked_channels,
                self.prunable_channels,
                self.accuracy_baseline * 100.0
            ),
            format!(
                "  MaskSparsity training: λ {} for {} epochs; mean |γ| masked {:.4} -> {:.4}, kept {:.4} -> {:.4}; {:.1}% of masked |γ| ≤ τ",
                self.lambda,
                self.sparsity_epochs,
                self.masked_gamma_before,
                self.masked_gamma_after,
                self.kept_gamma_before,
                self.kept_gamma_after,
                self.masked_below_tau_after * 100.0
            ),
        ]
    }
}

/// MaskSparsity with its checked settings.
pub struct Prepared {
    opts: MaskSparsityOptions,
    /// The target of the mask (slimming with a target, uniform).
    target: Option<StructuredTarget>,
}

fn check_lambda(name: &str, v: f64) -> Result<()> {
    if !(v >= 0.0 && v.is_finite()) {
        invalid!("[method] {name} must be a finite number >= 0, got {v}");
    }
    Ok(())
}

/// Registry hook for `[method] name = "masksparsity"`; every value is checked here, before
/// any training starts.
pub fn prepare(
    entry: &MethodEntry,
    keys: &toml::Table,
    _cfg: &ExperimentConfig,
) -> Result<Box<dyn PreparedMethod>> {
    let name = entry.name;
    let opts: MaskSparsityOptions = keys.clone().try_into().map_err(|e: toml::de::Error| {
        MethodError::Invalid(format!("[method] of `{name}`: {}", e.message()))
    })?;
    check_lambda("lambda", opts.lambda)?;
    if let Some(l) = opts.mask_lambda {
        check_lambda("mask_lambda", l)?;
    }
    shears_core::sparsity::check_fraction("[method] tau", opts.tau, false)?;
    if let Some(t) = opts.mask_tau {
        shears_core::sparsity::check_fraction("[method] mask_tau", t, false)?;
    }
    if let Some(lr) = opts.sparsity_lr
        && !(lr > 0.0 && lr.is_finite())
    {
        invalid!("[method] sparsity_lr must be a positive number, got {lr}");
    }
    let target = reduction_target(
        opts.channel_ratio,
        opts.params_reduction,
        opts.macs_reduction,
        Spelling::Key,
    )?;
    match opts.mask {
        MaskSource::Slimming => match (target.is_some(), opts.mask_tau.is_some()) {
            (true, true) => {
                invalid!("[method] mask = \"slimming\" takes mask_tau or a target, not both")
            }
            (false, false) => invalid!(
                "[method] mask = \"slimming\" needs mask_tau or a target (channel_ratio, params_reduction or macs_reduction)"
            ),
            _ => {}
        },
        MaskSource::Uniform if target.is_none() => invalid!(
            "[method] mask = \"uniform\" needs a target (channel_ratio, params_reduction or macs_reduction)"
        ),
        MaskSource::File if opts.mask_file.is_none() => {
            invalid!("[method] mask = \"file\" needs mask_file = \"path/to/mask.json\"")
        }
        _ => {}
    }
    if opts.mask != MaskSource::File && opts.mask_file.is_some() {
        invalid!("[method] mask_file is read only with mask = \"file\"");
    }
    if opts.mask != MaskSource::Slimming {
        for (key, given) in [
            ("mask_lambda", opts.mask_lambda.is_some()),
            ("mask_epochs", opts.mask_epochs.is_some()),
            ("mask_tau", opts.mask_tau.is_some()),
        ] {
            if given {
                invalid!(
                    "[method] {key} applies to mask = \"slimming\" only, not to mask = \"{}\"",
                    opts.mask.name()
                );
            }
        }
    }
    if opts.mask == MaskSource::File {
        if target.is_some() {
            invalid!("[method] a mask file fixes the channels: drop the target");
        }
        if !opts.ignore.is_empty() {
            invalid!(
                "[method] ignore applies to masks shears computes; a mask file says itself which channels go"
            );
        }
    }
    if opts.cut == CutRule::Mask && opts.tau != default_tau() {
        invalid!(
            "[method] tau is the threshold of cut = \"threshold\"; with cut = \"mask\" drop it"
        );
    }
    Ok(Box::new(Prepared { opts, target }))
}

/// Mean |γ| of the channels of prunable groups that `masked` marks (or does not), over every
/// BatchNorm of the group.
fn mean_gamma(model: &Model, groups: &[ChannelGroup], sel: &ChannelSelection, masked: bool) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for g in groups.iter().filter(|g| g.prunable) {
        for j in 0..g.channels {
            let is_masked = sel.kept.get(&g.id).is_some_and(|k| !k.contains(&j));
            if is_masked != masked {
                continue;
            }
            for m in g.members.iter().filter(|m| m.kind == ParamKind::BnScale) {
                if let Some(t) = model.weights.get(&m.tensor) {
                    for i in m.indices(j) {
                        sum += t[[i]].abs() as f64;
                        n += 1;
                    }
                }
            }
        }
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Share of the masked channels whose every BatchNorm scale is at or below `tau`.
fn masked_below(model: &Model, groups: &[ChannelGroup], sel: &ChannelSelection, tau: f64) -> f64 {
    let (mut below, mut n) = (0usize, 0usize);
    for (&gid, kept) in &sel.kept {
        let g = &groups[gid];
        for j in (0..g.channels).filter(|j| !kept.contains(j)) {
            n += 1;
            let all = g
                .members
                .iter()
                .filter(|m| m.kind == ParamKind::BnScale)
                .all(|m| {
                    model
                        .weights
                        .get(&m.tensor)
                        .is_some_and(|t| m.indices(j).all(|i| (t[[i]].abs() as f64) <= tau))
                });
            below += usize::from(all);
        }
    }
    below as f64 / n.max(1) as f64
}

/// The uniform mask: every prunable group loses the same share, its last channels first.
fn uniform_mask(
    model: &Model,
    groups: &[ChannelGroup],
    target: StructuredTarget,
    ignore: &[String],
) -> Result<ChannelSelection> {
    let mut scores = GroupScores::new();
    for g in groups.iter().filter(|g| g.prunable) {
        scores.insert(
            g.id,
            (0..g.channels).map(|j| (g.channels - j) as f32).collect(),
        );
    }
    let opts = SelectOptions {
        target,
        scope: Scope::PerLayer,
        convention: shears_core::cost::Convention::ConvLinear,
        round_to: 1,
        max_group_ratio: 1.0,
        ignore: ignore.to_vec(),
    };
    Ok(select_channels(&model.graph, groups, &scores, &opts)?)
}

impl Prepared {
    /// Trains `model` for `epochs` with `l1` in `phase`, caching the result in `cache`.
    fn sparsity_phase(
        &self,
        p: &Pipeline<'_>,
        model: &Model,
        l1: &BnScaleL1,
        epochs: usize,
        phase: &str,
        cache: &str,
    ) -> Result<(Model, Vec<EpochMetrics>)> {
        let mut section = p.cfg.train.clone();
        section.epochs = epochs;
        if let Some(lr) = self.opts.sparsity_lr {
            section.lr = lr;
        }
        cached_phase(
            &p.rt,
            &section,
            model.clone(),
            p.data,
            &p.dir.phase(phase),
            &p.dir.phase(cache),
            p.resume,
            &mut TrainHooks {
                edits: vec![l1],
                ..TrainHooks::default()
            },
        )
    }

    /// The mask, from its source; written to `mask.json` (and read back from it on resume).
    fn mask(
        &self,
        p: &Pipeline<'_>,
        dense: &Model,
        groups: &[ChannelGroup],
        from_file: Option<ChannelSelection>,
    ) -> Result<ChannelSelection> {
        let path = p.dir.path.join("mask.json");
        if path.is_file() {
            return read_mask(&path, &dense.graph, groups);
        }
        let o = &self.opts;
        let sel = match o.mask {
            MaskSource::File => from_file.expect("read before training"),
            MaskSource::Uniform => {
                uniform_mask(dense, groups, self.target.expect("checked"), &o.ignore)?
            }
            MaskSource::Slimming => {
                let l1 = BnScaleL1::all(o.mask_lambda.unwrap_or(o.lambda))?;
                let (global, _) = self.sparsity_phase(
                    p,
                    dense,
                    &l1,
                    o.mask_epochs.unwrap_or(default_epochs()),
                    "global",
                    "global-sparse",
                )?;
                match (o.mask_tau, self.target) {
                    (Some(tau), _) => select_by_bn_votes(
                        &global.graph,
                        &global.weights,
                        groups,
                        tau as f32,
                        &o.ignore,
                    )?,
                    (None, Some(target)) => {
                        let so = StructuredOptions {
                            importance: Some(Importance::BnScale),
                            normalize: Some(shears_core::structured::Normalization::None),
                            ignore: o.ignore.clone(),
                            // The paper's mask: exact counts (its cut removes what the mask
                            // says, without rounding).
                            round_to: RoundTo::Multiple(1),
                            ..StructuredOptions::default()
                        }
                        .with_target(target);
                        let spec = StructuredSpec::resolve(
                            "masksparsity",
                            Importance::BnScale,
                            &so,
                            p.cfg.seed,
                            Spelling::Key,
                        )?;
                        select(&global, &spec, Some(p.data), &p.rt)?.selection
                    }
                    (None, None) => unreachable!("checked in prepare"),
                }
            }
        };
        if sel.kept.is_empty() {
            invalid!(
                "the mask marks no channel (a |γ| threshold below every scale, or a target of 0): nothing to regularise or prune"
            );
        }
        write_mask(&path, &dense.graph, groups, &sel)?;
        Ok(sel)
    }
}

impl PreparedMethod for Prepared {
    fn label(&self) -> (String, Option<f64>) {
        let t = match self.target {
            Some(StructuredTarget::ChannelRatio(v)) => format!("-channels{v}"),
            Some(StructuredTarget::ParamsReduction(v)) => format!("-params{v}"),
            Some(StructuredTarget::MacsReduction(v)) => format!("-macs{v}"),
            None => String::new(),
        };
        let cut = match self.opts.cut {
            CutRule::Mask => String::new(),
            CutRule::Threshold => format!("-tau{}", self.opts.tau),
        };
        let source = match self.opts.mask {
            MaskSource::Slimming => String::new(),
            MaskSource::Uniform => "-uniform".into(),
            MaskSource::File => "-file".into(),
        };
        (format!("masksparsity{source}{t}{cut}"), None)
    }

    fn run(&self, p: &Pipeline<'_>) -> Result<Report> {
        let o = &self.opts;
        // The penalty is on BatchNorm scales: a network without any (a transformer normalises
        // with LayerNorm) is refused before the baseline trains.
        let initial = p.initial()?.graph;
        let has_bn = channel_groups(&initial)?
            .iter()
            .any(|g| g.prunable && g.members.iter().any(|m| m.kind == ParamKind::BnScale));
        if !has_bn {
            invalid!(
                "MaskSparsity puts its L1 penalty on the BatchNorm scales of the channels a mask \
                 selects, and no prunable channel group of model `{}` has a BatchNorm (it \
                 normalises with LayerNorm or not at all); prune it with l1-filter, l2-filter, \
                 taylor, random-filter or paam",
                initial.name
            );
        }
        // A mask file is checked against the model before any training.
        let from_file = match &o.mask_file {
            Some(file) => {
                let graph = p.initial()?.graph;
                Some(read_mask(file, &graph, &channel_groups(&graph)?)?)
            }
            None => None,
        };
        let dense = dense_baseline(p)?;
        let accuracy_baseline = eval_model(&p.rt, &dense, p.data, p.test_limit())?.1;
        let groups = channel_groups(&dense.graph)?;
        let mask = self.mask(p, &dense, &groups, from_file)?;
        // MaskSparsity training from the baseline weights: L1 on the masked scales only.
        let penalty = penalty_masks_from_selection(&groups, &mask)?;
        let l1 = BnScaleL1::masked(&dense.graph, o.lambda, &penalty)?;
        let (sparse, rows) =
            self.sparsity_phase(p, &dense, &l1, o.sparsity_epochs, "masksparsity", "sparse")?;
        let spec = StructuredSpec {
            method: "masksparsity".into(),
            importance: Importance::BnScale,
            cut: match o.cut {
                CutRule::Mask => Cut::Mask,
                CutRule::Threshold => Cut::Threshold(o.tau),
            },
            scope: Scope::Global,
            normalization: shears_core::structured::Normalization::None,
            include_consumers: false,
            convention: shears_core::cost::Convention::ConvLinear,
            round_to: RoundTo::Multiple(1),
            latency_runtime: None,
            max_layer_ratio: 1.0,
            ignore: o.ignore.clone(),
            seed: p.cfg.seed,
            score_batches: Default::default(),
        };
        let selected = match o.cut {
            CutRule::Mask => Selected::given(groups.clone(), mask.clone()),
            CutRule::Threshold => select(&sparse, &spec, Some(p.data), &p.rt)?,
        };
        let prunable: usize = groups
            .iter()
            .filter(|g| g.prunable)
            .map(|g| g.channels)
            .sum();
        let summary = MaskSparsityReport {
            lambda: o.lambda,
            mask_source: o.mask,
            cut_rule: o.cut,
            sparsity_epochs: o.sparsity_epochs,
            masked_channels: mask.removed_channels(&groups),
            prunable_channels: prunable,
            accuracy_baseline,
            masked_gamma_before: mean_gamma(&dense, &groups, &mask, true),
            masked_gamma_after: mean_gamma(&sparse, &groups, &mask, true),
            kept_gamma_before: mean_gamma(&dense, &groups, &mask, false),
            kept_gamma_after: mean_gamma(&sparse, &groups, &mask, false),
            masked_below_tau_after: masked_below(&sparse, &groups, &mask, o.tau),
            train_loss_before_cut: rows.last().map(|r| r.train_loss),
            mask_path: p.dir.path.join("mask.json").display().to_string(),
        };
        let mut report = pipeline_cut(p, &sparse, &spec, Some(selected))?;
        let lines = summary.lines();
        report.details = Some(MethodDetails::new("masksparsity", summary, lines));
        Ok(Report::Structured(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainSection;
    use crate::steps::Runtime;
    use crate::steps::phase::{train_phase, train_phase_with};
    use crate::steps::structured::compact_model;
    use ndarray::{ArrayD, IxDyn};
    use shears_core::reference::forward;
    use shears_core::{Masks, init_weights, zoo};
    use shears_data::{DataSplits, DatasetKind, Loader, LoaderConfig};
    use shears_engine::{OptimizerConfig, Schedule};

    fn rt() -> Runtime {
        Runtime::new("flex", 0)
    }

    fn section(epochs: usize, limit: usize, optimizer: OptimizerConfig) -> TrainSection {
        TrainSection {
            epochs,
            batch_size: 64,
            lr: 0.05,
            optimizer,
            schedule: Schedule::Constant,
            train_limit: Some(limit),
            test_limit: Some(64),
            ..TrainSection::default()
        }
    }

    /// A small BN CNN trained for one epoch on 512 embedded images, a mask of half of every
    /// prunable group (by index), and the data.
    fn baseline(tmp: &std::path::Path) -> (Model, Vec<ChannelGroup>, ChannelSelection, DataSplits) {
        let data = shears_data::load(DatasetKind::FashionMnistSubset, None).unwrap();
        let graph = zoo::build("small-cnn", &[1, 28, 28], 10).unwrap();
        let model = Model {
            weights: init_weights(&graph, 0),
            graph,
            masks: Masks::new(),
        };
        let sgd = section(1, 512, TrainSection::default().optimizer);
        let (dense, _) = train_phase(&rt(), &sgd, model, &data, &tmp.join("dense"), false).unwrap();
        let groups = channel_groups(&dense.graph).unwrap();
        let mask = uniform_mask(&dense, &groups, StructuredTarget::ChannelRatio(0.5), &[]).unwrap();
        assert!(mask.removed_channels(&groups) > 0);
        (dense, groups, mask, data)
    }

    fn masked_training(
        dense: &Model,
        groups: &[ChannelGroup],
        mask: &ChannelSelection,
        data: &DataSplits,
        lambda: f64,
        s: &TrainSection,
        dir: &std::path::Path,
    ) -> Model {
        let penalty = penalty_masks_from_selection(groups, mask).unwrap();
        let l1 = BnScaleL1::masked(&dense.graph, lambda, &penalty).unwrap();
        let mut hooks = TrainHooks {
            edits: vec![&l1],
            ..TrainHooks::default()
        };
        train_phase_with(&rt(), s, dense.clone(), data, dir, false, &mut hooks)
            .unwrap()
            .0
    }

    /// (masked?, value) of every BatchNorm scale of the prunable groups.
    fn scales(model: &Model, groups: &[ChannelGroup], mask: &ChannelSelection) -> Vec<(bool, f32)> {
        let mut out = Vec::new();
        for g in groups.iter().filter(|g| g.prunable) {
            for j in 0..g.channels {
                let masked = mask.kept.get(&g.id).is_some_and(|k| !k.contains(&j));
                for m in g.members.iter().filter(|m| m.kind == ParamKind::BnScale) {
                    for i in m.indices(j) {
                        out.push((masked, model.weights[&m.tensor][[i]]));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn kept_channels_get_no_sparsity_gradient_and_masked_ones_shrink() {
        let tmp = tempfile::tempdir().unwrap();
        let (dense, groups, mask, data) = baseline(tmp.path());
        // One plain SGD step on one batch, with and without the masked penalty: the kept scales
        // move identically, the masked ones by exactly lr·λ·sign(γ) more.
        let plain = OptimizerConfig::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        };
        let one = section(1, 64, plain);
        let with = masked_training(
            &dense,
            &groups,
            &mask,
            &data,
            0.5,
            &one,
            &tmp.path().join("a"),
        );
        let without = masked_training(
            &dense,
            &groups,
            &mask,
            &data,
            0.0,
            &one,
            &tmp.path().join("b"),
        );
        let (w, wo, d) = (
            scales(&with, &groups, &mask),
            scales(&without, &groups, &mask),
            scales(&dense, &groups, &mask),
        );
        let mut masked_seen = 0;
        for ((&(masked, a), &(_, b)), &(_, g0)) in w.iter().zip(&wo).zip(&d) {
            if masked {
                masked_seen += 1;
                let want = -0.05 * 0.5 * g0.signum();
                assert!(((a - b) - want).abs() < 1e-5, "masked: {a} - {b} != {want}");
            } else {
                assert!(
                    (a - b).abs() < 1e-6,
                    "a kept scale got a sparsity gradient: {a} vs {b}"
                );
            }
        }
        assert!(masked_seen > 0);

        // Longer MaskSparsity training: masked scales collapse, kept ones stay where they were.
        let long = section(3, 512, TrainSection::default().optimizer);
        let trained = masked_training(
            &dense,
            &groups,
            &mask,
            &data,
            0.3,
            &long,
            &tmp.path().join("c"),
        );
        let mean = |v: &[(bool, f32)], masked: bool| {
            let x: Vec<f32> = v
                .iter()
                .filter(|p| p.0 == masked)
                .map(|p| p.1.abs())
                .collect();
            x.iter().sum::<f32>() / x.len() as f32
        };
        let after = scales(&trained, &groups, &mask);
        let (m0, m1) = (mean(&d, true), mean(&after, true));
        let (k0, k1) = (mean(&d, false), mean(&after, false));
        assert!(m1 < 0.3 * m0, "masked mean |γ| {m0} -> {m1}");
        assert!(
            k1 > 0.8 * k0 && k1 < 1.25 * k0,
            "kept mean |γ| {k0} -> {k1}"
        );
    }

    #[test]
    fn cutting_after_masksparsity_changes_the_network_less() {
        let tmp = tempfile::tempdir().unwrap();
        let (dense, groups, mask, data) = baseline(tmp.path());
        let long = section(3, 512, TrainSection::default().optimizer);
        let sparse = masked_training(
            &dense,
            &groups,
            &mask,
            &data,
            0.3,
            &long,
            &tmp.path().join("s"),
        );
        let loader = Loader::new(
            &data.test,
            LoaderConfig::eval(64).normalized(data.normalization.clone()),
        )
        .unwrap();
        let batch = loader.epoch(0).next().unwrap();
        let x = ArrayD::from_shape_vec(IxDyn(&[64, 1, 28, 28]), batch.images).unwrap();
        let change = |m: &Model| {
            let full = forward(&m.graph, &m.weights, None, &x).unwrap();
            let small = compact_model(m, &mask).unwrap();
            let cut = forward(&small.graph, &small.weights, None, &x).unwrap();
            let num: f32 = full
                .iter()
                .zip(cut.iter())
                .map(|(a, b)| (a - b).powi(2))
                .sum();
            let den: f32 = full.iter().map(|a| a * a).sum();
            (num / den).sqrt()
        };
        let (without, with) = (change(&dense), change(&sparse));
        assert!(
            with < 0.5 * without,
            "relative output change of the cut: {with} after MaskSparsity, {without} without"
        );
    }
}
