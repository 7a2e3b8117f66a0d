//! Gradient-based unstructured pruning scores: SNIP, GraSP and iterative SynFlow.
//!
//! Every function returns [`Scores`] in graph layout (linear weights `[out, in]`, although the
//! engine holds them transposed), one array per prunable tensor (conv and linear weights), with
//! "low = prune first" semantics, so the scores go through `shears_core::sparsity`'s selection,
//! quotas and effective-target search like the data-free ones.
//!
//! - SNIP (Lee et al. 2019): |g ⊙ θ| with g the gradient of the mean cross-entropy over the
//!   scoring batches.
//! - GraSP (Wang et al. 2020): GraSP removes the weights with the *largest* S = −θ ⊙ Hg (g the
//!   gradient with logits divided by a temperature, H the Hessian). We return −S = θ ⊙ Hg, so
//!   pruning the lowest of our scores is GraSP's rule. Burn has no double backward, so Hg is a
//!   central finite difference of gradients along g (see [`grasp_scores`]). Not reproduced: the
//!   re-initialisation of the last layer before scoring and GraSP's normalisation by |Σ S|
//!   (a positive factor, irrelevant to the ranking).
//! - SynFlow (Tanaka et al. 2020), iterative, on ES's linearised network (BN removed, max-pool
//!   replaced by average pooling, biases 0, weights |θ|), all-ones input, R = Σ outputs,
//!   score |θ ⊙ ∂R/∂θ|; `rounds` rounds with the exponential schedule d^{k/n}. The history is
//!   turned into one global order ([`IterativeOrder`]) so effective targets can search it.

use crate::error::{EngineError, Result};
use crate::executor::{Executor, Mode, to_vec};
use crate::train::{check_data_fits, cross_entropy};
use burn::tensor::{Device, Tensor};
use ndarray::ArrayD;
use shears_core::artifact::Model;
use shears_core::graph::{Graph, Op, ParamKind};
use shears_core::ops::{BatchNorm, Conv2d, Dropout, Linear};
use shears_core::sparsity::{
    IterativeOrder, LayerInfo, Scores, SelectOptions, layer_infos, select_global,
};
use shears_core::weights::{Masks, Weights};
use shears_data::{DataSplits, Loader, LoaderConfig};

/// GraSP's logit temperature (GR configs).
pub const GRASP_TEMPERATURE: f64 = 200.0;

/// SynFlow's number of pruning rounds (SF, ES).
pub const SYNFLOW_ROUNDS: usize = 100;

/// Norm of the finite-difference step of GraSP's Hessian-vector product, relative to the norm
/// of the prunable weights: small enough to stay local (few ReLU switches), large enough that
/// the gradient difference is far above f32 rounding.
const GRASP_RELATIVE_STEP: f64 = 3e-3;

/// Which training batches a data-dependent score averages over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreBatches {
    pub batches: usize,
    pub batch_size: usize,
    /// Seeds the shuffle that picks the samples (and dropout, if the model has any).
    pub seed: u64,
}

impl Default for ScoreBatches {
    /// A small sample: 4 batches of 64, seed 0 (the default of Taylor channel importance).
    fn default() -> Self {
        ScoreBatches {
            batches: 4,
            batch_size: 64,
            seed: 0,
        }
    }
}

/// One normalised batch on the host: NCHW (or NF) images and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
}

/// The first `batches` shuffled, normalised training batches (no augmentation).
pub fn score_batches(data: &DataSplits, spec: &ScoreBatches) -> Result<Vec<HostBatch>> {
    if spec.batches == 0 || spec.batch_size == 0 {
        return Err(EngineError::invalid(
            "score batches",
            format!(
                "need at least one batch of at least one sample, got {} of {}",
                spec.batches, spec.batch_size
            ),
        ));
    }
    let loader = Loader::new(
        &data.train,
        LoaderConfig::train(spec.batch_size, spec.seed).normalized(data.normalization.clone()),
    )?;
    let batches: Vec<HostBatch> = loader
        .epoch(0)
        .take(spec.batches)
        .map(|b| HostBatch {
            images: b.images,
            labels: b.labels,
        })
        .collect();
    if batches.is_empty() {
        return Err(EngineError::DataMismatch(format!(
            "`{}` has no samples to score with",
            data.train.name()
        )));
    }
    Ok(batches)
}

