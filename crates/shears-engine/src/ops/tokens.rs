//! Burn forwards of the transformer ops on token sequences `[N,T,C]` (channels last): patch map to
//! tokens, class token, position table, multi-head attention and token pooling (LayerNorm on
//! tokens is `layernorm::layer_norm` over axis 2). Each matches its reference rule in `shears_core::ops`.

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

/// `[N,T,C]` to `[N,C]`: the first token or the mean over tokens.
pub fn pool(x: Tensor<3>, mode: TokenPoolMode) -> Tensor<2> {
    let [n, _, c] = x.dims();
    match mode {
        TokenPoolMode::Class => x.narrow(1, 0, 1).reshape([n, c]),
        TokenPoolMode::Mean => x.mean_dim(1).reshape([n, c]),
    }
}
