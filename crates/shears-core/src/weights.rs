//! Named parameter tensors (ndarray), their initialisation and safetensors I/O.

use crate::error::{CoreError, Result};
use crate::graph::{Graph, ParamKind};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;
use std::path::Path;

/// Parameter and buffer tensors by name (`{node}.weight`, `{node}.running_var`, ...).
pub type Weights = BTreeMap<String, ArrayD<f32>>;

/// Boolean keep-masks by tensor name, same shape as the tensor they mask (true = kept).
pub type Masks = BTreeMap<String, ArrayD<bool>>;

/// Fresh weights for a graph: Kaiming-normal (fan-in, ReLU gain) for conv and linear weights,
/// zero biases, BN scale 1 / shift 0, running mean 0 / variance 1. Deterministic in `seed`.
pub fn init_weights(graph: &Graph, seed: u64) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = Weights::new();
    for node in &graph.nodes {
        for spec in node.op.param_specs(&node.name) {
            let shape = IxDyn(&spec.shape);
            let t = match spec.kind {
                ParamKind::Weight => {
                    let fan_in: usize = spec.shape[1..].iter().product();
                    let std = (2.0 / fan_in.max(1) as f64).sqrt() as f32;
                    let normal = Normal::new(0.0f32, std).expect("finite std");
                    ArrayD::from_shape_simple_fn(shape, || normal.sample(&mut rng))
                }
                ParamKind::BnScale | ParamKind::RunningVar | ParamKind::Scale => {
                    ArrayD::ones(shape)
                }
                // timm's initialisation of a class token and a position table.
                ParamKind::Embedding => {
                    let normal = Normal::new(0.0f32, 0.02).expect("finite std");
                    ArrayD::from_shape_simple_fn(shape, || normal.sample(&mut rng))
                }
                ParamKind::Bias
                | ParamKind::BnShift
                | ParamKind::RunningMean
                | ParamKind::Shift => ArrayD::zeros(shape),
            };
            w.insert(spec.name, t);
        }
    }
    w
}

/// Checks that `weights` holds exactly the graph's tensors with the right shapes.
pub fn check_weights(graph: &Graph, weights: &Weights) -> Result<()> {
    for spec in graph.param_specs() {
        match weights.get(&spec.name) {
            None => return Err(CoreError::tensor(&spec.name, "missing from the weights")),
            Some(t) if t.shape() != spec.shape.as_slice() => {
                return Err(CoreError::tensor(
                    &spec.name,
                    format!(
                        "has shape {:?}, the graph needs {:?}",
                        t.shape(),
                        spec.shape
                    ),
                ));
            }
            Some(t) if t.iter().any(|v| !v.is_finite()) => {
                return Err(CoreError::tensor(
                    &spec.name,
                    "contains NaN or infinite values",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks masks name existing weight tensors of the same shape.
pub fn check_masks(weights: &Weights, masks: &Masks) -> Result<()> {
    for (name, m) in masks {
        match weights.get(name) {
            None => {
                return Err(CoreError::tensor(
                    name,
                    "mask for a tensor the model does not have",
                ));
            }
            Some(w) if w.shape() != m.shape() => {
                return Err(CoreError::tensor(
                    name,
                    format!("mask shape {:?} != tensor shape {:?}", m.shape(), w.shape()),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Names of the tensors pruned by default: conv and linear weights.
pub fn prunable_tensors(graph: &Graph) -> Vec<String> {
    graph
        .nodes
        .iter()
        .filter(|n| n.op.is_weighted_layer())
        .map(|n| format!("{}.weight", n.name))
        .collect()
}

/// Encodes float tensors as safetensors bytes (F32, little endian).
pub fn weights_to_safetensors(weights: &Weights) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .iter()
        .map(|(k, v)| {
            let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (k.clone(), v.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, s, d)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                .map_err(|e| CoreError::tensor(k, format!("cannot encode: {e}")))?;
            Ok((k.clone(), view))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, None)
        .map_err(|e| CoreError::value("weights", format!("cannot encode safetensors: {e}")))
}

/// Decodes a safetensors file's bytes into float tensors. `path` is only for error messages.
pub fn weights_from_safetensors(bytes: &[u8], path: &Path) -> Result<Weights> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| CoreError::file(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = Weights::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(CoreError::file(
                path,
                format!("tensor `{name}` has dtype {:?}, expected F32", view.dtype()),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let arr = ArrayD::from_shape_vec(IxDyn(view.shape()), data)
            .map_err(|e| CoreError::file(path, format!("tensor `{name}`: {e}")))?;
        out.insert(name, arr);
    }
    Ok(out)
}

/// Masks are stored as U8 safetensors (1 = kept).
pub fn masks_to_safetensors(masks: &Masks) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = masks
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.shape().to_vec(),
                v.iter().map(|&b| b as u8).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, s, d)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::U8, s.clone(), d)
                .map_err(|e| CoreError::tensor(k, format!("cannot encode mask: {e}")))?;
            Ok((k.clone(), view))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, None)
        .map_err(|e| CoreError::value("masks", format!("cannot encode safetensors: {e}")))
}

pub fn masks_from_safetensors(bytes: &[u8], path: &Path) -> Result<Masks> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| CoreError::file(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = Masks::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::U8 {
            return Err(CoreError::file(
                path,
                format!("mask `{name}` has dtype {:?}, expected U8", view.dtype()),
            ));
        }
        let data: Vec<bool> = view.data().iter().map(|&b| b != 0).collect();
        let arr = ArrayD::from_shape_vec(IxDyn(view.shape()), data)
            .map_err(|e| CoreError::file(path, format!("mask `{name}`: {e}")))?;
        out.insert(name, arr);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;

    fn tiny() -> Graph {
        let mut b = GraphBuilder::new("t", &[1, 6, 6]);
        let x = b.input();
        let c = b.conv_bn_relu("c", &x, 4, 3, 1, 1);
        let f = b.flatten("f", &c);
        let l = b.linear("fc", &f, 3, true);
        b.finish(&l)
    }

    #[test]
    fn init_is_deterministic_and_complete() {
        let g = tiny();
        let a = init_weights(&g, 7);
        assert_eq!(a, init_weights(&g, 7));
        assert_ne!(a, init_weights(&g, 8));
        check_weights(&g, &a).unwrap();
        assert!(a["c_bn.weight"].iter().all(|&v| v == 1.0));
        assert!(a["fc.bias"].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn safetensors_round_trip_is_exact() {
        let g = tiny();
        let w = init_weights(&g, 1);
        let bytes = weights_to_safetensors(&w).unwrap();
        assert_eq!(weights_from_safetensors(&bytes, Path::new("x")).unwrap(), w);
        let mut m = Masks::new();
        m.insert("fc.weight".into(), w["fc.weight"].mapv(|v| v > 0.0));
        let mb = masks_to_safetensors(&m).unwrap();
        assert_eq!(masks_from_safetensors(&mb, Path::new("m")).unwrap(), m);
    }

    #[test]
    fn corrupt_and_mismatched_weights_are_named() {
        let e = weights_from_safetensors(b"garbage", Path::new("w.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("w.safetensors") && e.contains("not a valid safetensors"),
            "{e}"
        );
        let g = tiny();
        let mut w = init_weights(&g, 1);
        w.insert("fc.weight".into(), ArrayD::zeros(IxDyn(&[2, 2])));
        let e = check_weights(&g, &w).unwrap_err().to_string();
        assert!(e.contains("fc.weight") && e.contains("[2, 2]"), "{e}");
        w.remove("fc.weight");
        assert!(
            check_weights(&g, &w)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }
}