/// SNIP scores |g ⊙ θ| of `model` on `spec`'s training batches.
pub fn snip_scores(
    model: &Model,
    device: &Device,
    data: &DataSplits,
    spec: &ScoreBatches,
) -> Result<Scores> {
    let mut exec = autodiff_executor(model, device)?;
    check_data_fits(&exec, &data.train)?;
    let batches = score_batches(data, spec)?;
    snip_from_batches(&mut exec, &batches, spec.seed)
}

/// SNIP on given batches; `exec` must be on an autodiff device.
pub fn snip_from_batches(exec: &mut Executor, batches: &[HostBatch], seed: u64) -> Result<Scores> {
    let grads = mean_gradients(exec, batches, 1.0, seed)?;
    prunable_scores(exec, |i, w| {
        let g = grad_values(&grads, i, w.len());
        w.iter().zip(g).map(|(w, g)| (w * g).abs()).collect()
    })
}

/// GraSP scores θ ⊙ Hg (the negation of GraSP's S; prune the lowest) of `model` on `spec`'s
/// training batches, with logits divided by `temperature` (GraSP uses 200).
///
/// g is the mean gradient over the batches; Hg ≈ (∇L(θ + εg) − ∇L(θ − εg)) / 2ε on the same
/// batches (only the prunable weights move, as only they enter GraSP's gᵀ∇L), with
/// ε‖g‖ = 3·10⁻³ · max(‖θ‖, 1). The error is O(ε²) where the loss is smooth; across ReLU kinks
/// this is a slightly smoothed Hessian, which double backprop would not give.
pub fn grasp_scores(
    model: &Model,
    device: &Device,
    data: &DataSplits,
    spec: &ScoreBatches,
    temperature: f64,
) -> Result<Scores> {
    let mut exec = autodiff_executor(model, device)?;
    check_data_fits(&exec, &data.train)?;
    let batches = score_batches(data, spec)?;
    grasp_from_batches(&mut exec, &batches, temperature, spec.seed)
}

