//! End-to-end tests of structured pruning through the `shears` binary, on the embedded
//! Fashion-MNIST subset with tiny limits: groups in `inspect`, `prune` with the structured
//! methods (compaction, accuracy, targets, fine-tuning, latency), `slim`, and error messages.

mod common;
use common::{err_text, ok_json, shears};

use serde_json::Value;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("`{k}` is not a number: {v}"))
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("`{k}` is not an integer: {v}"))
}

fn eval(dir: &Path) -> Value {
    ok_json(&shears(&[
        "eval",
        "--model",
        s(dir),
        "--test-limit",
        "200",
        "--json",
    ]))
}

fn inspect(dir: &Path) -> Value {
    ok_json(&shears(&["inspect", "--model", s(dir), "--json"]))
}

#[test]
fn inspect_groups_lists_prunable_and_fixed_groups() {
    let v = ok_json(&shears(&[
        "inspect",
        "--model",
        "resnet-20",
        "--groups",
        "--json",
    ]));
    let groups = v["groups"].as_array().expect("groups in the JSON");
    assert_eq!(groups.len(), 14);
    let fixed: Vec<&Value> = groups.iter().filter(|g| g["prunable"] == false).collect();
    assert_eq!(fixed.len(), 2);
    assert!(
        fixed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("graph input `input`")
    );
    assert!(
        fixed[1]["reason"]
            .as_str()
            .unwrap()
            .contains("network output `fc`")
    );
    // The first stage's residual group: the stem and every block's second conv share channels.
    let stage1 = &groups[1];
    assert_eq!(stage1["channels"], 16);
    assert_eq!(stage1["producers"].as_array().unwrap().len(), 4);
    assert_eq!(stage1["batchnorms"].as_array().unwrap().len(), 4);
    assert!(
        groups
            .iter()
            .filter(|g| g["prunable"] == true)
            .all(|g| g.get("reason").is_none())
    );
    // Without --groups the JSON has no groups; the text output has the table.
    let plain = ok_json(&shears(&["inspect", "--model", "resnet-20", "--json"]));
    assert!(plain.get("groups").is_none());
    let text = shears(&["inspect", "--model", "resnet-20", "--groups"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("14 groups, 12 prunable with 448 channels, 2 fixed"),
        "{text}"
    );
}

/// Trains a ResNet-20 briefly, prunes half its MACs with L1 filter norms, and checks the
/// compacted artifact against the channel-zeroed dense model, `inspect`, and the other commands.
#[test]
fn l1_filter_on_resnet20_compacts_equivalently_and_fine_tunes() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    ok_json(&shears(&[
        "train",
        "--model",
        "resnet-20",
        "--epochs",
        "1",
        "--train-limit",
        "512",
        "--test-limit",
        "200",
        "--batch-size",
        "64",
        "--json",
        "--out",
        s(&base),
    ]));
    let run = tmp.path().join("l1");
    let masked = tmp.path().join("masked");
    let v = ok_json(&shears(&[
        "prune",
        "--model",
        s(&base),
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.5",
        "--test-limit",
        "200",
        "--train-limit",
        "256",
        "--batch-size",
        "64",
        "--finetune-epochs",
        "1",
        "--save-masked",
        s(&masked),
        "--latency-batches",
        "1,4",
        "--latency-threads",
        "1",
        "--latency-warmup",
        "1",
        "--latency-repeats",
        "2",
        "--latency-rounds",
        "1",
        "--json",
        "--out",
        s(&run),
    ]));
    // The MACs target is met, and not overshot by much.
    let (mb, ma) = (u(&v, "macs_before"), u(&v, "macs_after"));
    assert_eq!(mb, 31_021_952, "resnet-20 at 1x28x28");
    assert!(ma as f64 <= 0.5 * mb as f64, "{ma} of {mb}");
    assert!(ma as f64 >= 0.45 * mb as f64, "{ma} of {mb}: overshoot");
    assert!((f(&v, "macs_reduction") - (1.0 - ma as f64 / mb as f64)).abs() < 1e-12);
    assert_eq!(v["macs_convention"], "conv+linear");
    assert!(u(&v, "params_after") < u(&v, "params_before"));

    // params/MACs after match `inspect` of the saved artifacts (before and after fine-tuning).
    let pruned = run.join("pruned");
    for dir in [&pruned, &run] {
        let i = inspect(dir);
        assert_eq!(i["params"], v["params_after"]);
        assert_eq!(i["macs"], v["macs_after"]);
    }
    let i = inspect(&masked);
    assert_eq!(i["params"], v["params_before"]);
    assert_eq!(i["macs"], v["macs_before"]);

    // Compacted model == dense model with the removed channels zeroed, on data, and both agree
    // with the engine-gated dense accuracy of the report.
    let ec = eval(&pruned);
    let em = eval(&masked);
    assert_eq!(ec["test_accuracy"], em["test_accuracy"]);
    let (lc, lm) = (f(&ec, "test_loss"), f(&em, "test_loss"));
    assert!((lc - lm).abs() <= 1e-4 * lm.abs(), "loss {lc} vs {lm}");
    assert!((f(&ec, "test_accuracy") - f(&v, "accuracy_after_pruning")).abs() < 1e-12);
    assert!(
        (f(&v, "accuracy_after_pruning_gated") - f(&v, "accuracy_after_pruning")).abs() < 1e-12
    );
    // Pruning changed the network: the dense model's loss differs.
    let ed = eval(&base);
    assert!(
        (f(&ed, "test_loss") - lm).abs() > 1e-3,
        "pruning had no effect"
    );
    assert!((f(&ed, "test_accuracy") - f(&v, "accuracy_before_pruning")).abs() < 1e-12);

    // Fine-tuned artifact in the run directory.
    let ef = eval(&run);
    assert!((f(&ef, "test_accuracy") - f(&v, "accuracy_after_finetune")).abs() < 1e-12);
    assert_eq!(v["test_samples"], 200);

    // Latency: dense and compacted at each batch size, with the ratios.
    let lat = v["latency"].as_array().unwrap();
    assert_eq!(lat.len(), 2);
    for (row, batch) in lat.iter().zip([1, 4]) {
        assert_eq!(row["batch"], batch);
        assert_eq!(row["threads"], 1);
        let ratio = f(row, "dense_median_ms") / f(row, "compacted_median_ms");
        assert!((f(row, "latency_ratio") - ratio).abs() < 1e-9);
        assert!((f(row, "macs_ratio") - mb as f64 / ma as f64).abs() < 1e-9);
        assert!((f(row, "ratio_of_ratios") - ratio / f(row, "macs_ratio")).abs() < 1e-9);
    }

    // The compacted artifact is a normal model: bench and train work on it.
    let b = ok_json(&shears(&[
        "bench",
        "--model",
        s(&run),
        "--batch",
        "2",
        "--threads",
        "1",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--json",
    ]));
    assert_eq!(b["macs"], v["macs_after"]);
    let t = ok_json(&shears(&[
        "train",
        "--model",
        s(&run),
        "--epochs",
        "1",
        "--train-limit",
        "128",
        "--test-limit",
        "100",
        "--batch-size",
        "64",
        "--json",
        "--out",
        s(&tmp.path().join("retrain")),
    ]));
    assert_eq!(t["params"], v["params_after"]);
}

