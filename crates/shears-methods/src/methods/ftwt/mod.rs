//! Fire Together Wire Together (Elkerdawy et al., "A Dynamic Pruning Approach with
//! Self-Supervised Mask Prediction"): every gated conv gets a small head that reads the conv's
//! input and predicts, per sample, which output filters to compute; the heads learn targets
//! drawn from the pretrained network's own activations (the filters holding a share r of the
//! "heatmap" mass), so no sparsity budget or regulariser is tuned.
//!
//! Stages, each kept in the run directory so a resumed run continues where it stopped:
//! 1. the dense baseline (`dense/`, from `[train]`);
//! 2. the estimate before training: the baseline gated by its own targets over training data
//!    gives the expected MACs reduction for r before any head exists;
//! 3. dynamic training from the baseline (`ftwt/` checkpoints, `dynamic/` model, `heads/`):
//!    the `[finetune]` phase with the gated network's cross-entropy plus the heads' BCE loss for
//!    the first ⌊cooldown·E⌋ epochs (heads frozen after), the heads on their own SGD;
//! 4. measurement on the test set: accuracy, per-layer mask-prediction accuracy and active
//!    share, per-sample MACs in the paper's and the strict convention.
//!
//! Modules: [`layers`] (which convs, where the gate sits), [`targets`] (the heatmap-mass and
//! uniform rules), [`gates`] (heads as engine gates, the BCE loss, tallies), [`cost`] (MACs).

pub mod bench;
pub mod cost;
pub mod gates;
pub mod inference;
pub mod layers;
pub mod targets;

use crate::config::ExperimentConfig;
use crate::error::{MethodError, Result};
use crate::invalid;
use crate::method::{MethodEntry, PreparedMethod};
use crate::report::{DynamicReport, Report, thousands, version};
use crate::steps::baseline::dense_baseline;
use crate::steps::context::Pipeline;
use crate::steps::eval::eval_model;
use crate::steps::model::executor;
use crate::steps::phase::{cached_phase, finished_extra};
use cost::{DenseCost, MacsSummary};
use gates::{FtwtGates, MaskLoss, Mode, Source, initial_heads};
use layers::{GatedLayer, gated_layers};
use serde::{Deserialize, Serialize};
use shears_core::artifact::Model;
use shears_engine::train::{TrainHooks, evaluate_gated};
use shears_engine::{ExtraParams, OptimizerConfig};
use targets::TargetRule;

fn default_r() -> f64 {
    0.9
}
fn default_rule() -> TargetRule {
    TargetRule::Mass
}
fn default_mode() -> Mode {
    Mode::Decoupled
}
fn default_head_lr() -> f64 {
    0.1
}
fn default_head_momentum() -> f64 {
    0.9
}
fn default_cooldown() -> f64 {
    0.5
}
fn default_estimate_samples() -> usize {
    1000
}
fn default_true() -> bool {
    true
}

/// The keys of `[method] name = "ftwt"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtwtOptions {
    /// The target's mass threshold in (0, 1] (`target = "mass"`), or the share of filters
    /// dropped (`target = "uniform"`).
    #[serde(default = "default_r")]
    pub r: f64,
    #[serde(default = "default_rule")]
    pub target: TargetRule,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// The heads' optimiser: SGD with this fixed learning rate and momentum, no weight decay,
    /// no schedule (the official code's defaults).
    #[serde(default = "default_head_lr")]
    pub head_lr: f64,
    #[serde(default = "default_head_momentum")]
    pub head_momentum: f64,
    /// The mask loss is on for epochs before ⌊cooldown · E⌋ of the dynamic phase.
    #[serde(default = "default_cooldown")]
    pub cooldown: f64,
    /// Softmax over the pooled input channels before the head's linear map.
    #[serde(default = "default_true")]
    pub softmax: bool,
    /// Keep the filter with the largest logit on when a head switches all of a layer's filters
    /// off for a sample, so that no layer goes dark and cuts the network (not in the paper:
    /// without it VGG-11 collapsed to chance at r ≤ 0.95 here).
    #[serde(default = "default_true")]
    pub keep_one: bool,
    /// The convs to gate (default: every conv but residual projections).
    #[serde(default)]
    pub gated: Vec<String>,
    /// Convs never gated.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Training samples over which the pre-training MACs estimate is taken.
    #[serde(default = "default_estimate_samples")]
    pub estimate_samples: usize,
}

