//! The Burn interpreter agrees with the framework-free reference forward pass on every zoo
//! model, dense, masked and gated, with BatchNorm statistics that are not the identity.

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shears_core::reference::{ChannelGates, forward_with_channel_gates};
use shears_core::{Masks, Weights, init_weights, zoo};
use shears_engine::burn::tensor::Device;
use shears_engine::executor::to_vec;
use shears_engine::{Executor, Mode};

/// Random BN statistics and affine parameters, so BN folding is really exercised.
fn perturb_bn(w: &mut Weights, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, t) in w.iter_mut() {
        if name.ends_with("running_var") {
            t.mapv_inplace(|_| rng.random_range(0.5..2.0));
        } else if name.ends_with("running_mean") || name.ends_with(".bias") {
            t.mapv_inplace(|_| rng.random_range(-0.5..0.5));
        }
        if name.ends_with("_bn.weight") || name.contains("bn") && name.ends_with(".weight") {
            t.mapv_inplace(|_| rng.random_range(0.5..1.5));
        }
    }
}

fn random_input(shape: &[usize], n: usize, seed: u64) -> ArrayD<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut dims = vec![n];
    dims.extend_from_slice(shape);
    ArrayD::from_shape_simple_fn(IxDyn(&dims), || rng.random_range(-1.0..1.0))
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn check(name: &str, input: &[usize], masked: bool, gated: bool) {
    let graph = zoo::build(name, input, 10).unwrap();
    let mut weights = init_weights(&graph, 1);
    perturb_bn(&mut weights, 2);
    let mut masks = Masks::new();
    if masked {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for spec in graph.param_specs() {
            if spec.name.ends_with(".weight") && weights[&spec.name].ndim() >= 2 {
                masks.insert(
                    spec.name.clone(),
                    weights[&spec.name].mapv(|_| rng.random_bool(0.7)),
                );
            }
        }
    }
    let mut gates = ChannelGates::new();
    let device = Device::flex();
    let mut exec = Executor::new(&graph, &weights, &masks, &device).unwrap();
    if gated {
        // Gate the output of every third BN with a 0/1 pattern.
        for node in graph
            .nodes
            .iter()
            .filter(|n| n.op.kind_name() == "batchnorm")
            .step_by(3)
        {
            let c = weights[&format!("{}.weight", node.name)].len();
            let g: Vec<f32> = (0..c).map(|k| if k % 3 == 1 { 0.0 } else { 1.0 }).collect();
            exec.set_gate(&node.name, Some(&g)).unwrap();
            gates.insert(node.name.clone(), g);
        }
    }
    let x = random_input(input, 2, 4);
    let expected = forward_with_channel_gates(&graph, &weights, Some(&masks), &gates, &x).unwrap();
    let value = exec.input_value(x.iter().copied().collect(), 2).unwrap();
    let got = exec.forward(value, Mode::Eval);
    let got = to_vec(got.reshape([20]));
    let exp: Vec<f32> = expected.iter().copied().collect();
    let d = max_rel_diff(&got, &exp);
    assert!(
        d < 1e-4,
        "{name} (masked {masked}, gated {gated}): max relative difference {d}"
    );
}

#[test]
fn executor_matches_reference_on_small_models() {
    for name in ["lenet-300-100", "lenet-5", "small-cnn"] {
        check(name, &[1, 28, 28], false, false);
        check(name, &[1, 28, 28], true, true);
    }
}

#[test]
fn executor_matches_reference_on_residual_and_depthwise_models() {
    for name in ["resnet-20", "mobilenet-v2", "vgg-11"] {
        check(name, &[3, 16, 16], true, false);
        check(name, &[3, 16, 16], false, true);
    }
}

#[test]
fn executor_matches_reference_on_bottleneck_resnet() {
    check("resnet-50", &[3, 32, 32], false, false);
}