#[test]
fn per_layer_params_target_with_rounding_and_ignore() {
    let tmp = tempfile::tempdir().unwrap();
    let v = ok_json(&shears(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l2-filter",
        "--params-reduction",
        "0.3",
        "--scope",
        "per-layer",
        "--round-to",
        "4",
        "--ignore",
        "conv1",
        "--no-eval",
        "--no-latency",
        "--json",
        "--out",
        s(&tmp.path().join("p")),
    ]));
    assert!(f(&v, "params_reduction") >= 0.3, "{v}");
    assert_eq!(v["spec"]["scope"], "per-layer");
    assert_eq!(v["spec"]["normalization"], "none");
    assert!(v["accuracy_before_pruning"].is_null());
    let groups = v["pruned_groups"].as_array().unwrap();
    assert!(!groups.is_empty());
    for g in groups {
        assert_ne!(g["producers"][0], "conv1", "ignored layer was pruned");
        assert_eq!(u(g, "kept") % 4, 0, "{g}");
    }
    let i = inspect(&tmp.path().join("p"));
    assert_eq!(i["params"], v["params_after"]);
    // conv1 keeps its 32 filters.
    let conv1 = i["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "conv1")
        .unwrap();
    assert_eq!(conv1["output_shape"][0], 32);
}

#[test]
fn channel_ratio_with_taylor_random_and_bn_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |method: &str, extra: &[&str], name: &str| {
        let mut a = vec![
            "prune",
            "--model",
            "small-cnn",
            "--method",
            method,
            "--channel-ratio",
            "0.25",
            "--test-limit",
            "100",
            "--no-latency",
            "--json",
        ];
        a.extend_from_slice(extra);
        let out = tmp.path().join(name);
        a.extend_from_slice(&["--out", out.to_str().unwrap()]);
        ok_json(&shears(&a))
    };
    for (method, extra, importance) in [
        (
            "taylor",
            &["--score-batches", "2", "--score-batch-size", "32"][..],
            "taylor",
        ),
        ("bn-scale", &[][..], "bn-scale"),
        ("random-filter", &["--seed", "3"][..], "random"),
    ] {
        let v = run(method, extra, method);
        assert_eq!(v["spec"]["importance"], importance);
        // 192 channels in 4 groups, a quarter of them go: 48.
        assert_eq!(v["channels_before"], 192);
        assert_eq!(v["channels_after"], 144, "{method}");
        assert!(v["accuracy_after_pruning"].is_number());
    }
    // Random selection is seeded: the same seed removes the same channels.
    let a = run("random-filter", &["--seed", "3"], "r1");
    let b = run("random-filter", &["--seed", "3"], "r2");
    assert_eq!(a["pruned_groups"], b["pruned_groups"]);
    let c = run("random-filter", &["--seed", "4"], "r3");
    let w = |v: &Value| {
        std::fs::read(Path::new(v["run_dir"].as_str().unwrap()).join("weights.safetensors"))
            .unwrap()
    };
    assert!(w(&a) == w(&b));
    assert!(w(&a) != w(&c));
}

