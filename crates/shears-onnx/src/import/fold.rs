//! Folds integer arithmetic on constants before onnx-ir reads a file.
//!
//! PyTorch's TorchScript exporter writes shape bookkeeping that only ever sees constants as
//! ONNX nodes: `nn.MultiheadAttention`'s `unflatten` computes a Slice end as
//! `Reshape(Mod(Add(c1, c2), c3), c4)`. onnx-ir 0.22 does not fold `Mod`, so the shape that
//! Slice cuts has no static length and its type inference stops the whole import. Here every
//! node whose inputs are all small INT64 constants and whose op is integer arithmetic or a
//! reshaping of such a tensor is evaluated and replaced by a `Constant` with the same output, in
//! file order, so chains fold too. Anything else is left to onnx-ir.

use crate::OnnxError;
use onnx_ir::{AttributeProto, AttributeType, Message, ModelProto, NodeProto, TensorProto};
use std::collections::HashMap;

/// INT64 in ONNX's `TensorProto.DataType`.
const INT64: i32 = 7;
/// Tensors beyond this many elements are data, not shape bookkeeping: left alone.
const MAX_ELEMENTS: usize = 64;

/// An integer tensor: its dims and values.
#[derive(Debug, Clone)]
struct Ints {
    dims: Vec<i64>,
    values: Vec<i64>,
}

fn ints_of(t: &TensorProto) -> Option<Ints> {
    if t.data_type != INT64 {
        return None;
    }
    let count: i64 = t.dims.iter().product();
    if count < 0 || count as usize > MAX_ELEMENTS {
        return None;
    }
    let values: Vec<i64> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    } else {
        t.int64_data.clone()
    };
    (values.len() == count as usize).then(|| Ints {
        dims: t.dims.clone(),
        values,
    })
}

fn constant_node(output: &str, v: &Ints) -> NodeProto {
    let mut t = TensorProto::new();
    t.data_type = INT64;
    t.dims = v.dims.clone();
    t.raw_data = v
        .values
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect::<Vec<u8>>()
        .into();
    let mut a = AttributeProto::new();
    a.name = "value".into();
    a.type_ = AttributeType::TENSOR.into();
    a.t = Some(t).into();
    let mut n = NodeProto::new();
    n.op_type = "Constant".into();
    n.name = format!("{output}/folded");
    n.output = vec![output.to_string()];
    n.attribute = vec![a];
    n
}

/// Elementwise `f` with numpy broadcasting of a scalar (or equal shapes only).
fn binary(a: &Ints, b: &Ints, f: impl Fn(i64, i64) -> Option<i64>) -> Option<Ints> {
    let (n, dims) = match (a.values.len(), b.values.len()) {
        (x, y) if x == y && a.dims == b.dims => (x, a.dims.clone()),
        (_, 1) => (a.values.len(), a.dims.clone()),
        (1, _) => (b.values.len(), b.dims.clone()),
        _ => return None,
    };
    let at = |v: &Ints, i: usize| v.values[if v.values.len() == 1 { 0 } else { i }];
    let values = (0..n)
        .map(|i| f(at(a, i), at(b, i)))
        .collect::<Option<Vec<i64>>>()?;
    Some(Ints { dims, values })
}

fn int_attr(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// The value of `n` when every input is a known integer constant and the op is one folded here.
fn evaluate(n: &NodeProto, known: &HashMap<String, Ints>) -> Option<Ints> {
    let ins: Vec<&Ints> = n
        .input
        .iter()
        .map(|i| known.get(i))
        .collect::<Option<Vec<_>>>()?;
    match (n.op_type.as_str(), ins.as_slice()) {
        ("Add", [a, b]) => binary(a, b, i64::checked_add),
        ("Sub", [a, b]) => binary(a, b, i64::checked_sub),
        ("Mul", [a, b]) => binary(a, b, i64::checked_mul),
        // Integer division truncates toward zero in ONNX.
        ("Div", [a, b]) => binary(a, b, |x, y| (y != 0).then(|| x / y)),
        // `fmod = 0`: the remainder takes the divisor's sign, as Python's `%`.
        ("Mod", [a, b]) if int_attr(n, "fmod").unwrap_or(0) == 0 => binary(a, b, |x, y| {
            (y != 0).then(|| {
                let r = x % y;
                if r != 0 && (r < 0) != (y < 0) {
                    r + y
                } else {
                    r
                }
            })
        }),
        ("Reshape", [a, shape]) => {
            let mut dims = shape.values.clone();
            let count = a.values.len() as i64;
            for (i, d) in dims.iter_mut().enumerate() {
                if *d == 0 {
                    *d = *a.dims.get(i)?;
                }
            }
            if let Some(k) = dims.iter().position(|&d| d == -1) {
                let rest: i64 = dims.iter().filter(|&&d| d != -1).product();
                dims[k] = (rest != 0).then(|| count / rest)?;
            }
            (dims.iter().product::<i64>() == count).then(|| Ints {
                dims,
                values: a.values.clone(),
            })
        }
        ("Cast", [a]) if int_attr(n, "to") == Some(INT64 as i64) => Some((*a).clone()),
        _ => None,
    }
}

/// The file with integer constant arithmetic folded, or the bytes unchanged when nothing folds.
pub(super) fn fold_integer_constants(bytes: &[u8]) -> Result<Vec<u8>, OnnxError> {
    let mut proto =
        ModelProto::parse_from_bytes(bytes).map_err(|e| OnnxError::Parse(e.to_string()))?;
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(bytes.to_vec());
    };
    let mut known: HashMap<String, Ints> = graph
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.clone(), ints_of(t)?)))
        .collect();
    let mut folded = 0;
    for n in graph.node.iter_mut() {
        if n.op_type == "Constant" {
            let value = n
                .attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref())
                .and_then(ints_of);
            if let (Some(v), Some(out)) = (value, n.output.first()) {
                known.insert(out.clone(), v);
            }
            continue;
        }
        if n.output.len() != 1 {
            continue;
        }
        if let Some(v) = evaluate(n, &known) {
            let out = n.output[0].clone();
            *n = constant_node(&out, &v);
            known.insert(out, v);
            folded += 1;
        }
    }
    if folded == 0 {
        return Ok(bytes.to_vec());
    }
    proto
        .write_to_bytes()
        .map_err(|e| OnnxError::Parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(dims: &[i64], values: &[i64]) -> Ints {
        Ints {
            dims: dims.to_vec(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn mod_follows_the_divisor_sign_and_reshape_infers_minus_one() {
        let mut known = HashMap::new();
        known.insert("a".to_string(), ints(&[], &[-7]));
        known.insert("b".to_string(), ints(&[], &[3]));
        known.insert("s".to_string(), ints(&[1], &[-1]));
        let mut n = NodeProto::new();
        n.op_type = "Mod".into();
        n.input = vec!["a".into(), "b".into()];
        n.output = vec!["m".into()];
        assert_eq!(evaluate(&n, &known).unwrap().values, vec![2]);
        known.insert("m".to_string(), ints(&[], &[2]));
        n.op_type = "Reshape".into();
        n.input = vec!["m".into(), "s".into()];
        let r = evaluate(&n, &known).unwrap();
        assert_eq!((r.dims, r.values), (vec![1], vec![2]));
        n.op_type = "Relu".into();
        assert!(evaluate(&n, &known).is_none());
    }
}