/// Per gated layer, on the test set.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub conv: String,
    pub gate_at: String,
    pub filters: usize,
    /// Share of (sample, filter) pairs where the predicted gate equals the target.
    pub mask_accuracy: f64,
    /// Mean share of filters on per sample, predicted and wanted by the targets.
    pub active_share: f64,
    pub target_share: f64,
}

/// The report of an FTWT run (`result.json`, `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct FtwtReport {
    pub version: &'static str,
    pub command: &'static str,
    pub run_dir: String,
    pub model: String,
    pub dataset: String,
    pub seed: u64,
    pub config_hash: String,
    pub method: &'static str,
    pub r: f64,
    pub target: TargetRule,
    pub mode: Mode,
    pub cooldown: f64,
    pub epochs: usize,
    pub test_samples: Option<usize>,
    pub accuracy_baseline: f64,
    /// The baseline gated by its targets (what the heads are trained to reproduce).
    pub accuracy_target_gated_train: f64,
    pub accuracy_dynamic: f64,
    /// MACs before training (the baseline gated by its targets, on training data) and after
    /// (the trained heads, on the test set).
    pub estimate: MacsSummary,
    pub achieved: MacsSummary,
    pub mask_accuracy: f64,
    pub layers: Vec<LayerReport>,
    pub heads_dir: String,
    pub seconds: f64,
}

impl FtwtReport {
    /// The printed report's lines.
    pub fn lines(&self) -> Vec<String> {
        let pct = |v: f64| format!("{:.2}%", v * 100.0);
        let mut out = vec![
            format!(
                "shears run: {} on {} (seed {}, config {})",
                self.model, self.dataset, self.seed, self.config_hash
            ),
            format!(
                "  ftwt           r {} ({} targets), {}, cooldown {}, {} dynamic epochs",
                self.r,
                self.target.name(),
                self.mode.name(),
                self.cooldown,
                self.epochs
            ),
            format!(
                "  accuracy       baseline {}  gated by targets (train) {}  dynamic {}",
                pct(self.accuracy_baseline),
                pct(self.accuracy_target_gated_train),
                pct(self.accuracy_dynamic)
            ),
            format!(
                "  MACs/sample    dense {}  dynamic {} paper / {} strict",
                thousands(self.achieved.dense_macs),
                thousands(self.achieved.paper_macs.round() as u64),
                thousands(self.achieved.strict_macs.round() as u64)
            ),
            format!(
                "  MACs reduction estimated before training {} paper / {} strict; achieved {} / {}",
                pct(self.estimate.paper_reduction),
                pct(self.estimate.strict_reduction),
                pct(self.achieved.paper_reduction),
                pct(self.achieved.strict_reduction)
            ),
            format!(
                "  mask accuracy  {} over all gated layers",
                pct(self.mask_accuracy)
            ),
        ];
        for l in &self.layers {
            out.push(format!(
                "    {:<22} {:>4} filters  on {:>6}  targets {:>6}  mask accuracy {:>6}",
                l.conv,
                l.filters,
                pct(l.active_share),
                pct(l.target_share),
                pct(l.mask_accuracy)
            ));
        }
        out.push(format!("  heads          {}", self.heads_dir));
        out.push(format!(
            "  run dir        {} ({:.1} s)",
            self.run_dir, self.seconds
        ));
        out
    }
}

/// FTWT with its checked settings.
pub struct Prepared {
    opts: FtwtOptions,
}