#[test]
fn training_step_lowers_the_loss_and_keeps_masked_weights_zero() {
    let graph = zoo::build("small-cnn", &[1, 8, 8], 3).unwrap();
    let weights = init_weights(&graph, 0);
    let mut masks = Masks::new();
    masks.insert(
        "conv2.weight".into(),
        weights["conv2.weight"].mapv(|v| v > 0.0),
    );
    let device = Device::flex().autodiff();
    let mut exec = Executor::new(&graph, &weights, &masks, &device).unwrap();
    let mut opt = shears_engine::Optimizer::new(
        shears_engine::OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        },
        exec.params.len(),
    )
    .unwrap();
    let x = random_input(&[1, 8, 8], 8, 9);
    let labels: Vec<i64> = (0..8).map(|i| i % 3).collect();
    let mut losses = Vec::new();
    for _ in 0..5 {
        let v = exec.input_value(x.iter().copied().collect(), 8).unwrap();
        let loss = shears_engine::train::cross_entropy(exec.forward(v, Mode::Train), &labels);
        losses.push(to_vec(loss.clone().inner())[0]);
        let grads = loss.backward();
        for i in 0..exec.params.len() {
            if let Some(g) = exec.params[i].grad(&grads) {
                let new = opt.update(i, exec.params[i].clone().inner(), g, 0.05);
                exec.replace_param(i, new);
            }
        }
        exec.apply_masks();
    }
    assert!(losses[4] < losses[0], "loss did not go down: {losses:?}");
    let w = exec.weights();
    let kept = &masks["conv2.weight"];
    assert!(
        w["conv2.weight"]
            .iter()
            .zip(kept.iter())
            .all(|(v, &k)| k || *v == 0.0)
    );
    let moved = w["conv2.weight"]
        .iter()
        .zip(weights["conv2.weight"].iter())
        .zip(kept.iter());
    assert!(
        moved.filter(|&(_, &k)| k).any(|((a, b), _)| a != b),
        "kept weights were not trained"
    );
}

#[test]
fn executor_matches_reference_through_relu6_where_it_clips() {
    use shears_core::builder::GraphBuilder;
    let mut b = GraphBuilder::new("relu6", &[1, 8, 8]);
    let x = b.input();
    let c = b.conv2d("conv", &x, 4, 3, 1, 1);
    let n = b.batchnorm("bn", &c);
    let r = b.relu6("act", &n);
    let p = b.global_avg_pool("pool", &r);
    let y = b.linear("fc", &p, 10, true);
    let graph = b.finish(&y);
    let mut weights = init_weights(&graph, 5);
    // Large weights push many activations above 6, so the cap is exercised.
    weights
        .get_mut("conv.weight")
        .unwrap()
        .mapv_inplace(|v| v * 20.0);
    let x = random_input(&[1, 8, 8], 2, 6);
    let expected = shears_core::reference::forward(&graph, &weights, None, &x).unwrap();
    // The same network with a plain ReLU computes something else: the cap is really hit.
    let mut uncapped = graph.clone();
    for node in &mut uncapped.nodes {
        if node.op == shears_core::graph::Op::Relu6 {
            node.op = shears_core::graph::Op::Relu;
        }
    }
    let relu = shears_core::reference::forward(&uncapped, &weights, None, &x).unwrap();
    assert_ne!(expected, relu, "no activation reached 6");
    let device = Device::flex();
    let mut exec = Executor::new(&graph, &weights, &Masks::new(), &device).unwrap();
    let value = exec.input_value(x.iter().copied().collect(), 2).unwrap();
    let got = to_vec(exec.forward(value, Mode::Eval).reshape([20]));
    let exp: Vec<f32> = expected.iter().copied().collect();
    let d = max_rel_diff(&got, &exp);
    assert!(d < 1e-4, "relu6: max relative difference {d}");
}

/// A network of every pointwise activation, a squeeze-excitation (pooled `[C,1,1]` map, 1×1
/// convs, a per-channel product) and ceil-mode pools with and without the padding in the
/// divisor: the Burn forward equals the reference forward.
fn activations_and_se_graph() -> shears_core::Graph {
    use shears_core::builder::GraphBuilder;
    use shears_core::graph::Op;
    use shears_core::ops::{Activation, Pool2d};
    let mut b = GraphBuilder::new("se", &[3, 12, 12]);
    let x = b.input();
    let c = b.conv2d("conv", &x, 8, 3, 1, 1);
    let c = b.pad("pad", &c, [1, 0, 0, 1]);
    let c = b.conv2d("unpad", &c, 8, 2, 1, 0);
    let n = b.batchnorm("bn", &c);
    let mut h = n;
    for (i, f) in [
        Activation::HardSwish,
        Activation::Silu,
        Activation::Gelu,
        Activation::Tanh,
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Clip {
            min: -0.5,
            max: 1.5,
        },
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
    ]
    .into_iter()
    .enumerate()
    {
        h = b.activation(&format!("act{i}"), &h, f);
    }
    let p = b.global_avg_pool_keep("se_pool", &h);
    let s = b.conv2d("se_fc1", &p, 4, 1, 1, 0);
    let s = b.relu("se_relu", &s);
    let s = b.conv2d("se_fc2", &s, 8, 1, 1, 0);
    let s = b.activation("se_gate", &s, Activation::Sigmoid);
    let m = b.mul("se_mul", &h, &s);
    let mp = b.push(
        "maxpool",
        Op::MaxPool(Pool2d {
            ceil_mode: true,
            ..Pool2d::square(3, 2, 0)
        }),
        &[&m],
    );
    let branch = b.conv2d("branch", &mp, 4, 1, 1, 0);
    let cat = b.concat("cat", &[&mp, &branch]);
    let ln = b.layer_norm("ln", &cat);
    let scaled = b.affine("layer_scale", &ln);
    let gn = b.group_norm("gn", &scaled, 3);
    let up = b.resize("up", &gn, [2, 2], shears_core::ops::ResizeMode::Bilinear);
    let near = b.resize("near", &up, [1, 2], shears_core::ops::ResizeMode::Nearest);
    let scaled = b.push("shrink", Op::MaxPool(Pool2d::square(2, 2, 0)), &[&near]);
    let ap = b.push(
        "avgpool",
        Op::AvgPool(Pool2d {
            ceil_mode: true,
            count_include_pad: false,
            ..Pool2d::square(3, 2, 1)
        }),
        &[&scaled],
    );
    let g = b.global_avg_pool("pool", &ap);
    let y = b.linear("fc", &g, 10, true);
    b.finish(&y)
}

