//! Model zoo: code-defined graphs of the classic pruning benchmarks, built by name.
//!
//! Every builder takes the per-sample input shape and the class count and returns a graph whose
//! output value is the logits `[classes]`. Input shapes are checked up front, so a shape that the
//! architecture cannot take is an [`CoreError::InvalidValue`] naming the model, never a panic
//! inside [`GraphBuilder`](crate::builder::GraphBuilder).

use crate::error::{CoreError, Result};
use crate::graph::Graph;

mod lenet;
mod mobilenet;
mod resnet;
mod small;
mod swin;
mod vgg;
mod vit;

/// Names accepted by [`build`], in the order tables and help texts list them.
pub const MODEL_NAMES: &[&str] = &[
    "lenet-300-100",
    "lenet-5",
    "small-cnn",
    "vgg-11",
    "vgg-16",
    "vgg-19",
    "resnet-20",
    "resnet-32",
    "resnet-56",
    "resnet-110",
    "resnet-18",
    "resnet-50",
    "mobilenet-v2",
    "vit-tiny",
    "swin-tiny",
];

/// A zoo builder: model name (for the graph and for errors), per-sample input shape, classes.
type BuildFn = fn(&str, &[usize], usize) -> Result<Graph>;

/// One registry entry.
struct Entry {
    name: &'static str,
    description: &'static str,
    build: BuildFn,
}

/// The registry; kept in the order of [`MODEL_NAMES`] (a test checks they agree).
const MODELS: &[Entry] = &[
    Entry {
        name: "lenet-300-100",
        description: "MLP 300-100 with ReLU on the flattened input (LeCun et al. 1998)",
        build: lenet::lenet_300_100,
    },
    Entry {
        name: "lenet-5",
        description: "LeNet-5: valid 5x5 convs 6 and 16 with max-pools, then FC 120-84",
        build: lenet::lenet_5,
    },
    Entry {
        name: "small-cnn",
        description: "quick 4-conv BN CNN (32-32-pool-64-64-pool-GAP) for demos and tests",
        build: small::small_cnn,
    },
    Entry {
        name: "vgg-11",
        description: "VGG-11 with BatchNorm, CIFAR style (GAP and one linear classifier)",
        build: |n, i, c| vgg::vgg(n, i, c, vgg::VGG11),
    },
    Entry {
        name: "vgg-16",
        description: "VGG-16 with BatchNorm, CIFAR style (GAP and one linear classifier)",
        build: |n, i, c| vgg::vgg(n, i, c, vgg::VGG16),
    },
    Entry {
        name: "vgg-19",
        description: "VGG-19 with BatchNorm, CIFAR style (GAP and one linear classifier)",
        build: |n, i, c| vgg::vgg(n, i, c, vgg::VGG19),
    },
    Entry {
        name: "resnet-20",
        description: "CIFAR ResNet-20 (He et al. 2016), 3x3 basic blocks, projection shortcuts",
        build: |n, i, c| resnet::cifar_resnet(n, i, c, 3),
    },
    Entry {
        name: "resnet-32",
        description: "CIFAR ResNet-32 (He et al. 2016), 5x3 basic blocks, projection shortcuts",
        build: |n, i, c| resnet::cifar_resnet(n, i, c, 5),
    },
    Entry {
        name: "resnet-56",
        description: "CIFAR ResNet-56 (He et al. 2016), 9x3 basic blocks, projection shortcuts",
        build: |n, i, c| resnet::cifar_resnet(n, i, c, 9),
    },
    Entry {
        name: "resnet-110",
        description: "CIFAR ResNet-110 (He et al. 2016), 18x3 basic blocks, projection shortcuts",
        build: |n, i, c| resnet::cifar_resnet(n, i, c, 18),
    },
    Entry {
        name: "resnet-18",
        description: "ResNet-18, CIFAR style (3x3 stem, no max-pool), basic blocks 64-512",
        build: resnet::resnet_18,
    },
    Entry {
        name: "resnet-50",
        description: "ResNet-50 v1.5, ImageNet style (7x7 stem, max-pool), bottleneck blocks",
        build: resnet::resnet_50,
    },
    Entry {
        name: "mobilenet-v2",
        description: "MobileNetV2, CIFAR style (stride 1 stem and second stage), ReLU for ReLU6",
        build: mobilenet::mobilenet_v2,
    },
    Entry {
        name: "vit-tiny",
        description: "ViT: 4x4 patches, width 192, 3 heads, depth 6, MLP 768, class token",
        build: |n, i, c| vit::vit(n, i, c, &vit::VIT_TINY),
    },
    Entry {
        name: "swin-tiny",
        description: "Swin: 2x2 patches, widths 48-96-192, heads 3-6-12, 2 blocks a stage, window 7",
        build: |n, i, c| swin::swin(n, i, c, &swin::SWIN_TINY),
    },
];