/// Registry hook for `[method] name = "ftwt"`: every value is checked before training.
pub fn prepare(
    entry: &MethodEntry,
    keys: &toml::Table,
    cfg: &ExperimentConfig,
) -> Result<Box<dyn PreparedMethod>> {
    let name = entry.name;
    let opts: FtwtOptions = keys.clone().try_into().map_err(|e: toml::de::Error| {
        MethodError::Invalid(format!("[method] of `{name}`: {}", e.message()))
    })?;
    match opts.target {
        TargetRule::Mass if !(opts.r > 0.0 && opts.r <= 1.0) => {
            invalid!(
                "[method] r must be in (0, 1] (the share of activation mass kept), got {}",
                opts.r
            )
        }
        TargetRule::Uniform if !(opts.r >= 0.0 && opts.r < 1.0) => invalid!(
            "[method] r with target = \"uniform\" is the share of filters dropped, in [0, 1), got {}",
            opts.r
        ),
        _ => {}
    }
    if !(opts.head_lr > 0.0 && opts.head_lr.is_finite()) {
        invalid!(
            "[method] head_lr must be a positive number, got {}",
            opts.head_lr
        );
    }
    if !(0.0..1.0).contains(&opts.head_momentum) {
        invalid!(
            "[method] head_momentum must be in [0, 1), got {}",
            opts.head_momentum
        );
    }
    if !(opts.cooldown > 0.0 && opts.cooldown <= 1.0) {
        invalid!("[method] cooldown must be in (0, 1], got {}", opts.cooldown);
    }
    let epochs = finetune_epochs(cfg);
    if ((opts.cooldown * epochs as f64).floor() as usize) == 0 {
        invalid!(
            "[method] cooldown = {} of {} dynamic epochs ([finetune] epochs) leaves no epoch for the mask loss: the heads would never train",
            opts.cooldown,
            epochs
        );
    }
    if opts.estimate_samples == 0 {
        invalid!("[method] estimate_samples must be at least 1");
    }
    Ok(Box::new(Prepared { opts }))
}

fn finetune_epochs(cfg: &ExperimentConfig) -> usize {
    cfg.finetune
        .as_ref()
        .map_or_else(|| cfg.train.default_finetune().epochs, |f| f.epochs)
}

fn layer_reports(layers: &[GatedLayer], tally: &gates::Tally, samples: u64) -> Vec<LayerReport> {
    layers
        .iter()
        .zip(&tally.layers)
        .map(|(l, t)| {
            let per = (samples.max(1) * l.out_channels as u64) as f64;
            LayerReport {
                conv: l.conv.clone(),
                gate_at: l.gate_at.clone(),
                filters: l.out_channels,
                mask_accuracy: t.agree as f64 / t.pairs.max(1) as f64,
                active_share: t.active as f64 / per,
                target_share: t.wanted as f64 / per,
            }
        })
        .collect()
}

impl Prepared {
    fn gates(&self, layers: &[GatedLayer], source: Source) -> FtwtGates {
        let o = &self.opts;
        let mut g = FtwtGates::new(layers.to_vec(), o.target, o.r, o.mode, source);
        g.softmax = o.softmax;
        g.keep_one = o.keep_one;
        g
    }

    fn heads(&self, p: &Pipeline<'_>, layers: &[GatedLayer]) -> Result<ExtraParams> {
        let device = shears_engine::device::device_by_name(&p.rt.device)?.autodiff();
        let sgd = OptimizerConfig::Sgd {
            momentum: self.opts.head_momentum,
            nesterov: false,
            weight_decay: 0.0,
        };
        Ok(ExtraParams::new(
            &device,
            initial_heads(layers, p.cfg.seed),
            sgd,
            Some(self.opts.head_lr),
        )?)
    }

    /// The baseline gated by its own targets over the first training samples.
    fn estimate(
        &self,
        p: &Pipeline<'_>,
        dense: &Model,
        layers: &[GatedLayer],
    ) -> Result<(MacsSummary, f64)> {
        let gates = self.gates(layers, Source::Targets);
        let mut exec = executor(&p.rt, dense, false)?;
        let (_, acc) = evaluate_gated(
            &mut exec,
            &p.data.train,
            &p.data.normalization,
            256,
            Some(self.opts.estimate_samples),
            Some(&gates),
            None,
        )?;
        let tally = gates.take_tally();
        Ok((
            MacsSummary::of(DenseCost::of(&dense.graph, layers)?, &tally.cost),
            acc,
        ))
    }
}

