//! FTWT's mask predictors as per-sample gates of the engine, the self-supervised targets they
//! learn, the BCE loss, and what a pass over data measures (mask accuracy, active filters and
//! per-sample MACs in both conventions).
//!
//! Per gated layer and sample: e = mean over the map of the conv's input, p = softmax(e), logits
//! P = W p + b, gate M = [sigmoid(P) > 0.5] = [P > 0]. The gate is a constant for the task
//! loss (the official code computes it without gradient), so only the BCE loss trains the
//! heads. `decoupled` detaches the input before the head (BCE trains only the head), `joint`
//! lets BCE reach the backbone too.

use super::cost::{DynamicCost, SampleCounts};
use super::layers::GatedLayer;
use super::targets::{TargetRule, targets};
use serde::{Deserialize, Serialize};
use shears_engine::burn::tensor::{Tensor, TensorData, activation::softmax};
use shears_engine::dynamic::gates_on;
use shears_engine::executor::to_vec;
use shears_engine::{DynamicGates, Executor, ExtraParams, LossTerm, StepInfo, Value};
use std::cell::RefCell;

/// Whether the mask loss reaches the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The head reads a detached input: BCE trains the head only (the paper's default).
    Decoupled,
    /// BCE back-propagates into the backbone as well.
    Joint,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Decoupled => "decoupled",
            Mode::Joint => "joint",
        }
    }
}

/// What decides the gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The trained heads (training and inference).
    Predicted,
    /// The targets themselves (the pretrained network gated by its targets: the MACs estimate
    /// before any head is trained).
    Targets,
}

/// Names of a layer's head parameters.
pub fn head_names(layer: &GatedLayer) -> (String, String) {
    (
        format!("ftwt.{}.weight", layer.conv),
        format!("ftwt.{}.bias", layer.conv),
    )
}

/// The heads' initial values: W and b uniform in ±1/√C_in (PyTorch's 1x1-conv default), seeded.
pub fn initial_heads(layers: &[GatedLayer], seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xf7_77);
    let mut out = Vec::new();
    for l in layers {
        let bound = 1.0 / (l.in_channels as f32).sqrt();
        let (w, b) = head_names(l);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let wv = draw(l.out_channels * l.in_channels);
        let bv = draw(l.out_channels);
        out.push((w, vec![l.out_channels, l.in_channels], wv));
        out.push((b, vec![l.out_channels], bv));
    }
    out
}

/// Per-layer tallies of a pass over data.
#[derive(Debug, Clone, Default)]
pub struct LayerTally {
    /// (sample, filter) pairs where the gate equals the target, and all pairs.
    pub agree: u64,
    pub pairs: u64,
    /// Filters on, summed over samples.
    pub active: u64,
    /// Filters the targets want, summed over samples.
    pub wanted: u64,
}

/// What the forward passes since the last [`FtwtGates::take_tally`] measured.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub layers: Vec<LayerTally>,
    pub cost: DynamicCost,
}

/// The current batch: the training record for the loss, and per-sample counts for the cost.
#[derive(Default)]
struct Batch {
    /// Per layer: logits (tracked) and targets of this forward pass, for the BCE loss.
    logits: Vec<Option<(Tensor<2>, Tensor<2>)>>,
    /// Per layer (by index, whatever order the gates run in).
    counts: Vec<Option<SampleCounts>>,
}

/// The gates of every gated layer of one network.
pub struct FtwtGates {
    pub layers: Vec<GatedLayer>,
    pub rule: TargetRule,
    pub r: f64,
    pub mode: Mode,
    pub softmax: bool,
    /// Keep each sample's largest-logit filter on when the head switches a layer all off.
    pub keep_one: bool,
    pub source: Source,
    batch: RefCell<Batch>,
    tally: RefCell<Tally>,
}

impl FtwtGates {
    pub fn new(
        layers: Vec<GatedLayer>,
        rule: TargetRule,
        r: f64,
        mode: Mode,
        source: Source,
    ) -> Self {
        let n = layers.len();
        FtwtGates {
            layers,
            rule,
            r,
            mode,
            softmax: true,
            keep_one: true,
            source,
            batch: RefCell::new(Batch {
                logits: vec![None; n],
                counts: vec![None; n],
            }),
            tally: RefCell::new(Tally {
                layers: vec![LayerTally::default(); n],
                cost: DynamicCost::default(),
            }),
        }
    }