#[test]
fn slim_runs_end_to_end_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("slim");
    let args = [
        "slim",
        "--model",
        "small-cnn",
        "--epochs",
        "1",
        "--sparsity-epochs",
        "1",
        "--lambda",
        "1e-3",
        "--percentile",
        "0.4",
        "--finetune-epochs",
        "1",
        "--train-limit",
        "256",
        "--test-limit",
        "200",
        "--batch-size",
        "64",
        "--latency-batches",
        "1",
        "--latency-threads",
        "1",
        "--latency-warmup",
        "1",
        "--latency-repeats",
        "2",
        "--json",
        "--out",
        s(&out),
    ];
    let v = ok_json(&shears(&args));
    assert_eq!(v["command"], "slim");
    assert_eq!(v["spec"]["cut"]["kind"], "percentile");
    assert!((f(&v["spec"]["cut"], "value") - 0.4).abs() < 1e-12);
    assert!(v["threshold"].is_number());
    let sl = &v["slimming"];
    assert!((f(sl, "lambda") - 1e-3).abs() < 1e-15);
    for k in [
        "accuracy_before_pruning",
        "accuracy_after_pruning",
        "accuracy_after_pruning_gated",
        "accuracy_after_finetune",
    ] {
        assert!(v[k].is_number(), "missing {k}: {v}");
    }
    assert!(sl["accuracy_baseline"].is_number());
    // A 0.4 percentile removes about 40% of the 192 channels (ties at the threshold go too).
    let removed = u(&v, "channels_before") - u(&v, "channels_after");
    assert!((70..=100).contains(&removed), "removed {removed}");
    assert!(u(&v, "macs_after") < u(&v, "macs_before"));
    assert_eq!(v["latency"].as_array().unwrap().len(), 1);
    for phase in [
        "dense",
        "sparse",
        "pruned",
        "sparsity/metrics.jsonl",
        "finetune/metrics.jsonl",
        "config.toml",
    ] {
        assert!(out.join(phase).exists(), "missing {phase}");
    }
    let e = eval(&out);
    assert!((f(&e, "test_accuracy") - f(&v, "accuracy_after_finetune")).abs() < 1e-12);
    assert_eq!(inspect(&out)["params"], v["params_after"]);
    // The sparsity-trained model (not the baseline) is what was pruned.
    assert!(
        (f(&eval(&out.join("sparse")), "test_accuracy") - f(&v, "accuracy_before_pruning")).abs()
            < 1e-12
    );
    // A finished run is not re-run.
    let again = ok_json(&shears(&args));
    assert_eq!(again["seconds"], v["seconds"]);
}