/// GraSP on given batches; `exec` must be on an autodiff device. Leaves `exec`'s parameters
/// as they were.
pub fn grasp_from_batches(
    exec: &mut Executor,
    batches: &[HostBatch],
    temperature: f64,
    seed: u64,
) -> Result<Scores> {
    if !temperature.is_finite() || temperature <= 0.0 {
        return Err(EngineError::invalid(
            "GraSP temperature",
            format!("must be a positive number, got {temperature}"),
        ));
    }
    let prunable = prunable_indices(exec)?;
    let g = mean_gradients(exec, batches, temperature, seed)?;
    let theta: Vec<Tensor<1>> = prunable
        .iter()
        .map(|&(_, i)| exec.params[i].clone().inner())
        .collect();
    let g_w: Vec<Tensor<1>> = prunable
        .iter()
        .zip(&theta)
        .map(|(&(_, i), t)| g[i].clone().unwrap_or_else(|| t.zeros_like()))
        .collect();
    let norm = |ts: &[Tensor<1>]| -> f64 {
        ts.iter()
            .map(|t| f64::from(t.clone().powi_scalar(2).sum().into_scalar::<f32>()))
            .sum::<f64>()
            .sqrt()
    };
    let (g_norm, theta_norm) = (norm(&g_w), norm(&theta));
    if !g_norm.is_finite() || !theta_norm.is_finite() {
        return Err(EngineError::invalid(
            "GraSP",
            format!("the gradient or weights are not finite (‖g‖ = {g_norm}, ‖θ‖ = {theta_norm})"),
        ));
    }
    let hg: Vec<Tensor<1>> = if g_norm == 0.0 {
        // A zero gradient gives Hg = 0: every score is 0 and the order falls back to position.
        theta.iter().map(|t| t.zeros_like()).collect()
    } else {
        let eps = GRASP_RELATIVE_STEP * theta_norm.max(1.0) / g_norm;
        let mut shifted = |sign: f64| -> Result<Vec<Tensor<1>>> {
            for ((_, i), (t, g)) in prunable.iter().zip(theta.iter().zip(&g_w)) {
                let v = t.clone() + g.clone().mul_scalar(sign * eps);
                exec.replace_param(*i, v);
            }
            let grads = mean_gradients(exec, batches, temperature, seed)?;
            Ok(prunable
                .iter()
                .zip(&theta)
                .map(|(&(_, i), t)| grads[i].clone().unwrap_or_else(|| t.zeros_like()))
                .collect())
        };
        let plus = shifted(1.0);
        let minus = shifted(-1.0);
        for ((_, i), t) in prunable.iter().zip(&theta) {
            exec.replace_param(*i, t.clone());
        }
        plus?
            .into_iter()
            .zip(minus?)
            .map(|(p, m)| (p - m).div_scalar(2.0 * eps))
            .collect()
    };
    let mut scores = Scores::new();
    for (((layer, i), t), h) in prunable.iter().zip(&theta).zip(hg) {
        let v = to_vec(t.clone() * h);
        scores.insert(layer.name.clone(), exec.infos[*i].to_graph_layout(v));
    }
    Ok(scores)
}

/// One SynFlow pass: |θ ⊙ ∂R/∂θ| of the linearised `model` under its masks (no iteration).
pub fn synflow_once(model: &Model, device: &Device) -> Result<Scores> {
    let mut exec = linearised_executor(model, device)?;
    synflow_pass(&mut exec)
}

/// Iterative SynFlow to `sparsity` in `rounds` rounds (kept fraction d^{k/n} after round k, each
/// round pruning the globally lowest scores of the current masked network; weights pruned in
/// `model.masks` stay pruned). Returns the global order of the run: pruning the m lowest replays
/// it, so a direct target of `sparsity` gives the final mask and effective targets can search it.
pub fn synflow_scores(
    model: &Model,
    device: &Device,
    sparsity: f64,
    rounds: usize,
    options: SelectOptions,
) -> Result<Scores> {
    if rounds == 0 {
        return Err(EngineError::invalid("SynFlow rounds", "must be at least 1"));
    }
    if !(0.0..=1.0).contains(&sparsity) {
        return Err(EngineError::invalid(
            "SynFlow sparsity",
            format!("{sparsity} is outside [0, 1]"),
        ));
    }
    let graph = &model.graph;
    let mut exec = linearised_executor(model, device)?;
    let mut masks = prunable_masks(graph, &model.masks);
    let mut order = IterativeOrder::new(graph, Some(&masks))?;
    let density = 1.0 - sparsity;
    for k in 1..=rounds {
        let scores = synflow_pass(&mut exec)?;
        let target = 1.0 - density.powf(k as f64 / rounds as f64);
        let next = select_global(
            graph,
            &scores,
            target.clamp(0.0, 1.0),
            Some(&masks),
            options,
        )?;
        order.record(k, &next, &scores)?;
        exec.set_masks(&next)?;
        masks = next;
    }
    let last = synflow_pass(&mut exec)?;
    Ok(order.finish(&last)?)
}

