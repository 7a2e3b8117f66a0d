//! Burn forwards of the transformer ops on token sequences `[N,T,C]` (channels last): patch map to
//! tokens, class token, position table, multi-head attention, LayerNorm over the channels of each
//! token and token pooling. Each matches its reference rule in `shears_core::ops`.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use shears_core::ops::{Attention, TokenPoolMode};

/// `[N,C,H,W]` to `[N,H*W,C]`.
pub fn tokenize(x: Tensor<4>) -> Tensor<3> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).swap_dims(1, 2)
}

/// The learned `[C]` token in front of every sample's sequence.
pub fn class_token(x: Tensor<3>, token: Tensor<1>) -> Tensor<3> {
    let [n, _, c] = x.dims();
    let token = token.reshape([1, 1, c]).repeat_dim(0, n);
    Tensor::cat(vec![token, x], 1)
}

/// `x + table` with the `[T,C]` table broadcast over the batch.
pub fn position_embedding(x: Tensor<3>, table: Tensor<1>) -> Tensor<3> {
    let [_, t, c] = x.dims();
    x + table.reshape([1, t, c])
}

/// `softmax(q kᵀ * scale) v` per head, from packed `[N,T,3*H*D]` to `[N,T,H*D]`.
pub fn attention(x: Tensor<3>, a: &Attention) -> Tensor<3> {
    let [n, t, _] = x.dims();
    let (h, d) = (a.heads, a.head_dim);
    let part = |k: usize| -> Tensor<4> {
        x.clone()
            .narrow(2, k * h * d, h * d)
            .reshape([n, t, h, d])
            .swap_dims(1, 2)
    };
    let (q, k, v) = (part(0), part(1), part(2));
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(a.scale);
    let weights = softmax(scores, 3);
    weights.matmul(v).swap_dims(1, 2).reshape([n, t, h * d])
}

/// LayerNorm over the channels (last axis) of every token, scale `w` and shift `b`; with
/// `keep` (a 0/1 gate on the input's channels) the statistics leave the gated channels out and
/// those outputs are zero, as in the compacted network that no longer has them.
pub fn layer_norm(
    x: Tensor<3>,
    w: Tensor<1>,
    b: Tensor<1>,
    eps: f64,
    keep: Option<Tensor<1>>,
) -> Tensor<3> {
    let [_, _, c] = x.dims();
    let per_channel = |t: Tensor<1>| t.reshape([1, 1, c]);
    let (w, b) = (per_channel(w), per_channel(b));
    match keep {
        None => {
            let mean = x.clone().mean_dim(2);
            let centred = x - mean;
            let var = centred.clone().powi_scalar(2).mean_dim(2);
            centred / (var + eps).sqrt() * w + b
        }
        Some(keep) => {
            let kept = keep.clone().sum().into_scalar::<f32>().max(1.0);
            let m = per_channel(keep);
            let mean = (x.clone() * m.clone()).sum_dim(2) / kept;
            let centred = (x - mean) * m.clone();
            let var = centred.clone().powi_scalar(2).sum_dim(2) / kept;
            (centred / (var + eps).sqrt() * w + b) * m
        }
    }
}

/// `[N,T,C]` to `[N,C]`: the first token or the mean over tokens.
pub fn pool(x: Tensor<3>, mode: TokenPoolMode) -> Tensor<2> {
    let [n, _, c] = x.dims();
    match mode {
        TokenPoolMode::Class => x.narrow(1, 0, 1).reshape([n, c]),
        TokenPoolMode::Mean => x.mean_dim(1).reshape([n, c]),
    }
}
