//! Fault injection through the binary: `shears run` dies (abort, as a crash or kill -9 would:
//! no unwinding, no cleanup) at the start of each of its stages, and `--resume` then ends with
//! the result of a run that was never interrupted.

mod common;
use common::{err_text, ok_json, shears, shears_env};
use serde_json::Value;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// l1-filter on the small CNN: a two-epoch baseline on 256 images, the cut, a two-epoch
/// fine-tuning, latency at batch 1 (so every stage of a structured run is there).
const CONFIG: &str = r#"name = "faults"
[model]
arch = "small-cnn"
[train]
epochs = 2
batch_size = 64
train_limit = 256
test_limit = 100
[method]
name = "l1-filter"
macs_reduction = 0.5
round_to = 8
[finetune]
epochs = 2
batch_size = 64
train_limit = 256
test_limit = 100
[latency]
batches = [1]
threads = [1]
warmup = 1
repeats = 3
rounds = 1
"#;

/// What must not depend on an interruption (timings do).
fn outcome(r: &Value) -> Vec<String> {
    [
        "accuracy_before_pruning",
        "accuracy_after_pruning",
        "accuracy_after_pruning_gated",
        "accuracy_after_finetune",
        "params_after",
        "macs_after",
        "channels_after",
    ]
    .iter()
    .map(|k| format!("{k}={}", r[*k]))
    .collect()
}

#[test]
fn a_run_killed_at_any_stage_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("faults.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let run = |out: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["run", "--config", s(&config), "--out", s(out), "--json"];
        args.extend_from_slice(extra);
        shears_env(&args, env)
    };
    // Each run in its own runs directory: a sibling's shared baseline would skip the training.
    let full = tmp.path().join("full").join("run");
    let expected = outcome(&ok_json(&run(&full, &[], &[])));
    assert!(
        expected.iter().all(|v| !v.ends_with("=null")),
        "{expected:?}"
    );

    for stage in [
        "loading data",
        "training (train)",
        "selecting and compacting",
        "training (finetune)",
        "latency",
    ] {
        let dir = tmp
            .path()
            .join(stage.replace([' ', '(', ')'], "_"))
            .join("run");
        let out = run(&dir, &[], &[("SHEARS_ABORT_AT_STAGE", stage)]);
        let e = err_text(&out);
        assert!(e.contains("aborting at stage"), "{stage}: {e}");
        assert!(
            !dir.join("result.json").exists(),
            "{stage}: a killed run wrote a result"
        );
        // The lock died with the process: the run resumes at once, to the same result.
        let resumed = ok_json(&run(&dir, &["--resume"], &[]));
        assert_eq!(outcome(&resumed), expected, "killed at `{stage}`");
    }
    // A stage name that never comes aborts nothing.
    let other = tmp.path().join("other").join("run");
    ok_json(&run(
        &other,
        &[],
        &[("SHEARS_ABORT_AT_STAGE", "no such stage")],
    ));
}
