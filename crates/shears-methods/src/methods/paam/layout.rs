//! Which channels PAAM scores and where each score multiplies a feature map.
//!
//! One score vector per prunable channel group (see `shears_core::structured::groups`): the
//! group's producing convs (or linear layers) give the attention network its input, their
//! filter weights, and every producer's output is multiplied by the same scores. Residual
//! channels are one group, so every branch that writes a residual stream is gated by one
//! vector, and since the scores are positive and ReLU is positively homogeneous the whole
//! stream is scaled by it: a score of 0 removes the channel from every layer at once, which is
//! what compaction does.
//!
//! A producer's gate sits after the BatchNorm that alone reads it (and after the ReLU that
//! alone reads that, which keeps BN+ReLU fused in training and is the same for a positive
//! score), else right after the producer. The trained scores are folded into that BatchNorm's
//! γ and β, or into the producer's filters and bias, so the scored network is a plain network.

use crate::error::Result;
use crate::invalid;
use serde::Serialize;
use shears_core::graph::{Graph, Op};
use shears_core::ops::{BatchNorm, Conv2d, Linear};
use shears_core::structured::{ChannelGroup, MemberRole, channel_groups};

/// Where the scores of one producer are folded into the weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "node", rename_all = "kebab-case")]
pub enum Fold {
    /// Scale γ and β of this BatchNorm.
    BatchNorm(String),
    /// Scale the filters (and bias) of the producer itself.
    Producer(String),
}

/// A conv or linear layer whose output filters are a group's channels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Producer {
    pub node: String,
    /// Its weight tensor, `{node}.weight`.
    pub weight: String,
    /// Values per filter: C_in/groups·k·k for a conv, the input features for a linear layer.
    pub fan_in: usize,
    /// The node whose output the scores multiply.
    pub gate_at: String,
    pub fold: Fold,
}

/// A channel group PAAM scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredGroup {
    /// The group's id in `channel_groups`.
    pub id: usize,
    pub channels: usize,
    pub producers: Vec<Producer>,
}

/// The scored groups of a graph, and the prunable groups left whole with the reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layout {
    pub groups: Vec<ScoredGroup>,
    pub unscored: Vec<(usize, String)>,
}

impl Layout {
    /// Every scored filter, over all groups.
    pub fn filters(&self) -> usize {
        self.groups.iter().map(|g| g.channels).sum()
    }

    /// The group (index into `groups`) whose score gates node `node`.
    pub fn group_gating(&self, node: &str) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| g.producers.iter().any(|p| p.gate_at == node))
    }
}

/// The node after which a channel gate of producer `node` sits, and where it folds.
fn gate_point(graph: &Graph, node: &str) -> (String, Fold) {
    let reader = |v: &str| graph.sole_reader(v).map(|i| &graph.nodes[i]);
    let (mut at, fold) =
        match reader(node).filter(|n| matches!(n.op, Op::BatchNorm(BatchNorm { .. }))) {
            Some(bn) => (bn.name.clone(), Fold::BatchNorm(bn.name.clone())),
            None => (node.to_string(), Fold::Producer(node.to_string())),
        };
    if let Some(relu) = reader(&at).filter(|n| matches!(n.op, Op::Relu)) {
        at = relu.name.clone();
    }
    (at, fold)
}

fn is_ignored(graph: &Graph, group: &ChannelGroup, ignore: &[String]) -> bool {
    group.producers.iter().any(|p| {
        ignore
            .iter()
            .any(|i| i == p || graph.node(p).is_some_and(|n| n.op.kind_name() == i))
    })
}

/// Why producer `p` of `group` cannot carry the group's scores, if it cannot.
fn producer(graph: &Graph, group: &ChannelGroup, p: &str) -> std::result::Result<Producer, String> {
    let node = graph
        .node(p)
        .ok_or_else(|| format!("producer `{p}` is not a node"))?;
    let (out, fan_in) = match node.op {
        Op::Conv2d(Conv2d {
            in_channels,
            out_channels,
            kernel,
            groups,
            ..
        }) => (out_channels, in_channels / groups * kernel[0] * kernel[1]),
        Op::Linear(Linear {
            in_features,
            out_features,
            ..
        }) => (out_features, in_features),
        _ => return Err(format!("producer `{p}` is a {}", node.op.kind_name())),
    };
    let weight = format!("{p}.weight");
    let whole = group
        .members_with(MemberRole::Filter)
        .any(|m| m.tensor == weight && m.offset == 0 && m.stride_per_channel == 1 && m.step == 1);
    if !whole || out != group.channels {
        return Err(format!(
            "`{p}` has {out} filters of which the group holds a part"
        ));
    }
    let (gate_at, fold) = gate_point(graph, p);
    Ok(Producer {
        node: p.to_string(),
        weight,
        fan_in,
        gate_at,
        fold,
    })
}