#[test]
fn bad_structured_inputs_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("x");
    let quick = |a: &[&str]| {
        let mut v: Vec<&str> = a.to_vec();
        v.extend_from_slice(&["--no-latency", "--out", o.to_str().unwrap()]);
        err_text(&shears(&v))
    };
    let e = quick(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--importance",
        "l3",
        "--macs-reduction",
        "0.5",
    ]);
    assert!(
        e.contains("unknown importance `l3`") && e.contains("taylor"),
        "{e}"
    );
    let e = quick(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--macs-reduction",
        "1.5",
    ]);
    assert!(
        e.contains("--macs-reduction must be in [0, 1), got 1.5"),
        "{e}"
    );
    let e = quick(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--channel-ratio",
        "0.2",
        "--macs-reduction",
        "0.2",
    ]);
    assert!(e.contains("exactly one of"), "{e}");
    let e = quick(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--percentile",
        "0.5",
        "--scope",
        "per-layer",
    ]);
    assert!(e.contains("global threshold"), "{e}");
    // Every group ignored, or nothing to score: nothing can be pruned.
    let e = quick(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--ignore",
        "conv2d",
        "--channel-ratio",
        "0.5",
        "--no-eval",
    ]);
    assert!(e.contains("no group can lose channels"), "{e}");
    let e = quick(&[
        "prune",
        "--model",
        "lenet-300-100",
        "--method",
        "bn-scale",
        "--channel-ratio",
        "0.5",
        "--no-eval",
    ]);
    // A network without BatchNorm: the method says what it needs and what to use instead.
    assert!(
        e.contains("no prunable channel group of this network has a BatchNorm")
            && e.contains("l1-filter"),
        "{e}"
    );
    let e = quick(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--ignore",
        "nope",
        "--channel-ratio",
        "0.5",
        "--no-eval",
    ]);
    assert!(
        e.contains("`nope` is neither a node name nor an op kind"),
        "{e}"
    );
    let e = quick(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.9999",
        "--no-eval",
    ]);
    assert!(e.contains("out of reach"), "{e}");
    // A model that does not fit the data: pointed at --no-eval.
    let e = quick(&[
        "prune",
        "--model",
        "resnet-20",
        "--input",
        "3x32x32",
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.5",
    ]);
    assert!(e.contains("--no-eval") && e.contains("[3, 32, 32]"), "{e}");
    let e = quick(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.5",
        "--no-eval",
        "--finetune-epochs",
        "1",
    ]);
    assert!(e.contains("drop --no-eval"), "{e}");
    let e = quick(&["prune", "--model", "small-cnn", "--method", "slimming"]);
    assert!(e.contains("--percentile"), "{e}");
    let e = quick(&["slim", "--model", "small-cnn", "--lambda=-1"]);
    assert!(e.contains("lambda") && e.contains("got -1"), "{e}");
}

const SLIM_RUN: &str = r#"
name = "slimrun"
[model]
arch = "small-cnn"
[train]
epochs = 1
batch_size = 64
train_limit = 256
test_limit = 200
[method]
name = "slimming"
lambda = 1e-3
sparsity_epochs = 1
percentile = 0.4
[finetune]
epochs = 1
batch_size = 64
lr = 0.005
train_limit = 256
test_limit = 200
[latency]
enabled = false
"#;

