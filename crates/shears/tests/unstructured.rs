//! End-to-end tests of unstructured pruning through the `shears` binary: pruners, quotas,
//! direct and effective targets, saved masks, and pruning at init / after training with
//! rewinding / gradually, on LeNet-300-100 and the embedded Fashion-MNIST subset.

mod common;
use common::{err_text, ok_json, shears};

use serde_json::Value;
use shears_core::load_model;
use std::path::Path;

/// Prunable weights of LeNet-300-100 on 28x28 inputs: 784·300 + 300·100 + 100·10.
const LENET_WEIGHTS: f64 = 266_200.0;

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"))
}

/// `shears prune --model lenet-300-100 ARGS --json --out DIR`.
fn prune(dir: &Path, args: &[&str]) -> Value {
    let mut a = vec![
        "prune",
        "--model",
        "lenet-300-100",
        "--json",
        "--out",
        dir.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    ok_json(&shears(&a))
}

/// The paper's ERK keeps ERK's densities and moves an overfull layer's excess to the layer
/// before: at 10x the classifier (ratio 110/1000) would keep 1.84 of its weights per weight, so
/// it stays dense and fc2 keeps the other 840; RigL's ERK rescales fc1 and fc2 instead.
#[test]
fn random_erk_es_moves_the_excess_of_a_dense_layer_to_the_one_before() {
    let tmp = tempfile::tempdir().unwrap();
    let kept = |quota: &str| -> Vec<f64> {
        let v = prune(
            &tmp.path().join(quota),
            &["--method", "random", "--quota", quota, "--sparsity", "0.9"],
        );
        assert_eq!(v["allocation"], quota);
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["unpruned"].as_f64().unwrap())
            .collect()
    };
    let (es, rigl) = (kept("erk-es"), kept("erk"));
    assert_eq!((es[2], rigl[2]), (1000.0, 1000.0), "{es:?} {rigl:?}");
    // ε = 26,620 / 1,594 kept weights per unit of Σdims/Πdims.
    let eps = 0.1 * LENET_WEIGHTS / (1084.0 + 400.0 + 110.0);
    assert!((es[0] - eps * 1084.0).abs() <= 1.0, "{es:?}");
    assert!(
        (es[1] - (eps * 400.0 + eps * 110.0 - 1000.0)).abs() <= 1.0,
        "{es:?}"
    );
    assert!((rigl[0] - es[0]).abs() > 10.0, "{es:?} {rigl:?}");
}

#[test]
fn random_igq_reports_both_sparsities_and_ideal_gas_layer_densities() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p");
    let v = prune(
        &out,
        &["--method", "random", "--quota", "igq", "--sparsity", "0.99"],
    );
    for k in [
        "direct_sparsity",
        "effective_sparsity",
        "direct_compression",
        "effective_compression",
    ] {
        assert!(v[k].is_number(), "{k} missing: {v}");
    }
    let d = f(&v, "direct_sparsity");
    assert!((d - 0.99).abs() < 2.0 / LENET_WEIGHTS, "{d}");
    assert!((f(&v, "direct_compression") - 1.0 / (1.0 - d)).abs() < 1e-6);
    assert!(f(&v, "effective_sparsity") >= d);
    assert_eq!(v["pruned_at"], "init");
    assert_eq!(v["allocation"], "igq");
    // IGQ: density d_l = 1/(1 + F n_l) with one F for all layers, so (1/d_l − 1)/n_l agrees
    // across layers (up to rounding each layer's count to whole weights).
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let forces: Vec<f64> = layers
        .iter()
        .map(|l| {
            let n = l["total"].as_f64().unwrap();
            let kept = l["unpruned"].as_f64().unwrap();
            (n / kept - 1.0) / n
        })
        .collect();
    for fl in &forces {
        assert!(
            (fl / forces[0] - 1.0).abs() < 0.05,
            "layers do not share one force: {forces:?}"
        );
    }
    assert!(out.join("masks.safetensors").is_file());
    assert_eq!(load_model(&out).unwrap().masks.len(), 3);
}

