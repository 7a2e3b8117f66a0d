//! First-order Taylor channel importance (Molchanov et al., ICLR 2017 and CVPR 2019).
//!
//! **Which variant.** The *activation* criterion: for a channel `c` of a value `a`, the change of
//! the loss when the channel is removed is, to first order, `Σ_{n,h,w} a·∂L/∂a` over the batch
//! and positions. The score is the mean over a few batches of its absolute value,
//! `(1/B) Σ_b |Σ_{n,h,w} a·∂L_b/∂a|`, with `L_b` the mean cross-entropy of batch `b`.
//!
//! It is computed exactly from *parameter* gradients, with no hook on activations: a value that is
//! homogeneous of degree one in its own parameters satisfies Euler's identity, so
//! - BatchNorm output `y = γ·x̂ + β`: `Σ y·∂L/∂y = γ_c·∂L/∂γ_c + β_c·∂L/∂β_c` (Molchanov 2019);
//! - conv / linear output `y = W*x + b`: `Σ y·∂L/∂y = Σ_{filter c} w·∂L/∂w + b_c·∂L/∂b_c`.
//!
//! A conv or linear layer whose output feeds a BatchNorm is not scored itself: in training mode
//! the BatchNorm normalises its input away, so `Σ w·∂L/∂w` is zero there; the BatchNorm output
//! is scored instead. Scores are keyed by node (the value it produces), one per output channel,
//! ready for `shears_core::structured::importance_from_node_scores`, which sums the scored values
//! of each channel group. Gradients come from training-mode forwards (batch statistics) on a
//! private copy of the model, so the caller's running statistics are not touched.

use crate::error::{EngineError, Result};
use crate::executor::{Executor, Mode, to_vec};
use crate::train::{check_data_fits, cross_entropy};
use burn::tensor::Device;
use shears_core::graph::{Graph, Op};
use shears_core::ops::{BatchNorm, Conv2d, Dropout, Linear};
use shears_core::weights::{Masks, Weights};
use shears_data::DataSplits;
use std::collections::BTreeMap;

use crate::scores::{ScoreBatches, score_batches};

/// One scored node: the parameter indices whose `θ·∂L/∂θ` sum to its per-channel contribution.
struct Scored {
    node: String,
    channels: usize,
    /// (parameter index, layout) pairs.
    params: Vec<(usize, Layout)>,
}

/// How a flat parameter maps onto output channels.
#[derive(Clone, Copy)]
enum Layout {
    /// One value per channel (bias, BatchNorm scale or shift).
    PerChannel,
    /// `[out, rest...]` row-major: consecutive chunks of `rest` per channel (conv weight).
    Rows,
    /// `[in, out]` (the engine's transposed linear weight): column `c` is channel `c`.
    Columns,
}

fn scored_nodes(exec: &Executor) -> Vec<Scored> {
    let graph: &Graph = exec.graph();
    let consumers = graph.consumers();
    let mut out = Vec::new();
    for node in &graph.nodes {
        let idx = |suffix: &str| exec.param_index(&format!("{}.{suffix}", node.name));
        let feeds_bn = consumers.get(node.name.as_str()).is_some_and(|cs| {
            cs.iter()
                .any(|&i| matches!(graph.nodes[i].op, Op::BatchNorm(BatchNorm { .. })))
        });
        let (channels, params) = match node.op {
            Op::BatchNorm(BatchNorm { channels, .. }) => (
                channels,
                [idx("weight"), idx("bias")]
                    .into_iter()
                    .flatten()
                    .map(|i| (i, Layout::PerChannel))
                    .collect::<Vec<_>>(),
            ),
            Op::Conv2d(Conv2d { out_channels, .. }) if !feeds_bn => {
                let mut p: Vec<(usize, Layout)> = idx("weight")
                    .map(|i| (i, Layout::Rows))
                    .into_iter()
                    .collect();
                p.extend(idx("bias").map(|i| (i, Layout::PerChannel)));
                (out_channels, p)
            }
            Op::Linear(Linear { out_features, .. }) if !feeds_bn => {
                let mut p: Vec<(usize, Layout)> = idx("weight")
                    .map(|i| (i, Layout::Columns))
                    .into_iter()
                    .collect();
                p.extend(idx("bias").map(|i| (i, Layout::PerChannel)));
                (out_features, p)
            }
            // A conv or linear layer feeding a BatchNorm is scored at the BatchNorm.
            Op::Conv2d(Conv2d { .. })
            | Op::Linear(Linear { .. })
            | Op::Relu
            | Op::Relu6
            | Op::Activation(_)
            | Op::Mul
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool(_)
            | Op::GlobalMaxPool(_)
            | Op::Pad(_)
            | Op::Flatten
            | Op::Add
            | Op::Concat
            | Op::Slice(_)
            | Op::Affine(_)
            | Op::LayerNorm(_)
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
            | Op::TokenPool(_) => continue,
        };
        if !params.is_empty() {
            out.push(Scored {
                node: node.name.clone(),
                channels,
                params,
            });
        }
    }
    out
}

