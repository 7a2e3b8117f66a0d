//! End-to-end tests of PAAM through the `shears` binary, on the embedded Fashion-MNIST subset
//! with tiny limits: the run and its report, resume after interruptions, and bad input.

mod common;
use common::{err_text, ok_json, shears, shears_env};

use serde_json::Value;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("`{k}` is not a number: {v}"))
}

const PAAM_RUN: &str = r#"
name = "paam"
[model]
arch = "small-cnn"
[train]
epochs = 3
batch_size = 64
lr = 0.05
train_limit = 256
test_limit = 200
[method]
name = "paam"
params_reduction = 0.5
lambda = 1.0
dim = 8
[finetune]
epochs = 1
batch_size = 64
lr = 0.005
train_limit = 256
test_limit = 200
[latency]
enabled = false
"#;

fn run(cfg: &Path, out: &Path) -> Value {
    ok_json(&shears(&[
        "run",
        "--config",
        s(cfg),
        "--json",
        "--out",
        s(out),
    ]))
}

#[test]
fn paam_trains_from_scratch_meets_its_budget_and_compacts_the_gated_network() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("paam.toml");
    std::fs::write(&cfg, PAAM_RUN).unwrap();
    let out = tmp.path().join("run");
    let v = run(&cfg, &out);
    assert_eq!(v["spec"]["method"], "paam");
    assert_eq!(v["spec"]["importance"], "learned");
    // The one global budget is met, within the channel granularity.
    let reduction = f(&v, "params_reduction");
    assert!((0.5..0.56).contains(&reduction), "{reduction}");
    // Compaction equals the trained, gated network.
    assert_eq!(
        v["accuracy_after_pruning"],
        v["accuracy_after_pruning_gated"]
    );
    assert!(f(&v, "accuracy_after_finetune") > 0.0);
    let pm = &v["paam"];
    assert_eq!(pm["scorer"], "attention");
    assert_eq!(pm["activation"], "leaky-exp");
    assert_eq!(pm["start"], "scratch");
    // Learned widths: every scored group, kept ≤ channels, and not the same share everywhere.
    let widths = pm["widths"].as_array().unwrap();
    assert_eq!(widths.len(), 4, "{pm}");
    let shares: Vec<f64> = widths
        .iter()
        .map(|w| f(w, "kept") / f(w, "channels"))
        .collect();
    assert!(shares.iter().all(|&x| x > 0.0 && x <= 1.0), "{shares:?}");
    // The budget steps: none in the first epoch, the whole budget by the last.
    let history = pm["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{pm}");
    assert_eq!(f(&history[0], "target"), 0.0);
    assert_eq!(f(&history[2], "target"), 0.5);
    assert!(f(&history[2], "achieved") >= 0.5);
    for phase in [
        "paam/metrics.jsonl",
        "scored",
        "attention/extra.safetensors",
        "budget.jsonl",
        "pruned",
    ] {
        assert!(out.join(phase).exists(), "missing {phase}");
    }
    // The human-readable report names the method's parts.
    let text = shears(&[
        "run",
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("text")),
    ]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("learned widths") && text.contains("attention scores"),
        "{text}"
    );
}

#[test]
fn an_interrupted_paam_run_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("paam.toml");
    // The independent-scorer ablation with the sigmoid: the other code paths.
    let text = PAAM_RUN.replace(
        "dim = 8",
        "dim = 8\nscorer = \"independent\"\nactivation = \"sigmoid\"",
    );
    std::fs::write(&cfg, &text).unwrap();
    let whole = run(&cfg, &tmp.path().join("whole"));
    assert_eq!(whole["paam"]["scorer"], "independent");
    let part = tmp.path().join("part");
    let args = [
        "run",
        "--config",
        s(&cfg),
        "--json",
        "--out",
        s(&part),
        "--resume",
    ];
    // Killed after the second PAAM epoch (mid-ramp: the keep masks and the scorers' Adam state
    // are in the checkpoint), then resumed to the end.
    let out = shears_env(&args, &[("SHEARS_INTERRUPT_AFTER_EPOCH", "2")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted after epoch 2"));
    let resumed = ok_json(&shears(&args));
    for k in [
        "accuracy_after_pruning",
        "accuracy_after_finetune",
        "params_after",
        "pruned_groups",
    ] {
        assert_eq!(resumed[k], whole[k], "{k}");
    }
    assert_eq!(resumed["paam"]["widths"], whole["paam"]["widths"]);
    assert_eq!(resumed["paam"]["history"], whole["paam"]["history"]);
}

#[test]
fn bad_paam_settings_are_named_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("paam.toml");
    let bad = |from: &str, to: &str| {
        std::fs::write(&cfg, PAAM_RUN.replace(from, to)).unwrap();
        let dir = tmp.path().join("bad");
        let e = err_text(&shears(&["run", "--config", s(&cfg), "--out", s(&dir)]));
        assert!(!dir.join("paam").exists(), "trained first: {e}");
        e
    };
    let e = bad("params_reduction = 0.5", "params_reduction = 1.5");
    assert!(
        e.contains("params_reduction must be in (0, 1), got 1.5"),
        "{e}"
    );
    let e = bad("lambda = 1.0", "lambda = -0.5");
    assert!(e.contains("lambda must be a number ≥ 0, got -0.5"), "{e}");
    // A model with no group to score (here: every conv on the ignore list).
    let e = bad("dim = 8", "dim = 8\nignore = [\"conv2d\"]");
    assert!(
        e.contains("no prunable channel group for PAAM to score"),
        "{e}"
    );
}
