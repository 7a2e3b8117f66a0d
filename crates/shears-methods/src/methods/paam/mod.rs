//! PAAM (Babaiee et al., "Pruning by Active Attention Manipulation"; also published as
//! SbF-Pruner): filter scores learned from the filters' weights by a small attention network
//! per layer, trained jointly with the network, with one global budget and no per-layer budgets
//! or hyperparameters.
//!
//! Every prunable channel group gets a score per channel that multiplies its feature maps; the
//! scores are the activation (a leaky exponential, starting at 1) of an attention network
//! reading the group's filter weights. The loss is the task loss plus λ times the mean score.
//! From `prune_start` of the training the global budget is cut through the cumulative
//! distribution of all the network's scores (the lowest-scored filters go until the params or
//! MACs budget is met), ramping up to the whole budget at `prune_end`; the cut filters' gates
//! are 0 while training continues. After training the scores are folded into the weights, the
//! cut filters are removed by compaction (which must equal the trained, gated network), and
//! the smaller network is fine-tuned if `[finetune]` asks.
//!
//! The paper's code, attention equations, activation formula and schedule are not public:
//! everything marked [UNVERIFIED] in [`activation`], [`scorer`] and [`budget`] is our
//! reconstruction, and each choice is a `[method]` key.
//!
//! Stages, kept in the run directory: `dense/` (only with `start = "trained"`), the PAAM phase
//! (`paam/` checkpoints, `scored/` model, `attention/` scorers and keep masks,
//! `budget.jsonl`), then the shared structured tail (`pruned/`, `finetune/`, the final model).

pub mod activation;
pub mod budget;
pub mod gates;
pub mod layout;
pub mod scorer;

use crate::config::{ExperimentConfig, TrainSection};
use crate::error::{MethodError, Result};
use crate::invalid;
use crate::method::{MethodEntry, PreparedMethod};
use crate::report::{MethodDetails, Report};
use crate::steps::baseline::dense_baseline;
use crate::steps::context::Pipeline;
use crate::steps::cut::pipeline_cut;
use crate::steps::model::executor;
use crate::steps::phase::{cached_phase, finished_extra};
use crate::steps::rounding::RoundTo;
use crate::steps::structured::{Cut, Importance, Selected, StructuredSpec};
use activation::{Activation, ActivationKind};
use budget::{Budget, Schedule};
use gates::{BudgetRow, PaamGates, read_history};
use layout::{Fold, Layout, layout};
use scorer::{Scorer, ScorerKind, initial_params};
use serde::{Deserialize, Serialize};
use shears_core::artifact::Model;
use shears_core::structured::{ChannelSelection, Scope, channel_groups};
use shears_engine::train::TrainHooks;
use shears_engine::{ExtraParams, OptimizerConfig};

/// Where the PAAM phase starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// From the model's initial weights: the PAAM phase is `[train]` (the paper's setting).
    Scratch,
    /// From the dense baseline trained by `[train]`: the PAAM phase is `[method] epochs` more.
    Trained,
}

/// Not recovered from the paper; 0.1 kept ResNet-20 widths even and its accuracy highest in our
/// λ exploration (docs/reproductions/paam.md), 1.0 starved single groups down to one filter.
fn default_lambda() -> f64 {
    0.1
}
fn default_start() -> Start {
    Start::Scratch
}
fn default_scorer() -> ScorerKind {
    ScorerKind::Attention
}
fn default_activation() -> ActivationKind {
    ActivationKind::LeakyExp
}
fn default_alpha() -> f64 {
    0.01
}
fn default_sigmoid_start() -> f64 {
    0.99
}
fn default_one() -> f64 {
    1.0
}
fn default_dim() -> usize {
    32
}
fn default_attention_lr() -> f64 {
    0.01
}
fn default_prune_start() -> f64 {
    0.25
}
fn default_prune_end() -> f64 {
    0.75
}
fn default_round_to() -> usize {
    1
}