#[test]
fn executor_matches_reference_through_new_activations_se_and_ceil_pools() {
    let graph = activations_and_se_graph();
    let mut weights = init_weights(&graph, 7);
    perturb_bn(&mut weights, 8);
    // A layer scale and LayerNorm affine that are not the identity.
    for name in [
        "layer_scale.scale",
        "layer_scale.shift",
        "ln.weight",
        "ln.bias",
        "gn.weight",
        "gn.bias",
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(name.len() as u64);
        weights
            .get_mut(name)
            .unwrap()
            .mapv_inplace(|_| rng.random_range(0.5..1.5));
    }
    let x = random_input(&[3, 12, 12], 2, 9);
    let expected = shears_core::reference::forward(&graph, &weights, None, &x).unwrap();
    let device = Device::flex();
    let mut exec = Executor::new(&graph, &weights, &Masks::new(), &device).unwrap();
    let value = exec.input_value(x.iter().copied().collect(), 2).unwrap();
    let got = to_vec(exec.forward(value, Mode::Eval).reshape([20]));
    let exp: Vec<f32> = expected.iter().copied().collect();
    let d = max_rel_diff(&got, &exp);
    assert!(d < 1e-4, "max relative difference {d}");
    // Gating a norm's input leaves the gated channels out of its statistics in both.
    let gate: Vec<f32> = (0..12)
        .map(|k| if k % 3 == 1 { 0.0 } else { 1.0 })
        .collect();
    let mut gates = ChannelGates::new();
    gates.insert("cat".to_string(), gate.clone());
    exec.set_gate("cat", Some(&gate)).unwrap();
    gates.insert("layer_scale".to_string(), gate.clone());
    exec.set_gate("layer_scale", Some(&gate)).unwrap();
    let expected = forward_with_channel_gates(&graph, &weights, None, &gates, &x).unwrap();
    let value = exec.input_value(x.iter().copied().collect(), 2).unwrap();
    let got = to_vec(exec.forward(value, Mode::Eval).reshape([20]));
    let exp: Vec<f32> = expected.iter().copied().collect();
    let d = max_rel_diff(&got, &exp);
    assert!(d < 1e-4, "gated: max relative difference {d}");
    // The ceil-mode pools give 6x6 and then 4x4 maps on a 12x12 input (floor: 5x5, then 3x3),
    // so the partial windows are really exercised.
    let shapes = shears_core::shape::infer_shapes(&graph).unwrap();
    assert_eq!(shapes.get("maxpool"), &vec![8, 6, 6]);
    assert_eq!(shapes.get("avgpool"), &vec![12, 4, 7]);
}

/// Training runs through every new op, a concat included, and lowers the loss.
#[test]
fn training_through_new_activations_se_concat_and_ceil_pools_lowers_the_loss() {
    let graph = activations_and_se_graph();
    let weights = init_weights(&graph, 3);
    let device = Device::flex().autodiff();
    let mut exec = Executor::new(&graph, &weights, &Masks::new(), &device).unwrap();
    let mut opt = shears_engine::Optimizer::new(
        shears_engine::OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        },
        exec.params.len(),
    )
    .unwrap();
    let x = random_input(&[3, 12, 12], 8, 4);
    let labels: Vec<i64> = (0..8).map(|i| i % 3).collect();
    let mut losses = Vec::new();
    for _ in 0..6 {
        let v = exec.input_value(x.iter().copied().collect(), 8).unwrap();
        let loss = shears_engine::train::cross_entropy(exec.forward(v, Mode::Train), &labels);
        losses.push(to_vec(loss.clone().inner())[0]);
        let grads = loss.backward();
        for i in 0..exec.params.len() {
            if let Some(g) = exec.params[i].grad(&grads) {
                let new = opt.update(i, exec.params[i].clone().inner(), g, 0.05);
                exec.replace_param(i, new);
            }
        }
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(losses[5] < losses[0], "loss did not go down: {losses:?}");
    let moved = exec.weights()["se_fc2.weight"]
        .iter()
        .zip(weights["se_fc2.weight"].iter())
        .any(|(a, b)| a != b);
    assert!(moved, "the excitation conv was not trained");
}