#[test]
fn run_takes_any_registered_method_from_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("slim.toml");
    std::fs::write(&cfg, SLIM_RUN).unwrap();
    let out = tmp.path().join("slim");
    let v = ok_json(&shears(&[
        "run",
        "--config",
        s(&cfg),
        "--json",
        "--out",
        s(&out),
    ]));
    assert_eq!(v["command"], "run");
    assert_eq!(v["spec"]["method"], "slimming");
    assert_eq!(v["spec"]["importance"], "bn-scale");
    assert!((f(&v["slimming"], "lambda") - 1e-3).abs() < 1e-15);
    for k in [
        "accuracy_before_pruning",
        "accuracy_after_pruning",
        "accuracy_after_pruning_gated",
        "accuracy_after_finetune",
    ] {
        assert!(v[k].is_number(), "missing {k}: {v}");
    }
    // Compaction is exact: the compacted model scores what the gated dense one does.
    assert_eq!(
        v["accuracy_after_pruning"],
        v["accuracy_after_pruning_gated"]
    );
    assert!(u(&v, "channels_after") < u(&v, "channels_before"));
    assert!(v["latency"].as_array().unwrap().is_empty());
    for phase in [
        "dense",
        "sparse",
        "pruned",
        "sparsity/metrics.jsonl",
        "finetune/metrics.jsonl",
    ] {
        assert!(out.join(phase).exists(), "missing {phase}");
    }
    assert!(
        std::fs::read_to_string(out.join("config.toml"))
            .unwrap()
            .contains("name = \"slimming\"")
    );
    assert_eq!(inspect(&out)["params"], v["params_after"]);

    // A filter method from the same kind of section, to a MACs target.
    let l1 = SLIM_RUN.replace(
        "name = \"slimming\"\nlambda = 1e-3\nsparsity_epochs = 1\npercentile = 0.4",
        "name = \"l1-filter\"\nmacs_reduction = 0.5\nscope = \"global\"",
    );
    let cfg2 = tmp.path().join("l1.toml");
    std::fs::write(&cfg2, l1).unwrap();
    let v = ok_json(&shears(&[
        "run",
        "--config",
        s(&cfg2),
        "--json",
        "--out",
        s(&tmp.path().join("l1")),
    ]));
    assert_eq!(v["spec"]["method"], "l1-filter");
    assert!(f(&v, "macs_reduction") >= 0.5, "{v}");
    assert!(v["slimming"].is_null());

    // Errors name the method and the key it does not take.
    let e = err_text(&shears(&[
        "run",
        "--config",
        s(&cfg),
        "--method",
        "l1-filter",
    ]));
    assert!(e.contains("l1-filter") && e.contains("lambda"), "{e}");
    let e = err_text(&shears(&[
        "run",
        "--config",
        s(&cfg),
        "--method",
        "prunify",
    ]));
    assert!(
        e.contains("unknown pruning method `prunify`") && e.contains("slimming"),
        "{e}"
    );
    std::fs::write(&cfg, SLIM_RUN.replace("lambda = 1e-3", "lamda = 1e-3")).unwrap();
    let e = err_text(&shears(&["run", "--config", s(&cfg)]));
    assert!(e.contains("lamda") && e.contains("slimming"), "{e}");
}

const MS_RUN: &str = r#"
name = "msrun"
[model]
arch = "small-cnn"
[train]
epochs = 1
batch_size = 64
train_limit = 256
test_limit = 200
[method]
name = "masksparsity"
mask_epochs = 1
macs_reduction = 0.5
lambda = 0.05
sparsity_epochs = 1
[finetune]
epochs = 1
batch_size = 64
lr = 0.005
train_limit = 256
test_limit = 200
[latency]
enabled = false
"#;