/// The keys of `[method] name = "paam"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaamOptions {
    /// The one global budget: exactly one of these, in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_reduction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_reduction: Option<f64>,
    /// Strength of the score penalty λ · mean(score) (≥ 0).
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    #[serde(default = "default_start")]
    pub start: Start,
    /// Epochs of the PAAM phase with `start = "trained"` (with `scratch` it is `[train]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Learning rate of the PAAM phase with `start = "trained"` (default: `[train] lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// `attention` (PAAM), or the ablations `independent` (each filter from its own weights)
    /// and `free` (a learned logit per filter).
    #[serde(default = "default_scorer")]
    pub scorer: ScorerKind,
    /// `leaky-exp` (PAAM's), or the ablation `sigmoid`.
    #[serde(default = "default_activation")]
    pub activation: ActivationKind,
    /// Slope of the leaky exponential above 0.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// The sigmoid's score at logit 0, and its temperature.
    #[serde(default = "default_sigmoid_start")]
    pub sigmoid_start: f64,
    #[serde(default = "default_one")]
    pub sigmoid_temperature: f64,
    /// Width of the attention network.
    #[serde(default = "default_dim")]
    pub dim: usize,
    /// Adam learning rate of the scorers (fixed).
    #[serde(default = "default_attention_lr")]
    pub attention_lr: f64,
    /// Let the scores' gradients reach the filter weights the scorers read.
    #[serde(default)]
    pub weights_grad: bool,
    /// Fractions of the PAAM phase: the first cut, and the epoch from which the whole budget
    /// is cut.
    #[serde(default = "default_prune_start")]
    pub prune_start: f64,
    #[serde(default = "default_prune_end")]
    pub prune_end: f64,
    /// Round every group's kept count up to a multiple of this.
    #[serde(default = "default_round_to")]
    pub round_to: usize,
    /// Node names or op kinds never scored (kept whole).
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl PaamOptions {
    /// The budget, checked.
    fn budget(&self) -> Result<Budget> {
        let b = match (self.params_reduction, self.macs_reduction) {
            (Some(v), None) => Budget::ParamsReduction(v),
            (None, Some(v)) => Budget::MacsReduction(v),
            (None, None) => invalid!(
                "PAAM needs its one global budget: [method] params_reduction or macs_reduction"
            ),
            (Some(_), Some(_)) => invalid!(
                "give PAAM one global budget: [method] params_reduction or macs_reduction, not both"
            ),
        };
        let v = b.value();
        if !(v > 0.0 && v < 1.0) {
            let key = match b {
                Budget::ParamsReduction(_) => "params_reduction",
                Budget::MacsReduction(_) => "macs_reduction",
            };
            invalid!("[method] {key} must be in (0, 1), got {v}");
        }
        Ok(b)
    }

    fn activation(&self) -> Activation {
        match self.activation {
            ActivationKind::LeakyExp => Activation::LeakyExp {
                alpha: self.alpha as f32,
            },
            ActivationKind::Sigmoid => {
                Activation::sigmoid(self.sigmoid_temperature as f32, self.sigmoid_start as f32)
            }
        }
    }

    fn scorer(&self) -> Scorer {
        Scorer {
            kind: self.scorer,
            dim: self.dim,
            weights_grad: self.weights_grad,
        }
    }
}

/// One scored group's learned width.
#[derive(Debug, Clone, Serialize)]
pub struct LearnedWidth {
    pub group: usize,
    pub producers: Vec<String>,
    pub channels: usize,
    pub kept: usize,
    /// Mean score of the kept and of the cut channels at the end of training.
    pub mean_score_kept: f64,
    pub mean_score_cut: Option<f64>,
}

/// What the PAAM phase did (in the structured report, `paam`).
#[derive(Debug, Clone, Serialize)]
pub struct PaamReport {
    pub start: Start,
    pub scorer: ScorerKind,
    pub activation: ActivationKind,
    pub lambda: f64,
    pub budget: Budget,
    pub epochs: usize,
    /// First epoch with a cut and the epoch from which the whole budget is cut (1-based).
    pub first_cut_epoch: usize,
    pub full_budget_epoch: usize,
    pub scored_groups: usize,
    pub scored_filters: usize,
    /// Prunable groups left whole, with the reason.
    pub unscored: Vec<(usize, String)>,
    pub widths: Vec<LearnedWidth>,
    pub history: Vec<BudgetRow>,
    pub attention_dir: String,
}

