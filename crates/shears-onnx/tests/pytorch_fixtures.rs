//! Models exported by PyTorch (`scripts/onnx_fixtures.py`): imported, they compute what PyTorch
//! computed for the stored input, within 1e-4; exported again and re-imported, they still do.

mod common;
use common::max_diff;

use ndarray::{ArrayD, IxDyn};
use shears_core::reference::forward;
use shears_onnx::{import_onnx, import_onnx_bytes, to_onnx_bytes};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A raw little-endian f32 tensor, shaped by the fixture's .json.
fn tensor(name: &str, which: &str) -> ArrayD<f32> {
    let meta: String = std::fs::read_to_string(fixture(&format!("{name}.json"))).unwrap();
    let key = format!("\"{which}\": [");
    let start = meta.find(&key).unwrap() + key.len();
    let end = start + meta[start..].find(']').unwrap();
    let shape: Vec<usize> = meta[start..end]
        .split(',')
        .map(|d| d.trim().parse().unwrap())
        .collect();
    let bytes = std::fs::read(fixture(&format!("{name}.{which}.bin"))).unwrap();
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap()
}

#[test]
fn pytorch_exports_import_with_pytorchs_outputs_and_survive_a_round_trip() {
    for name in ["resnet", "vgg", "mobilenet"] {
        let model = import_onnx(&fixture(&format!("{name}.onnx")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let x = tensor(name, "x");
        let y = tensor(name, "y");
        let ours = forward(&model.graph, &model.weights, None, &x).unwrap();
        let d = max_diff(&ours, &y);
        assert!(
            d < 1e-4,
            "{name}: imported output differs from PyTorch's by {d}"
        );

        let again = import_onnx_bytes(&to_onnx_bytes(&model).unwrap(), name).unwrap();
        assert_eq!(again.graph.nodes.len(), model.graph.nodes.len());
        let d = max_diff(
            &forward(&again.graph, &again.weights, None, &x).unwrap(),
            &y,
        );
        assert!(
            d < 1e-4,
            "{name}: re-exported output differs from PyTorch's by {d}"
        );
    }
    // PyTorch's module paths name the layers.
    let resnet = import_onnx(&fixture("resnet.onnx")).unwrap();
    let names: Vec<&str> = resnet.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    assert!(
        names.contains(&"layer1_conv1") && names.contains(&"fc"),
        "{names:?}"
    );
}