#[test]
fn masksparsity_runs_from_a_config_and_reuses_its_mask() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ms.toml");
    std::fs::write(&cfg, MS_RUN).unwrap();
    let out = tmp.path().join("ms");
    let v = ok_json(&shears(&[
        "run",
        "--config",
        s(&cfg),
        "--json",
        "--out",
        s(&out),
    ]));
    assert_eq!(v["spec"]["method"], "masksparsity");
    assert_eq!(v["spec"]["cut"]["kind"], "mask");
    let ms = &v["masksparsity"];
    assert_eq!(ms["mask_source"], "slimming");
    for k in [
        "accuracy_before_pruning",
        "accuracy_after_pruning",
        "accuracy_after_pruning_gated",
        "accuracy_after_finetune",
    ] {
        assert!(v[k].is_number(), "missing {k}: {v}");
    }
    assert!(ms["accuracy_baseline"].is_number());
    assert_eq!(
        v["accuracy_after_pruning"],
        v["accuracy_after_pruning_gated"]
    );
    // The cut is the mask: exactly its channels go, and the MACs target is met.
    let removed = u(&v, "channels_before") - u(&v, "channels_after");
    assert_eq!(removed, u(ms, "masked_channels"));
    assert!(f(&v, "macs_reduction") >= 0.5, "{v}");
    // The masked scales shrank, the kept ones did not.
    assert!(f(ms, "masked_gamma_after") < f(ms, "masked_gamma_before"));
    assert!(f(ms, "masked_gamma_after") < f(ms, "kept_gamma_after"));
    // Per-layer widths kept are reported.
    assert!(!v["pruned_groups"].as_array().unwrap().is_empty());
    for phase in [
        "dense",
        "global-sparse",
        "sparse",
        "pruned",
        "mask.json",
        "masksparsity/metrics.jsonl",
        "finetune/metrics.jsonl",
    ] {
        assert!(out.join(phase).exists(), "missing {phase}");
    }

    // The mask file of that run drives a second run (uniform source and threshold cut too).
    let file = MS_RUN.replace(
        "mask_epochs = 1\nmacs_reduction = 0.5",
        &format!(
            "mask = \"file\"\nmask_file = {:?}",
            s(&out.join("mask.json"))
        ),
    );
    std::fs::write(&cfg, &file).unwrap();
    let w = ok_json(&shears(&[
        "run",
        "--config",
        s(&cfg),
        "--json",
        "--out",
        s(&tmp.path().join("f")),
    ]));
    assert_eq!(w["masksparsity"]["mask_source"], "file");
    assert_eq!(w["channels_after"], v["channels_after"]);
    assert_eq!(
        std::fs::read_to_string(out.join("mask.json")).unwrap(),
        std::fs::read_to_string(tmp.path().join("f/mask.json")).unwrap()
    );

    // Bad values are named before any training starts.
    let bad = |edit: (&str, &str)| {
        std::fs::write(&cfg, MS_RUN.replace(edit.0, edit.1)).unwrap();
        let dir = tmp.path().join(format!("bad-{}", edit.1.len()));
        err_text(&shears(&["run", "--config", s(&cfg), "--out", s(&dir)]))
    };
    let e = bad(("lambda = 0.05", "lambda = -1.0"));
    assert!(e.contains("lambda") && e.contains("-1"), "{e}");
    let e = bad(("macs_reduction = 0.5", "mask_tau = 1.5"));
    assert!(e.contains("mask_tau") && e.contains("[0, 1)"), "{e}");
    let e = bad(("macs_reduction = 0.5", "macs_reduction = 0.5\ntau = 2.0"));
    assert!(e.contains("tau") && e.contains("got 2"), "{e}");
    let e = bad((
        "mask_epochs = 1\nmacs_reduction = 0.5",
        "mask = \"file\"\nmask_file = \"/nonexistent/mask.json\"",
    ));
    assert!(e.contains("/nonexistent/mask.json"), "{e}");
    let no_file = "mask = \"file\"\nmask_file = \"/nonexistent/mask.json\"";
    let dir = tmp.path().join(format!("bad-{}", no_file.len()));
    assert!(
        !dir.join("dense").exists(),
        "trained before the mask file was checked"
    );
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("mask.json")).unwrap()).unwrap();
    other["model"] = "resnet-20".into();
    let other_path = tmp.path().join("other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let e = bad((
        "mask_epochs = 1\nmacs_reduction = 0.5",
        &format!("mask = \"file\"\nmask_file = {:?}", s(&other_path)),
    ));
    assert!(e.contains("resnet-20") && e.contains("small-cnn"), "{e}");
    let e = bad((
        "mask_epochs = 1\nmacs_reduction = 0.5",
        "mask = \"uniform\"\nmask_epochs = 1\nmacs_reduction = 0.5",
    ));
    assert!(e.contains("mask_epochs") && e.contains("uniform"), "{e}");
    // A run directory holding another config is refused instead of reusing its stages.
    std::fs::write(&cfg, MS_RUN.replace("lambda = 0.05", "lambda = 0.04")).unwrap();
    let e = err_text(&shears(&["run", "--config", s(&cfg), "--out", s(&out)]));
    assert!(e.contains("another config") && e.contains("--force"), "{e}");
}

