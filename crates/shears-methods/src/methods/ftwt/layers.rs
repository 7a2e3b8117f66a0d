//! Which convolutions FTWT gates, and where each gate sits.
//!
//! A gate multiplies the conv's output channels after BatchNorm (and after the ReLU that alone
//! reads it, which is the same for a 0/1 gate and keeps BN+ReLU fused): `act(BN(conv(x))) ⊙ M`.
//! Where the BN feeds a residual sum directly (ResNet block conv2), the gate sits on the BN
//! output before the sum, as the official code does by default (`--gtafterblock False`).
//!
//! By default every conv is gated except residual projections: a conv whose BN output enters an
//! `Add` while its input is also read by another conv (the block's first conv) is a shortcut,
//! which the paper's option-A ResNets do not have. Fully connected layers are never gated.

use crate::error::Result;
use crate::invalid;
use serde::Serialize;
use shears_core::cost::{Convention, cost_with_shapes};
use shears_core::graph::{Graph, Op};
use shears_core::ops::{BatchNorm, Conv2d};
use shears_core::shape::infer_shapes;

/// One gated convolution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatedLayer {
    /// The conv node; its first input is what the mask predictor reads.
    pub conv: String,
    /// The node whose output the gate multiplies (the conv's BN or ReLU, or the conv).
    pub gate_at: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub groups: usize,
    /// Dense conv MACs per sample (conv+linear convention).
    pub macs: u64,
    /// The conv before it (residual projections aside) is not gated: its input is dense, as
    /// far as the paper's counter knows.
    pub after_ungated: bool,
}

impl GatedLayer {
    /// Depthwise: every output channel reads one input channel of its own.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.in_channels == self.out_channels
    }
}

/// Where the gate of conv `conv` sits: after its BN, after the ReLU that alone reads that.
fn gate_point(graph: &Graph, conv: &str) -> String {
    let mut at = conv.to_string();
    let reader = |v: &str| graph.sole_reader(v).map(|i| &graph.nodes[i]);
    if let Some(bn) = reader(&at).filter(|n| matches!(n.op, Op::BatchNorm(BatchNorm { .. }))) {
        at = bn.name.clone();
    }
    if let Some(relu) = reader(&at).filter(|n| matches!(n.op, Op::Relu)) {
        at = relu.name.clone();
    }
    at
}

/// A residual projection: its (BN) output enters an `Add` and its input feeds another conv too.
fn is_projection(graph: &Graph, conv: &shears_core::graph::Node, gate_at: &str) -> bool {
    let feeds_add = graph
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Add) && n.inputs.iter().any(|i| i == gate_at));
    let input = &conv.inputs[0];
    let shares_input = graph.nodes.iter().any(|n| {
        n.name != conv.name && matches!(n.op, Op::Conv2d(Conv2d { .. })) && n.inputs[0] == *input
    });
    feeds_add && shares_input
}