impl PaamReport {
    /// The printed report's lines: the settings, then the learned width of every group.
    pub fn lines(&self) -> Vec<String> {
        let (kind, value) = match self.budget {
            Budget::ParamsReduction(v) => ("params", v),
            Budget::MacsReduction(v) => ("MACs", v),
        };
        let mut out = vec![
            format!(
                "  PAAM      {} scores, {} activation, λ {}; {} epochs from {}; {} of the {} cut from epoch {}, all of it from epoch {}",
                self.scorer.name(),
                self.activation.name(),
                self.lambda,
                self.epochs,
                match self.start {
                    Start::Scratch => "scratch",
                    Start::Trained => "the trained baseline",
                },
                value,
                kind,
                self.first_cut_epoch,
                self.full_budget_epoch
            ),
            "  learned widths (kept / channels, mean score kept | cut):".to_string(),
        ];
        for w in &self.widths {
            out.push(format!(
                "    {:<28} {:>4} / {:<4}  {:.3} | {}",
                w.producers.join(","),
                w.kept,
                w.channels,
                w.mean_score_kept,
                w.mean_score_cut.map_or("-".into(), |v| format!("{v:.3}"))
            ));
        }
        out
    }
}

/// PAAM with its checked settings.
pub struct Prepared {
    opts: PaamOptions,
    budget: Budget,
}

/// Registry hook for `[method] name = "paam"`: every value is checked before training.
pub fn prepare(
    entry: &MethodEntry,
    keys: &toml::Table,
    cfg: &ExperimentConfig,
) -> Result<Box<dyn PreparedMethod>> {
    let name = entry.name;
    let opts: PaamOptions = keys.clone().try_into().map_err(|e: toml::de::Error| {
        MethodError::Invalid(format!("[method] of `{name}`: {}", e.message()))
    })?;
    let budget = opts.budget()?;
    if !(opts.lambda >= 0.0 && opts.lambda.is_finite()) {
        invalid!("[method] lambda must be a number ≥ 0, got {}", opts.lambda);
    }
    if !(opts.alpha > 0.0 && opts.alpha.is_finite()) {
        invalid!(
            "[method] alpha must be a positive number (the leaky exponential's slope above 0), got {}",
            opts.alpha
        );
    }
    if !(opts.sigmoid_start > 0.0 && opts.sigmoid_start < 1.0) {
        invalid!(
            "[method] sigmoid_start must be in (0, 1), got {}",
            opts.sigmoid_start
        );
    }
    if !(opts.sigmoid_temperature > 0.0 && opts.sigmoid_temperature.is_finite()) {
        invalid!(
            "[method] sigmoid_temperature must be a positive number, got {}",
            opts.sigmoid_temperature
        );
    }
    if opts.dim == 0 {
        invalid!("[method] dim must be at least 1");
    }
    if !(opts.attention_lr > 0.0 && opts.attention_lr.is_finite()) {
        invalid!(
            "[method] attention_lr must be a positive number, got {}",
            opts.attention_lr
        );
    }
    if opts.round_to == 0 {
        invalid!("[method] round_to must be at least 1");
    }
    match opts.start {
        Start::Scratch if opts.epochs.is_some() => invalid!(
            "[method] epochs applies to start = \"trained\"; from scratch the PAAM phase is [train] epochs"
        ),
        Start::Scratch if opts.lr.is_some() => invalid!(
            "[method] lr applies to start = \"trained\"; from scratch the PAAM phase is [train]"
        ),
        Start::Trained if opts.epochs.is_none() => {
            invalid!(
                "[method] start = \"trained\" needs epochs (the PAAM phase after the baseline)"
            )
        }
        _ => {}
    }
    if let Some(lr) = opts.lr
        && !(lr > 0.0 && lr.is_finite())
    {
        invalid!("[method] lr must be a positive number, got {lr}");
    }
    let p = Prepared { opts, budget };
    // The schedule's checks (budget, fractions, at least two epochs) before any training.
    Schedule::new(
        budget,
        p.section(cfg).epochs,
        p.opts.prune_start,
        p.opts.prune_end,
    )?;
    Ok(Box::new(p))
}

