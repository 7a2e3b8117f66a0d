//! The graph IR: a small typed DAG of operations over named parameter tensors.
//!
//! Every node produces exactly one value, named after the node; the graph input is a value too.
//! Nodes are stored in topological order (checked by [`Graph::validate`]). Shapes are per sample:
//! `[C, H, W]` for feature maps and `[F]` for feature vectors; the batch axis is implicit.
//! The op enum and every per-op rule live in [`crate::ops`], re-exported here so that
//! `graph::Op` paths keep working.

use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

pub use crate::ops::{Op, ParamKind, ParamSpec};

/// One operation applied to named input values; produces the value named `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
}

/// The network input: its value name and per-sample shape (`[C,H,W]` or `[F]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A network as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// Free-form model name (zoo name, or the ONNX file it came from).
    pub name: String,
    pub input: Input,
    pub nodes: Vec<Node>,
    /// Name of the value that is the network output (logits).
    pub output: String,
}

impl Graph {
    /// Index of a node by name.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// All parameter specs of all nodes, in node order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        self.nodes
            .iter()
            .flat_map(|n| n.op.param_specs(&n.name))
            .collect()
    }

    /// For every value name, the indices of the nodes that read it.
    pub fn consumers(&self) -> HashMap<&str, Vec<usize>> {
        let mut map: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in &n.inputs {
                map.entry(inp.as_str()).or_default().push(i);
            }
        }
        map
    }

    /// The index of the one node that reads value `name`, if exactly one does and `name` is
    /// not the graph's output (a value fusion may fold into its reader).
    pub fn sole_reader(&self, name: &str) -> Option<usize> {
        let mut readers =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].inputs.iter().any(|v| v == name));
        let first = readers.next()?;
        (readers.next().is_none() && self.output != name).then_some(first)
    }

    /// Checks names are unique, inputs refer to earlier values (topological order),
    /// arities are right and the output exists.
    pub fn validate(&self) -> Result<()> {
        let mut defined: HashSet<&str> = HashSet::new();
        if self.input.name.is_empty() {
            return Err(CoreError::InvalidGraph(
                "the input has an empty name".into(),
            ));
        }
        defined.insert(&self.input.name);
        for n in &self.nodes {
            if n.name.is_empty() {
                return Err(CoreError::InvalidGraph("a node has an empty name".into()));
            }
            if n.name.contains('.') {
                return Err(CoreError::shape(
                    &n.name,
                    "node names must not contain '.' (used in parameter names)",
                ));
            }
            for inp in &n.inputs {
                if !defined.contains(inp.as_str()) {
                    return Err(CoreError::shape(
                        &n.name,
                        format!(
                            "input `{inp}` is not defined before this node (unknown value or cycle)"
                        ),
                    ));
                }
            }
            let arity = n.op.arity();
            if !arity.accepts(n.inputs.len()) {
                return Err(CoreError::shape(
                    &n.name,
                    format!(
                        "{} takes {} input(s), got {}",
                        n.op.kind_name(),
                        arity.text(),
                        n.inputs.len()
                    ),
                ));
            }
            if !defined.insert(&n.name) {
                return Err(CoreError::shape(&n.name, "duplicate value name"));
            }
        }
        if !defined.contains(self.output.as_str()) {
            return Err(CoreError::InvalidGraph(format!(
                "output `{}` is not a value of the graph",
                self.output
            )));
        }
        Ok(())
    }

    /// Parses and validates a graph from JSON.
    pub fn from_json(text: &str) -> Result<Graph> {
        let g: Graph = serde_json::from_str(text)
            .map_err(|e| CoreError::InvalidGraph(format!("bad graph JSON: {e}")))?;
        g.validate()?;
        Ok(g)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("graph serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;

    #[test]
    fn json_round_trip_covers_every_op() {
        let mut b = GraphBuilder::new("all-ops", &[3, 8, 8]);
        let x = b.input();
        let c = b.conv2d_full("c", &x, 4, [3, 3], [1, 1], [1, 1], [1, 1], 1, true);
        let n = b.batchnorm("bn", &c);
        let r = b.relu("r", &n);
        let d = b.depthwise("dw", &r, 3, 1, 1);
        let s = b.add("add", &[&r, &d]);
        let cat = b.concat("cat", &[&s, &r]);
        let m = b.maxpool("mp", &cat, 2, 2, 0);
        let a = b.avgpool("ap", &m, 3, 1, 1);
        let g = b.global_avg_pool("gap", &a);
        let f = b.flatten("flat", &a);
        let dr = b.dropout("drop", &f, 0.25);
        let l = b.linear("fc", &dr, 5, true);
        let _ = g;
        let graph = b.finish(&l);
        let kinds: std::collections::HashSet<&str> =
            graph.nodes.iter().map(|n| n.op.kind_name()).collect();
        assert_eq!(kinds.len(), 11, "every op kind appears: {kinds:?}");
        let back = Graph::from_json(&graph.to_json()).unwrap();
        assert_eq!(back, graph);
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        let e = Graph::from_json(r#"{"name":"x","input":{"name":"input","shape":[1]},"nodes":[{"name":"a","op":{"type":"softmax"},"inputs":["input"]}],"output":"a"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad graph JSON") && e.contains("softmax"), "{e}");
        let e = Graph::from_json(
            r#"{"name":"x","input":{"name":"input","shape":[1]},"nodes":[],"output":"nope"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("output `nope`"), "{e}");
    }
}