fn entry(name: &str) -> Option<&'static Entry> {
    MODELS.iter().find(|e| e.name == name)
}

/// Builds the zoo model `name` for a per-sample `input` shape and `classes` outputs.
pub fn build(name: &str, input: &[usize], classes: usize) -> Result<Graph> {
    let e = entry(name)
        .ok_or_else(|| CoreError::UnknownModel(name.to_string(), MODEL_NAMES.join(", ")))?;
    (e.build)(e.name, input, classes)
}

/// One-line description of a zoo model, or `None` for an unknown name.
pub fn describe(name: &str) -> Option<&'static str> {
    entry(name).map(|e| e.description)
}

fn invalid(model: &str, message: String) -> CoreError {
    CoreError::value(format!("model `{model}`"), message)
}

/// Checks what every model needs: at least one class and a valid `[C,H,W]` or `[F]` input.
fn check_common(model: &str, input: &[usize], classes: usize) -> Result<()> {
    if classes == 0 {
        return Err(invalid(
            model,
            "the class count must be at least 1, got 0".into(),
        ));
    }
    if !matches!(input.len(), 1 | 3) {
        return Err(invalid(
            model,
            format!("the input shape must be [C,H,W] or [F], got {input:?}"),
        ));
    }
    if input.contains(&0) {
        return Err(invalid(
            model,
            format!("the input shape {input:?} has a zero dimension"),
        ));
    }
    // Flatten and the cost model multiply dimensions; refuse shapes whose size overflows.
    if input
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .is_none()
    {
        return Err(invalid(
            model,
            format!("the input shape {input:?} has more elements than fit in memory"),
        ));
    }
    Ok(())
}

