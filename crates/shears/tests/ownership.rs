//! Who may write a directory: every writing command takes the directory's lock, refuses one that
//! holds another command's finished result or a saved model (unless `--force`), and never writes
//! inside the model it reads.

mod common;
use common::{err_text, ok_json, shears};
use shears_methods::run_dir::RunLock;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shears-onnx/tests/fixtures/resnet.onnx")
}

/// A quick structured prune of the zoo's small CNN into `out`, with extra flags.
fn prune(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.5",
        "--round-to",
        "8",
        "--no-eval",
        "--no-latency",
        "--out",
        s(out),
        "--json",
    ];
    args.extend_from_slice(extra);
    shears(&args)
}

/// A one-epoch `shears train --force` into `out`.
fn train_force(out: &Path) -> std::process::Output {
    shears(&[
        "train",
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--test-limit",
        "32",
        "--out",
        s(out),
        "--force",
    ])
}

#[test]
fn import_and_prune_refuse_a_directory_holding_something_else() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    ok_json(&shears(&["import", s(&fixture()), "--out", s(&model)]));
    let weights = std::fs::read(model.join("weights.safetensors")).unwrap();

    // A second import onto its own output replaces it (the same command).
    ok_json(&shears(&["import", s(&fixture()), "--out", s(&model)]));
    assert_eq!(
        std::fs::read(model.join("weights.safetensors")).unwrap(),
        weights
    );

    // prune into the imported model's directory: refused, the model untouched.
    let e = err_text(&prune(&model, &[]));
    assert!(
        e.contains("holds the output of `shears import`") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(model.join("weights.safetensors")).unwrap(),
        weights
    );

    // A saved model that no command claimed (copied in by hand): refused too; --force replaces.
    let copied = tmp.path().join("copied");
    std::fs::create_dir_all(&copied).unwrap();
    for f in ["graph.json", "weights.safetensors"] {
        std::fs::copy(model.join(f), copied.join(f)).unwrap();
    }
    let e = err_text(&shears(&["import", s(&fixture()), "--out", s(&copied)]));
    assert!(e.contains("holds a saved model"), "{e}");
    ok_json(&shears(&[
        "import",
        s(&fixture()),
        "--out",
        s(&copied),
        "--force",
    ]));

    // A prune run is prune's own: a second prune replaces it; an import onto it is refused.
    let run = tmp.path().join("run");
    ok_json(&prune(&run, &[]));
    ok_json(&prune(&run, &[]));
    let e = err_text(&shears(&["import", s(&fixture()), "--out", s(&run)]));
    assert!(e.contains("the finished result of `shears prune`"), "{e}");
    assert!(run.join("result.json").is_file());

    // prune writing inside the model it reads: refused before anything is written.
    let inner = model.join("pruned-here");
    let e = err_text(&shears(&[
        "prune",
        "--model",
        s(&model),
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.5",
        "--no-eval",
        "--no-latency",
        "--out",
        s(&inner),
    ]));
    assert!(e.contains("inside the model being pruned"), "{e}");
    assert!(!inner.exists());
}

#[test]
fn report_never_writes_over_a_file_of_shears_own() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("result.json"), "{}").unwrap();
    for (out, want) in [
        (run.join("result.json"), "one of shears' own files"),
        (run.clone(), "is a directory"),
    ] {
        let e = err_text(&shears(&["report", s(tmp.path()), "--out", s(&out)]));
        assert!(e.contains(want), "{e}");
    }
    assert_eq!(
        std::fs::read_to_string(run.join("result.json")).unwrap(),
        "{}"
    );
}

#[test]
fn export_never_writes_inside_the_model_it_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    ok_json(&shears(&["import", s(&fixture()), "--out", s(&model)]));
    let weights = std::fs::read(model.join("weights.safetensors")).unwrap();
    for target in [
        model.join("weights.safetensors"),
        model.join("model.onnx"),
        model.clone(),
    ] {
        let e = err_text(&shears(&["export", s(&model), s(&target)]));
        assert!(e.contains("inside the model directory"), "{e}");
    }
    assert_eq!(
        std::fs::read(model.join("weights.safetensors")).unwrap(),
        weights
    );
    assert!(!model.join("model.onnx").exists());
    // Outside it: fine; onto a directory: a clear error.
    ok_json(&shears(&[
        "export",
        s(&model),
        s(&tmp.path().join("m.onnx")),
    ]));
    let e = err_text(&shears(&["export", s(&model), s(tmp.path())]));
    assert!(e.contains("is a directory"), "{e}");
}

#[test]
fn a_directory_another_process_holds_is_refused_by_every_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("busy");
    let held = RunLock::acquire(&dir).unwrap();
    let busy = |out: std::process::Output, what: &str| {
        let e = err_text(&out);
        assert!(e.contains("being run by another process"), "{what}: {e}");
    };
    busy(prune(&dir, &[]), "prune");
    busy(prune(&dir, &["--force"]), "prune --force");
    busy(
        shears(&["import", s(&fixture()), "--out", s(&dir), "--force"]),
        "import",
    );
    busy(train_force(&dir), "train");
    assert!(!dir.join("result.json").exists());
    drop(held);
    // Wait until the release is visible: once in about a dozen runs of the suite the prune below
    // still found the lock held (most likely a process another test was spawning at that
    // instant, holding a copy of the descriptor from its fork until its exec). A real holder
    // would still hold it after the ten seconds, and the prune would fail as before.
    let start = std::time::Instant::now();
    while RunLock::is_held(&dir) && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    ok_json(&prune(&dir, &[]));
}

/// Two different commands racing on one directory: while `shears run` trains there, `shears
/// train --force` on the same `--out` is refused (it deleted the running run's directories and
/// both exited 0), and the run finishes intact.
#[test]
fn a_second_command_cannot_take_a_directory_a_run_is_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("long.toml");
    std::fs::write(
        &config,
        "name = \"long\"\n[model]\narch = \"small-cnn\"\n[train]\nepochs = 4\nbatch_size = 64\n\
         train_limit = 512\ntest_limit = 100\n[method]\nname = \"l1-filter\"\nmacs_reduction = 0.5\n\
         round_to = 8\n[finetune]\nepochs = 1\ntrain_limit = 256\ntest_limit = 100\n\
         [latency]\nenabled = false\n",
    )
    .unwrap();
    let dir = tmp.path().join("runs").join("shared");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["run", "--config", s(&config), "--out", s(&dir), "--json"])
        .env("SHEARS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !RunLock::is_held(&dir) && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(RunLock::is_held(&dir), "the run never took its lock");
    let e = err_text(&train_force(&dir));
    assert!(e.contains("being run by another process"), "{e}");
    let e = err_text(&prune(&dir, &["--force"]));
    assert!(e.contains("being run by another process"), "{e}");
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["command"], "run");
    assert!(dir.join("result.json").is_file() && dir.join("dense").is_dir());
}