    fn layer_of(&self, node: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.gate_at == node)
    }

    /// Folds the finished batch's per-sample counts into the tally.
    fn close_batch(&self) {
        let mut batch = self.batch.borrow_mut();
        let counts: Option<Vec<SampleCounts>> = batch.counts.iter_mut().map(Option::take).collect();
        if let Some(counts) = counts {
            self.tally
                .borrow_mut()
                .cost
                .add_batch(&self.layers, &counts);
        }
        batch.counts.iter_mut().for_each(|c| *c = None);
    }

    /// What the passes since the last call measured (and a fresh tally).
    pub fn take_tally(&self) -> Tally {
        self.close_batch();
        let fresh = Tally {
            layers: vec![LayerTally::default(); self.layers.len()],
            cost: DynamicCost::default(),
        };
        std::mem::replace(&mut *self.tally.borrow_mut(), fresh)
    }

    /// The head's logits `[N, C_out]` for layer `k` from the conv's input.
    fn logits(&self, k: usize, x: &Tensor<4>, extra: &ExtraParams) -> Option<Tensor<2>> {
        let l = &self.layers[k];
        let [n, c, h, w] = x.dims();
        let x = match self.mode {
            Mode::Decoupled => x.clone().detach(),
            Mode::Joint => x.clone(),
        };
        let pooled = x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
        let p = if self.softmax {
            softmax(pooled, 1)
        } else {
            pooled
        };
        let (wn, bn) = head_names(l);
        let (mut weight, mut bias) = (extra.get(&wn)?, extra.get(&bn)?);
        if !p.is_autodiff() {
            // Evaluation: no tape for the heads either.
            weight = weight.inner();
            bias = bias.inner();
        }
        let weight = weight.reshape([l.out_channels, l.in_channels]).transpose();
        Some(p.matmul(weight) + bias.reshape([1, l.out_channels]))
    }
}

/// Per sample: a_c = max over the map of |O_c|, as `[N][C]` on the host.
fn peak_activations(output: &Value) -> (usize, usize, Vec<f32>) {
    match output {
        Value::Map(o) => {
            let [n, c, h, w] = o.dims();
            let peaks = o.clone().inner().abs().reshape([n, c, h * w]).max_dim(2);
            (n, c, to_vec(peaks.reshape([n * c])))
        }
        Value::Flat(o) => {
            let [n, c] = o.dims();
            (n, c, to_vec(o.clone().inner().abs().reshape([n * c])))
        }
        // Peak over the tokens, as over the positions of a map (FTWT refuses transformers
        // before training, so this is for completeness).
        Value::Tokens(o) => {
            let [n, _, c] = o.dims();
            let peaks = o.clone().inner().abs().max_dim(1);
            (n, c, to_vec(peaks.reshape([n * c])))
        }
    }
}

/// Per sample and channel: whether the map carries any non-zero value.
fn nonzero_channels(x: &Tensor<4>) -> Vec<bool> {
    let [n, c, h, w] = x.dims();
    let peaks = x.clone().inner().abs().reshape([n, c, h * w]).max_dim(2);
    to_vec(peaks.reshape([n * c]))
        .iter()
        .map(|v| *v > 0.0)
        .collect()
}

impl DynamicGates for FtwtGates {
    fn gated_nodes(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.gate_at.clone()).collect()
    }

    fn source(&self, node: &str) -> String {
        match self.layer_of(node) {
            Some(k) => self.layers[k].conv.clone(),
            None => node.to_string(),
        }
    }

    fn gate(
        &self,
        node: &str,
        input: &Value,
        output: &Value,
        extra: Option<&ExtraParams>,
    ) -> Option<Tensor<2>> {
        let k = self.layer_of(node)?;
        let Value::Map(x) = input else { return None };
        if self.batch.borrow().counts[k].is_some() {
            // This layer ran already: a new forward pass has started.
            self.close_batch();
        }
        let (n, c, peaks) = peak_activations(output);
        let mut wanted = vec![0f32; n * c];
        for s in 0..n {
            targets(
                self.rule,
                self.r,
                &peaks[s * c..(s + 1) * c],
                &mut wanted[s * c..(s + 1) * c],
            );
        }
        let device = x.device();
        let target =
            Tensor::<2>::from_data(TensorData::new(wanted.clone(), [n, c]), &device).inner();
        let (gate_host, logits) = match self.source {
            Source::Targets => (wanted.clone(), None),
            Source::Predicted => {
                let logits = self.logits(k, x, extra?)?;
                let host = to_vec(logits.clone().inner().reshape([n * c]));
                let on: Vec<f32> = host
                    .chunks_exact(c)
                    .flat_map(|row| gates_on(row, self.keep_one))
                    .map(f32::from)
                    .collect();
                (on, Some(logits))
            }
        };
        // Tallies and per-sample counts.
        {
            let mut tally = self.tally.borrow_mut();
            let t = &mut tally.layers[k];
            for (g, w) in gate_host.iter().zip(&wanted) {
                t.agree += u64::from(g == w);
                t.active += u64::from(*g > 0.0);
                t.wanted += u64::from(*w > 0.0);
            }
            t.pairs += (n * c) as u64;
        }
        let nz = nonzero_channels(x);
        let layer = &self.layers[k];
        let counts = SampleCounts::of(layer, &gate_host, &nz, n);
        let mut batch = self.batch.borrow_mut();
        batch.counts[k] = Some(counts);
        batch.logits[k] = logits.map(|l| (l, target));
        let gate = Tensor::<2>::from_data(TensorData::new(gate_host, [n, c]), &device).inner();
        Some(gate)
    }
}