/// The groups PAAM scores in `graph`: every prunable group of two or more channels whose
/// producers are not on the `ignore` list (node names or op kinds), and whose producers'
/// outputs are exactly its channels. A model with none is an error naming why.
pub fn layout(graph: &Graph, ignore: &[String]) -> Result<Layout> {
    for entry in ignore {
        if !graph
            .nodes
            .iter()
            .any(|n| n.name == *entry || n.op.kind_name() == entry)
        {
            invalid!(
                "[method] ignore: `{entry}` is neither a node name nor an op kind of model `{}`",
                graph.name
            );
        }
    }
    let groups = channel_groups(graph)?;
    let mut out = Layout {
        groups: Vec::new(),
        unscored: Vec::new(),
    };
    for g in &groups {
        if !g.prunable {
            continue;
        }
        if g.channels < 2 {
            out.unscored.push((g.id, "a single channel".into()));
            continue;
        }
        if is_ignored(graph, g, ignore) {
            out.unscored.push((g.id, "on the ignore list".into()));
            continue;
        }
        let producers: std::result::Result<Vec<Producer>, String> =
            g.producers.iter().map(|p| producer(graph, g, p)).collect();
        match producers {
            Ok(producers) if !producers.is_empty() => out.groups.push(ScoredGroup {
                id: g.id,
                channels: g.channels,
                producers,
            }),
            Ok(_) => out.unscored.push((g.id, "no producing conv".into())),
            Err(why) => out.unscored.push((g.id, why)),
        }
    }
    if out.groups.is_empty() {
        let reasons: Vec<String> = groups
            .iter()
            .filter_map(|g| g.reason.as_ref().map(|r| format!("group {}: {r}", g.id)))
            .chain(
                out.unscored
                    .iter()
                    .map(|(id, why)| format!("group {id}: {why}")),
            )
            .collect();
        invalid!(
            "model `{}` has no prunable channel group for PAAM to score ({})",
            graph.name,
            if reasons.is_empty() {
                "no conv or linear layer with prunable outputs".to_string()
            } else {
                reasons.join("; ")
            }
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shears_core::{GraphBuilder, zoo};

    #[test]
    fn residual_channels_are_one_scored_group_gated_at_every_branch() {
        let g = zoo::build("resnet-20", &[3, 8, 8], 10).unwrap();
        let l = layout(&g, &[]).unwrap();
        // Stage 1's residual stream: the stem and every block's second conv write it.
        let stream = l
            .groups
            .iter()
            .find(|s| s.producers.iter().any(|p| p.node == "conv1"))
            .unwrap();
        assert!(stream.producers.len() >= 4, "{:?}", stream.producers);
        for p in &stream.producers {
            assert!(matches!(p.fold, Fold::BatchNorm(_)), "{p:?}");
        }
        // Each gate point gates one group only.
        let mut seen = std::collections::BTreeSet::new();
        for s in &l.groups {
            for p in &s.producers {
                assert!(seen.insert(p.gate_at.clone()), "{} twice", p.gate_at);
                assert_eq!(
                    l.group_gating(&p.gate_at),
                    l.groups.iter().position(|x| x == s)
                );
            }
        }
    }

    #[test]
    fn a_model_without_prunable_groups_is_named() {
        let mut b = GraphBuilder::new("flat", &[1, 4, 4]);
        let x = b.input();
        let f = b.flatten("flat", &x);
        let y = b.linear("fc", &f, 3, true);
        let g = b.finish(&y);
        let e = layout(&g, &[]).unwrap_err().to_string();
        assert!(
            e.contains("model `flat` has no prunable channel group"),
            "{e}"
        );
        let g = zoo::build("small-cnn", &[1, 28, 28], 10).unwrap();
        let e = layout(&g, &["conv9".into()]).unwrap_err().to_string();
        assert!(e.contains("`conv9`"), "{e}");
        // Ignoring every conv leaves nothing to score.
        let e = layout(&g, &["conv2d".into()]).unwrap_err().to_string();
        assert!(e.contains("no prunable channel group"), "{e}");
    }

    #[test]
    fn a_producer_without_batchnorm_folds_into_its_own_filters() {
        let g = zoo::build("lenet-300-100", &[1, 28, 28], 10).unwrap();
        let l = layout(&g, &[]).unwrap();
        assert!(!l.groups.is_empty());
        for s in &l.groups {
            for p in &s.producers {
                assert_eq!(p.fold, Fold::Producer(p.node.clone()));
            }
        }
    }
}