#[test]
fn effective_target_lands_on_the_effective_sparsity() {
    let tmp = tempfile::tempdir().unwrap();
    let direct = prune(
        &tmp.path().join("d"),
        &[
            "--method",
            "random",
            "--quota",
            "uniform",
            "--compression",
            "100",
        ],
    );
    // Random uniform pruning at 100x already disconnects many weights.
    assert!(f(&direct, "effective_sparsity") > 0.99 + 1e-3, "{direct}");
    let eff = prune(
        &tmp.path().join("e"),
        &[
            "--method",
            "random",
            "--quota",
            "uniform",
            "--compression",
            "100",
            "--target-kind",
            "effective",
        ],
    );
    let e = f(&eff, "effective_sparsity");
    assert!(e <= 0.99 && 0.99 - e < 2e-4, "effective {e}");
    assert!(f(&eff, "direct_sparsity") < 0.99 - 1e-3, "{eff}");
    assert!(f(&eff, "evaluations") > 1.0);
    // Global scores search the cut instead of the quota's direct target.
    let glob = prune(
        &tmp.path().join("g"),
        &[
            "--method",
            "magnitude",
            "--sparsity",
            "0.995",
            "--target-kind",
            "effective",
        ],
    );
    let e = f(&glob, "effective_sparsity");
    assert!(e <= 0.995 && 0.995 - e < 2e-4, "effective {e}");
}

#[test]
fn synflow_has_no_direct_effective_gap_at_100x() {
    let tmp = tempfile::tempdir().unwrap();
    let v = prune(
        &tmp.path().join("s"),
        &["--method", "synflow", "--compression", "100"],
    );
    let (d, e) = (f(&v, "direct_sparsity"), f(&v, "effective_sparsity"));
    assert!((d - 0.99).abs() < 2.0 / LENET_WEIGHTS, "{d}");
    assert!((e - d) * LENET_WEIGHTS <= 3.0, "direct {d}, effective {e}");
    // Random global pruning at the same compression has a large gap.
    let r = prune(
        &tmp.path().join("r"),
        &["--method", "random", "--compression", "100"],
    );
    assert!(
        f(&r, "effective_compression") > 2.0 * f(&r, "direct_compression"),
        "{r}"
    );
}

#[test]
fn snip_and_grasp_reach_the_requested_sparsity_with_data_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let quick = [
        "--score-batches",
        "2",
        "--score-batch-size",
        "64",
        "--sparsity",
        "0.9",
    ];
    let run = |name: &str, method: &str| {
        let mut a = vec!["--method", method];
        a.extend_from_slice(&quick);
        let v = prune(&tmp.path().join(name), &a);
        let d = f(&v, "direct_sparsity");
        assert!((d - 0.9).abs() < 2.0 / LENET_WEIGHTS, "{method}: {d}");
        let layers: Vec<f64> = v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["direct_sparsity"].as_f64().unwrap())
            .collect();
        (layers, load_model(&tmp.path().join(name)).unwrap().masks)
    };
    let (snip, snip_masks) = run("snip", "snip");
    let (grasp, grasp_masks) = run("grasp", "grasp");
    let (_, mag_masks) = run("mag", "magnitude");
    // Different criteria, different masks.
    assert_ne!(snip_masks, mag_masks);
    assert_ne!(grasp_masks, snip_masks);
    assert_ne!(snip, grasp, "snip and grasp give the same layer sparsities");
    // The scoring batches are seeded: the same command gives the same masks.
    let (_, again) = run("snip2", "snip");
    assert_eq!(again, snip_masks);
}

#[test]
fn inspect_shows_per_layer_sparsity_and_training_keeps_pruned_weights_at_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let pruned = tmp.path().join("pruned");
    let v = prune(
        &pruned,
        &["--method", "random", "--quota", "erk", "--sparsity", "0.98"],
    );
    let inspect = |dir: &Path| {
        ok_json(&shears(&[
            "inspect",
            "--model",
            dir.to_str().unwrap(),
            "--json",
        ]))
    };
    let i = inspect(&pruned);
    assert_eq!(i["direct_sparsity"], v["direct_sparsity"]);
    assert_eq!(i["effective_sparsity"], v["effective_sparsity"]);
    let by_name = |j: &Value, name: &str| -> (f64, f64) {
        let l = j["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name || l["tensor"] == format!("{name}.weight"))
            .unwrap_or_else(|| panic!("no layer {name}: {j}"));
        (
            l["direct_sparsity"].as_f64().unwrap(),
            l["effective_sparsity"].as_f64().unwrap(),
        )
    };
    for name in ["fc1", "fc2", "fc"] {
        assert_eq!(by_name(&i, name), by_name(&v, name), "{name}");
    }
    // Train the masked model: the masks come along and pruned weights stay exactly zero.
    let trained = tmp.path().join("trained");
    ok_json(&shears(&[
        "train",
        "--model",
        pruned.to_str().unwrap(),
        "--epochs",
        "1",
        "--train-limit",
        "512",
        "--test-limit",
        "100",
        "--batch-size",
        "64",
        "--json",
        "--out",
        trained.to_str().unwrap(),
    ]));
    let after = inspect(&trained);
    assert_eq!(after["direct_sparsity"], v["direct_sparsity"]);
    let before = load_model(&pruned).unwrap();
    let model = load_model(&trained).unwrap();
    assert_eq!(model.masks, before.masks);
    let mut moved = 0;
    for (name, mask) in &model.masks {
        let w = &model.weights[name];
        let w0 = &before.weights[name];
        for ((&keep, &v), &v0) in mask.iter().zip(w.iter()).zip(w0.iter()) {
            if keep {
                moved += usize::from(v != v0);
            } else {
                assert_eq!(v, 0.0, "pruned weight of {name} became {v}");
            }
        }
    }
    assert!(moved > 1000, "training changed only {moved} kept weights");
}

