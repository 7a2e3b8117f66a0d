//! Exported models run in onnxruntime and `onnx.checker` accepts them: zoo models (dense,
//! masked, and compacted to half their MACs) exported by shears, run by Python's onnxruntime on one input, against shears' own
//! reference forward. `.ci/run` installs onnx and onnxruntime with pip; where they are missing
//! (a developer machine without them) the test says so and checks nothing.

use ndarray::{ArrayD, IxDyn};
use shears_core::artifact::Model;
use shears_core::reference::forward;
use shears_core::structured::{
    ImportanceOptions, SelectOptions, StructuredTarget, channel_groups, compact, importance,
    select_channels,
};
use shears_core::weights::{Masks, init_weights};
use shears_core::zoo;
use shears_onnx::export_onnx;
use std::path::Path;
use std::process::Command;

const CHECK: &str = r#"
import sys, numpy as np, onnx, onnxruntime as ort
path, xs, ys = sys.argv[1], sys.argv[2], sys.argv[3]
onnx.checker.check_model(onnx.load(path), full_check=True)
sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
x = np.fromfile(xs, dtype="<f4").reshape(3, 1, 28, 28)
y = np.fromfile(ys, dtype="<f4").reshape(3, -1)
out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
print(float(np.abs(out - y).max()))
"#;

fn python() -> String {
    std::env::var("SHEARS_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn onnxruntime_available() -> bool {
    Command::new(python())
        .args(["-c", "import numpy, onnx, onnxruntime"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn write_f32(path: &Path, a: &ArrayD<f32>) {
    let bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn exported_models_pass_the_checker_and_match_in_onnxruntime() {
    if !onnxruntime_available() {
        eprintln!(
            "onnxruntime not installed for {}: skipped (`.ci/run` installs it)",
            python()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let x = ArrayD::from_shape_fn(IxDyn(&[3, 1, 28, 28]), |i| {
        ((i[0] * 5 + i[2] * 3 + i[3] * 7) % 13) as f32 / 13.0 - 0.5
    });
    let xs = dir.path().join("x.bin");
    write_f32(&xs, &x);
    // A PyTorch MobileNet-V2-style net (ReLU6 exported as Clip with its bounds as inputs,
    // depthwise convs), imported and exported again.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mobilenet.onnx");
    let mut models = vec![(
        "mobilenet-fixture".to_string(),
        shears_onnx::import_onnx(&fixture).unwrap(),
    )];
    for (name, masked) in [
        ("small-cnn", false),
        ("small-cnn", true),
        ("resnet-20", false),
        ("vgg-11", false),
    ] {
        let graph = zoo::build(name, &[1, 28, 28], 10).unwrap();
        let weights = init_weights(&graph, 3);
        let mut masks = Masks::new();
        if masked {
            for (k, w) in &weights {
                if k.ends_with(".weight") && w.ndim() == 4 {
                    masks.insert(
                        k.clone(),
                        ArrayD::from_shape_fn(w.raw_dim(), |i| (i[0] + i[1]) % 3 != 0),
                    );
                }
            }
        }
        let model = Model {
            graph,
            weights,
            masks,
        };
        models.push((format!("{name}-masked-{masked}"), model));
    }
    // Compacted: L1 filters cut to half the MACs, a smaller dense network (residual and
    // depthwise channel coupling included).
    let compacted: Vec<(String, Model)> = models
        .iter()
        .filter(|(n, _)| n == "resnet-20-masked-false" || n == "mobilenet-fixture")
        .map(|(n, m)| (format!("{n}-compacted"), compacted(m)))
        .collect();
    models.extend(compacted);
    for (name, model) in &models {
        let y = forward(&model.graph, &model.weights, Some(&model.masks), &x).unwrap();
        let file = dir.path().join(format!("{name}.onnx"));
        let ys = dir.path().join("y.bin");
        export_onnx(model, &file).unwrap();
        write_f32(&ys, &y);
        let out = Command::new(python())
            .args([
                "-c",
                CHECK,
                file.to_str().unwrap(),
                xs.to_str().unwrap(),
                ys.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let diff: f32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(
            diff < 1e-4,
            "{name}: onnxruntime differs from shears by {diff}"
        );
    }
}

/// `model` with half its MACs removed by L1 filter scores, physically compacted.
fn compacted(model: &Model) -> Model {
    let groups = channel_groups(&model.graph).unwrap();
    let scores = importance(&model.weights, &groups, &ImportanceOptions::default()).unwrap();
    let opts = SelectOptions::new(StructuredTarget::MacsReduction(0.5));
    let selection = select_channels(&model.graph, &groups, &scores, &opts).unwrap();
    let (graph, weights) = compact(&model.graph, &model.weights, &selection).unwrap();
    assert!(graph.param_specs().len() == model.graph.param_specs().len());
    let before = shears_core::cost::cost(&model.graph, opts.convention)
        .unwrap()
        .macs;
    let after = shears_core::cost::cost(&graph, opts.convention)
        .unwrap()
        .macs;
    assert!(
        (after as f64) < 0.55 * before as f64,
        "compaction removed too little: {before} -> {after} MACs"
    );
    Model {
        graph,
        weights,
        masks: Masks::new(),
    }
}
