//! Tiny PyTorch networks, one per block family of the CNN zoo (`scripts/block_fixtures.py`,
//! committed under `tests/fixtures/blocks/`): each imports with PyTorch's outputs, survives an
//! export and re-import, and a random cut of every prunable channel group compacts to a network
//! equal to the gated dense one; the compacted export runs in onnxruntime with shears' outputs
//! (skipped, with a note, where Python's onnxruntime is missing).

mod common;

use common::max_diff;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shears_core::reference::{forward, forward_with_channel_gates};
use shears_core::structured::{ChannelSelection, channel_groups, compact, selection_gates};
use shears_onnx::{export_onnx, import_onnx, import_onnx_bytes, to_onnx_bytes};
use std::path::PathBuf;
use std::process::Command;

/// The block families whose every op the importer maps.
const BLOCKS: &[&str] = &[
    "se_block",
    "hardswish_ir",
    "silu_mbconv",
    "leaky_csp",
    "act_zoo",
    "ceil_pool",
    "mean_head",
    "ghost_slice",
    "shuffle_unit",
    "res2net_split",
    "convnext_block",
    "groupnorm_block",
    "hrnet_fuse",
    "cbam_maxhead",
    // scripts/transformer_fixtures.py
    "tiny_vit",
    "torchvision_vit",
    "tiny_swin",
    "tiny_swin_unfolded",
    "timm_swin",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/blocks")
        .join(name)
}

/// A raw little-endian f32 tensor, shaped by the fixture's .json (`{"x": [...], "y": [...]}`).
fn tensor(name: &str, which: &str) -> ArrayD<f32> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{name}.json"))).unwrap())
            .unwrap();
    let shape: Vec<usize> = meta[which]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let bytes = std::fs::read(fixture(&format!("{name}.{which}.bin"))).unwrap();
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap()
}

/// A random selection keeping between one and all channels of every prunable group.
fn random_cut(groups: &[shears_core::structured::ChannelGroup], seed: u64) -> ChannelSelection {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sel = ChannelSelection::default();
    for g in groups.iter().filter(|g| g.prunable && g.channels > 1) {
        let mut kept: Vec<usize> = (0..g.channels).filter(|_| rng.random_bool(0.6)).collect();
        if kept.is_empty() {
            kept.push(rng.random_range(0..g.channels));
        }
        sel.kept.insert(g.id, kept);
    }
    sel
}

#[test]
fn block_fixtures_import_round_trip_and_compact_to_the_gated_network() {
    for name in BLOCKS {
        let model = import_onnx(&fixture(&format!("{name}.onnx")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let x = tensor(name, "x");
        let y = tensor(name, "y");
        let ours = forward(&model.graph, &model.weights, None, &x).unwrap();
        let d = max_diff(&ours, &y);
        assert!(
            d < 1e-4,
            "{name}: imported output differs from PyTorch's by {d}"
        );

        let again = import_onnx_bytes(&to_onnx_bytes(&model).unwrap(), name).unwrap();
        assert_eq!(again.graph.nodes.len(), model.graph.nodes.len(), "{name}");
        let d = max_diff(
            &forward(&again.graph, &again.weights, None, &x).unwrap(),
            &y,
        );
        assert!(
            d < 1e-4,
            "{name}: re-exported output differs from PyTorch's by {d}"
        );

        let groups = channel_groups(&model.graph).unwrap();
        let prunable = groups.iter().filter(|g| g.prunable).count();
        assert!(prunable > 0, "{name}: no prunable group");
        for seed in 0..3 {
            let sel = random_cut(&groups, seed);
            let gates = selection_gates(&model.graph, &sel).unwrap();
            let gated =
                forward_with_channel_gates(&model.graph, &model.weights, None, &gates, &x).unwrap();
            let (g, w) = compact(&model.graph, &model.weights, &sel)
                .unwrap_or_else(|e| panic!("{name} seed {seed}: {e}"));
            let compacted = forward(&g, &w, None, &x).unwrap();
            let d = max_diff(&compacted, &gated);
            assert!(
                d < 1e-4,
                "{name} seed {seed}: compacted differs from gated by {d}"
            );
            assert!(
                shears_core::cost(&g, shears_core::Convention::ConvLinear)
                    .unwrap()
                    .macs
                    < shears_core::cost(&model.graph, shears_core::Convention::ConvLinear)
                        .unwrap()
                        .macs,
                "{name} seed {seed}: the cut removed nothing"
            );
        }
    }
}

/// Squeeze-excitation ties the excitation conv's filters to the channels they scale, and the
/// squeeze conv's filters form a group of their own.
#[test]
fn squeeze_excitation_groups_follow_torch_prunings_rule() {
    let model = import_onnx(&fixture("se_block.onnx")).unwrap();
    let groups = channel_groups(&model.graph).unwrap();
    let producers = |g: &shears_core::structured::ChannelGroup| g.producers.join(",");
    let scaled = groups
        .iter()
        .find(|g| g.producers.iter().any(|p| p.contains("fc2")))
        .unwrap_or_else(|| panic!("no group holds the excitation conv: {groups:?}"));
    assert!(
        scaled.producers.len() >= 2 && scaled.prunable,
        "the excitation filters share a group with the scaled conv: {}",
        producers(scaled)
    );
    let squeeze = groups
        .iter()
        .find(|g| g.producers.iter().any(|p| p.contains("fc1")))
        .unwrap();
    assert_eq!(squeeze.producers.len(), 1, "{}", producers(squeeze));
    assert!(squeeze.prunable);
}

fn python() -> String {
    std::env::var("SHEARS_PYTHON").unwrap_or_else(|_| "python3".into())
}

const RUN: &str = r#"
import sys, numpy as np, onnx, onnxruntime as ort
path, xs, shape = sys.argv[1], sys.argv[2], [int(d) for d in sys.argv[3].split(",")]
onnx.checker.check_model(onnx.load(path), full_check=True)
sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
x = np.fromfile(xs, dtype="<f4").reshape(shape)
out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
out.astype("<f4").tofile(sys.argv[4])
"#;

#[test]
fn compacted_block_fixtures_run_in_onnxruntime() {
    let ok = Command::new(python())
        .args(["-c", "import numpy, onnx, onnxruntime"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("onnxruntime not installed for {}: skipped", python());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in BLOCKS {
        let model = import_onnx(&fixture(&format!("{name}.onnx"))).unwrap();
        let groups = channel_groups(&model.graph).unwrap();
        let (graph, weights) =
            compact(&model.graph, &model.weights, &random_cut(&groups, 7)).unwrap();
        let compacted = shears_core::Model {
            graph,
            weights,
            masks: Default::default(),
        };
        let path = dir.path().join(format!("{name}.onnx"));
        export_onnx(&compacted, &path).unwrap();
        let x = tensor(name, "x");
        let xs = dir.path().join("x.bin");
        std::fs::write(
            &xs,
            x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
        let ys = dir.path().join("y.bin");
        let shape: Vec<String> = x.shape().iter().map(|d| d.to_string()).collect();
        let out = Command::new(python())
            .args(["-c", RUN])
            .arg(&path)
            .arg(&xs)
            .arg(shape.join(","))
            .arg(&ys)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: onnxruntime failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = forward(&compacted.graph, &compacted.weights, None, &x).unwrap();
        let bytes = std::fs::read(&ys).unwrap();
        let got: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let got = ArrayD::from_shape_vec(IxDyn(want.shape()), got).unwrap();
        let d = max_diff(&got, &want);
        assert!(d < 1e-4, "{name}: onnxruntime differs from shears by {d}");
    }
}