#[test]
fn an_interrupted_masksparsity_run_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ms.toml");
    // Two epochs of MaskSparsity training, so the interruption falls inside that phase too.
    std::fs::write(
        &cfg,
        MS_RUN.replace("sparsity_epochs = 1", "sparsity_epochs = 2"),
    )
    .unwrap();
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
    let args = ["run", "--config", s(&cfg), "--json", "--out", s(&part)];
    // Stop after the first epoch of every phase: baseline, mask, MaskSparsity (epoch 1 of 2).
    for _ in 0..3 {
        let out = common::shears_env(
            &[&args[..], &["--resume"]].concat(),
            &[("SHEARS_INTERRUPT_AFTER_EPOCH", "1")],
        );
        if out.status.success() {
            break;
        }
        assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted after epoch 1"));
    }
    assert!(
        !part.join("result.json").exists(),
        "the run finished inside the interruptions"
    );
    let resumed = ok_json(&shears(&[&args[..], &["--resume"]].concat()));
    for k in [
        "accuracy_before_pruning",
        "accuracy_after_pruning",
        "accuracy_after_finetune",
        "channels_after",
    ] {
        assert_eq!(resumed[k], whole[k], "{k}");
    }
    assert_eq!(
        resumed["masksparsity"]["masked_gamma_after"],
        whole["masksparsity"]["masked_gamma_after"]
    );
}

