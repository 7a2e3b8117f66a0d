//! A model shears exports runs in onnxruntime with the outputs of shears' reference forward pass,
//! and times. Skipped, saying so, where no onnxruntime library is found.

use shears_core::artifact::Model;
use shears_core::{Masks, init_weights, zoo};
use shears_ort::{Bench, fixed_input, runtime};

#[test]
fn an_exported_model_runs_in_onnxruntime_as_in_shears_and_is_timed() {
    if let Err(e) = runtime() {
        eprintln!("SKIPPED: {e}");
        return;
    }
    let graph = zoo::build("small-cnn", &[1, 28, 28], 10).unwrap();
    let weights = init_weights(&graph, 3);
    let model = Model {
        graph,
        weights,
        masks: Masks::new(),
    };
    let bytes = shears_onnx::to_onnx_bytes(&model).unwrap();
    let mut bench = Bench::new(&bytes, &[1, 28, 28], 2, 1).unwrap();
    let got = bench.outputs().unwrap();
    let x = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 1, 28, 28]), fixed_input(2 * 784))
        .unwrap();
    let want = shears_core::reference::forward(&model.graph, &model.weights, None, &x).unwrap();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want.iter())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-4 * scale,
        "onnxruntime differs from shears by {diff}"
    );
    let t = bench.time(2, 5).unwrap();
    assert!(t.median_ms > 0.0 && t.p90_ms >= t.median_ms, "{t:?}");
    // A model onnxruntime cannot read is an error, not a crash.
    let e = Bench::new(b"not onnx", &[1, 28, 28], 1, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("onnxruntime:"), "{e}");
}

/// The largest absolute difference between onnxruntime's outputs and shears' reference, scaled.
fn ort_vs_reference(model: &Model, input: &[usize], batch: usize) -> f32 {
    let bytes = shears_onnx::to_onnx_bytes(model).unwrap();
    let mut bench = Bench::new(&bytes, input, batch, 1).unwrap();
    let got = bench.outputs().unwrap();
    let numel: usize = input.iter().product();
    let mut shape = vec![batch];
    shape.extend_from_slice(input);
    let x = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), fixed_input(batch * numel))
        .unwrap();
    let want = shears_core::reference::forward(&model.graph, &model.weights, None, &x).unwrap();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want.iter())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// Exports zoo model `name` dense and with a third of every prunable group compacted away, runs
/// both in onnxruntime against shears' reference, and returns the compacted model.
fn dense_and_compacted_match_in_onnxruntime(name: &str, input: &[usize]) -> Model {
    use shears_core::structured::{ChannelSelection, channel_groups, compact};
    let graph = zoo::build(name, input, 10).unwrap();
    let weights = init_weights(&graph, 3);
    let model = Model {
        graph: graph.clone(),
        weights: weights.clone(),
        masks: Masks::new(),
    };
    let d = ort_vs_reference(&model, input, 2);
    assert!(d <= 1e-4, "dense {name}: onnxruntime differs by {d}");
    let mut selection = ChannelSelection::default();
    for g in channel_groups(&graph)
        .unwrap()
        .iter()
        .filter(|g| g.prunable)
    {
        let kept = (0..g.channels).filter(|c| c % 3 != 1).collect();
        selection.kept.insert(g.id, kept);
    }
    let (small, small_weights) = compact(&graph, &weights, &selection).unwrap();
    let model = Model {
        graph: small,
        weights: small_weights,
        masks: Masks::new(),
    };
    let d = ort_vs_reference(&model, input, 2);
    assert!(d <= 1e-4, "compacted {name}: onnxruntime differs by {d}");
    model
}

/// A vision transformer's export (tokens, class token, position table, attention as
/// Reshape/Transpose/Gather/MatMul/Softmax, LayerNormalization, MatMul linears, class pooling)
/// runs in onnxruntime as in shears, dense and compacted to fewer heads, MLP channels and a
/// narrower embedding.
#[test]
fn a_vision_transformer_exports_to_onnxruntime_dense_and_compacted() {
    if let Err(e) = runtime() {
        eprintln!("SKIPPED: {e}");
        return;
    }
    let small = dense_and_compacted_match_in_onnxruntime("vit-tiny", &[3, 8, 8]);
    let heads: Vec<usize> = small
        .graph
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            shears_core::graph::Op::Attention(a) => Some(a.heads),
            _ => None,
        })
        .collect();
    assert_eq!(heads, vec![2; 6], "3 heads, one removed per block");
}

/// A Swin transformer's export (padding, the roll as Slice and Concat, windows as Reshape and
/// Transpose, the position table as a Gather of its rows, the shift mask, crops and the strided
/// Slices of patch merging) runs in onnxruntime as in shears, dense and compacted to fewer heads
/// (their table columns with them), MLP channels and narrower stages.
#[test]
fn a_swin_transformer_exports_to_onnxruntime_dense_and_compacted() {
    if let Err(e) = runtime() {
        eprintln!("SKIPPED: {e}");
        return;
    }
    let small = dense_and_compacted_match_in_onnxruntime("swin-tiny", &[3, 16, 16]);
    let heads: Vec<usize> = small
        .graph
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            shears_core::graph::Op::WindowAttention(a) => Some(a.heads),
            _ => None,
        })
        .collect();
    assert_eq!(
        heads,
        vec![2, 2, 4, 4, 8, 8],
        "a third of the heads removed"
    );
    assert_eq!(
        small.weights["stage1_block0_attn.bias_table"].shape(),
        &[169, 4]
    );
}