#[test]
fn apply_effective_removes_disconnected_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = prune(
        &tmp.path().join("raw"),
        &["--method", "random", "--compression", "300"],
    );
    let fixed = prune(
        &tmp.path().join("fixed"),
        &[
            "--method",
            "random",
            "--compression",
            "300",
            "--apply-effective",
        ],
    );
    assert_eq!(fixed["effective_sparsity"], raw["effective_sparsity"]);
    assert_eq!(fixed["direct_sparsity"], fixed["effective_sparsity"]);
    assert!(f(&fixed, "direct_sparsity") > f(&raw, "direct_sparsity") + 1e-3);
    let model = load_model(&tmp.path().join("fixed")).unwrap();
    let zeros: usize = model
        .masks
        .iter()
        .map(|(n, m)| {
            m.iter()
                .zip(model.weights[n].iter())
                .filter(|(k, w)| !**k && **w == 0.0)
                .count()
        })
        .sum();
    let pruned: usize = model.masks.values().flatten().filter(|k| !**k).count();
    assert_eq!(zeros, pruned);
}

/// `shears run` with a `[prune]` section and tiny limits; returns the report.
fn run_config(dir: &Path, prune_section: &str, extra: &[&str]) -> Value {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"t\"\n[model]\narch = \"lenet-300-100\"\n[train]\nepochs = 2\nbatch_size = 64\nlr = 0.05\n[prune]\n{prune_section}\n"
        ),
    )
    .unwrap();
    let out = dir.join("run");
    let mut a = vec![
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--train-limit",
        "512",
        "--test-limit",
        "200",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    ok_json(&shears(&a))
}

