//! A vision transformer through the `shears` binary, as a user would drive it: the zoo's
//! `vit-tiny` trained on the embedded Fashion-MNIST subset, its groups inspected, pruned by
//! heads and MLP channels and by embedding width (compacted, the heads rewritten), pruned
//! unstructured with direct and effective sparsity, exported to ONNX, and the CNN-only methods
//! refused with errors naming what they need.

mod common;
use common::{err_text, ok_json, shears};

use serde_json::Value;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn graph(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("graph.json")).unwrap()).unwrap()
}

/// `(heads, fc1 width)` of every block and the embedding width of a saved model.
fn widths(dir: &Path) -> (Vec<u64>, Vec<u64>, u64) {
    let g = graph(dir);
    let nodes = g["nodes"].as_array().unwrap();
    let heads = nodes
        .iter()
        .filter(|n| n["op"]["type"] == "attention")
        .map(|n| n["op"]["heads"].as_u64().unwrap())
        .collect();
    let mlp = nodes
        .iter()
        .filter(|n| n["name"].as_str().unwrap().ends_with("_fc1"))
        .map(|n| n["op"]["out_features"].as_u64().unwrap())
        .collect();
    let width = nodes
        .iter()
        .find(|n| n["name"] == "pos_embed")
        .map(|n| n["op"]["channels"].as_u64().unwrap())
        .unwrap();
    (heads, mlp, width)
}