/// Adds each channel's share of the elementwise products `prod` (laid out as `layout`) to `acc`.
fn add_per_channel(acc: &mut [f64], prod: &[f32], layout: Layout) {
    let c = acc.len();
    match layout {
        Layout::PerChannel => {
            for (a, &p) in acc.iter_mut().zip(prod) {
                *a += p as f64;
            }
        }
        Layout::Rows => {
            let rest = prod.len() / c.max(1);
            for (a, row) in acc.iter_mut().zip(prod.chunks_exact(rest.max(1))) {
                *a += row.iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        Layout::Columns => {
            for row in prod.chunks_exact(c.max(1)) {
                for (a, &p) in acc.iter_mut().zip(row) {
                    *a += p as f64;
                }
            }
        }
    }
}

/// Signed first-order contributions `Σ a·∂L/∂a` per channel of every scored node, for one batch
/// (a training-mode forward and one backward on an autodiff executor).
fn batch_contributions(
    exec: &mut Executor,
    scored: &[Scored],
    images: Vec<f32>,
    labels: &[i64],
) -> Result<Vec<Vec<f64>>> {
    let x = exec.input_value(images, labels.len())?;
    let logits = exec.forward(x, Mode::Train);
    let loss = cross_entropy(logits, labels);
    let value = loss.clone().inner().into_scalar::<f32>();
    if !value.is_finite() {
        return Err(EngineError::invalid(
            "taylor scores",
            format!("the loss is {value} on a scoring batch"),
        ));
    }
    let grads = loss.backward();
    let mut out = Vec::with_capacity(scored.len());
    for s in scored {
        let mut acc = vec![0f64; s.channels];
        for &(i, layout) in &s.params {
            let Some(g) = exec.params[i].grad(&grads) else {
                continue;
            };
            let prod = to_vec(exec.params[i].clone().inner() * g);
            add_per_channel(&mut acc, &prod, layout);
        }
        out.push(acc);
    }
    Ok(out)
}

/// Taylor scores per node (see the module docs), averaged over `opts.batches` training batches.
pub fn taylor_node_scores(
    graph: &Graph,
    weights: &Weights,
    masks: &Masks,
    data: &DataSplits,
    device: &Device,
    opts: &ScoreBatches,
) -> Result<BTreeMap<String, Vec<f32>>> {
    let ad = device.clone().autodiff();
    ad.seed(opts.seed);
    let mut exec = Executor::new(graph, weights, masks, &ad)?;
    check_data_fits(&exec, &data.train)?;
    let scored = scored_nodes(&exec);
    let mut sums: Vec<Vec<f64>> = scored.iter().map(|s| vec![0f64; s.channels]).collect();
    let mut seen = 0usize;
    for batch in score_batches(data, opts)? {
        let c = batch_contributions(&mut exec, &scored, batch.images, &batch.labels)?;
        for (acc, contrib) in sums.iter_mut().zip(c) {
            for (a, v) in acc.iter_mut().zip(contrib) {
                *a += v.abs();
            }
        }
        seen += 1;
    }
    if seen == 0 {
        return Err(EngineError::DataMismatch(format!(
            "`{}` has no training samples to compute Taylor scores on",
            data.train.name()
        )));
    }
    Ok(scored
        .iter()
        .zip(sums)
        .map(|(s, acc)| {
            let v = acc.iter().map(|&a| (a / seen as f64) as f32).collect();
            (s.node.clone(), v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shears_core::builder::GraphBuilder;
    use shears_core::weights::init_weights;
    use shears_data::{Dataset, Loader, LoaderConfig};

    /// conv a (3 ch, bias) -> relu -> conv b (4 ch) -> bn -> relu -> gap -> fc (3, bias).
    fn graph() -> Graph {
        let mut b = GraphBuilder::new("t", &[1, 6, 6]);
        let x = b.input();
        let a = b.conv2d_bias("a", &x, 3, 3, 1, 1);
        let a = b.relu("a_relu", &a);
        let c = b.conv2d("b", &a, 4, 3, 1, 1);
        let c = b.batchnorm("b_bn", &c);
        let c = b.relu("b_relu", &c);
        let p = b.global_avg_pool("gap", &c);
        let fc = b.linear("fc", &p, 3, true);
        b.finish(&fc)
    }

    fn batch(n: usize) -> (Vec<f32>, Vec<i64>) {
        let images = (0..n * 36)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let labels = (0..n).map(|i| (i % 3) as i64).collect();
        (images, labels)
    }

    /// Training-mode loss with channel `c` of `node` gated by `t`.
    fn gated_loss(exec: &mut Executor, node: &str, channels: usize, c: usize, t: f32) -> f64 {
        let mut gate = vec![1.0f32; channels];
        gate[c] = t;
        exec.set_gate(node, Some(&gate)).unwrap();
        let (images, labels) = batch(8);
        let x = exec.input_value(images, 8).unwrap();
        let logits = exec.forward(x, Mode::Train);
        let l = cross_entropy(logits, &labels).inner().into_scalar::<f32>() as f64;
        exec.set_gate(node, None).unwrap();
        l
    }

    #[test]
    fn contributions_equal_the_derivative_of_a_channel_gate() {
        let g = graph();
        let w = init_weights(&g, 5);
        let dev = Device::flex().autodiff();
        let mut exec = Executor::new(&g, &w, &Masks::new(), &dev).unwrap();
        let scored = scored_nodes(&exec);
        let names: Vec<&str> = scored.iter().map(|s| s.node.as_str()).collect();
        // `b` feeds a BatchNorm, so its BatchNorm is scored instead.
        assert_eq!(names, vec!["a", "b_bn", "fc"]);
        let (images, labels) = batch(8);
        let contrib = batch_contributions(&mut exec, &scored, images, &labels).unwrap();
        // Small steps: the ReLU after `b_bn` makes the loss only piecewise smooth in `a`'s gates.
        let eps = 2e-3f32;
        for (s, node_contrib) in scored.iter().zip(&contrib) {
            assert_eq!(node_contrib.len(), s.channels);
            for (c, &got) in node_contrib.iter().enumerate() {
                let up = gated_loss(&mut exec, &s.node, s.channels, c, 1.0 + eps);
                let down = gated_loss(&mut exec, &s.node, s.channels, c, 1.0 - eps);
                let fd = (up - down) / (2.0 * eps as f64);
                assert!(
                    (fd - got).abs() <= 1e-4 + 0.03 * got.abs(),
                    "{} channel {c}: finite difference {fd}, Taylor {got}",
                    s.node
                );
            }
        }
        assert!(contrib[0].iter().any(|v| v.abs() > 1e-5), "{contrib:?}");
    }

    #[test]
    fn scores_are_mean_absolute_contributions_over_batches() {
        let g = graph();
        let w = init_weights(&g, 1);
        let n = 24;
        let images: Vec<u8> = (0..n * 36).map(|i| ((i * 31) % 256) as u8).collect();
        let labels: Vec<u16> = (0..n).map(|i| (i % 3) as u16).collect();
        let train = Dataset::new("t/train", images.clone(), [1, 6, 6], labels.clone(), 3).unwrap();
        let test = Dataset::new("t/test", images, [1, 6, 6], labels, 3).unwrap();
        let data = DataSplits::with_train_stats(train, test).unwrap();
        let opts = ScoreBatches {
            batches: 2,
            batch_size: 8,
            seed: 3,
        };
        let s = taylor_node_scores(&g, &w, &Masks::new(), &data, &Device::flex(), &opts).unwrap();
        assert_eq!(s.keys().collect::<Vec<_>>(), vec!["a", "b_bn", "fc"]);
        assert_eq!(s["b_bn"].len(), 4);
        // Recompute by hand from the same two batches.
        let dev = Device::flex().autodiff();
        dev.seed(3);
        let mut exec = Executor::new(&g, &w, &Masks::new(), &dev).unwrap();
        let scored = scored_nodes(&exec);
        let loader = Loader::new(
            &data.train,
            LoaderConfig::train(8, 3).normalized(data.normalization.clone()),
        )
        .unwrap();
        let mut want = vec![0f64; 4];
        for b in loader.epoch(0).take(2) {
            let c = batch_contributions(&mut exec, &scored, b.images, &b.labels).unwrap();
            for (w, v) in want.iter_mut().zip(&c[1]) {
                *w += v.abs() / 2.0;
            }
        }
        for (got, want) in s["b_bn"].iter().zip(&want) {
            assert!(
                (*got as f64 - want).abs() <= 1e-6 + 1e-4 * want.abs(),
                "{got} vs {want}"
            );
        }
        assert!(s.values().flatten().all(|v| v.is_finite() && *v >= 0.0));
        let bad = ScoreBatches { batches: 0, ..opts };
        assert!(taylor_node_scores(&g, &w, &Masks::new(), &data, &Device::flex(), &bad).is_err());
    }
}