/// The gated layers of `graph`: `only` names the convs to gate (empty: the paper's default,
/// every conv but residual projections), `ignore` removes convs from that set.
pub fn gated_layers(graph: &Graph, only: &[String], ignore: &[String]) -> Result<Vec<GatedLayer>> {
    let shapes = infer_shapes(graph)?;
    // FTWT gates the filters of a CNN per sample; a transformer's work is in its token MLPs
    // and attention heads, which its mask predictors and dynamic inference do not know.
    if let Some(n) = graph
        .nodes
        .iter()
        .find(|n| shears_core::shape::is_tokens(shapes.get(&n.name)))
    {
        invalid!(
            "FTWT gates the conv filters of a convolutional network per sample; model `{}` \
             computes on token sequences (node `{}` is a {} with output {:?}), whose heads \
             and MLP channels it cannot gate: prune it with l1-filter, l2-filter, taylor, \
             random-filter or paam",
            graph.name,
            n.name,
            n.op.kind_name(),
            shapes.get(&n.name)
        );
    }
    let cost = cost_with_shapes(graph, &shapes, Convention::ConvLinear);
    for name in only.iter().chain(ignore) {
        match graph.node(name) {
            Some(n) if matches!(n.op, Op::Conv2d(Conv2d { .. })) => {}
            Some(n) => invalid!(
                "[method] gated layer `{name}` is a {} node of model `{}`, not a conv",
                n.op.kind_name(),
                graph.name
            ),
            None => invalid!("[method] model `{}` has no conv named `{name}`", graph.name),
        }
    }
    let mut layers = Vec::new();
    // Whether the last conv seen (residual projections aside) was gated.
    let mut previous_gated: Option<bool> = None;
    for (i, node) in graph.nodes.iter().enumerate() {
        let Op::Conv2d(Conv2d {
            in_channels,
            out_channels,
            groups,
            ..
        }) = node.op
        else {
            continue;
        };
        let gate_at = gate_point(graph, &node.name);
        let projection = is_projection(graph, node, &gate_at);
        let chosen = if only.is_empty() {
            !projection
        } else {
            only.contains(&node.name)
        } && !ignore.contains(&node.name);
        let after_ungated = previous_gated == Some(false);
        if !projection {
            previous_gated = Some(chosen);
        }
        if !chosen {
            continue;
        }
        layers.push(GatedLayer {
            conv: node.name.clone(),
            gate_at,
            in_channels,
            out_channels,
            groups,
            macs: cost.nodes[i].macs,
            after_ungated,
        });
    }
    if layers.is_empty() {
        invalid!(
            "model `{}` has no conv layer FTWT can gate (gated layers are found after every conv; check `gated` and `ignore`)",
            graph.name
        );
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shears_core::zoo;

    fn model(name: &str) -> Graph {
        zoo::build(name, &[3, 32, 32], 10).unwrap()
    }

    #[test]
    fn vgg_gates_every_conv_after_its_relu() {
        let g = model("vgg-11");
        let layers = gated_layers(&g, &[], &[]).unwrap();
        let convs = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Conv2d(Conv2d { .. })))
            .count();
        assert_eq!(layers.len(), convs);
        for l in &layers {
            assert!(matches!(g.node(&l.gate_at).unwrap().op, Op::Relu), "{l:?}");
        }
    }

    #[test]
    fn resnet_gates_both_block_convs_and_not_the_projections() {
        let g = model("resnet-20");
        let layers = gated_layers(&g, &[], &[]).unwrap();
        let names: Vec<&str> = layers.iter().map(|l| l.conv.as_str()).collect();
        assert!(names.contains(&"conv1"));
        assert!(names.contains(&"layer1_0_conv1") && names.contains(&"layer1_0_conv2"));
        assert!(names.iter().all(|n| !n.contains("shortcut")), "{names:?}");
        // 1 stem + 9 blocks x 2.
        assert_eq!(layers.len(), 19);
        let conv2 = layers.iter().find(|l| l.conv == "layer2_0_conv2").unwrap();
        assert_eq!(conv2.gate_at, "layer2_0_bn2", "before the residual sum");
        let conv1 = layers.iter().find(|l| l.conv == "layer2_0_conv1").unwrap();
        assert_eq!(conv1.gate_at, "layer2_0_relu1");
    }

    #[test]
    fn mobilenet_gates_depthwise_and_pointwise() {
        let g = model("mobilenet-v2");
        let layers = gated_layers(&g, &[], &[]).unwrap();
        assert!(layers.iter().any(GatedLayer::is_depthwise));
        assert!(layers.iter().any(|l| !l.is_depthwise() && l.groups == 1));
    }

    #[test]
    fn a_chosen_set_and_bad_names() {
        let g = model("resnet-20");
        let only = vec!["conv1".to_string(), "layer1_0_conv1".to_string()];
        let layers = gated_layers(&g, &only, &["conv1".to_string()]).unwrap();
        assert_eq!(layers.len(), 1);
        assert!(layers[0].after_ungated, "conv1 before it is not gated");
        let err = gated_layers(&g, &["nope".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no conv named `nope`"), "{err}");
        let err = gated_layers(&g, &["layer1_0_bn1".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a conv"), "{err}");
        let err = gated_layers(&g, &only, &only).unwrap_err().to_string();
        assert!(err.contains("no conv layer FTWT can gate"), "{err}");
    }
}
