//! The user's own images through the `shears` binary: a PyTorch model given as ONNX is pruned
//! and fine-tuned on a folder of colour PNG and JPEG images the test writes (brought to the
//! model's 1x28x28 input), evaluated on them, and bad folders are refused with clear errors.

mod common;
use common::{err_text, ok_json, shears, shears_env};

use image::{Rgb, RgbImage};
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shears-onnx/tests/fixtures/resnet.onnx"
);

/// One image of `class`: `dark` is near black, `light` near white, `stripes` has horizontal
/// bands; each is 40x32 RGB with a per-image tint so no two are alike.
fn picture(class: &str, i: u32) -> RgbImage {
    let tint = (i * 7 % 30) as u8;
    RgbImage::from_fn(40, 32, |x, y| {
        let v = match class {
            "dark" => 20 + tint,
            "light" => 220 - tint,
            _ if (y / 4) % 2 == 0 => 230,
            _ => 25,
        };
        Rgb([v, v.saturating_add((x % 3) as u8), v])
    })
}

/// `n_train` and `n_test` images per class; every third one a JPEG.
fn write_folder(dir: &Path, n_train: u32, n_test: u32) {
    for class in ["dark", "light", "stripes"] {
        for (split, n) in [("train", n_train), ("test", n_test)] {
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..n {
                let ext = if i % 3 == 0 { "jpg" } else { "png" };
                picture(class, i + if split == "test" { 1000 } else { 0 })
                    .save(folder.join(format!("{i:03}.{ext}")))
                    .unwrap();
            }
        }
    }
}

#[test]
fn an_onnx_model_is_pruned_and_fine_tuned_on_the_users_own_images() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    write_folder(&images, 24, 8);
    let out = tmp.path().join("pruned");
    let report = ok_json(&shears(&[
        "prune",
        "--model",
        FIXTURE,
        "--method",
        "l1-filter",
        "--macs-reduction",
        "0.5",
        "--dataset",
        "image-folder",
        "--data",
        s(&images),
        "--finetune-epochs",
        "4",
        "--batch-size",
        "8",
        "--finetune-lr",
        "0.05",
        "--no-latency",
        "--out",
        s(&out),
        "--json",
    ]));
    assert_eq!(report["dataset"], "image-folder");
    let after = report["accuracy_after_finetune"].as_f64().unwrap();
    eprintln!(
        "accuracy before {} after fine-tuning {after}",
        report["accuracy_before_pruning"]
    );
    // Three classes told apart by brightness and stripes: fine-tuning must beat chance (1/3).
    assert!(after > 0.6, "fine-tuned accuracy {after}: {report}");

    // The run records the data it saw and the normalisation it used.
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("data.json")).unwrap()).unwrap();
    assert_eq!(record["dataset"], "image-folder");
    assert_eq!(record["shape"], serde_json::json!([1, 28, 28]));
    assert_eq!(
        record["class_names"],
        serde_json::json!(["dark", "light", "stripes"])
    );
    assert_eq!(record["train_samples"], 72);
    assert_eq!(record["test_samples"], 24);
    let mean = record["normalization"]["mean"][0].as_f64().unwrap();
    // A third dark (~0.1), a third light (~0.85), a third half-and-half stripes (~0.5).
    assert!((0.4..0.6).contains(&mean), "{record}");

    let eval = ok_json(&shears(&[
        "eval",
        "--model",
        s(&out),
        "--dataset",
        "image-folder",
        "--data",
        s(&images),
        "--json",
    ]));
    assert_eq!(eval["samples"], 24);
    assert_eq!(eval["test_accuracy"].as_f64().unwrap(), after);
}

#[test]
fn bad_image_folders_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    write_folder(&images, 2, 1);
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--model", FIXTURE, "--dataset", "image-folder"];
        args.extend_from_slice(extra);
        err_text(&shears(&args))
    };
    let e = eval(&[]);
    assert!(
        e.contains("image-folder not found") && e.contains("pass --data DIR"),
        "{e}"
    );

    let broken = images.join("train/light/broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let e = eval(&["--data", s(&images)]);
    assert!(
        e.contains(&format!("{}: cannot decode the image", broken.display())),
        "{e}"
    );
    std::fs::remove_file(&broken).unwrap();

    std::fs::create_dir_all(images.join("train/empty")).unwrap();
    let e = eval(&["--data", s(&images)]);
    assert!(e.contains("class `empty` holds no image"), "{e}");
    std::fs::remove_dir(images.join("train/empty")).unwrap();

    std::fs::create_dir_all(images.join("test/zebra")).unwrap();
    picture("stripes", 0)
        .save(images.join("test/zebra/z.png"))
        .unwrap();
    let e = eval(&["--data", s(&images)]);
    assert!(e.contains("test class `zebra` has no folder in"), "{e}");

    // A config without the folder is refused before anything runs.
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "name = \"x\"\n[data]\ndataset = \"image-folder\"\n").unwrap();
    let e = err_text(&shears(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("run")),
    ]));
    assert!(e.contains("needs [data] dir"), "{e}");

    // One class is nothing to learn (it trained to 100 % without a word).
    let one = tmp.path().join("one");
    for split in ["train", "test"] {
        let folder = one.join(split).join("dark");
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..3 {
            picture("dark", i)
                .save(folder.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let e = err_text(&shears(&[
        "train",
        "--model",
        "small-cnn",
        "--input",
        "3x32x32",
        "--dataset",
        "image-folder",
        "--data",
        s(&one),
        "--epochs",
        "1",
        "--out",
        s(&tmp.path().join("one-run")),
    ]));
    assert!(e.contains("all of one class"), "{e}");
}

#[test]
fn a_zoo_model_trains_on_an_image_folder_at_the_input_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    write_folder(&images, 4, 2);
    let run = tmp.path().join("run");
    ok_json(&shears(&[
        "train",
        "--model",
        "small-cnn",
        "--input",
        "3x16x16",
        "--dataset",
        "image-folder",
        "--data",
        s(&images),
        "--epochs",
        "1",
        "--out",
        s(&run),
        "--json",
    ]));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("data.json")).unwrap()).unwrap();
    assert_eq!(record["shape"], serde_json::json!([3, 16, 16]));
    assert_eq!(record["classes"], 3);
    assert_eq!(record["normalization"]["std"].as_array().unwrap().len(), 3);

    // Evaluated on its own classes: no warning. On a folder whose classes are named otherwise:
    // a warning on stderr and in the JSON (it evaluated without a word).
    let eval = |data: &Path| {
        shears_env(
            &[
                "eval",
                "--model",
                s(&run),
                "--dataset",
                "image-folder",
                "--data",
                s(data),
                "--json",
            ],
            &[("SHEARS_LOG", "warn")],
        )
    };
    let same = eval(&images);
    assert!(ok_json(&same).get("warnings").is_none());
    let renamed = tmp.path().join("renamed");
    write_folder(&renamed, 4, 2);
    for split in ["train", "test"] {
        std::fs::rename(
            renamed.join(split).join("dark"),
            renamed.join(split).join("night"),
        )
        .unwrap();
    }
    let other = eval(&renamed);
    let v = ok_json(&other);
    let w = v["warnings"][0].as_str().unwrap();
    assert!(w.contains("dark") && w.contains("night"), "{w}");
    assert!(String::from_utf8_lossy(&other.stderr).contains("accuracy may mean nothing"));
}