/// ES's linearised network for SynFlow: BN becomes the identity (dropout with p = 0), max-pool
/// becomes average pooling, other activations than ReLU the identity, biases are 0 and weights |θ|; the masks of prunable tensors are kept.
fn linearised_executor(model: &Model, device: &Device) -> Result<Executor> {
    let mut graph: Graph = model.graph.clone();
    for node in &mut graph.nodes {
        node.op = match node.op {
            Op::BatchNorm(BatchNorm { .. }) => Op::Dropout(Dropout { p: 0.0 }),
            Op::MaxPool(a) => Op::AvgPool(a),
            // SynFlow removes the nonlinearities; ReLU is already the identity on its positive
            // signal, the others (a sigmoid, a GELU) are not.
            Op::Activation(_) => Op::Dropout(Dropout { p: 0.0 }),
            // A LayerNorm centres the all-ones input of SynFlow to zero; like BatchNorm it goes.
            Op::LayerNorm(_) => Op::Dropout(Dropout { p: 0.0 }),
            ref op @ (Op::Conv2d(Conv2d { .. })
            | Op::Linear(Linear { .. })
            | Op::Relu
            | Op::Relu6
            | Op::Mul
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool(_)
            | Op::GlobalMaxPool(_)
            | Op::Pad(_)
            | Op::Flatten
            | Op::Add
            | Op::Concat
            | Op::Slice(_)
            | Op::Affine(_)
            | Op::GroupNorm(_)
            | Op::Resize(_)
            | Op::ChannelShuffle(_)
            | Op::Dropout(Dropout { .. })
            | Op::Tokenize
            | Op::ClassToken(_)
            | Op::PositionEmbedding(_)
            | Op::Attention(_)
            | Op::SpatialSlice(_)
            | Op::WindowAttention(_)
            | Op::TokenPool(_)) => op.clone(),
        };
    }
    let mut weights = Weights::new();
    for spec in graph.param_specs() {
        let w = model.weights.get(&spec.name).ok_or_else(|| {
            EngineError::Core(shears_core::CoreError::tensor(
                &spec.name,
                "missing from the weights",
            ))
        })?;
        let t = match spec.kind {
            ParamKind::Weight => w.mapv(f32::abs),
            _ => ArrayD::zeros(w.raw_dim()),
        };
        weights.insert(spec.name, t);
    }
    let masks = prunable_masks(&model.graph, &model.masks);
    Executor::new(&graph, &weights, &masks, &autodiff(device))
}

