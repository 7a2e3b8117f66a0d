//! End-to-end tests of the `shears` binary on the embedded Fashion-MNIST subset (real data) with
//! few samples and epochs, so the suite stays fast on two cores.

mod common;
use common::{err_text, ok_json, shears, shears_env};

use serde_json::Value;
use std::path::Path;

fn read_metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("train/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            // Wall-clock time is the one field that legitimately differs between runs.
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

const QUICK: &[&str] = &[
    "--model",
    "small-cnn",
    "--train-limit",
    "256",
    "--test-limit",
    "200",
    "--batch-size",
    "64",
];

#[test]
fn inspect_reports_resnet56_params_and_macs() {
    let v = ok_json(&shears(&[
        "inspect",
        "--model",
        "resnet-56",
        "--input",
        "3x32x32",
        "--classes",
        "10",
        "--json",
    ]));
    assert_eq!(v["params"], 855_770);
    assert_eq!(v["macs"], 125_747_840);
    assert_eq!(v["macs_convention"], "conv+linear");
    let layers = v["layers"].as_array().unwrap();
    assert!(layers.len() > 100);
    assert_eq!(layers[0]["op"], "conv2d");
    let all = ok_json(&shears(&[
        "inspect",
        "--model",
        "resnet-56",
        "--input",
        "3x32x32",
        "--convention",
        "all-ops",
        "--json",
    ]));
    assert!(all["macs"].as_u64().unwrap() > v["macs"].as_u64().unwrap());
}

#[test]
fn train_saves_an_artifact_that_eval_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = vec![
        "train",
        "--epochs",
        "1",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(QUICK);
    let v = ok_json(&shears(&args));
    for f in [
        "graph.json",
        "weights.safetensors",
        "config.toml",
        "result.json",
        "train/metrics.jsonl",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let acc = v["test_accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.1,
        "one epoch on 256 samples should beat chance, got {acc}"
    );
    let e = ok_json(&shears(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--test-limit",
        "200",
        "--json",
    ]));
    assert!(
        (e["test_accuracy"].as_f64().unwrap() - acc).abs() < 1e-9,
        "reloaded model gives another accuracy"
    );
    // A finished run is not re-run: the stored result comes back unchanged.
    let again = ok_json(&shears(&args));
    assert_eq!(again["seconds"], v["seconds"]);
}

#[test]
fn interrupted_and_resumed_run_matches_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let cut = tmp.path().join("cut");
    let base = |dir: &Path| {
        let mut a: Vec<String> = ["train", "--epochs", "3", "--json", "--out"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(dir.to_str().unwrap().into());
        a.extend(QUICK.iter().map(|s| s.to_string()));
        a
    };
    let a = base(&full);
    ok_json(&shears(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    let b = base(&cut);
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let e = err_text(&shears_env(&b, &[("SHEARS_INTERRUPT_AFTER_EPOCH", "1")]));
    assert!(e.contains("interrupted after epoch 1"), "{e}");
    // Without --resume the half-finished run is not silently restarted.
    assert!(err_text(&shears(&b)).contains("--resume"));
    let mut resumed = b.clone();
    resumed.push("--resume");
    ok_json(&shears(&resumed));
    assert_eq!(
        read_metrics(&full),
        read_metrics(&cut),
        "resumed metrics differ from an uninterrupted run"
    );
    let wf = std::fs::read(full.join("weights.safetensors")).unwrap();
    let wc = std::fs::read(cut.join("weights.safetensors")).unwrap();
    assert!(wf == wc, "final weights differ after resume");
}

#[test]
fn same_seed_gives_same_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let dir = tmp.path().join(name);
        let mut a = vec![
            "train",
            "--epochs",
            "1",
            "--json",
            "--seed",
            "7",
            "--out",
            dir.to_str().unwrap(),
        ];
        a.extend_from_slice(QUICK);
        ok_json(&shears(&a));
        read_metrics(&dir)
    };
    let (x, y) = (run("a"), run("b"));
    assert_eq!(x[0]["train_loss"], y[0]["train_loss"]);
    assert_eq!(x[0]["test_accuracy"], y[0]["test_accuracy"]);
}

#[test]
fn pipeline_reports_accuracy_at_every_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p");
    let mut a = vec![
        "run",
        "--epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--sparsity",
        "0.9",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    a.extend_from_slice(QUICK);
    let v = ok_json(&shears(&a));
    for k in [
        "accuracy_before_pruning",
        "accuracy_after_pruning",
        "accuracy_after_finetune",
        "direct_sparsity",
        "effective_sparsity",
    ] {
        assert!(v[k].is_number(), "missing {k}: {v}");
    }
    let d = v["direct_sparsity"].as_f64().unwrap();
    assert!((d - 0.9).abs() < 0.01, "direct sparsity {d}");
    assert!(v["effective_sparsity"].as_f64().unwrap() >= d);
    assert!(out.join("masks.safetensors").is_file());
    // The saved masks are honoured on reload: eval sees the same sparsity.
    let e = ok_json(&shears(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--test-limit",
        "200",
        "--json",
    ]));
    assert_eq!(e["direct_sparsity"], v["direct_sparsity"]);
    assert!(
        (e["test_accuracy"].as_f64().unwrap() - v["accuracy_after_finetune"].as_f64().unwrap())
            .abs()
            < 1e-9
    );
}

