//! Shape inference: the per-sample shape of every value, with errors that name the node.

use crate::error::{CoreError, Result};
use crate::graph::{Graph, Node};
use std::collections::HashMap;

/// Re-exported from [`crate::ops`], where the conv and pool shape rules use it.
pub use crate::ops::window_out;

/// Per-sample shape of one value: a map `[C,H,W]`, a vector `[F]` or a token sequence `[T,C]`.
pub type Shape = Vec<usize>;

/// The per-sample axis that holds the channels: the last one of a token sequence `[T,C]` (the
/// layout of PyTorch's transformers, which ONNX imports and exports keep), the first otherwise.
/// Every pass that cuts or gates channels asks this, so a layout is one rule here, not a copy of
/// each pass.
pub fn channel_axis(shape: &[usize]) -> usize {
    if is_tokens(shape) { 1 } else { 0 }
}

/// The number of channels of a per-sample shape (features of a vector).
pub fn channels(shape: &[usize]) -> usize {
    shape[channel_axis(shape)]
}

/// Positions per channel: `H*W` of a map, `T` of a token sequence, 1 for a vector.
pub fn positions(shape: &[usize]) -> usize {
    shape.iter().product::<usize>() / channels(shape).max(1)
}

/// Whether a per-sample shape is a token sequence `[T,C]`.
pub fn is_tokens(shape: &[usize]) -> bool {
    shape.len() == 2
}

/// Shapes of the input and of every node output, keyed by value name.
#[derive(Debug, Clone)]
pub struct Shapes {
    map: HashMap<String, Shape>,
}

impl Shapes {
    pub fn get(&self, value: &str) -> &Shape {
        &self.map[value]
    }
    pub fn try_get(&self, value: &str) -> Option<&Shape> {
        self.map.get(value)
    }
}

/// Infers all shapes; validates the graph first.
pub fn infer_shapes(graph: &Graph) -> Result<Shapes> {
    graph.validate()?;
    let mut map: HashMap<String, Shape> = HashMap::new();
    if graph.input.shape.is_empty()
        || graph.input.shape.contains(&0)
        || !matches!(graph.input.shape.len(), 1..=3)
    {
        return Err(CoreError::InvalidGraph(format!(
            "input shape {:?} must be [C,H,W], [T,C] or [F] with no zero dimension",
            graph.input.shape
        )));
    }
    map.insert(graph.input.name.clone(), graph.input.shape.clone());
    for node in &graph.nodes {
        let ins: Vec<&Shape> = node.inputs.iter().map(|i| &map[i.as_str()]).collect();
        let out = node_shape(node, &ins)?;
        map.insert(node.name.clone(), out);
    }
    Ok(Shapes { map })
}

/// Shape rule of one op given its input shapes; the rule itself is in the op's file.
pub fn node_shape(node: &Node, ins: &[&Shape]) -> Result<Shape> {
    node.op.output_shape(node, ins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;

    #[test]
    fn pools_flatten_gap_concat_add() {
        let mut b = GraphBuilder::new("t", &[4, 9, 9]);
        let x = b.input();
        let m = b.maxpool("m", &x, 3, 2, 1);
        let a = b.avgpool("a", &x, 3, 2, 1);
        let s = b.add("s", &[&m, &a]);
        let c = b.concat("c", &[&s, &m]);
        let gp = b.global_avg_pool("gp", &c);
        let f = b.flatten("f", &c);
        let g = b.finish(&f);
        let sh = infer_shapes(&g).unwrap();
        assert_eq!(sh.get("m"), &vec![4, 5, 5]);
        assert_eq!(sh.get("c"), &vec![8, 5, 5]);
        assert_eq!(sh.get(&gp), &vec![8]);
        assert_eq!(sh.get("f"), &vec![200]);
    }

    #[test]
    fn undefined_input_and_bad_arity_are_errors() {
        let mut b = GraphBuilder::new("t", &[3, 8, 8]);
        let x = b.input();
        let r = b.relu("r", &x);
        let mut g = b.finish(&r);
        g.nodes[0].inputs = vec!["nope".into()];
        assert!(
            infer_shapes(&g)
                .unwrap_err()
                .to_string()
                .contains("`nope` is not defined")
        );
        g.nodes[0].inputs = vec![x.clone(), x.clone()];
        assert!(
            infer_shapes(&g)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
    }
}
