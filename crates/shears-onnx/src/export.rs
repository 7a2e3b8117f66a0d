//! ONNX export: any graph (dense, masked or compacted) as an opset-17 model with a dynamic batch
//! axis. Each op says which ONNX nodes compute it (`Op::onnx`, in the op's own file); this module
//! only wires them and writes the weights as initializers.

use crate::OnnxError;
use onnx_ir::{AttributeProto, AttributeType, GraphProto, Message, ModelProto, NodeProto};
use onnx_ir::{TensorProto, ValueInfoProto};
use shears_core::artifact::{Model, write_atomic};
use shears_core::ops::{OnnxAttr, OnnxIn};
use shears_core::shape::infer_shapes;
use std::path::Path;

/// The opset every exported model declares; all mapped ops are stable in it.
pub const EXPORT_OPSET: i64 = 17;
/// ONNX `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;
/// ONNX `TensorProto.DataType.INT64`.
const INT64: i32 = 7;

/// Writes `model` as an ONNX file, atomically. Unstructured masks are applied to the weights
/// first, so the file computes what the masked network computes.
pub fn export_onnx(model: &Model, path: &Path) -> Result<(), OnnxError> {
    let bytes = to_onnx_bytes(model)?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// The ONNX encoding of `model` (see [`export_onnx`]).
pub fn to_onnx_bytes(model: &Model) -> Result<Vec<u8>, OnnxError> {
    model.check()?;
    let graph = &model.graph;
    let shapes = infer_shapes(graph)?;

    let mut g = GraphProto::new();
    g.name = graph.name.clone();
    g.input
        .push(value_info(&graph.input.name, &graph.input.shape));
    g.output
        .push(value_info(&graph.output, shapes.get(&graph.output)));

    for (name, w) in &model.weights {
        let mut data: Vec<f32> = w.iter().copied().collect();
        if let Some(mask) = model.masks.get(name) {
            for (x, &keep) in data.iter_mut().zip(mask.iter()) {
                if !keep {
                    *x = 0.0;
                }
            }
        }
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.data_type = FLOAT;
        t.dims = w.shape().iter().map(|&d| d as i64).collect();
        t.raw_data = data
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
            .into();
        g.initializer.push(t);
    }

    for node in &graph.nodes {
        let in_shapes: Vec<&Vec<usize>> = node.inputs.iter().map(|v| shapes.get(v)).collect();
        let parts = node.op.onnx(&node.name, &in_shapes);
        let last = parts.len() - 1;
        let mut inputs = node.inputs.clone();
        let mut part_outputs: Vec<String> = Vec::with_capacity(parts.len());
        for (k, part) in parts.into_iter().enumerate() {
            let output = if k == last {
                node.name.clone()
            } else {
                format!("{}/{}{k}", node.name, part.op_type)
            };
            // Constants the part reads after its parameters, written as initializers named
            // `{node}.{suffix}`: scalars, then integer and float tensors, then `[C]`
            // parameters again as `[C,1,1]`.
            let mut consts = Vec::new();
            let mut add = |suffix: &str, data_type: i32, dims: Vec<i64>, raw: Vec<u8>| {
                let name = format!("{}.{suffix}", node.name);
                g.initializer
                    .push(tensor_proto(&name, data_type, dims, raw));
                consts.push(name);
            };
            for (suffix, value) in &part.consts {
                add(suffix, FLOAT, vec![], value.to_le_bytes().to_vec());
            }
            for (suffix, values) in &part.int_consts {
                add(
                    suffix,
                    INT64,
                    vec![values.len() as i64],
                    le_bytes(values.iter().map(|x| x.to_le_bytes())),
                );
            }
            for (suffix, values) in &part.float_tensors {
                add(
                    suffix,
                    FLOAT,
                    vec![values.len() as i64],
                    le_bytes(values.iter().map(|x| x.to_le_bytes())),
                );
            }
            for (suffix, param) in &part.map_params {
                let w = model.weights.get(param).ok_or_else(|| {
                    OnnxError::Model(format!("`{param}` is missing from the weights"))
                })?;
                add(
                    suffix,
                    FLOAT,
                    vec![w.len() as i64, 1, 1],
                    le_bytes(w.iter().map(|x| x.to_le_bytes())),
                );
            }
            let mut n = NodeProto::new();
            n.name = output.clone();
            n.op_type = part.op_type.to_string();
            let op_input = part.reads_op_input.then(|| node.inputs[0].clone());
            n.input = if part.wiring.is_empty() {
                inputs
                    .into_iter()
                    .chain(op_input)
                    .chain(part.params)
                    .chain(consts)
                    .collect()
            } else {
                let mut wired = Vec::with_capacity(part.wiring.len());
                for input in part.wiring {
                    // A constant input becomes the initializer `{node}.{suffix}`.
                    let (suffix, data_type, dims, raw) = match input {
                        OnnxIn::OpInput(i) => {
                            wired.push(node.inputs[i].clone());
                            continue;
                        }
                        OnnxIn::Part(j) => {
                            wired.push(part_outputs[j].clone());
                            continue;
                        }
                        OnnxIn::Param(p) => {
                            wired.push(p);
                            continue;
                        }
                        OnnxIn::Ints(suffix, v) => (
                            suffix,
                            INT64,
                            vec![v.len() as i64],
                            le_bytes(v.iter().map(|x| x.to_le_bytes())),
                        ),
                        OnnxIn::IntScalar(suffix, v) => {
                            (suffix, INT64, vec![], v.to_le_bytes().to_vec())
                        }
                        OnnxIn::Floats(suffix, v) => (
                            suffix,
                            FLOAT,
                            vec![v.len() as i64],
                            le_bytes(v.iter().map(|x| x.to_le_bytes())),
                        ),
                    };
                    let name = format!("{}.{suffix}", node.name);
                    g.initializer
                        .push(tensor_proto(&name, data_type, dims, raw));
                    wired.push(name);
                }
                wired
            };
            part_outputs.push(output.clone());
            n.output = vec![output.clone()];
            n.attribute = part
                .attrs
                .into_iter()
                .map(|(name, value)| attribute(name, value))
                .collect();
            g.node.push(n);
            inputs = vec![output];
        }
    }

    // Every op names its constants `{node}.{suffix}`; two equal names would make onnxruntime
    // treat them as graph inputs (and warn), so an op's export that repeats one is a bug.
    let mut names = std::collections::HashSet::new();
    if let Some(t) = g
        .initializer
        .iter()
        .find(|t| !names.insert(t.name.as_str()))
    {
        return Err(OnnxError::Encode(format!(
            "export bug: the initializer `{}` is written twice",
            t.name
        )));
    }

    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.producer_name = "shears".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    m.opset_import.push(Default::default());
    let opset = m.opset_import.last_mut().expect("just pushed");
    opset.domain = String::new();
    opset.version = EXPORT_OPSET;
    m.graph = Some(g).into();
    m.write_to_bytes()
        .map_err(|e| OnnxError::Encode(e.to_string()))
}

/// An initializer of `data_type` with its little-endian bytes.
fn tensor_proto(name: &str, data_type: i32, dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = data_type;
    t.dims = dims;
    t.raw_data = raw.into();
    t
}

/// The concatenated little-endian bytes of numbers.
fn le_bytes<const N: usize>(values: impl Iterator<Item = [u8; N]>) -> Vec<u8> {
    values.flatten().collect()
}

/// A float tensor value `[batch, shape...]` with a symbolic batch axis.
fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.to_string();
    let ty = v.type_.mut_or_insert_default();
    let tensor = ty.mut_tensor_type();
    tensor.elem_type = FLOAT;
    let dims = &mut tensor.shape.mut_or_insert_default().dim;
    dims.push(Default::default());
    dims.last_mut()
        .expect("just pushed")
        .set_dim_param("batch".into());
    for &d in shape {
        dims.push(Default::default());
        dims.last_mut()
            .expect("just pushed")
            .set_dim_value(d as i64);
    }
    v
}

fn attribute(name: &str, value: OnnxAttr) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    match value {
        OnnxAttr::Int(i) => {
            a.type_ = AttributeType::INT.into();
            a.i = i;
        }
        OnnxAttr::Ints(v) => {
            a.type_ = AttributeType::INTS.into();
            a.ints = v;
        }
        OnnxAttr::Float(f) => {
            a.type_ = AttributeType::FLOAT.into();
            a.f = f;
        }
        OnnxAttr::Str(text) => {
            a.type_ = AttributeType::STRING.into();
            a.s = text.as_bytes().to_vec().into();
        }
    }
    a
}