/// Per-epoch metrics of a phase without the wall-clock time.
fn metrics(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

#[test]
fn rewinding_retrains_the_initial_weights_under_the_final_mask() {
    let tmp = tempfile::tempdir().unwrap();
    let lt = run_config(
        &tmp.path().join("lt"),
        "sparsity = 0.75\nrewind = true\nrounds = 2",
        &[],
    );
    assert_eq!(lt["rewind"], true);
    assert_eq!(lt["rounds"], 2);
    assert!(
        (f(&lt, "direct_sparsity") - 0.75).abs() < 2.0 / LENET_WEIGHTS,
        "{lt}"
    );
    // Retraining after a rewind uses [train] (2 epochs); round 1 (to 50%) has its own phase.
    assert_eq!(lt["finetune_epochs"], 2);
    let run = tmp.path().join("lt/run");
    assert_eq!(metrics(&run.join("round1/metrics.jsonl")).len(), 2);
    // Independently: the initial weights (seed 0) under the final mask, trained by
    // `shears train` with the same settings, give exactly the last phase's metrics.
    let final_model = load_model(&run).unwrap();
    let graph = final_model.graph.clone();
    let mut weights = shears_core::init_weights(&graph, 0);
    for (name, m) in &final_model.masks {
        weights.get_mut(name).unwrap().zip_mut_with(m, |w, &k| {
            if !k {
                *w = 0.0
            }
        });
    }
    let ticket = tmp.path().join("ticket");
    shears_core::save_model(
        &ticket,
        &shears_core::Model {
            graph,
            weights,
            masks: final_model.masks.clone(),
        },
    )
    .unwrap();
    let retrained = tmp.path().join("retrained");
    ok_json(&shears(&[
        "train",
        "--model",
        ticket.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--lr",
        "0.05",
        "--train-limit",
        "512",
        "--test-limit",
        "200",
        "--json",
        "--out",
        retrained.to_str().unwrap(),
    ]));
    assert_eq!(
        metrics(&retrained.join("train/metrics.jsonl")),
        metrics(&run.join("finetune/metrics.jsonl"))
    );
    // Without rewinding, rounds fine-tune the trained weights with [finetune].
    let plain = run_config(
        &tmp.path().join("ft"),
        "sparsity = 0.75\nrounds = 2",
        &["--finetune-epochs", "1"],
    );
    assert_eq!(plain["rewind"], false);
    assert_eq!(plain["finetune_epochs"], 1);
    assert!((f(&plain, "direct_sparsity") - 0.75).abs() < 2.0 / LENET_WEIGHTS);
    assert_eq!(
        metrics(&tmp.path().join("ft/run/round1/metrics.jsonl")).len(),
        1
    );
}

#[test]
fn gradual_and_init_pruning_run_through_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let g = run_config(
        &tmp.path().join("g"),
        "sparsity = 0.9\nwhen = \"gradual\"",
        &[],
    );
    assert_eq!(g["when"], "gradual");
    assert!(g["accuracy_before_pruning"].is_null(), "{g}");
    assert!(
        (f(&g, "direct_sparsity") - 0.9).abs() < 2.0 / LENET_WEIGHTS,
        "{g}"
    );
    let rows = std::fs::read_to_string(tmp.path().join("g/run/train/metrics.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 2);
    // The checkpoint after the last epoch holds the final masks.
    let ck = load_model(&tmp.path().join("g/run/train/checkpoint")).unwrap();
    let kept: usize = ck.masks.values().flatten().filter(|k| **k).count();
    assert!((kept as f64 - 0.1 * LENET_WEIGHTS).abs() <= 2.0, "{kept}");

    let i = run_config(
        &tmp.path().join("i"),
        "sparsity = 0.95\nwhen = \"init\"\nmethod = \"snip\"\nscore_batches = 2\napply_effective = true",
        &[],
    );
    assert_eq!(i["when"], "init");
    assert_eq!(i["finetune_epochs"], 0);
    assert_eq!(i["direct_sparsity"], i["effective_sparsity"]);
    assert!(f(&i, "direct_sparsity") >= 0.95 - 2.0 / LENET_WEIGHTS);
    // Pruned at initialisation, the network is near chance; training brings it well above.
    assert!(f(&i, "accuracy_after_pruning") < 0.3, "{i}");
    assert!(f(&i, "accuracy_after_finetune") > 0.5, "{i}");
}

#[test]
fn bad_pruning_requests_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let p = |args: &[&str]| {
        let mut a = vec![
            "prune",
            "--model",
            "lenet-300-100",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(args);
        err_text(&shears(&a))
    };
    let e = p(&["--method", "snap", "--sparsity", "0.5"]);
    assert!(e.contains("snap") && e.contains("synflow"), "{e}");
    let e = p(&["--method", "synflow", "--quota", "igq", "--sparsity", "0.5"]);
    assert!(e.contains("global"), "{e}");
    let e = p(&["--sparsity", "0.5", "--compression", "2"]);
    assert!(
        e.contains("--compression") || e.contains("cannot be used"),
        "{e}"
    );
    let e = p(&["--compression", "0.5"]);
    assert!(e.contains("--compression must be"), "{e}");
    let e = p(&["--quota", "igq", "--sparsity", "1.0"]);
    assert!(e.contains("[0, 1)"), "{e}");
    // An effective target below what the existing masks already give is unreachable.
    let pre = tmp.path().join("pre");
    prune(&pre, &["--method", "random", "--compression", "1000"]);
    let e = err_text(&shears(&[
        "prune",
        "--model",
        pre.to_str().unwrap(),
        "--sparsity",
        "0.5",
        "--target-kind",
        "effective",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("unreachable"), "{e}");
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[prune]\nsparsity = 0.5\nwhen = \"sometimes\"\n").unwrap();
    let e = err_text(&shears(&["run", "--config", cfg.to_str().unwrap()]));
    assert!(e.contains("sometimes") && e.contains("gradual"), "{e}");
    std::fs::write(
        &cfg,
        "[prune]\nsparsity = 0.5\nwhen = \"init\"\nrewind = true\n",
    )
    .unwrap();
    let e = err_text(&shears(&["run", "--config", cfg.to_str().unwrap()]));
    assert!(e.contains("rewind"), "{e}");
}