impl PreparedMethod for Prepared {
    fn label(&self) -> (String, Option<f64>) {
        let o = &self.opts;
        let rule = match o.target {
            TargetRule::Mass => String::new(),
            TargetRule::Uniform => "-uniform".into(),
        };
        (format!("ftwt-{}{rule}", o.mode.name()), Some(o.r))
    }

    fn run(&self, p: &Pipeline<'_>) -> Result<Report> {
        let o = &self.opts;
        // The gated layers are found on the configured model before any training.
        let layers = gated_layers(&p.initial()?.graph, &o.gated, &o.ignore)?;
        let dense = dense_baseline(p)?;
        let accuracy_baseline = eval_model(&p.rt, &dense, p.data, p.test_limit())?.1;
        let (estimate, accuracy_target_gated_train) = self.estimate(p, &dense, &layers)?;
        tracing::info!(
            "FTWT r = {}: estimated MACs reduction before training {:.1}% (paper) / {:.1}% (strict)",
            o.r,
            100.0 * estimate.paper_reduction,
            100.0 * estimate.strict_reduction
        );

        // Dynamic training from the baseline, heads and backbone together.
        let section = p.finetune();
        let train_gates = self.gates(&layers, Source::Predicted);
        let loss = MaskLoss {
            gates: &train_gates,
            cooldown: o.cooldown,
        };
        let mut heads = self.heads(p, &layers)?;
        let heads_dir = p.dir.path.join("heads");
        let (model, _) = cached_phase(
            &p.rt,
            &section,
            dense.clone(),
            p.data,
            &p.dir.phase("ftwt"),
            &p.dir.phase("dynamic"),
            p.resume,
            &mut TrainHooks {
                terms: vec![&loss],
                extra: Some(&mut heads),
                gates: Some(&train_gates),
                ..TrainHooks::default()
            },
        )?;
        // The heads of the last epoch: just trained, or (a finished phase being resumed) in its
        // checkpoint; kept next to the model for dynamic inference.
        finished_extra(&mut heads, &heads_dir, &p.dir.phase("ftwt"), section.epochs)?;

        // Measurement on the test set with the trained heads.
        let eval_gates = self.gates(&layers, Source::Predicted);
        let mut exec = executor(&p.rt, &model, false)?;
        let (_, accuracy_dynamic) = evaluate_gated(
            &mut exec,
            &p.data.test,
            &p.data.normalization,
            256,
            p.test_limit(),
            Some(&eval_gates),
            Some(&heads),
        )?;
        let tally = eval_gates.take_tally();
        let achieved = MacsSummary::of(DenseCost::of(&model.graph, &layers)?, &tally.cost);
        let layer_rows = layer_reports(&layers, &tally, tally.cost.samples);
        let (agree, pairs) = tally
            .layers
            .iter()
            .fold((0u64, 0u64), |(a, n), t| (a + t.agree, n + t.pairs));
        let report = FtwtReport {
            version: version(),
            command: p.command,
            run_dir: p.dir.path.display().to_string(),
            model: p.cfg.model.arch.clone(),
            dataset: p.data.train.name().to_string(),
            seed: p.cfg.seed,
            config_hash: p.cfg.hash(),
            method: "ftwt",
            r: o.r,
            target: o.target,
            mode: o.mode,
            cooldown: o.cooldown,
            epochs: section.epochs,
            test_samples: p.test_limit(),
            accuracy_baseline,
            accuracy_target_gated_train,
            accuracy_dynamic,
            estimate,
            achieved,
            mask_accuracy: agree as f64 / pairs.max(1) as f64,
            layers: layer_rows,
            heads_dir: heads_dir.display().to_string(),
            seconds: p.started.elapsed().as_secs_f64(),
        };
        let lines = report.lines();
        Ok(Report::Dynamic(DynamicReport::new(report, lines)))
    }
}
