//! End-to-end tests of dynamic pruning (FTWT) through the `shears` binary, on the embedded
//! Fashion-MNIST subset with tiny limits: the run and its report, resume, and bad input.

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

const FTWT_RUN: &str = r#"
name = "ftwt"
[model]
arch = "small-cnn"
[train]
epochs = 1
batch_size = 64
train_limit = 256
test_limit = 200
[method]
name = "ftwt"
r = 0.9
estimate_samples = 128
[finetune]
epochs = 2
batch_size = 64
lr = 0.01
train_limit = 256
test_limit = 200
"#;

#[test]
fn ftwt_runs_from_a_config_and_reports_masks_and_macs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ftwt.toml");
    std::fs::write(&cfg, FTWT_RUN).unwrap();
    let out = tmp.path().join("run");
    let v = ok_json(&shears(&[
        "run",
        "--config",
        s(&cfg),
        "--json",
        "--out",
        s(&out),
    ]));
    assert_eq!(v["method"], "ftwt");
    assert_eq!(v["mode"], "decoupled");
    for k in [
        "accuracy_baseline",
        "accuracy_target_gated_train",
        "accuracy_dynamic",
        "mask_accuracy",
    ] {
        let a = f(&v, k);
        assert!((0.0..=1.0).contains(&a), "{k} = {a}");
    }
    // Every conv of small-cnn is gated, each with its mask-prediction accuracy.
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4, "{v}");
    for l in layers {
        assert!(
            f(l, "mask_accuracy") > 0.0 && f(l, "active_share") <= 1.0,
            "{l}"
        );
    }
    // r = 0.9 switches filters off: both the estimate and the trained heads save MACs, and the
    // dynamic cost never exceeds the dense one.
    for part in ["estimate", "achieved"] {
        let m = &v[part];
        assert!(
            f(m, "paper_reduction") > 0.0 && f(m, "paper_reduction") < 1.0,
            "{m}"
        );
        assert!(
            f(m, "strict_reduction") > 0.0 && f(m, "strict_macs") <= f(m, "dense_macs"),
            "{m}"
        );
    }
    assert_eq!(v["achieved"]["samples"], 200);
    assert!(out.join("heads/extra.safetensors").is_file());
    assert!(out.join("dynamic").is_dir() && out.join("ftwt/metrics.jsonl").is_file());
    // A finished run is not re-run: the same report comes back.
    let again = ok_json(&shears(&[
        "run",
        "--config",
        s(&cfg),
        "--json",
        "--out",
        s(&out),
    ]));
    assert_eq!(again["accuracy_dynamic"], v["accuracy_dynamic"]);
}

#[test]
fn an_interrupted_ftwt_run_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ftwt.toml");
    std::fs::write(&cfg, FTWT_RUN).unwrap();
    let whole = ok_json(&shears(&[
        "run",
        "--config",
        s(&cfg),
        "--json",
        "--out",
        s(&tmp.path().join("whole/run")),
    ]));
    // Another parent folder than `whole`: runs side by side would share the baseline, and this
    // run must train (and be interrupted in) its own.
    let part = tmp.path().join("part/run");
    let args = [
        "run",
        "--config",
        s(&cfg),
        "--json",
        "--out",
        s(&part),
        "--resume",
    ];
    // Killed after the baseline's epoch and after the first dynamic epoch (heads mid-training).
    for _ in 0..2 {
        let out = shears_env(&args, &[("SHEARS_INTERRUPT_AFTER_EPOCH", "1")]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted after epoch 1"));
    }
    let resumed = ok_json(&shears(&args));
    for k in [
        "accuracy_baseline",
        "accuracy_dynamic",
        "mask_accuracy",
        "achieved",
        "layers",
    ] {
        assert_eq!(resumed[k], whole[k], "{k}");
    }
}

#[test]
fn bad_ftwt_settings_are_named_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ftwt.toml");
    let bad = |from: &str, to: &str| {
        std::fs::write(&cfg, FTWT_RUN.replace(from, to)).unwrap();
        let dir = tmp.path().join("bad");
        let e = err_text(&shears(&["run", "--config", s(&cfg), "--out", s(&dir)]));
        assert!(
            !dir.join("dense").exists() && !dir.join("train").exists(),
            "trained first: {e}"
        );
        e
    };
    let e = bad("r = 0.9", "r = 1.5");
    assert!(
        e.contains("r must be in (0, 1]") && e.contains("1.5"),
        "{e}"
    );
    let e = bad("r = 0.9", "r = 0.0");
    assert!(e.contains("r must be in (0, 1]"), "{e}");
    let e = bad("r = 0.9", "r = 0.9\ngated = [\"conv9\"]");
    assert!(e.contains("no conv named `conv9`"), "{e}");
    let e = bad("r = 0.9", "r = 0.9\ncooldown = 0.4");
    assert!(
        e.contains("cooldown") && e.contains("heads would never train"),
        "{e}"
    );
    let e = bad("r = 0.9", "r = 0.9\nmode = \"together\"");
    assert!(e.contains("together"), "{e}");
    let e = bad("r = 0.9", "r = 0.9\nhead_lr = -0.1");
    assert!(e.contains("head_lr"), "{e}");
    // FTWT is not a one-shot cut.
    let e = err_text(&shears(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "ftwt",
    ]));
    assert!(e.contains("shears run"), "{e}");
}

#[test]
fn bench_measures_dynamic_inference_of_a_finished_run_and_refuses_one_without_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ftwt.toml");
    std::fs::write(&cfg, FTWT_RUN).unwrap();
    let run = tmp.path().join("run");
    ok_json(&shears(&[
        "run",
        "--config",
        s(&cfg),
        "--json",
        "--out",
        s(&run),
    ]));
    let b = ok_json(&shears(&[
        "bench",
        "--dynamic",
        s(&run),
        "--batch",
        "1,8",
        "--threads",
        "1",
        "--repeats",
        "4",
        "--warmup",
        "1",
        "--json",
    ]));
    assert_eq!(b["model"], "small-cnn");
    let results = b["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert!(f(r, "dense_ms") > 0.0 && f(r, "dynamic_ms") > 0.0, "{r}");
    }
    // The real baseline: the dense network in onnxruntime, where there is one.
    let note = b["onnxruntime"].as_str().unwrap();
    if note.starts_with("measured with ") {
        for r in results {
            let (o, d) = (f(r, "onnxruntime_dense_ms"), f(r, "dynamic_ms"));
            assert!(o > 0.0, "{r}");
            assert!((f(r, "time_reduction_vs_onnxruntime") - (1.0 - d / o)).abs() < 1e-9);
        }
    } else {
        eprintln!("SKIPPED: the onnxruntime baseline ({note})");
        assert!(
            results
                .iter()
                .all(|r| r.get("onnxruntime_dense_ms").is_none())
        );
    }
    // What the dynamic engine ran is at most the dense cost, and less with r = 0.9.
    assert!(f(&b, "dynamic_macs") < f(&b, "dense_macs"), "{b}");
    assert!(f(&b, "macs_reduction") > 0.0);
    // A run directory without trained heads is named, with what is missing.
    std::fs::remove_dir_all(run.join("heads")).unwrap();
    let e = err_text(&shears(&["bench", "--dynamic", s(&run)]));
    assert!(
        e.contains("no trained FTWT network") && e.contains("heads"),
        "{e}"
    );
    let e = err_text(&shears(&[
        "bench",
        "--dynamic",
        s(&tmp.path().join("nowhere")),
    ]));
    assert!(e.contains("nowhere"), "{e}");
}