impl Prepared {
    /// The PAAM phase's training section.
    fn section(&self, cfg: &ExperimentConfig) -> TrainSection {
        let mut s = cfg.train.clone();
        if self.opts.start == Start::Trained {
            s.epochs = self.opts.epochs.unwrap_or(s.epochs);
            if let Some(lr) = self.opts.lr {
                s.lr = lr;
            }
        }
        s
    }

    fn scorers(&self, p: &Pipeline<'_>, layout: &Layout) -> Result<ExtraParams> {
        let device = shears_engine::device::device_by_name(&p.rt.device)?.autodiff();
        let adam = OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        Ok(ExtraParams::new(
            &device,
            initial_params(layout, self.opts.scorer, self.opts.dim, p.cfg.seed),
            adam,
            Some(self.opts.attention_lr),
        )?)
    }
}

/// `model` with every group's gate (score times keep mask) folded into the weights: into
/// γ and β of the BatchNorm after a producer, or into the producer's filters and bias. The
/// result is a plain network equal to the gated one.
pub fn fold_scores(model: &Model, layout: &Layout, gates: &[Vec<f32>]) -> Result<Model> {
    let mut weights = model.weights.clone();
    let mut scale = |tensor: &str, s: &[f32]| -> Result<()> {
        let t = weights.get_mut(tensor).ok_or_else(|| {
            MethodError::Invalid(format!("tensor `{tensor}` is missing from the weights"))
        })?;
        if t.shape().first() != Some(&s.len()) {
            invalid!(
                "tensor `{tensor}` has shape {:?}, expected {} channels",
                t.shape(),
                s.len()
            );
        }
        for (j, &v) in s.iter().enumerate() {
            t.index_axis_mut(ndarray::Axis(0), j)
                .mapv_inplace(|x| x * v);
        }
        Ok(())
    };
    for (g, s) in layout.groups.iter().zip(gates) {
        for p in &g.producers {
            match &p.fold {
                Fold::BatchNorm(bn) => {
                    scale(&format!("{bn}.weight"), s)?;
                    scale(&format!("{bn}.bias"), s)?;
                }
                Fold::Producer(node) => {
                    scale(&p.weight, s)?;
                    let bias = format!("{node}.bias");
                    if model.weights.contains_key(&bias) {
                        scale(&bias, s)?;
                    }
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

fn mean(v: impl Iterator<Item = f32>) -> Option<f64> {
    let (s, n) = v.fold((0f64, 0usize), |(s, n), x| (s + x as f64, n + 1));
    (n > 0).then(|| s / n as f64)
}

impl PreparedMethod for Prepared {
    fn label(&self) -> (String, Option<f64>) {
        let o = &self.opts;
        let mut label = format!("paam-{}", self.budget.label());
        if o.scorer != ScorerKind::Attention {
            label += &format!("-{}", o.scorer.name());
        }
        if o.activation != ActivationKind::LeakyExp {
            label += &format!("-{}", o.activation.name());
        }
        (label, None)
    }

    fn run(&self, p: &Pipeline<'_>) -> Result<Report> {
        let o = &self.opts;
        let initial = p.initial()?;
        let layout = layout(&initial.graph, &o.ignore)?;
        let start = match o.start {
            Start::Scratch => initial,
            Start::Trained => dense_baseline(p)?,
        };
        let section = self.section(p.cfg);
        let schedule = Schedule::new(self.budget, section.epochs, o.prune_start, o.prune_end)?;
        let history = p.dir.path.join("budget.jsonl");
        let gates = PaamGates::new(
            &start.graph,
            layout.clone(),
            o.scorer(),
            o.activation(),
            o.lambda,
            schedule,
            o.round_to,
            Some(history.clone()),
        )?;
        let mut scorers = self.scorers(p, &layout)?;
        let (trained, _) = cached_phase(
            &p.rt,
            &section,
            start,
            p.data,
            &p.dir.phase("paam"),
            &p.dir.phase("scored"),
            p.resume,
            &mut TrainHooks {
                terms: vec![&gates],
                extra: Some(&mut scorers),
                gates: Some(&gates),
                epoch_start: Some(&gates),
                ..TrainHooks::default()
            },
        )?;
        let attention_dir = p.dir.path.join("attention");
        finished_extra(
            &mut scorers,
            &attention_dir,
            &p.dir.phase("paam"),
            section.epochs,
        )?;

        // The trained scores, folded into the weights; the keep masks of the last epoch are the cut.
        let exec = executor(&p.rt, &trained, false)?;
        let host = gates.host_scores(&exec, &scorers)?;
        let gate_values: Vec<Vec<f32>> = host.iter().map(|(_, g)| g.clone()).collect();
        let folded = fold_scores(&trained, &layout, &gate_values)?;
        let selection: ChannelSelection = gates.selection(&scorers);
        let widths = layout
            .groups
            .iter()
            .zip(&host)
            .map(|(g, (soft, _))| {
                let kept = selection.kept.get(&g.id);
                let on = |j: &usize| kept.is_none_or(|k| k.binary_search(j).is_ok());
                LearnedWidth {
                    group: g.id,
                    producers: g.producers.iter().map(|q| q.node.clone()).collect(),
                    channels: g.channels,
                    kept: kept.map_or(g.channels, Vec::len),
                    mean_score_kept: mean((0..g.channels).filter(on).map(|j| soft[j]))
                        .unwrap_or(0.0),
                    mean_score_cut: mean((0..g.channels).filter(|j| !on(j)).map(|j| soft[j])),
                }
            })
            .collect();
        let spec = StructuredSpec {
            method: "paam".into(),
            importance: Importance::Learned,
            cut: match self.budget {
                Budget::ParamsReduction(v) => Cut::ParamsReduction(v),
                Budget::MacsReduction(v) => Cut::MacsReduction(v),
            },
            scope: Scope::Global,
            normalization: shears_core::structured::Normalization::None,
            include_consumers: false,
            convention: shears_core::cost::Convention::ConvLinear,
            round_to: RoundTo::Multiple(o.round_to),
            latency_runtime: None,
            max_layer_ratio: 1.0,
            ignore: o.ignore.clone(),
            seed: p.cfg.seed,
            score_batches: Default::default(),
        };
        let selected = Selected::given(channel_groups(&folded.graph)?, selection);
        let mut report = pipeline_cut(p, &folded, &spec, Some(selected))?;
        let details = PaamReport {
            start: o.start,
            scorer: o.scorer,
            activation: o.activation,
            lambda: o.lambda,
            budget: self.budget,
            epochs: section.epochs,
            first_cut_epoch: schedule.first + 1,
            full_budget_epoch: schedule.last + 1,
            scored_groups: layout.groups.len(),
            scored_filters: layout.filters(),
            unscored: layout.unscored.clone(),
            widths,
            history: read_history(&history)?,
            attention_dir: attention_dir.display().to_string(),
        };
        let lines = details.lines();
        report.details = Some(MethodDetails::new("paam", details, lines));
        Ok(Report::Structured(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::Runtime;
    use crate::steps::structured::compact_model;
    use ndarray::{ArrayD, IxDyn};
    use scorer::ParamNames;
    use shears_core::reference::forward;
    use shears_core::{Masks, init_weights, zoo};
    use shears_engine::burn::tensor::{Device, Tensor, TensorData};
    use shears_engine::executor::to_vec;
    use shears_engine::{DynamicGates, EpochStart, Executor, LossTerm, Mode, StepInfo, Value};

    fn rt() -> Runtime {
        Runtime::new("flex", 0)
    }

    /// A model with non-trivial BatchNorm statistics and shifts.
    fn model(arch: &str, input: &[usize]) -> Model {
        let graph = zoo::build(arch, input, 10).unwrap();
        let mut weights = init_weights(&graph, 3);
        for (name, t) in weights.iter_mut() {
            let n = t.len();
            if name.ends_with(".running_mean") || name.ends_with(".bias") {
                t.iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = 0.1 * ((i % 7) as f32 - 3.0) / 3.0);
            } else if name.ends_with(".running_var") {
                t.iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = 0.5 + (i % 5) as f32 / n.max(1) as f32);
            }
        }
        Model {
            graph,
            weights,
            masks: Masks::new(),
        }
    }

    fn options(scorer: ScorerKind, activation: ActivationKind) -> PaamOptions {
        let mut keys = toml::Table::new();
        keys.insert("params_reduction".into(), toml::Value::Float(0.4));
        let mut o: PaamOptions = keys.try_into().unwrap();
        o.scorer = scorer;
        o.activation = activation;
        o.dim = 8;
        o
    }

    /// Scorers with random output weights (so scores differ between filters), on `device`.
    fn scorers(layout: &Layout, o: &PaamOptions, device: &Device, random_out: bool) -> ExtraParams {
        let mut params = initial_params(layout, o.scorer, o.dim, 5);
        if random_out {
            let outs: Vec<String> = layout
                .groups
                .iter()
                .map(|g| ParamNames::of(g).out)
                .chain(layout.groups.iter().map(|g| ParamNames::of(g).free))
                .collect();
            for (name, _, values) in params.iter_mut() {
                if outs.contains(name) {
                    for (i, v) in values.iter_mut().enumerate() {
                        *v = ((i * 37 % 11) as f32 - 5.0) * 0.4;
                    }
                }
            }
        }
        let adam = OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        ExtraParams::new(device, params, adam, Some(0.01)).unwrap()
    }

    fn gates(m: &Model, o: &PaamOptions, epochs: usize) -> PaamGates {
        let l = layout(&m.graph, &[]).unwrap();
        let schedule = Schedule::new(o.budget().unwrap(), epochs, 0.25, 0.75).unwrap();
        PaamGates::new(
            &m.graph,
            l,
            o.scorer(),
            o.activation(),
            o.lambda,
            schedule,
            1,
            None,
        )
        .unwrap()
    }

    fn input(shape: &[usize]) -> ArrayD<f32> {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|k| ((k * 13) % 17) as f32 / 17.0 - 0.5)
            .collect();
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }

    fn value(exec: &Executor, x: &ArrayD<f32>) -> Value {
        let n = x.shape()[0];
        exec.input_value(x.iter().copied().collect(), n).unwrap()
    }

    #[test]
    fn every_score_starts_at_one() {
        let m = model("resnet-20", &[3, 8, 8]);
        for kind in [
            ScorerKind::Attention,
            ScorerKind::Independent,
            ScorerKind::Free,
        ] {
            let o = options(kind, ActivationKind::LeakyExp);
            let g = gates(&m, &o, 4);
            let extra = scorers(&g.layout, &o, &Device::flex().autodiff(), false);
            let exec = crate::steps::model::executor(&rt(), &m, false).unwrap();
            for (soft, gate) in g.host_scores(&exec, &extra).unwrap() {
                assert!(soft.iter().all(|&s| s == 1.0), "{kind:?}: {soft:?}");
                assert_eq!(soft, gate);
            }
        }
    }

    #[test]
    fn compaction_equals_the_score_gated_network_with_the_cut_gates_at_zero() {
        for (arch, shape) in [("small-cnn", [1, 12, 12]), ("resnet-20", [3, 8, 8])] {
            for (kind, act) in [
                (ScorerKind::Attention, ActivationKind::LeakyExp),
                (ScorerKind::Independent, ActivationKind::Sigmoid),
            ] {
                let m = model(arch, &shape);
                let o = options(kind, act);
                let g = gates(&m, &o, 4);
                let mut extra = scorers(&g.layout, &o, &Device::flex().autodiff(), true);
                let train_exec = crate::steps::model::executor(&rt(), &m, true).unwrap();
                // The cut of the last epoch: the whole budget.
                g.epoch_start(
                    &train_exec,
                    Some(&mut extra),
                    StepInfo {
                        epoch: 3,
                        epochs: 4,
                    },
                )
                .unwrap();
                let sel = g.selection(&extra);
                assert!(!sel.kept.is_empty(), "{arch}: nothing cut");
                // The gated network as the engine runs it.
                let mut exec = crate::steps::model::executor(&rt(), &m, false).unwrap();
                let x = input(&[2, shape[0], shape[1], shape[2]]);
                let gated = exec.forward_gated(value(&exec, &x), Mode::Eval, &g, Some(&extra));
                let gated = to_vec(gated.reshape([20]));
                // Folded and compacted, on the framework-free reference forward.
                let host = g.host_scores(&exec, &extra).unwrap();
                let scores: Vec<Vec<f32>> = host.iter().map(|(_, s)| s.clone()).collect();
                assert!(
                    scores.iter().flatten().any(|&s| s != 0.0 && s != 1.0),
                    "scores are trivial"
                );
                let folded = fold_scores(&m, &g.layout, &scores).unwrap();
                let small = compact_model(&folded, &sel).unwrap();
                let compact: Vec<f32> = forward(&small.graph, &small.weights, None, &x)
                    .unwrap()
                    .iter()
                    .copied()
                    .collect();
                let scale = gated.iter().fold(1e-3f32, |a, v| a.max(v.abs()));
                for (a, b) in gated.iter().zip(&compact) {
                    assert!((a - b).abs() <= 1e-4 * scale, "{arch} {kind:?}: {a} vs {b}");
                }
                // The cut changed the network, so the comparison means something.
                let plain = forward(&m.graph, &m.weights, None, &x).unwrap();
                let moved = plain
                    .iter()
                    .zip(&compact)
                    .fold(0f32, |a, (p, c)| a.max((p - c).abs()));
                assert!(moved > 1e-3 * scale, "{arch}: the cut did nothing");
            }
        }
    }

    #[test]
    fn the_penalty_trains_the_scorers_and_reaches_the_weights_only_when_asked() {
        let m = model("small-cnn", &[1, 12, 12]);
        for weights_grad in [false, true] {
            let mut o = options(ScorerKind::Attention, ActivationKind::LeakyExp);
            o.weights_grad = weights_grad;
            let g = gates(&m, &o, 4);
            let device = Device::flex().autodiff();
            let extra = scorers(&g.layout, &o, &device, true);
            let mut exec = crate::steps::model::executor(&rt(), &m, true).unwrap();
            let x = input(&[2, 1, 12, 12]);
            let _ = exec.forward_gated(value(&exec, &x), Mode::Train, &g, Some(&extra));
            let at = StepInfo {
                epoch: 0,
                epochs: 4,
            };
            let penalty = g.loss(&exec, Some(&extra), at).unwrap();
            // At the start every score is near 1: λ · mean(score) ≈ λ.
            let v = penalty.clone().inner().into_scalar::<f32>();
            assert!(v > 0.0 && v.is_finite(), "{v}");
            let grads = penalty.backward();
            let names = ParamNames::of(&g.layout.groups[0]);
            let out = extra.get(&names.out).unwrap().grad(&grads).unwrap();
            assert!(to_vec(out).iter().any(|v| *v != 0.0));
            let i = exec.param_index("conv1.weight").unwrap();
            let w = exec.params[i].grad(&grads).map(to_vec);
            let reached = w.is_some_and(|w| w.iter().any(|v| *v != 0.0));
            assert_eq!(reached, weights_grad, "weights_grad = {weights_grad}");
        }
    }

    #[test]
    fn the_ablations_score_differently_and_gates_follow_the_keep_masks() {
        let m = model("small-cnn", &[1, 12, 12]);
        let exec = crate::steps::model::executor(&rt(), &m, false).unwrap();
        let mut seen = Vec::new();
        for kind in [
            ScorerKind::Attention,
            ScorerKind::Independent,
            ScorerKind::Free,
        ] {
            let o = options(kind, ActivationKind::LeakyExp);
            let g = gates(&m, &o, 4);
            let mut extra = scorers(&g.layout, &o, &Device::flex().autodiff(), true);
            let first = g.layout.groups[0].clone();
            let mut keep = vec![1.0; first.channels];
            keep[0] = 0.0;
            extra.set_buffer(&gates::keep_name(&first), keep).unwrap();
            let host = g.host_scores(&exec, &extra).unwrap();
            assert_eq!(host[0].1[0], 0.0);
            assert_eq!(host[0].1[1..], host[0].0[1..]);
            seen.push(host[0].0.clone());
        }
        assert_ne!(seen[0], seen[1]);
        assert_ne!(seen[1], seen[2]);
        // A gate multiplies a whole group; its shape broadcasts over the batch.
        let o = options(ScorerKind::Attention, ActivationKind::LeakyExp);
        let g = gates(&m, &o, 4);
        let extra = scorers(&g.layout, &o, &Device::flex().autodiff(), true);
        let values = exec.plain_params();
        g.begin_pass(&exec.pass_params(&values), Some(&extra));
        let node = g.layout.groups[0].producers[0].gate_at.clone();
        let dummy = Value::Flat(Tensor::from_data(
            TensorData::new(vec![0f32; 2], [1, 2]),
            exec.device(),
        ));
        let gate = g.gate(&node, &dummy, &dummy, Some(&extra)).unwrap();
        assert_eq!(gate.dims(), [1, g.layout.groups[0].channels]);
        assert!(g.gate("fc", &dummy, &dummy, Some(&extra)).is_none());
    }

    fn cfg(text: &str) -> Result<Box<dyn PreparedMethod>> {
        let c: ExperimentConfig =
            toml::from_str(text).map_err(|e| MethodError::Invalid(e.to_string()))?;
        c.validate()?;
        crate::registry::resolve(&c)
    }

    #[test]
    fn bad_settings_are_named() {
        let base = "[train]\nepochs = 4\n[method]\nname = \"paam\"\n";
        assert!(cfg(&format!("{base}params_reduction = 0.5\n")).is_ok());
        for (keys, want) in [
            (
                "params_reduction = 1.0",
                "params_reduction must be in (0, 1), got 1",
            ),
            (
                "macs_reduction = 0.0",
                "macs_reduction must be in (0, 1), got 0",
            ),
            (
                "params_reduction = -0.2",
                "params_reduction must be in (0, 1), got -0.2",
            ),
            ("", "needs its one global budget"),
            ("params_reduction = 0.5\nmacs_reduction = 0.5", "not both"),
            (
                "params_reduction = 0.5\nlambda = -1.0",
                "lambda must be a number ≥ 0, got -1",
            ),
            (
                "params_reduction = 0.5\nscorer = \"mlp\"",
                "unknown variant `mlp`",
            ),
            (
                "params_reduction = 0.5\nactivation = \"relu\"",
                "unknown variant `relu`",
            ),
            (
                "params_reduction = 0.5\nprune_end = 0.1",
                "prune_end must be in",
            ),
            (
                "params_reduction = 0.5\nstart = \"trained\"",
                "needs epochs",
            ),
            (
                "params_reduction = 0.5\nepochs = 3",
                "epochs applies to start = \"trained\"",
            ),
            (
                "params_reduction = 0.5\nsigmoid_start = 1.0",
                "sigmoid_start must be in (0, 1)",
            ),
        ] {
            let e = cfg(&format!("{base}{keys}\n"))
                .err()
                .expect(keys)
                .to_string();
            assert!(e.contains(want), "{keys}: {e}");
        }
        let e = cfg("[train]\nepochs = 1\n[method]\nname = \"paam\"\nparams_reduction = 0.5\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("at least 2 training epochs"), "{e}");
    }
}
