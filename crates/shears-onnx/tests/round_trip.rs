//! Export then import: every zoo model comes back with the same outputs (reference forward),
//! and bad files give errors that name the problem.

mod common;
use common::max_diff;

use ndarray::{ArrayD, IxDyn};
use onnx_ir::{Message, ModelProto, NodeProto};
use shears_core::artifact::Model;
use shears_core::reference::forward;
use shears_core::weights::{Masks, init_weights};
use shears_core::zoo;
use shears_onnx::{OnnxError, import_onnx, import_onnx_bytes, to_onnx_bytes};

fn model(name: &str) -> Model {
    let graph = zoo::build(name, &[1, 28, 28], 10).unwrap();
    let weights = init_weights(&graph, 7);
    Model {
        graph,
        weights,
        masks: Masks::new(),
    }
}

fn input(n: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[n, 1, 28, 28]), |i| {
        ((i[0] * 7 + i[2] * 3 + i[3]) % 11) as f32 / 11.0 - 0.4
    })
}

#[test]
fn zoo_models_survive_export_and_import_with_the_same_outputs() {
    for name in ["small-cnn", "resnet-20", "vgg-11"] {
        let m = model(name);
        let bytes = to_onnx_bytes(&m).unwrap();
        let back = import_onnx_bytes(&bytes, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Same ops in the same order, same parameter count.
        let ops = |g: &shears_core::graph::Graph| {
            g.nodes.iter().map(|n| n.op.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ops(&back.graph), ops(&m.graph), "{name}");
        let count = |m: &Model| m.weights.values().map(|w| w.len()).sum::<usize>();
        assert_eq!(count(&back), count(&m), "{name}");
        let x = input(2);
        let a = forward(&m.graph, &m.weights, None, &x).unwrap();
        let b = forward(&back.graph, &back.weights, None, &x).unwrap();
        assert!(
            max_diff(&a, &b) < 1e-4,
            "{name}: outputs differ by {}",
            max_diff(&a, &b)
        );
    }
}

#[test]
fn masks_are_applied_to_the_exported_weights() {
    let mut m = model("small-cnn");
    let (name, w) = m
        .weights
        .iter()
        .find(|(k, _)| k.ends_with(".weight") && k.contains("conv"))
        .map(|(k, w)| (k.clone(), w.clone()))
        .unwrap();
    let mask = ArrayD::from_shape_fn(w.raw_dim(), |i| i[0] % 2 == 0);
    m.masks.insert(name.clone(), mask.clone());
    let back = import_onnx_bytes(&to_onnx_bytes(&m).unwrap(), "masked").unwrap();
    let x = input(1);
    let a = forward(&m.graph, &m.weights, Some(&m.masks), &x).unwrap();
    let b = forward(&back.graph, &back.weights, None, &x).unwrap();
    assert!(max_diff(&a, &b) < 1e-4);
    let zeros = back.weights[&name]
        .iter()
        .zip(mask.iter())
        .filter(|(_, k)| !**k)
        .all(|(v, _)| *v == 0.0);
    assert!(zeros, "pruned weights must be exported as zeros");
}

#[test]
fn a_corrupt_file_and_an_unsupported_op_are_named() {
    let e = import_onnx_bytes(b"this is not a protobuf", "junk").unwrap_err();
    assert!(matches!(e, OnnxError::Parse(_)), "{e}");
    assert!(e.to_string().contains("not a readable ONNX model"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.onnx");
    let e = import_onnx(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.onnx"), "{e}");

    // The small CNN's logits through a Softmax, which the importer does not map.
    let m = model("small-cnn");
    let mut proto = ModelProto::parse_from_bytes(&to_onnx_bytes(&m).unwrap()).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let logits = g.output[0].name.clone();
    let mut soft = NodeProto::new();
    soft.name = "final_softmax".into();
    soft.op_type = "Softmax".into();
    soft.input = vec![logits];
    soft.output = vec!["probs".into()];
    g.node.push(soft);
    g.output[0].name = "probs".into();
    let e = import_onnx_bytes(&proto.write_to_bytes().unwrap(), "soft")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("final_softmax")
            && e.contains("Softmax")
            && e.contains("Conv, BatchNormalization"),
        "{e}"
    );
}

#[test]
fn a_model_with_dynamic_spatial_sizes_is_refused_by_name() {
    let mut proto =
        ModelProto::parse_from_bytes(&to_onnx_bytes(&model("small-cnn")).unwrap()).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let dims = &mut g.input[0]
        .type_
        .as_mut()
        .unwrap()
        .mut_tensor_type()
        .shape
        .as_mut()
        .unwrap()
        .dim;
    dims[2].set_dim_param("height".into());
    dims[3].set_dim_param("width".into());
    let e = import_onnx_bytes(&proto.write_to_bytes().unwrap(), "dynamic")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dynamic sizes") && e.contains("[?, 1, ?, ?]"),
        "{e}"
    );
}

/// Every op of the IR that PyTorch's exporter does not write statically (a zero Pad, a global
/// max pool kept as a map, a channel slice and shuffle) next to the others, exported and read
/// back: the same ops, the same outputs.
#[test]
fn every_op_survives_export_and_import() {
    use shears_core::builder::GraphBuilder;
    use shears_core::ops::{Activation, ResizeMode};
    let mut b = GraphBuilder::new("all-ops", &[1, 28, 28]);
    let x = b.input();
    let c = b.conv2d("c", &x, 8, 3, 2, 1);
    let p = b.pad("pad", &c, [0, 0, 1, 1]);
    let c2 = b.conv2d("c2", &p, 8, 2, 1, 0);
    let a = b.activation("act", &c2, Activation::HardSwish);
    let s1 = b.slice("s1", &a, 0, 4);
    let s2 = b.slice("s2", &a, 4, 8);
    let r = b.conv2d("r", &s2, 4, 1, 1, 0);
    let cat = b.concat("cat", &[&s1, &r]);
    let sh = b.channel_shuffle("shuffle", &cat, 2);
    let gn = b.group_norm("gn", &sh, 2);
    let ln = b.layer_norm("ln", &gn);
    let up = b.resize("up", &ln, [2, 2], ResizeMode::Bilinear);
    // (An affine right after a norm or an affine folds into it on import.)
    let af = b.affine("scale", &up);
    let mp = b.global_max_pool("gmp", &af);
    let y = b.linear("fc", &mp, 10, true);
    let graph = b.finish(&y);
    let mut weights = init_weights(&graph, 3);
    // Not the identity (onnx-ir drops a Mul by ones and an Add of zeros on import).
    for (k, w) in weights.iter_mut() {
        if k.starts_with("scale.") || k.starts_with("gn.") || k.starts_with("ln.") {
            let mut i = 0.0f32;
            w.mapv_inplace(|_| {
                i += 1.0;
                0.5 + (i * 0.37) % 1.0
            });
        }
    }
    let m = Model {
        weights,
        graph,
        masks: Masks::new(),
    };
    let back = import_onnx_bytes(&to_onnx_bytes(&m).unwrap(), "all-ops").unwrap();
    let kinds = |g: &shears_core::graph::Graph| {
        g.nodes.iter().map(|n| n.op.kind_name()).collect::<Vec<_>>()
    };
    assert_eq!(kinds(&back.graph), kinds(&m.graph));
    let x = input(2);
    let d = max_diff(
        &forward(&m.graph, &m.weights, None, &x).unwrap(),
        &forward(&back.graph, &back.weights, None, &x).unwrap(),
    );
    assert!(d < 1e-4, "outputs differ by {d}");
}
