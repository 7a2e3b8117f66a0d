//! ONNX through the `shears` binary: a trained model exported, imported back and evaluated on
//! the embedded Fashion-MNIST subset, an .onnx file taken directly by `--model`, and bad files.

mod common;
use common::{err_text, ok_json, shears};

use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_trained_model_round_trips_through_onnx_with_the_same_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let trained = tmp.path().join("trained");
    ok_json(&shears(&[
        "train",
        "--model",
        "small-cnn",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--train-limit",
        "1024",
        "--test-limit",
        "200",
        "--out",
        s(&trained),
        "--json",
    ]));
    // The run directory is the model directory (graph.json + weights.safetensors).
    let model_dir = trained;

    let file = tmp.path().join("small.onnx");
    let exported = ok_json(&shears(&["export", s(&model_dir), s(&file)]));
    assert_eq!(exported["opset"], 17);
    assert!(std::fs::metadata(&file).unwrap().len() > 1000);

    let imported_dir = tmp.path().join("imported");
    let imported = ok_json(&shears(&["import", s(&file), "--out", s(&imported_dir)]));
    assert_eq!(imported["params"], exported["params"]);
    assert_eq!(imported["macs"], exported["macs"]);
    assert_eq!(imported["input"], serde_json::json!([1, 28, 28]));

    let eval = |m: &Path| {
        ok_json(&shears(&[
            "eval",
            "--model",
            s(m),
            "--test-limit",
            "200",
            "--json",
        ]))["test_accuracy"]
            .as_f64()
            .unwrap()
    };
    let original = eval(&model_dir);
    assert!(
        original > 0.2,
        "the trained model should beat chance: {original}"
    );
    assert_eq!(eval(&imported_dir), original);
    // `--model` takes the ONNX file directly.
    assert_eq!(eval(&file), original);
}

#[test]
fn a_corrupt_or_missing_onnx_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.onnx");
    std::fs::write(&bad, b"\x08\x07garbage that is not a model").unwrap();
    let out_dir = tmp.path().join("out");
    let e = err_text(&shears(&["import", s(&bad), "--out", s(&out_dir)]));
    assert!(e.contains("bad.onnx"), "{e}");
    assert!(
        !out_dir.exists(),
        "nothing may be written for a file that did not import: {e}"
    );

    let e = err_text(&shears(&[
        "eval",
        "--model",
        s(&tmp.path().join("none.onnx")),
    ]));
    assert!(e.contains("none.onnx"), "{e}");

    let empty = tmp.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let e = err_text(&shears(&["import", s(&empty), "--out", s(&out_dir)]));
    assert!(
        e.contains("empty.onnx") && e.contains("the file is empty"),
        "{e}"
    );
    assert!(!out_dir.exists());
}

#[test]
fn a_pytorch_resnet_given_as_onnx_is_pruned_compacted_and_exported_back() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shears-onnx/tests/fixtures/resnet.onnx");
    let pruned = tmp.path().join("pruned");
    let r = ok_json(&shears(&[
        "prune",
        "--model",
        s(&fixture),
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.5",
        "--test-limit",
        "100",
        "--latency-batches",
        "1",
        "--latency-threads",
        "1",
        "--out",
        s(&pruned),
        "--json",
    ]));
    let reduction = r["macs_reduction"].as_f64().unwrap();
    assert!(
        (0.45..0.6).contains(&reduction),
        "MACs reduction {reduction}"
    );
    let file = tmp.path().join("pruned.onnx");
    let exported = ok_json(&shears(&["export", s(&pruned), s(&file)]));
    assert_eq!(exported["macs"], r["macs_after"]);
    assert_eq!(exported["params"], r["params_after"]);
    // The smaller network reads back as it was written.
    let back = ok_json(&shears(&[
        "import",
        s(&file),
        "--out",
        s(&tmp.path().join("back")),
    ]));
    assert_eq!(back["macs"], r["macs_after"]);
}