/// The mask-prediction loss of FTWT: mean over layers of Σ_c mean_n BCEWithLogits(P_c, g_c),
/// with weight 1 for epochs before ⌊cooldown · E⌋ and 0 after (the heads are then frozen while
/// the backbone adapts to the fixed gating).
pub struct MaskLoss<'a> {
    pub gates: &'a FtwtGates,
    pub cooldown: f64,
}

impl MaskLoss<'_> {
    /// Whether the loss is on in `epoch` of `epochs`.
    pub fn active(&self, at: StepInfo) -> bool {
        (at.epoch as f64) < (self.cooldown * at.epochs as f64).floor()
    }
}

impl LossTerm for MaskLoss<'_> {
    fn name(&self) -> &str {
        "ftwt-mask"
    }

    fn loss(&self, _: &Executor, _: Option<&ExtraParams>, at: StepInfo) -> Option<Tensor<1>> {
        let mut batch = self.gates.batch.borrow_mut();
        let records: Vec<(Tensor<2>, Tensor<2>)> =
            batch.logits.iter_mut().filter_map(Option::take).collect();
        if !self.active(at) || records.is_empty() {
            return None;
        }
        let layers = records.len() as f32;
        let mut total: Option<Tensor<1>> = None;
        for (p, g) in records {
            let n = p.dims()[0] as f32;
            // Stable BCE with logits: max(p, 0) − p·g + log(1 + e^−|p|).
            let bce = p.clone().clamp_min(0.0) - p.clone() * g
                + p.abs().neg().exp().add_scalar(1.0).log();
            let term = bce.sum().div_scalar(n).reshape([1]);
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
        total.map(|t| t.div_scalar(layers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::ftwt::layers::gated_layers;
    use shears_core::builder::GraphBuilder;
    use shears_core::weights::{Masks, init_weights};
    use shears_engine::burn::tensor::Device;
    use shears_engine::burn::tensor::loss::cross_entropy_with_logits;
    use shears_engine::{Executor, Mode as ExecMode};

    /// conv a (4) -> bn -> relu -> conv b (6) -> bn -> relu -> gap -> fc (3).
    fn setup() -> (Executor, Vec<GatedLayer>, ExtraParams) {
        let mut b = GraphBuilder::new("t", &[2, 6, 6]);
        let x = b.input();
        let a = b.conv2d("a", &x, 4, 3, 1, 1);
        let a = b.batchnorm("a_bn", &a);
        let a = b.relu("a_relu", &a);
        let c = b.conv2d("b", &a, 6, 3, 1, 1);
        let c = b.batchnorm("b_bn", &c);
        let c = b.relu("b_relu", &c);
        let p = b.global_avg_pool("gap", &c);
        let y = b.linear("fc", &p, 3, true);
        let g = b.finish(&y);
        let layers = gated_layers(&g, &[], &[]).unwrap();
        let dev = Device::flex().autodiff();
        let exec = Executor::new(&g, &init_weights(&g, 3), &Masks::new(), &dev).unwrap();
        let sgd = OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        };
        let extra = ExtraParams::new(&dev, initial_heads(&layers, 5), sgd, Some(0.1)).unwrap();
        (exec, layers, extra)
    }

    fn input(exec: &Executor) -> Value {
        let v: Vec<f32> = (0..4 * 72)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        exec.input_value(v, 4).unwrap()
    }

    fn at(epoch: usize) -> StepInfo {
        StepInfo { epoch, epochs: 4 }
    }

    use shears_engine::OptimizerConfig;

    /// Which of the backbone's and the heads' parameters a loss reaches.
    fn reached(mode: Mode, with_task: bool, with_mask: bool) -> (bool, bool) {
        let (mut exec, layers, extra) = setup();
        let gates = FtwtGates::new(layers, TargetRule::Mass, 0.9, mode, Source::Predicted);
        let x = input(&exec);
        let logits = exec.forward_gated(x, ExecMode::Train, &gates, Some(&extra));
        let labels = Tensor::<2>::from_data(
            TensorData::new(
                (0..12)
                    .map(|i| f32::from(i % 3 == i / 3 % 3))
                    .collect::<Vec<f32>>(),
                [4, 3],
            ),
            &logits.device(),
        );
        let mut loss: Option<Tensor<1>> = None;
        if with_task {
            loss = Some(cross_entropy_with_logits(logits, labels).reshape([1]));
        }
        if with_mask {
            let bce = MaskLoss {
                gates: &gates,
                cooldown: 0.5,
            }
            .loss(&exec, Some(&extra), at(0))
            .expect("the mask loss is on in epoch 0");
            loss = Some(match loss {
                Some(l) => l + bce,
                None => bce,
            });
        }
        let grads = loss.unwrap().sum().backward();
        let nonzero =
            |t: Option<Tensor<1>>| t.is_some_and(|g| to_vec(g.abs().sum().reshape([1]))[0] > 0.0);
        let conv_a = exec.param_index("a.weight").unwrap();
        let backbone = nonzero(exec.params[conv_a].grad(&grads));
        let heads = extra
            .names()
            .iter()
            .any(|n| nonzero(extra.get(n).unwrap().grad(&grads)));
        (backbone, heads)
    }

    #[test]
    fn the_task_loss_never_trains_the_heads() {
        assert_eq!(reached(Mode::Decoupled, true, false), (true, false));
        assert_eq!(reached(Mode::Joint, true, false), (true, false));
    }

    #[test]
    fn decoupled_bce_trains_only_the_heads_and_joint_reaches_the_backbone() {
        assert_eq!(reached(Mode::Decoupled, false, true), (false, true));
        assert_eq!(reached(Mode::Joint, false, true), (true, true));
    }

    #[test]
    fn the_mask_loss_cools_down_after_half_the_epochs() {
        let (_, layers, _) = setup();
        let gates = FtwtGates::new(
            layers,
            TargetRule::Mass,
            0.9,
            Mode::Decoupled,
            Source::Predicted,
        );
        let l = MaskLoss {
            gates: &gates,
            cooldown: 0.5,
        };
        assert!(l.active(at(0)) && l.active(at(1)));
        assert!(!l.active(at(2)) && !l.active(at(3)));
    }

    #[test]
    fn gates_are_the_sign_of_the_logits_and_targets_gate_like_the_rule() {
        let (mut exec, layers, extra) = setup();
        // Target gating: every gate equals the target drawn from the layer's output.
        let oracle = FtwtGates::new(
            layers.clone(),
            TargetRule::Mass,
            0.6,
            Mode::Decoupled,
            Source::Targets,
        );
        let _ = exec.forward_gated(input(&exec), ExecMode::Eval, &oracle, None);
        let t = oracle.take_tally();
        for l in &t.layers {
            assert_eq!(l.agree, l.pairs);
            assert_eq!(l.active, l.wanted);
            assert!(l.active < l.pairs, "r = 0.6 switches filters off");
        }
        assert_eq!(t.cost.samples, 4);
        // Predicted gating: the tally counts as many active filters as positive logits.
        let predicted = FtwtGates::new(
            layers.clone(),
            TargetRule::Mass,
            0.6,
            Mode::Decoupled,
            Source::Predicted,
        );
        let _ = exec.forward_gated(input(&exec), ExecMode::Eval, &predicted, Some(&extra));
        let t = predicted.take_tally();
        assert!(
            t.layers
                .iter()
                .all(|l| l.pairs == 4 * 6 || l.pairs == 4 * 4)
        );
        let logits = predicted
            .logits(
                0,
                &match input(&exec) {
                    Value::Map(x) => x,
                    _ => unreachable!(),
                },
                &extra,
            )
            .unwrap();
        let positive = to_vec(logits.inner().reshape([16]))
            .iter()
            .filter(|v| **v > 0.0)
            .count() as u64;
        assert_eq!(t.layers[0].active, positive);
        // The MACs of the gated layers never exceed the dense ones.
        let dense: u64 = layers.iter().map(|l| l.macs).sum();
        assert!(t.cost.paper_sum / 4.0 <= dense as f64 && t.cost.strict_sum / 4.0 <= dense as f64);
    }
}