fn train(dir: &Path) {
    let out = shears(&[
        "train",
        "--model",
        "vit-tiny",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "0.01",
        "--train-limit",
        "128",
        "--test-limit",
        "100",
        "--out",
        s(dir),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn prune(model: &Path, out: &Path, args: &[&str]) -> Value {
    let mut all = vec![
        "prune",
        "--model",
        s(model),
        "--out",
        s(out),
        "--test-limit",
        "100",
        "--no-latency",
        "--json",
    ];
    all.extend_from_slice(args);
    ok_json(&shears(&all))
}

#[test]
fn inspect_lists_heads_mlp_channels_and_the_embedding_width_as_groups() {
    let v = ok_json(&shears(&[
        "inspect", "--model", "vit-tiny", "--groups", "--json",
    ]));
    let groups = v["groups"].as_array().unwrap();
    let prunable: Vec<&Value> = groups.iter().filter(|g| g["prunable"] == true).collect();
    assert_eq!(prunable.len(), 13, "6 head groups, 6 MLP groups, the width");
    let channels: Vec<u64> = prunable
        .iter()
        .map(|g| g["channels"].as_u64().unwrap())
        .collect();
    assert_eq!(channels.iter().filter(|&&c| c == 3).count(), 6);
    assert_eq!(channels.iter().filter(|&&c| c == 768).count(), 6);
    assert_eq!(channels.iter().filter(|&&c| c == 192).count(), 1);
    // The per-layer table costs attention's products and the token linears.
    let table = ok_json(&shears(&["inspect", "--model", "vit-tiny", "--json"]));
    let text = table.to_string();
    assert!(
        text.contains("attention") && text.contains("block5_fc2"),
        "{text}"
    );
}

#[test]
fn a_trained_vit_prunes_by_heads_and_mlp_then_by_width_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("vit");
    train(&model);

    // Heads and MLP channels to half the MACs; the width stays.
    let heads_dir = tmp.path().join("heads");
    let v = prune(
        &model,
        &heads_dir,
        &[
            "--method",
            "l1-filter",
            "--macs-reduction",
            "0.5",
            "--ignore",
            "position_embedding",
            "--round-to",
            "1",
            "--finetune-epochs",
            "1",
            "--train-limit",
            "64",
        ],
    );
    assert!(v["macs_reduction"].as_f64().unwrap() >= 0.5, "{v}");
    let diff = v["compaction_max_abs_diff"].as_f64().unwrap();
    let scale = v["compaction_output_scale"].as_f64().unwrap();
    assert!(diff <= 1e-4 * scale.max(1.0), "compacted != gated: {diff}");
    assert!(v["accuracy_after_finetune"].as_f64().is_some(), "{v}");
    let (heads, mlp, width) = widths(&heads_dir);
    assert_eq!(width, 192, "the width was ignored");
    assert!(heads.iter().all(|&h| (1..=3).contains(&h)), "{heads:?}");
    assert!(mlp.iter().all(|&m| m < 768), "{mlp:?}");
    assert!(
        heads.iter().sum::<u64>() < 18,
        "no head was removed: {heads:?}"
    );

    // The embedding width alone, by L2 norms, to 30% fewer parameters.
    let width_dir = tmp.path().join("width");
    let v = prune(
        &model,
        &width_dir,
        &[
            "--method",
            "l2-filter",
            "--params-reduction",
            "0.3",
            "--ignore",
            "attention",
            "--ignore",
            "gelu",
            "--round-to",
            "1",
        ],
    );
    assert!(v["params_reduction"].as_f64().unwrap() >= 0.3, "{v}");
    let (heads, mlp, width) = widths(&width_dir);
    assert_eq!((heads, mlp), (vec![3; 6], vec![768; 6]));
    assert!(width < 192, "width {width}");
    let g = graph(&width_dir);
    let cls = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "cls_token")
        .unwrap();
    assert_eq!(cls["op"]["channels"].as_u64().unwrap(), width);

    // Taylor and random importance rank the same groups.
    for method in ["taylor", "random-filter"] {
        let dir = tmp.path().join(method);
        let v = prune(
            &model,
            &dir,
            &[
                "--method",
                method,
                "--macs-reduction",
                "0.3",
                "--round-to",
                "1",
                "--score-batches",
                "1",
            ],
        );
        assert!(
            v["macs_reduction"].as_f64().unwrap() >= 0.3,
            "{method}: {v}"
        );
    }

    // The compacted transformer exports to ONNX.
    let onnx = tmp.path().join("heads.onnx");
    let out = shears(&["export", s(&heads_dir), s(&onnx)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&onnx).unwrap().len() > 1000);
}

#[test]
fn unstructured_pruning_of_a_vit_reports_direct_and_effective_sparsity() {
    let tmp = tempfile::tempdir().unwrap();
    for method in ["magnitude", "snip"] {
        let v = ok_json(&shears(&[
            "prune",
            "--model",
            "vit-tiny",
            "--method",
            method,
            "--sparsity",
            "0.95",
            "--score-batches",
            "1",
            "--score-batch-size",
            "8",
            "--no-eval",
            "--out",
            s(&tmp.path().join(method)),
            "--json",
        ]));
        let direct = v["direct_sparsity"].as_f64().unwrap();
        let effective = v["effective_sparsity"].as_f64().unwrap();
        assert!((direct - 0.95).abs() < 1e-3, "{method}: {v}");
        assert!(effective >= direct, "{method}: {v}");
        // Every linear layer of every block is a prunable tensor.
        let layers = v["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1 + 6 * 4 + 1, "{method}");
    }
}

#[test]
fn cnn_only_methods_refuse_a_transformer_naming_what_they_need() {
    let tmp = tempfile::tempdir().unwrap();
    for (method, extra, needle) in [
        ("ftwt", "", "token sequences"),
        ("masksparsity", "macs_reduction = 0.5\n", "BatchNorm"),
        ("slimming", "", "BatchNorm"),
    ] {
        let config = tmp.path().join(format!("{method}.toml"));
        std::fs::write(
            &config,
            format!(
                "name = \"v\"\n[model]\narch = \"vit-tiny\"\n[train]\nepochs = 1\n\
                 batch_size = 16\n[finetune]\nepochs = 2\n[method]\nname = \"{method}\"\n{extra}"
            ),
        )
        .unwrap();
        let e = err_text(&shears(&[
            "run",
            "--config",
            s(&config),
            "--train-limit",
            "16",
            "--test-limit",
            "16",
            "--runs-dir",
            s(tmp.path()),
        ]));
        assert!(e.contains(needle), "{method}: {e}");
    }
}