/// The masks of prunable tensors only (others would name tensors the linearised graph drops).
fn prunable_masks(graph: &Graph, masks: &Masks) -> Masks {
    let names: Vec<String> = layer_infos(graph).into_iter().map(|l| l.name).collect();
    masks
        .iter()
        .filter(|(k, _)| names.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn synflow_pass(exec: &mut Executor) -> Result<Scores> {
    let per: usize = exec.graph().input.shape.iter().product();
    let x = exec.input_value(vec![1.0; per], 1)?;
    let r = exec.forward(x, Mode::Train).sum();
    let value = r.clone().inner().into_scalar::<f32>();
    if !value.is_finite() {
        return Err(EngineError::invalid(
            "SynFlow",
            format!(
                "the sum of path products overflowed f32 ({value}) on `{}`: the network is too deep for SynFlow in f32",
                exec.graph().name
            ),
        ));
    }
    let grads = r.backward();
    let g: Vec<Option<Tensor<1>>> = exec.params.iter().map(|p| p.grad(&grads)).collect();
    prunable_scores(exec, |i, w| {
        let g = grad_values(&g, i, w.len());
        w.iter().zip(g).map(|(w, g)| (w * g).abs()).collect()
    })
}

fn autodiff(device: &Device) -> Device {
    if device.is_autodiff() {
        device.clone()
    } else {
        device.clone().autodiff()
    }
}

fn autodiff_executor(model: &Model, device: &Device) -> Result<Executor> {
    let device = autodiff(device);
    Executor::new(&model.graph, &model.weights, &model.masks, &device)
}

/// Sample-weighted mean over `batches` of the gradient of CE(logits / temperature), per
/// parameter in engine layout (`None` where a parameter gets no gradient). Seeds the device
/// first, so repeated calls see the same dropout masks.
fn mean_gradients(
    exec: &mut Executor,
    batches: &[HostBatch],
    temperature: f64,
    seed: u64,
) -> Result<Vec<Option<Tensor<1>>>> {
    if !exec.device().is_autodiff() {
        return Err(EngineError::invalid(
            "device",
            "gradient scores need an autodiff device",
        ));
    }
    let total: usize = batches.iter().map(|b| b.labels.len()).sum();
    if total == 0 {
        return Err(EngineError::invalid(
            "score batches",
            "no samples to compute gradients on",
        ));
    }
    let classes = shears_core::infer_shapes(exec.graph())?.get(&exec.graph().output)[0];
    if let Some(l) = batches
        .iter()
        .flat_map(|b| &b.labels)
        .find(|&&l| l < 0 || l as usize >= classes)
    {
        return Err(EngineError::DataMismatch(format!(
            "label {l} is outside the model's {classes} classes"
        )));
    }
    exec.device().seed(seed);
    let mut acc: Vec<Option<Tensor<1>>> = vec![None; exec.params.len()];
    for b in batches {
        let n = b.labels.len();
        let x = exec.input_value(b.images.clone(), n)?;
        let mut logits = exec.forward(x, Mode::Train);
        if temperature != 1.0 {
            logits = logits.div_scalar(temperature);
        }
        let loss = cross_entropy(logits, &b.labels).mul_scalar(n as f64 / total as f64);
        let value = loss.clone().inner().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(EngineError::invalid(
                "score batches",
                format!("the loss is {value} on a scoring batch"),
            ));
        }
        let grads = loss.backward();
        for (i, slot) in acc.iter_mut().enumerate() {
            if let Some(g) = exec.params[i].grad(&grads) {
                *slot = Some(match slot.take() {
                    Some(a) => a + g,
                    None => g,
                });
            }
        }
    }
    Ok(acc)
}

fn grad_values(grads: &[Option<Tensor<1>>], i: usize, n: usize) -> Vec<f32> {
    grads[i].clone().map_or_else(|| vec![0.0; n], to_vec)
}

/// Each prunable tensor with its parameter index in `exec`.
fn prunable_indices(exec: &Executor) -> Result<Vec<(LayerInfo, usize)>> {
    layer_infos(exec.graph())
        .into_iter()
        .map(|l| {
            let i = exec.param_index(&l.name).ok_or_else(|| {
                EngineError::invalid("scores", format!("`{}` is not a parameter", l.name))
            })?;
            Ok((l, i))
        })
        .collect()
}

/// Scores of every prunable tensor from `f(param index, engine-layout weights)`, in graph layout.
fn prunable_scores(exec: &Executor, f: impl Fn(usize, &[f32]) -> Vec<f32>) -> Result<Scores> {
    let mut scores = Scores::new();
    for (layer, i) in prunable_indices(exec)? {
        let w = to_vec(exec.params[i].clone().inner());
        let s = f(i, &w);
        scores.insert(layer.name, exec.infos[i].to_graph_layout(s));
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;
    use shears_core::builder::GraphBuilder;
    use shears_core::sparsity::{
        Allocation, PruneSpec, TargetKind, prune_to_target, sparsity_report,
    };
    use shears_core::weights::init_weights;

    /// A single bias-free linear layer: logits = W x, W is 3x4 (non-square, so a transposition
    /// mistake shows).
    fn linear_model() -> (Model, Vec<Vec<f32>>, Vec<i64>) {
        let mut b = GraphBuilder::new("lin", &[4]);
        let x = b.input();
        let y = b.linear("fc", &x, 3, false);
        let graph = b.finish(&y);
        let w: Vec<f32> = vec![
            0.3, -0.2, 0.5, 0.1, //
            -0.4, 0.25, 0.05, -0.3, //
            0.15, 0.35, -0.45, 0.2,
        ];
        let mut weights = Weights::new();
        weights.insert(
            "fc.weight".into(),
            ArrayD::from_shape_vec(IxDyn(&[3, 4]), w).unwrap(),
        );
        let xs = vec![
            vec![1.0, 0.5, -0.3, 2.0],
            vec![-1.2, 0.7, 0.4, 0.1],
            vec![0.3, -0.9, 1.5, -0.6],
            vec![0.8, 0.2, -1.1, 0.9],
            vec![-0.5, -1.4, 0.6, 1.3],
        ];
        let labels = vec![0, 2, 1, 2, 0];
        (
            Model {
                graph,
                weights,
                masks: Masks::new(),
            },
            xs,
            labels,
        )
    }

    fn batches(xs: &[Vec<f32>], labels: &[i64]) -> Vec<HostBatch> {
        // Two batches of unequal size, to check the sample weighting of the mean.
        vec![
            HostBatch {
                images: xs[..2].concat(),
                labels: labels[..2].to_vec(),
            },
            HostBatch {
                images: xs[2..].concat(),
                labels: labels[2..].to_vec(),
            },
        ]
    }

    fn softmax(z: &[f64]) -> Vec<f64> {
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    /// Analytic gradient and Hessian-vector product of mean CE(Wx/T) for the linear model, in f64:
    /// g = mean (p − y) xᵀ / T, Hg = mean [(diag p − p pᵀ)(G x)] xᵀ / T².
    fn analytic(w: &[f64], xs: &[Vec<f32>], labels: &[i64], t: f64) -> (Vec<f64>, Vec<f64>) {
        let n = xs.len() as f64;
        let probs: Vec<Vec<f64>> = xs
            .iter()
            .map(|x| {
                let z: Vec<f64> = (0..3)
                    .map(|o| (0..4).map(|i| w[o * 4 + i] * f64::from(x[i])).sum::<f64>() / t)
                    .collect();
                softmax(&z)
            })
            .collect();
        let mut g = vec![0.0; 12];
        for ((x, p), &l) in xs.iter().zip(&probs).zip(labels) {
            for o in 0..3 {
                let d = p[o] - if o as i64 == l { 1.0 } else { 0.0 };
                for i in 0..4 {
                    g[o * 4 + i] += d * f64::from(x[i]) / t / n;
                }
            }
        }
        let mut hg = vec![0.0; 12];
        for (x, p) in xs.iter().zip(&probs) {
            let dz: Vec<f64> = (0..3)
                .map(|o| (0..4).map(|i| g[o * 4 + i] * f64::from(x[i])).sum::<f64>() / t)
                .collect();
            let pdz: f64 = (0..3).map(|o| p[o] * dz[o]).sum();
            for o in 0..3 {
                let dp = p[o] * dz[o] - p[o] * pdz;
                for i in 0..4 {
                    hg[o * 4 + i] += dp * f64::from(x[i]) / t / n;
                }
            }
        }
        (g, hg)
    }

    fn flex_autodiff() -> Device {
        Device::flex().autodiff()
    }

    #[test]
    fn snip_is_gradient_times_weight_in_graph_layout() {
        let (model, xs, labels) = linear_model();
        let w: Vec<f64> = model.weights["fc.weight"]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let (g, _) = analytic(&w, &xs, &labels, 1.0);
        let mut exec = autodiff_executor(&model, &flex_autodiff()).unwrap();
        let s = snip_from_batches(&mut exec, &batches(&xs, &labels), 0).unwrap();
        let got = &s["fc.weight"];
        assert_eq!(got.shape(), &[3, 4]);
        for (k, (got, (g, w))) in got.iter().zip(g.iter().zip(&w)).enumerate() {
            let want = (g * w).abs();
            assert!(
                (f64::from(*got) - want).abs() < 1e-6,
                "weight {k}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn grasp_hessian_vector_product_matches_the_analytic_one() {
        let (model, xs, labels) = linear_model();
        let w: Vec<f64> = model.weights["fc.weight"]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        for t in [1.0, GRASP_TEMPERATURE] {
            let (_, hg) = analytic(&w, &xs, &labels, t);
            let want: Vec<f64> = w.iter().zip(&hg).map(|(w, h)| w * h).collect();
            let mut exec = autodiff_executor(&model, &flex_autodiff()).unwrap();
            let s = grasp_from_batches(&mut exec, &batches(&xs, &labels), t, 0).unwrap();
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(scale > 0.0);
            for (k, (got, want)) in s["fc.weight"].iter().zip(&want).enumerate() {
                let err = (f64::from(*got) - want).abs() / scale;
                assert!(
                    err < 2e-2,
                    "T={t} weight {k}: {got} vs {want} (relative error {err})"
                );
            }
            // The parameters are restored after the finite differences.
            let back = exec.weights();
            assert_eq!(back["fc.weight"], model.weights["fc.weight"]);
        }
    }

    /// input [2] -> a (3x2, bias) -> BN -> relu -> b (2x3): BN and the bias must be ignored.
    fn two_layer() -> Model {
        let mut b = GraphBuilder::new("two", &[2]);
        let x = b.input();
        let h = b.linear("a", &x, 3, true);
        let h = b.batchnorm("bn", &h);
        let h = b.relu("r", &h);
        let y = b.linear("b", &h, 2, false);
        let graph = b.finish(&y);
        let mut w = init_weights(&graph, 1);
        let set = |w: &mut Weights, name: &str, shape: &[usize], v: Vec<f32>| {
            w.insert(
                name.into(),
                ArrayD::from_shape_vec(IxDyn(shape), v).unwrap(),
            );
        };
        set(
            &mut w,
            "a.weight",
            &[3, 2],
            vec![1.0, -2.0, 0.5, 3.0, -1.5, 0.25],
        );
        set(&mut w, "a.bias", &[3], vec![5.0, -7.0, 2.0]);
        set(
            &mut w,
            "b.weight",
            &[2, 3],
            vec![2.0, -1.0, 0.5, -3.0, 4.0, 1.0],
        );
        set(&mut w, "bn.weight", &[3], vec![0.1, -4.0, 9.0]);
        set(&mut w, "bn.running_mean", &[3], vec![3.0, 3.0, 3.0]);
        Model {
            graph,
            weights: w,
            masks: Masks::new(),
        }
    }

    #[test]
    fn synflow_scores_are_path_sums() {
        let model = two_layer();
        let s = synflow_once(&model, &Device::flex()).unwrap();
        let a = [[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]];
        let b = [[2.0, -1.0, 0.5], [-3.0, 4.0, 1.0]];
        // R = 1ᵀ|B||A|1: ∂R/∂A_ji = Σ_k |B_kj|, ∂R/∂B_kj = Σ_i |A_ji|.
        for j in 0..3 {
            let col: f64 = (0..2).map(|k| f64::abs(b[k][j])).sum();
            let row: f64 = (0..2).map(|i| f64::abs(a[j][i])).sum();
            for i in 0..2 {
                let want = f64::abs(a[j][i]) * col;
                let got = f64::from(s["a.weight"][[j, i]]);
                assert!((got - want).abs() < 1e-5, "a[{j},{i}] {got} vs {want}");
            }
            for k in 0..2 {
                let want = f64::abs(b[k][j]) * row;
                let got = f64::from(s["b.weight"][[k, j]]);
                assert!((got - want).abs() < 1e-5, "b[{k},{j}] {got} vs {want}");
            }
        }
        // A mask cuts paths: pruning b's row 0 leaves only |B_1j| in a's scores.
        let mut masked = model.clone();
        let mut m = ArrayD::from_elem(IxDyn(&[2, 3]), true);
        for j in 0..3 {
            m[[0, j]] = false;
        }
        masked.masks.insert("b.weight".into(), m);
        let s = synflow_once(&masked, &Device::flex()).unwrap();
        for j in 0..3 {
            let want = f64::abs(a[j][0]) * f64::abs(b[1][j]);
            assert!((f64::from(s["a.weight"][[j, 0]]) - want).abs() < 1e-5);
            assert_eq!(s["b.weight"][[0, j]], 0.0);
        }
    }

    fn mlp() -> Model {
        let mut b = GraphBuilder::new("mlp", &[64]);
        let x = b.input();
        let h = b.linear("l1", &x, 48, true);
        let h = b.relu("r1", &h);
        let h = b.linear("l2", &h, 24, true);
        let h = b.relu("r2", &h);
        let y = b.linear("l3", &h, 10, true);
        let graph = b.finish(&y);
        let weights = init_weights(&graph, 5);
        Model {
            graph,
            weights,
            masks: Masks::new(),
        }
    }

    #[test]
    fn iterative_synflow_hits_the_target_without_disconnected_weights() {
        let model = mlp();
        let n = (64 * 48 + 48 * 24 + 24 * 10) as f64;
        let target = 0.99;
        let order = synflow_scores(
            &model,
            &Device::flex(),
            target,
            SYNFLOW_ROUNDS,
            SelectOptions::default(),
        )
        .unwrap();
        let spec = PruneSpec {
            target,
            kind: TargetKind::Direct,
            allocation: Allocation::Global,
            options: SelectOptions::default(),
        };
        let out = prune_to_target(&model.graph, &order, &spec, None).unwrap();
        assert!((out.direct_sparsity - target).abs() <= 1.0 / n, "{out:?}");
        let report = sparsity_report(&model.graph, &out.masks).unwrap();
        // SynFlow keeps (almost) every surviving weight on a path: the last round may strand a
        // weight or two, while random pruning at the same sparsity strands many.
        let gap = |r: &shears_core::sparsity::SparsityReport| {
            ((r.effective_sparsity - r.direct_sparsity) * n).round()
        };
        assert!(gap(&report) <= 2.0, "{report:?}");
        let random = shears_core::sparsity::random_scores(&model.graph, 3);
        let r = prune_to_target(&model.graph, &random, &spec, None).unwrap();
        let r = sparsity_report(&model.graph, &r.masks).unwrap();
        assert!(gap(&r) >= 10.0, "{r:?}");
    }

    #[test]
    fn synflow_order_replays_the_rounds() {
        // With 2 rounds to density 0.01 the first round keeps 10%: the 90% lowest of the order
        // must be exactly round 1's pruned set, i.e. one-shot SynFlow at sparsity 0.9.
        let model = mlp();
        let order =
            synflow_scores(&model, &Device::flex(), 0.99, 2, SelectOptions::default()).unwrap();
        let once = synflow_once(&model, &Device::flex()).unwrap();
        let first =
            select_global(&model.graph, &once, 0.9, None, SelectOptions::default()).unwrap();
        let replay =
            select_global(&model.graph, &order, 0.9, None, SelectOptions::default()).unwrap();
        assert_eq!(first, replay);
    }

    #[test]
    fn bad_inputs_are_named() {
        let (model, xs, labels) = linear_model();
        let mut exec = autodiff_executor(&model, &flex_autodiff()).unwrap();
        let mut bad = batches(&xs, &labels);
        bad[0].labels[0] = 7;
        let e = snip_from_batches(&mut exec, &bad, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 7") && e.contains("3 classes"), "{e}");
        let e = grasp_from_batches(&mut exec, &batches(&xs, &labels), 0.0, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("temperature"), "{e}");
        let e = synflow_scores(&model, &Device::flex(), 0.5, 0, SelectOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("rounds"), "{e}");
    }
}