/// Every prunable group of zoo model `name` half gated: the executor agrees with the reference
/// (LayerNorm's statistics then run over the kept channels).
fn check_half_gated_groups(name: &str, input: &[usize]) {
    use shears_core::structured::{ChannelSelection, channel_groups, selection_gates};
    let graph = zoo::build(name, input, 10).unwrap();
    let weights = init_weights(&graph, 5);
    let mut selection = ChannelSelection::default();
    for g in channel_groups(&graph)
        .unwrap()
        .iter()
        .filter(|g| g.prunable)
    {
        selection
            .kept
            .insert(g.id, (0..g.channels).filter(|c| c % 2 == 0).collect());
    }
    let gates = selection_gates(&graph, &selection).unwrap();
    let mut exec = Executor::new(&graph, &weights, &Masks::new(), &Device::flex()).unwrap();
    for (value, gate) in &gates {
        exec.set_gate(value, Some(gate)).unwrap();
    }
    let x = random_input(input, 2, 4);
    let expected = forward_with_channel_gates(&graph, &weights, None, &gates, &x).unwrap();
    let value = exec.input_value(x.iter().copied().collect(), 2).unwrap();
    let got = to_vec(exec.forward(value, Mode::Eval).reshape([20]));
    let exp: Vec<f32> = expected.iter().copied().collect();
    let d = max_rel_diff(&got, &exp);
    assert!(d < 1e-4, "gated {name}: max relative difference {d}");
}

/// The transformer ops (tokens, class token, positions, attention, LayerNorm on tokens, GELU,
/// class pooling) agree with the reference, dense and masked, and with every prunable group
/// half gated (heads, MLP channels, the embedding width).
#[test]
fn executor_matches_reference_on_a_vision_transformer() {
    check("vit-tiny", &[1, 8, 8], false, false);
    check("vit-tiny", &[3, 8, 8], true, false);
    check_half_gated_groups("vit-tiny", &[1, 8, 8]);
}

/// Swin's ops (padding to whole windows, shifted-window attention with its position table and
/// shift mask, crops, the 2x2 phases of patch merging) agree with the reference: 16x16 inputs
/// give an 8x8 first stage, padded to two windows a side and shifted in its second block.
#[test]
fn executor_matches_reference_on_a_swin_transformer() {
    check("swin-tiny", &[1, 16, 16], false, false);
    check("swin-tiny", &[3, 16, 16], true, false);
    check_half_gated_groups("swin-tiny", &[1, 16, 16]);
}

/// Gradients flow through attention, the class token and the position table: a few Adam steps
/// on a fixed batch lower the loss and move both embeddings.
fn check_training_moves(name: &str, input: &[usize], tensors: &[&str]) {
    let graph = zoo::build(name, input, 3).unwrap();
    let weights = init_weights(&graph, 0);
    let device = Device::flex().autodiff();
    let mut exec = Executor::new(&graph, &weights, &Masks::new(), &device).unwrap();
    let mut opt = shears_engine::Optimizer::new(
        shears_engine::OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        exec.params.len(),
    )
    .unwrap();
    let x = random_input(input, 6, 9);
    let labels: Vec<i64> = (0..6).map(|i| i % 3).collect();
    let mut losses = Vec::new();
    for _ in 0..6 {
        let v = exec.input_value(x.iter().copied().collect(), 6).unwrap();
        let loss = shears_engine::train::cross_entropy(exec.forward(v, Mode::Train), &labels);
        losses.push(to_vec(loss.clone().inner())[0]);
        let grads = loss.backward();
        for i in 0..exec.params.len() {
            if let Some(g) = exec.params[i].grad(&grads) {
                let new = opt.update(i, exec.params[i].clone().inner(), g, 1e-3);
                exec.replace_param(i, new);
            }
        }
    }
    assert!(
        losses[5] < losses[0],
        "{name}: loss did not go down: {losses:?}"
    );
    let w = exec.weights();
    for t in tensors {
        assert!(
            w[*t].iter().zip(weights[*t].iter()).any(|(a, b)| a != b),
            "{t} was not trained"
        );
    }
}

#[test]
fn training_a_vision_transformer_lowers_the_loss() {
    let moved = ["cls_token.token", "pos_embed.table", "block0_qkv.weight"];
    check_training_moves("vit-tiny", &[1, 8, 8], &moved);
}

/// Gradients reach Swin's relative position tables through the gather of their rows.
#[test]
fn training_a_swin_transformer_lowers_the_loss() {
    let moved = [
        "stage0_block1_attn.bias_table",
        "stage0_block0_qkv.weight",
        "merge1_reduction.weight",
    ];
    check_training_moves("swin-tiny", &[1, 16, 16], &moved);
}
