//! The block families of the torchvision zoo through the `shears` binary, on images the test
//! writes: a MobileNetV3 block (HardSwish, squeeze-excitation with HardSigmoid) and an
//! EfficientNet MBConv (SiLU, squeeze-excitation with Sigmoid), both PyTorch exports, pruned by
//! every structured method and fine-tuned, the fine-tuning lowering the training loss; a
//! BatchNorm-scale method on a network without BatchNorm (a ConvNeXt block) is a clear error.

mod common;
use common::{err_text, ok_json, shears};

use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../shears-onnx/tests/fixtures/blocks/{name}.onnx",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Three classes of 20x20 colour images told apart by colour and stripes, with per-image noise.
fn write_folder(dir: &Path, n_train: u32, n_test: u32) {
    for (c, class) in ["red", "blue", "stripes"].into_iter().enumerate() {
        for (split, n) in [("train", n_train), ("test", n_test)] {
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..n {
                let tint = ((i * 37 + c as u32 * 11) % 40) as u8;
                RgbImage::from_fn(20, 20, |x, y| match class {
                    "red" => Rgb([200 + tint / 2, 30 + tint, 40]),
                    "blue" => Rgb([30, 40 + tint, 210 - tint]),
                    _ if (y / 3) % 2 == 0 => Rgb([220, 220 - tint, 220]),
                    _ => Rgb([20 + (x % 5) as u8, 20, 20 + tint]),
                })
                .save(folder.join(format!("{i:03}.png")))
                .unwrap();
            }
        }
    }
}

/// Every `metrics.jsonl` under `dir` (one per training phase), as lists of train losses.
fn phase_losses(dir: &Path) -> Vec<(PathBuf, Vec<f64>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "metrics.jsonl") {
                let losses = std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        v["train_loss"].as_f64().unwrap()
                    })
                    .collect();
                out.push((p, losses));
            }
        }
    }
    out
}

/// The fine-tuning phase's losses (the phase directory named `finetune`, else the only one).
fn finetune_losses(run: &Path) -> Vec<f64> {
    let phases = phase_losses(run);
    let pick = phases
        .iter()
        .find(|(p, _)| p.components().any(|c| c.as_os_str() == "finetune"))
        .or(phases.first())
        .unwrap_or_else(|| panic!("no metrics under {}", run.display()));
    pick.1.clone()
}

fn assert_pruned_and_fine_tuned(what: &str, report: &serde_json::Value, run: &Path) {
    let (before, after) = (
        report["macs_before"].as_u64().unwrap(),
        report["macs_after"].as_u64().unwrap(),
    );
    assert!(after < before, "{what}: MACs {before} -> {after}");
    // prune's own check: the compacted network computes what the gated dense one does.
    let diff = report["compaction_max_abs_diff"].as_f64().unwrap();
    let scale = report["compaction_output_scale"].as_f64().unwrap();
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "{what}: compaction changed the output by {diff}"
    );
    let acc = report["accuracy_after_finetune"].as_f64().unwrap();
    assert!(
        acc.is_finite() && (0.0..=1.0).contains(&acc),
        "{what}: {report}"
    );
    let losses = finetune_losses(run);
    assert!(losses.len() >= 3, "{what}: {losses:?}");
    assert!(
        losses.last().unwrap() < losses.first().unwrap(),
        "{what}: fine-tuning did not lower the loss: {losses:?}"
    );
}

const ONE_SHOT: &[&str] = &[
    "l1-filter",
    "l2-filter",
    "random-filter",
    "taylor",
    "bn-scale",
];

#[test]
fn mobilenet_v3_and_efficientnet_blocks_prune_and_fine_tune_with_every_one_shot_method() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    write_folder(&images, 16, 6);
    for block in ["hardswish_ir", "silu_mbconv"] {
        for method in ONE_SHOT {
            let out = tmp.path().join(format!("{block}-{method}"));
            let report = ok_json(&shears(&[
                "prune",
                "--model",
                &fixture(block),
                "--method",
                method,
                "--macs-reduction",
                "0.4",
                "--dataset",
                "image-folder",
                "--data",
                s(&images),
                "--finetune-epochs",
                "4",
                "--batch-size",
                "8",
                "--finetune-lr",
                "0.02",
                "--no-latency",
                "--out",
                s(&out),
                "--json",
            ]));
            assert_pruned_and_fine_tuned(&format!("{block} {method}"), &report, &out);
        }
    }
}

/// Slimming, MaskSparsity and PAAM train the network themselves: through `shears run`.
#[test]
fn mobilenet_v3_and_efficientnet_blocks_run_slimming_masksparsity_and_paam() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    write_folder(&images, 16, 6);
    let methods = [
        (
            "slimming",
            "name = \"slimming\"\nlambda = 0.01\nsparsity_epochs = 1\npercentile = 0.3\n",
        ),
        (
            "masksparsity",
            "name = \"masksparsity\"\nmask = \"slimming\"\nmask_epochs = 1\nmacs_reduction = 0.3\n\
             lambda = 0.05\nsparsity_epochs = 1\nsparsity_lr = 0.05\ncut = \"mask\"\n",
        ),
        (
            "paam",
            "name = \"paam\"\nparams_reduction = 0.3\nlambda = 0.1\nscorer = \"attention\"\n\
             activation = \"leaky-exp\"\nattention_lr = 0.01\nprune_start = 0.25\nprune_end = 0.75\n",
        ),
    ];
    for block in ["hardswish_ir", "silu_mbconv"] {
        for (method, section) in methods {
            let config = format!(
                "name = \"{block}-{method}\"\nseed = 0\n\n[model]\narch = \"{}\"\n\n\
                 [data]\ndataset = \"image-folder\"\ndir = \"{}\"\n\n\
                 [train]\nepochs = 2\nbatch_size = 8\nlr = 0.02\n\n[method]\n{section}\n\
                 [finetune]\nepochs = 3\nbatch_size = 8\nlr = 0.01\n\n\
                 [latency]\nbatches = [1]\nthreads = [1]\nwarmup = 1\nrepeats = 2\nrounds = 1\n",
                fixture(block),
                images.display()
            );
            let path = tmp.path().join(format!("{block}-{method}.toml"));
            std::fs::write(&path, config).unwrap();
            let out = tmp.path().join(format!("run-{block}-{method}"));
            let report = ok_json(&shears(&[
                "run",
                "--config",
                s(&path),
                "--out",
                s(&out),
                "--json",
            ]));
            assert_pruned_and_fine_tuned(&format!("{block} {method}"), &report, &out);
        }
    }
}

#[test]
fn a_batchnorm_method_on_a_network_without_batchnorm_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    write_folder(&images, 4, 2);
    let e = err_text(&shears(&[
        "prune",
        "--model",
        &fixture("convnext_block"),
        "--method",
        "bn-scale",
        "--macs-reduction",
        "0.3",
        "--dataset",
        "image-folder",
        "--data",
        s(&images),
        "--no-latency",
        "--out",
        s(&tmp.path().join("cnx")),
    ]));
    assert!(e.to_lowercase().contains("batchnorm"), "{e}");
    // The same network prunes by filter norms.
    let report = ok_json(&shears(&[
        "prune",
        "--model",
        &fixture("convnext_block"),
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.3",
        "--dataset",
        "image-folder",
        "--data",
        s(&images),
        "--no-latency",
        "--out",
        s(&tmp.path().join("cnx-l1")),
        "--json",
    ]));
    assert!(report["macs_after"].as_u64() < report["macs_before"].as_u64());
}
