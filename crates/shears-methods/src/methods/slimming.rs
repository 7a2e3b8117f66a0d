//! Network Slimming (Liu et al., ICCV 2017): train the baseline (or take a trained model), train
//! with an L1 penalty on every BatchNorm scale (`λ·sign(γ)` added to the gradient), remove the
//! channels whose |γ| is at or below the global `percentile`, compact, fine-tune.
//!
//! Stages are kept in the run directory (`dense/`, `sparse/`, `pruned/`, and the `train`,
//! `sparsity`, `finetune` checkpoints), so a resumed run continues where it stopped.

use crate::config::ExperimentConfig;
use crate::error::{MethodError, Result};
use crate::method::{MethodEntry, PreparedMethod};
use crate::report::{MethodDetails, Report, percent};
use crate::steps::baseline::dense_baseline;
use crate::steps::context::Pipeline;
use crate::steps::cut::pipeline_cut;
use crate::steps::eval::eval_model;
use crate::steps::phase::cached_phase;
use crate::steps::rounding::RoundTo;
use crate::steps::structured::{
    Cut, Importance, Spelling, StructuredOptions, StructuredSpec, small_gamma_share,
};
use serde::{Deserialize, Serialize};
use shears_engine::regularize::BnScaleL1;
use shears_engine::train::TrainHooks;

fn default_lambda() -> f64 {
    1e-4
}
fn default_sparsity_epochs() -> usize {
    2
}
fn default_percentile() -> f64 {
    0.5
}

/// The keys of `[method] name = "slimming"` (and the flags of `shears slim`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlimmingOptions {
    /// Strength of the L1 penalty on BatchNorm scales.
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// Epochs of sparsity training (from the baseline weights).
    #[serde(default = "default_sparsity_epochs")]
    pub sparsity_epochs: usize,
    /// Learning rate of sparsity training (default: `[train] lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity_lr: Option<f64>,
    /// Channels at or below this global percentile of |γ| are removed (the default cut, 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Or a target for the global |γ| ranking, for comparisons at one size: exactly one of
    /// `percentile`, `channel_ratio`, `params_reduction`, `macs_reduction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_reduction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_reduction: Option<f64>,
    /// Kept counts rounded up to a multiple; `auto` (the default) times which runs fastest.
    #[serde(default)]
    pub round_to: RoundTo,
    /// Node names or op kinds never pruned.
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl Default for SlimmingOptions {
    fn default() -> Self {
        SlimmingOptions {
            lambda: default_lambda(),
            sparsity_epochs: default_sparsity_epochs(),
            sparsity_lr: None,
            percentile: None,
            channel_ratio: None,
            params_reduction: None,
            macs_reduction: None,
            round_to: RoundTo::Auto,
            ignore: Vec::new(),
        }
    }
}

impl SlimmingOptions {
    /// As a `[method]` section.
    pub fn to_section(&self) -> crate::config::MethodSection {
        let keys = toml::Table::try_from(self).expect("options serialise");
        crate::config::MethodSection {
            name: "slimming".into(),
            keys,
        }
    }
}

/// What sparsity training did, in the report under `slimming`.
#[derive(Debug, Clone, Serialize)]
pub struct SlimmingReport {
    pub lambda: f64,
    pub sparsity_epochs: usize,
    pub accuracy_baseline: Option<f64>,
    /// Share of BatchNorm scales with |γ| ≤ 0.01 before and after sparsity training.
    pub small_gamma_share_before: f64,
    pub small_gamma_share_after: f64,
}

impl SlimmingReport {
    /// The printed report's line.
    pub fn lines(&self) -> Vec<String> {
        vec![format!(
            "  sparsity training: λ {} for {} epochs; |γ| ≤ 0.01: {:.1}% -> {:.1}% of BatchNorm scales; baseline accuracy {}",
            self.lambda,
            self.sparsity_epochs,
            self.small_gamma_share_before * 100.0,
            self.small_gamma_share_after * 100.0,
            percent(self.accuracy_baseline)
        )]
    }
}

/// Network Slimming with its checked settings.
pub struct Prepared {
    opts: SlimmingOptions,
    spec: StructuredSpec,
    l1: BnScaleL1,
}

/// Registry hook for `[method] name = "slimming"`.
pub fn prepare(
    entry: &MethodEntry,
    keys: &toml::Table,
    _cfg: &ExperimentConfig,
) -> Result<Box<dyn PreparedMethod>> {
    let name = entry.name;
    let opts: SlimmingOptions = keys.clone().try_into().map_err(|e: toml::de::Error| {
        MethodError::Invalid(format!("[method] of `{name}`: {}", e.message()))
    })?;
    let targets = opts.channel_ratio.is_some()
        || opts.params_reduction.is_some()
        || opts.macs_reduction.is_some();
    let so = StructuredOptions {
        percentile: match (opts.percentile, targets) {
            (None, false) => Some(default_percentile()),
            (p, _) => p,
        },
        channel_ratio: opts.channel_ratio,
        params_reduction: opts.params_reduction,
        macs_reduction: opts.macs_reduction,
        round_to: opts.round_to,
        ignore: opts.ignore.clone(),
        ..StructuredOptions::default()
    };
    let spec = StructuredSpec::resolve("slimming", Importance::BnScale, &so, 0, Spelling::Key)?;
    let l1 = BnScaleL1::all(opts.lambda)?;
    if let Some(lr) = opts.sparsity_lr
        && !(lr > 0.0 && lr.is_finite())
    {
        crate::invalid!("[method] sparsity_lr must be a positive number, got {lr}");
    }
    Ok(Box::new(Prepared { opts, spec, l1 }))
}

impl PreparedMethod for Prepared {
    fn label(&self) -> (String, Option<f64>) {
        match self.spec.cut {
            Cut::Percentile(p) => ("slim".into(), Some(p)),
            _ => (format!("slim-{}", self.spec.cut_label()), None),
        }
    }

    fn run(&self, p: &Pipeline<'_>) -> Result<Report> {
        let dense = dense_baseline(p)?;
        let accuracy_baseline = eval_model(&p.rt, &dense, p.data, p.test_limit())?.1;
        let mut sparsity = p.cfg.train.clone();
        sparsity.epochs = self.opts.sparsity_epochs;
        if let Some(lr) = self.opts.sparsity_lr {
            sparsity.lr = lr;
        }
        // Sparsity training: L1 on every BatchNorm scale.
        let (sparse, _) = cached_phase(
            &p.rt,
            &sparsity,
            dense.clone(),
            p.data,
            &p.dir.phase("sparsity"),
            &p.dir.phase("sparse"),
            p.resume,
            &mut TrainHooks {
                edits: vec![&self.l1],
                ..TrainHooks::default()
            },
        )?;
        let mut report = pipeline_cut(p, &sparse, &self.spec, None)?;
        let details = SlimmingReport {
            lambda: self.opts.lambda,
            sparsity_epochs: sparsity.epochs,
            accuracy_baseline: Some(accuracy_baseline),
            small_gamma_share_before: small_gamma_share(&dense),
            small_gamma_share_after: small_gamma_share(&sparse),
        };
        let lines = details.lines();
        report.details = Some(MethodDetails::new("slimming", details, lines));
        Ok(Report::Structured(report))
    }
}