/// Every latency row has an onnxruntime column where onnxruntime is found (the onnxruntime pip
/// package of `SHEARS_PYTHON`, or `ORT_DYLIB_PATH`), and the report says which library measured
/// it; without one, the note says why and the rows have no such column.
#[test]
fn structured_reports_measure_latency_in_onnxruntime_too() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = shears(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.5",
        "--no-eval",
        "--latency-batches",
        "1",
        "--latency-threads",
        "1",
        "--latency-repeats",
        "3",
        "--out",
        s(&run),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // The printed report and result.json of the same run.
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    let note = r["onnxruntime"].as_str().expect("an onnxruntime note");
    let rows = r["latency"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert!(text.contains(&format!("onnxruntime: {note}")), "{text}");
    if let Some(library) = note.strip_prefix("measured with ") {
        assert!(Path::new(library).is_file(), "{note}");
        let o = &rows[0]["onnxruntime"];
        for k in ["dense_median_ms", "compacted_median_ms", "latency_ratio"] {
            assert!(f(o, k) > 0.0, "{k} in {o}");
        }
        let ratio = f(o, "dense_median_ms") / f(o, "compacted_median_ms");
        assert!((ratio - f(o, "latency_ratio")).abs() < 1e-9);
        assert!(text.contains("ORT compacted"), "{text}");
        // A slower compacted model gets a warning line, a faster one none.
        let slower = f(o, "latency_ratio") < 1.0 || f(&rows[0], "latency_ratio") < 1.0;
        assert_eq!(
            text.contains("warning: the compacted model is slower"),
            slower,
            "{text}"
        );
    } else {
        eprintln!("SKIPPED: the onnxruntime column ({note})");
        assert!(note.contains("onnxruntime is not available"), "{note}");
        assert!(rows[0].get("onnxruntime").is_none());
    }
}

/// Latency measurement keeps to its time budget: a batch size that cannot fit is skipped and
/// batch 1 shortened, both said in the report; the stages show on stderr as they run.
#[test]
fn latency_measurement_keeps_to_its_budget_and_says_what_it_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = common::shears_env(
        &[
            "prune",
            "--model",
            "small-cnn",
            "--method",
            "l1-filter",
            "--macs-reduction",
            "0.5",
            "--no-eval",
            "--latency-batches",
            "1,64",
            "--latency-threads",
            "1",
            "--latency-budget",
            "0.0005",
            "--out",
            s(&run),
        ],
        &[("SHEARS_LOG", "info")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let log = String::from_utf8(out.stderr).unwrap();
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    let rows = r["latency"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "batch 64 cannot fit half a millisecond: {r}");
    assert_eq!(rows[0]["batch"], 1);
    assert_eq!(
        (rows[0]["repeats"].as_u64(), rows[0]["rounds"].as_u64()),
        (Some(3), Some(1))
    );
    let notes: Vec<&str> = r["latency_notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("batch 64, 1 threads not measured")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("batch 1, 1 threads: one pass takes")),
        "{notes:?}"
    );
    assert!(
        text.contains("latency budget: batch 64, 1 threads not measured"),
        "{text}"
    );
    assert!(
        log.contains("latency: batch 1, 1 threads, round 1/1"),
        "{log}"
    );
    let e = common::err_text(&shears(&[
        "prune",
        "--model",
        "small-cnn",
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.5",
        "--no-eval",
        "--latency-budget=-1",
        "--out",
        s(&tmp.path().join("bad")),
    ]));
    assert!(e.contains("latency budget"), "{e}");
}

/// `--round-to auto` (the default) times every multiple in onnxruntime (shears' engine where
/// onnxruntime is missing) and reports the choice; `--latency-reduction` cuts until the measured
/// batch-1 latency falls by that share; bad values are clear errors.
#[test]
fn auto_rounding_and_a_latency_target_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let prune = |extra: &[&str], out: &Path| {
        let mut args = vec![
            "prune",
            "--model",
            "small-cnn",
            "--method",
            "l1-filter",
            "--no-eval",
            "--no-latency",
            "--out",
            s(out),
        ];
        args.extend_from_slice(extra);
        shears(&args)
    };
    let run = tmp.path().join("auto");
    let out = prune(&["--macs-reduction", "0.5"], &run);
    assert!(out.status.success(), "{}", err_text(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(r["spec"]["round_to"], "auto");
    let c = &r["rounding"];
    let runtime = c["runtime"].as_str().unwrap();
    // onnxruntime where it is found; else shears' engine, and the note says why.
    if runtime == "shears" {
        let note = c["note"].as_str().unwrap();
        assert!(note.contains("onnxruntime is not available"), "{note}");
        eprintln!("SKIPPED: timing in onnxruntime ({note})");
    } else {
        assert_eq!(runtime, "onnxruntime", "{c}");
        assert!(c.get("note").is_none(), "{c}");
    }
    let chosen = c["chosen"].as_u64().unwrap() as usize;
    let tried = c["tried"].as_array().unwrap();
    assert_eq!(tried.len(), 6, "{c}");
    assert!(
        tried
            .iter()
            .any(|t| t["multiple"] == chosen && t["median_ms"].as_f64().is_some()),
        "{c}"
    );
    for g in r["pruned_groups"].as_array().unwrap() {
        let kept = g["kept"].as_u64().unwrap() as usize;
        assert!(
            kept % chosen == 0 || kept == g["channels"].as_u64().unwrap() as usize,
            "{g}"
        );
    }
    assert!(f(&r, "macs_reduction") >= 0.5 - 1e-9);
    assert!(
        text.contains(&format!(
            "rounding  auto: kept counts multiples of {chosen}"
        )),
        "{text}"
    );
    // A fixed multiple times nothing and is reported as given.
    let run = tmp.path().join("fixed");
    let out = prune(&["--macs-reduction", "0.5", "--round-to", "8"], &run);
    assert!(out.status.success(), "{}", err_text(&out));
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(r["spec"]["round_to"], 8);
    assert!(r.get("rounding").is_none());

    // A latency target, measured in shears' engine (always there).
    let run = tmp.path().join("latency");
    let out = prune(
        &["--latency-reduction", "0.3", "--latency-runtime", "shears"],
        &run,
    );
    assert!(out.status.success(), "{}", err_text(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    let l = &r["latency_search"];
    assert_eq!(l["runtime"], "shears");
    assert!(f(l, "reduction") >= 0.3, "{l}");
    assert!(u(l, "evaluations") >= 1, "{l}");
    assert_eq!(r["rounding"]["runtime"], "shears");
    assert!(
        text.contains("latency target  30.0% less batch-1 latency in shears"),
        "{text}"
    );

    // Bad values name the flag.
    for (args, want) in [
        (
            vec!["--macs-reduction", "0.5", "--round-to", "0"],
            "--round-to",
        ),
        (
            vec!["--macs-reduction", "0.5", "--round-to", "eight"],
            "round_to must be `auto` or a whole number",
        ),
        (vec!["--latency-reduction", "1.5"], "--latency-reduction"),
        (
            vec!["--latency-reduction", "0.3", "--macs-reduction", "0.3"],
            "give exactly one of",
        ),
        (
            vec![
                "--latency-reduction",
                "0.3",
                "--latency-runtime",
                "tensorrt",
            ],
            "unknown latency runtime `tensorrt`",
        ),
    ] {
        let out = prune(&args, &tmp.path().join("bad"));
        let e = err_text(&out);
        assert!(e.contains(want), "{args:?}: {e}");
        assert!(!tmp.path().join("bad").join("result.json").exists());
    }
}