#[test]
fn bench_reports_median_and_p90() {
    let v = ok_json(&shears(&[
        "bench",
        "--model",
        "lenet-5",
        "--batch",
        "1,4",
        "--threads",
        "1",
        "--warmup",
        "1",
        "--repeats",
        "3",
        "--train",
        "--json",
    ]));
    let r = v["results"].as_array().unwrap();
    let mode = |m: &str| r.iter().filter(|x| x["mode"] == m).count();
    assert_eq!((mode("inference"), mode("training")), (2, 2));
    // The same model in onnxruntime, where there is one; the note says which or why not.
    let note = v["onnxruntime"].as_str().unwrap();
    if note.starts_with("measured with ") {
        assert_eq!(mode("onnxruntime"), 2, "{note}");
    } else {
        eprintln!("SKIPPED: the onnxruntime rows ({note})");
        assert_eq!(mode("onnxruntime"), 0);
    }
    for x in r {
        assert!(x["median_ms"].as_f64().unwrap() > 0.0);
        assert!(x["p90_ms"].as_f64().unwrap() >= x["median_ms"].as_f64().unwrap());
        assert_eq!(x["threads"], 1);
    }
}

/// With one thread count the steps run from the main thread in the kernels' pool (as `shears
/// train` runs); with several, in a pool of each size: both give every row.
#[test]
fn bench_times_each_thread_count_it_is_given() {
    let v = ok_json(&shears(&[
        "bench",
        "--model",
        "small-cnn",
        "--batch",
        "2",
        "--threads",
        "1,2",
        "--warmup",
        "1",
        "--repeats",
        "2",
        "--train",
        "--json",
    ]));
    let r = v["results"].as_array().unwrap();
    for mode in ["inference", "training"] {
        let mut threads: Vec<i64> = r
            .iter()
            .filter(|x| x["mode"] == mode)
            .map(|x| x["threads"].as_i64().unwrap())
            .collect();
        threads.sort();
        assert_eq!(threads, [1, 2], "{mode}");
    }
    for x in r {
        assert!(x["median_ms"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bad_inputs_get_clear_errors() {
    // A batch larger than memory is refused before allocating, with the estimate (it aborted
    // inside an allocation with a backtrace).
    if Path::new("/proc/meminfo").exists() {
        for extra in [&[][..], &["--train"][..]] {
            let mut args = vec![
                "bench",
                "--model",
                "small-cnn",
                "--batch",
                "1000000000",
                "--threads",
                "1",
                "--repeats",
                "1",
            ];
            args.extend_from_slice(extra);
            let e = err_text(&shears(&args));
            assert!(
                e.contains("needs at least") && e.contains("GiB") && !e.contains("panicked"),
                "{e}"
            );
        }
    } else {
        eprintln!("SKIPPED: the memory check (no /proc/meminfo)");
    }
    let e = err_text(&shears(&["inspect", "--model", "resnet-57", "--json"]));
    assert!(
        e.contains("unknown model `resnet-57`") && e.contains("resnet-56"),
        "{e}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[train]\nlr = -0.1\n").unwrap();
    let e = err_text(&shears(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        tmp.path().join("r").to_str().unwrap(),
    ]));
    assert!(e.contains("[train] lr must be a positive number"), "{e}");
    std::fs::write(&cfg, "[train]\nepochz = 2\n").unwrap();
    let e = err_text(&shears(&["train", "--config", cfg.to_str().unwrap()]));
    assert!(e.contains("epochz"), "{e}");

    // A truncated IDX file is named, with what is wrong with it.
    let data = tmp.path().join("fm");
    std::fs::create_dir_all(&data).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fashion-mnist-subset");
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(src.join(f), data.join(f)).unwrap();
    }
    let bytes = std::fs::read(data.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(
        data.join("t10k-labels-idx1-ubyte.gz"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let e = err_text(&shears(&[
        "train",
        "--dataset",
        "fashion-mnist",
        "--data",
        data.to_str().unwrap(),
        "--out",
        tmp.path().join("r2").to_str().unwrap(),
    ]));
    assert!(e.contains("t10k-labels-idx1-ubyte.gz"), "{e}");

    let e = err_text(&shears(&[
        "eval",
        "--model",
        tmp.path().join("nothing").to_str().unwrap(),
    ]));
    assert!(e.contains("nothing"), "{e}");

    let e = err_text(&shears(&[
        "prune",
        "--model",
        "lenet-300-100",
        "--method",
        "snop",
        "--sparsity",
        "0.5",
    ]));
    assert!(
        e.contains("unknown pruning method `snop`")
            && e.contains("synflow")
            && e.contains("l1-filter"),
        "{e}"
    );
}

#[test]
fn divergence_stops_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nan");
    let mut a = vec![
        "train",
        "--epochs",
        "1",
        "--lr",
        "1e12",
        "--out",
        out.to_str().unwrap(),
    ];
    a.extend_from_slice(QUICK);
    let e = err_text(&shears(&a));
    assert!(e.contains("training diverged"), "{e}");
}

#[test]
fn prune_reports_direct_and_effective_sparsity() {
    let tmp = tempfile::tempdir().unwrap();
    let v = ok_json(&shears(&[
        "prune",
        "--model",
        "lenet-300-100",
        "--method",
        "random",
        "--quota",
        "igq",
        "--sparsity",
        "0.99",
        "--json",
        "--out",
        tmp.path().join("p").to_str().unwrap(),
    ]));
    for k in [
        "direct_sparsity",
        "effective_sparsity",
        "direct_compression",
        "effective_compression",
    ] {
        assert!(v[k].is_number(), "{k} missing: {v}");
    }
    assert!((v["direct_sparsity"].as_f64().unwrap() - 0.99).abs() < 1e-3);
    assert!(v["effective_sparsity"].as_f64().unwrap() >= v["direct_sparsity"].as_f64().unwrap());
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    assert!(tmp.path().join("p/masks.safetensors").is_file());
}
