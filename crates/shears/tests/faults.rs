//! Fault injection through the binary: `shears run` dies (abort, as a crash or kill -9 would:
//! no unwinding, no cleanup) at the start of each of its stages, and `--resume` then ends with
//! the result of a run that was never interrupted.

mod common;
use common::{err_text, ok_json, shears_env};
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

/// MaskSparsity's and PAAM's own training phases: each killed at its start resumes to the
/// uninterrupted result (the structured pipeline's common stages are covered above).
#[test]
fn masksparsity_and_paam_killed_in_their_own_phases_resume_to_the_same_result() {
    const DATA: &str = "[train]\nepochs = 2\nbatch_size = 64\ntrain_limit = 256\ntest_limit = 100\n\
        [finetune]\nepochs = 1\nbatch_size = 64\ntrain_limit = 256\ntest_limit = 100\n\
        [latency]\nenabled = false\n[model]\narch = \"small-cnn\"\n";
    let cases = [
        (
            "masksparsity",
            "[method]\nname = \"masksparsity\"\nmask = \"slimming\"\nmask_epochs = 1\n\
             macs_reduction = 0.5\nlambda = 0.05\nsparsity_epochs = 1\ncut = \"mask\"\n",
            &[
                "training (global)",
                "training (masksparsity)",
                "training (finetune)",
            ][..],
        ),
        (
            "paam",
            "[method]\nname = \"paam\"\nparams_reduction = 0.5\n",
            &["training (paam)", "training (finetune)"][..],
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (name, method, stages) in cases {
        let config = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&config, format!("name = \"{name}\"\n{method}{DATA}")).unwrap();
        let run = |out: &Path, extra: &[&str], env: &[(&str, &str)]| {
            let mut args = vec!["run", "--config", s(&config), "--out", s(out), "--json"];
            args.extend_from_slice(extra);
            shears_env(&args, env)
        };
        let full = tmp.path().join(format!("{name}-full")).join("run");
        let expected = outcome(&ok_json(&run(&full, &[], &[])));
        for stage in stages {
            let dir = tmp
                .path()
                .join(format!("{name}-{}", stage.replace([' ', '(', ')'], "_")))
                .join("run");
            let e = err_text(&run(&dir, &[], &[("SHEARS_ABORT_AT_STAGE", stage)]));
            assert!(e.contains("aborting at stage"), "{name}, {stage}: {e}");
            let resumed = ok_json(&run(&dir, &["--resume"], &[]));
            assert_eq!(outcome(&resumed), expected, "{name} killed at `{stage}`");
        }
    }
}

/// A disk that fills up during a write: `shears prune` into a 100 KB tmpfs (in a user and mount
/// namespace of its own, so no root is needed) fails with an error naming the file, and leaves no
/// half-written artifact: no model graph (written last), no result, no temporary file. Skipped,
/// with a note, where such a namespace cannot be made.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_leaves_a_clear_error_and_no_half_written_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let listing = tmp.path().join("listing.txt");
    let script = format!(
        "mount -t tmpfs -o size=100k tmpfs {d} || exit 97; \
         {exe} prune --model small-cnn --method l1-filter --macs-reduction 0.5 --round-to 8 \
         --no-eval --no-latency --out {d}/run; rc=$?; \
         find {d} -type f | sort > {l}; exit $rc",
        d = disk.display(),
        exe = env!("CARGO_BIN_EXE_shears"),
        l = listing.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env("SHEARS_LOG", "warn")
        .output();
    let out = match out {
        Ok(o) if o.status.code() != Some(97) && listing.exists() => o,
        _ => {
            eprintln!("SKIPPED: no user and mount namespace with a tmpfs can be made here");
            return;
        }
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "prune onto a full disk succeeded: {err}"
    );
    assert!(
        err.contains("No space left on device") && err.contains("disk/run"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let files = std::fs::read_to_string(&listing).unwrap();
    let names: Vec<&str> = files.lines().filter_map(|f| f.rsplit('/').next()).collect();
    for name in ["graph.json", "result.json", ".tmp"] {
        assert!(
            !names.iter().any(|f| f.starts_with(name)),
            "`{name}` left behind on the full disk: {files}"
        );
    }
}
