//! Dynamic inference of a trained FTWT network: its model and heads planned for the engine's
//! [`DynamicNet`], which computes only the filters each sample's heads switch on.

use super::gates::head_names;
use super::layers::GatedLayer;
use crate::error::Result;
use crate::invalid;
use shears_core::artifact::Model;
use shears_core::weights::Weights;
use shears_engine::dynamic::{DynamicNet, GateHead};

/// The engine's plan of `model` gated by `heads` (the values of the trained head parameters).
pub fn dynamic_net(
    model: &Model,
    layers: &[GatedLayer],
    heads: &Weights,
    softmax: bool,
    keep_one: bool,
) -> Result<DynamicNet> {
    let mut gate_heads = Vec::new();
    for l in layers {
        let (w, b) = head_names(l);
        let (Some(weight), Some(bias)) = (heads.get(&w), heads.get(&b)) else {
            invalid!("the heads have no `{w}` / `{b}`: they were trained for another network");
        };
        gate_heads.push(GateHead {
            conv: l.conv.clone(),
            gate_at: l.gate_at.clone(),
            weight: weight.iter().copied().collect(),
            bias: bias.iter().copied().collect(),
            softmax,
            keep_one,
        });
    }
    Ok(DynamicNet::new(&model.graph, &model.weights, &gate_heads)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::ftwt::gates::{FtwtGates, Mode, Source, initial_heads};
    use crate::methods::ftwt::layers::gated_layers;
    use crate::methods::ftwt::targets::TargetRule;
    use shears_core::graph::ParamKind;
    use shears_core::{Masks, init_weights, zoo};
    use shears_engine::burn::tensor::Device;
    use shears_engine::dynamic::DynamicStats;
    use shears_engine::executor::to_vec;
    use shears_engine::{Executor, ExtraParams, Mode as ExecMode, OptimizerConfig};

    /// A zoo model with running statistics away from (0, 1), so BN folding matters.
    fn model(name: &str, input: &[usize]) -> Model {
        let graph = zoo::build(name, input, 10).unwrap();
        let mut weights = init_weights(&graph, 7);
        for spec in graph.param_specs() {
            let t = weights.get_mut(&spec.name).unwrap();
            let n = t.len();
            for (i, v) in t.iter_mut().enumerate() {
                let u = ((i * 7919 + n * 31) % 997) as f32 / 997.0;
                match spec.kind {
                    ParamKind::RunningMean => *v = u * 0.2 - 0.1,
                    ParamKind::RunningVar => *v = 0.5 + u,
                    ParamKind::BnShift => *v = u * 0.4 - 0.2,
                    _ => {}
                }
            }
        }
        Model {
            graph,
            weights,
            masks: Masks::new(),
        }
    }

    /// The dynamic net's logits against the engine's masked (gated) forward pass, and the
    /// filters each kept.
    fn check(name: &str, input: &[usize]) {
        check_with(name, input, 0.0);
    }

    /// [`check`] with every head bias shifted by `shift` (very negative: heads that switch whole
    /// layers off, which `keep_one` must catch the same way in both engines).
    fn check_with(name: &str, input: &[usize], shift: f32) {
        let m = model(name, input);
        let layers = gated_layers(&m.graph, &[], &[]).unwrap();
        let dev = Device::flex();
        let sgd = OptimizerConfig::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        };
        let mut heads = initial_heads(&layers, 11);
        for (name, _, values) in &mut heads {
            if name.ends_with(".bias") {
                values.iter_mut().for_each(|v| *v += shift);
            }
        }
        let extra = ExtraParams::new(&dev, heads, sgd, None).unwrap();
        let gates = FtwtGates::new(
            layers.clone(),
            TargetRule::Mass,
            0.9,
            Mode::Decoupled,
            Source::Predicted,
        );
        let n = 3;
        let per: usize = input.iter().product();
        let x: Vec<f32> = (0..n * per)
            .map(|i| ((i * 2654435761usize) % 1000) as f32 / 400.0 - 1.0)
            .collect();
        let mut exec = Executor::new(&m.graph, &m.weights, &m.masks, &dev).unwrap();
        let xv = exec.input_value(x.clone(), n).unwrap();
        let want = to_vec(
            exec.forward_gated(xv, ExecMode::Eval, &gates, Some(&extra))
                .reshape([n * 10]),
        );
        let tally = gates.take_tally();
        let net = dynamic_net(&m, &layers, &extra.values(), true, true).unwrap();
        let mut stats = DynamicStats::default();
        let got = net.forward(&x, n, &mut stats).unwrap();
        let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "{name}: max difference {worst} (scale {scale})\n{got:?}\n{want:?}"
        );
        let active: Vec<u64> = tally.layers.iter().map(|t| t.active).collect();
        assert_eq!(stats.active, active, "{name}: filters kept per layer");
        let dense: u64 = layers.iter().map(|l| l.macs).sum();
        assert!(
            active
                .iter()
                .zip(&layers)
                .any(|(a, l)| *a < (n * l.out_channels) as u64),
            "{name}: some filter off"
        );
        assert!(stats.conv_macs < (n as u64 * dense) as f64 * 1.5, "{name}");
        if shift < -10.0 {
            // Every head says "all off": exactly one filter per sample and layer stays on.
            assert!(active.iter().all(|a| *a == n as u64), "{name}: {active:?}");
        }
    }

    #[test]
    fn heads_that_switch_a_layer_off_keep_one_filter_in_both_engines() {
        check_with("small-cnn", &[1, 28, 28], -100.0);
        check_with("resnet-20", &[3, 32, 32], -100.0);
    }

    #[test]
    fn dynamic_inference_equals_the_gated_network_on_every_gated_zoo_family() {
        check("small-cnn", &[1, 28, 28]);
        check("lenet-5", &[1, 28, 28]);
        check("vgg-11", &[3, 32, 32]);
        check("resnet-20", &[3, 32, 32]);
        check("mobilenet-v2", &[3, 32, 32]);
    }

    #[test]
    fn heads_of_another_network_are_refused() {
        let m = model("small-cnn", &[1, 28, 28]);
        let layers = gated_layers(&m.graph, &[], &[]).unwrap();
        let e = dynamic_net(&m, &layers, &Weights::new(), true, true)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("another network"), "{e}");
    }
}