/// Checks for a convolutional model: an image `[C,H,W]` of at least `min_hw` x `min_hw` pixels.
fn check_image(model: &str, input: &[usize], classes: usize, min_hw: usize) -> Result<()> {
    check_common(model, input, classes)?;
    let [_, h, w] = input else {
        return Err(invalid(
            model,
            format!("is convolutional and needs a [C,H,W] image input, got {input:?}"),
        ));
    };
    if *h < min_hw || *w < min_hw {
        return Err(invalid(
            model,
            format!("needs an input of at least {min_hw}x{min_hw} pixels, got {h}x{w}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{Convention, cost};
    use crate::shape::infer_shapes;

    #[test]
    fn registry_matches_model_names_and_every_model_is_described() {
        let names: Vec<&str> = MODELS.iter().map(|e| e.name).collect();
        assert_eq!(names, MODEL_NAMES);
        for name in MODEL_NAMES {
            let d = describe(name).unwrap_or_else(|| panic!("{name} has no description"));
            assert!(!d.is_empty() && !d.contains('\n'), "{name}: {d:?}");
        }
        assert_eq!(describe("resnet-44"), None);
    }

    #[test]
    fn every_model_builds_on_cifar_and_fashion_mnist_shapes() {
        for name in MODEL_NAMES {
            for (input, classes) in [(&[3, 32, 32][..], 10), (&[1, 28, 28][..], 7)] {
                let g = build(name, input, classes)
                    .unwrap_or_else(|e| panic!("{name} on {input:?}: {e}"));
                assert_eq!(g.name, *name);
                assert_eq!(g.input.shape, input);
                let shapes = infer_shapes(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(shapes.get(&g.output), &vec![classes], "{name} on {input:?}");
                // The output is the logits: the final linear layer, not an activation.
                assert_eq!(g.output, "fc", "{name}");
                assert!(g.nodes.iter().all(|n| !n.name.contains('.')), "{name}");
            }
        }
    }

    #[test]
    fn unknown_model_lists_the_known_names() {
        let e = build("resnet-44", &[3, 32, 32], 10).unwrap_err();
        assert!(matches!(e, CoreError::UnknownModel(ref n, _) if n == "resnet-44"));
        let msg = e.to_string();
        assert!(msg.contains("unknown model `resnet-44`"), "{msg}");
        for name in MODEL_NAMES {
            assert!(msg.contains(name), "{msg} lacks {name}");
        }
    }

    #[test]
    fn zero_classes_is_an_error_for_every_model() {
        for name in MODEL_NAMES {
            let e = build(name, &[3, 32, 32], 0).unwrap_err();
            assert!(matches!(e, CoreError::InvalidValue { .. }), "{name}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("`{name}`")) && msg.contains("class count"),
                "{msg}"
            );
        }
    }

    #[test]
    fn bad_input_shapes_are_errors_naming_the_problem() {
        let cases: [(&str, &[usize], &str); 7] = [
            ("resnet-20", &[784], "needs a [C,H,W] image input"),
            ("small-cnn", &[3, 32], "must be [C,H,W] or [F]"),
            ("vgg-16", &[], "must be [C,H,W] or [F]"),
            ("mobilenet-v2", &[1, 3, 32, 32], "must be [C,H,W] or [F]"),
            ("lenet-300-100", &[3, 0, 32], "zero dimension"),
            ("lenet-5", &[3, 15, 32], "at least 16x16 pixels, got 15x32"),
            ("small-cnn", &[3, 8, 3], "at least 4x4 pixels, got 8x3"),
        ];
        for (name, input, needle) in cases {
            let e = build(name, input, 10).unwrap_err();
            assert!(matches!(e, CoreError::InvalidValue { .. }), "{name}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("model `{name}`")) && msg.contains(needle),
                "{name} {input:?}: {msg}"
            );
        }
        let huge = [usize::MAX, 2, 2];
        let msg = build("lenet-300-100", &huge, 10).unwrap_err().to_string();
        assert!(msg.contains("more elements"), "{msg}");
    }

    /// Every shape either builds a graph that shape-infers or is refused up front: the builder
    /// (which panics on misuse) must never see a shape the architecture cannot take.
    #[test]
    fn small_and_odd_inputs_never_panic() {
        for name in MODEL_NAMES {
            for (h, w) in [
                (1, 1),
                (2, 3),
                (3, 3),
                (4, 4),
                (5, 7),
                (15, 16),
                (16, 16),
                (17, 9),
            ] {
                match build(name, &[2, h, w], 3) {
                    Ok(g) => {
                        let s = infer_shapes(&g).unwrap_or_else(|e| panic!("{name} {h}x{w}: {e}"));
                        assert_eq!(s.get(&g.output), &vec![3]);
                    }
                    Err(e) => assert!(e.to_string().contains("at least"), "{name}: {e}"),
                }
            }
        }
        // Which models refuse tiny inputs, and exactly where the limit is.
        for (name, min) in [("lenet-5", 16), ("small-cnn", 4)] {
            assert!(build(name, &[1, min, min], 2).is_ok(), "{name} at {min}");
            assert!(
                build(name, &[1, min - 1, min], 2).is_err(),
                "{name} at {}",
                min - 1
            );
        }
        for name in [
            "vgg-16",
            "resnet-20",
            "resnet-18",
            "resnet-50",
            "mobilenet-v2",
        ] {
            assert!(build(name, &[1, 1, 1], 2).is_ok(), "{name} at 1x1");
        }
    }

    #[test]
    fn deep_models_build_quickly() {
        let t = std::time::Instant::now();
        for name in ["resnet-110", "resnet-50"] {
            let g = build(name, &[3, 32, 32], 10).unwrap_or_else(|e| panic!("{name}: {e}"));
            cost(&g, Convention::ConvLinear).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // Milliseconds in release; the bound is loose for unoptimised test builds on a busy machine.
        assert!(t.elapsed().as_millis() < 2000, "took {:?}", t.elapsed());
    }
}
