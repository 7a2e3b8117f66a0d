//! Burn forwards of the per-channel ops with stored tensors: LayerNorm over the channels of each
//! position, and the per-channel affine. Both take `[N,C,H,W]`; vectors come as `[N,C,1,1]`.

use burn::tensor::Tensor;

/// LayerNorm over axis 1 with scale `w` and shift `b` (`[C]`). With `keep` (a 0/1 gate on the
/// input's channels) the statistics leave the gated channels out and those outputs are zero, as
/// in the compacted network that no longer has them.
pub fn layer_norm(
    x: Tensor<4>,
    w: Tensor<1>,
    b: Tensor<1>,
    eps: f64,
    keep: Option<Tensor<1>>,
) -> Tensor<4> {
    let [_, c, _, _] = x.dims();
    let per_channel = |t: Tensor<1>| t.reshape([1, c, 1, 1]);
    let (w, b) = (per_channel(w), per_channel(b));
    match keep {
        None => {
            let mean = x.clone().mean_dim(1);
            let centred = x - mean;
            let var = centred.clone().powi_scalar(2).mean_dim(1);
            centred / (var + eps).sqrt() * w + b
        }
        Some(keep) => {
            let kept = keep.clone().sum().into_scalar::<f32>().max(1.0);
            let m = per_channel(keep);
            let mean = (x.clone() * m.clone()).sum_dim(1) / kept;
            let centred = (x - mean) * m.clone();
            let var = centred.clone().powi_scalar(2).sum_dim(1) / kept;
            (centred / (var + eps).sqrt() * w + b) * m
        }
    }
}

/// `x * scale[c] + shift[c]`.
pub fn affine(x: Tensor<4>, scale: Tensor<1>, shift: Tensor<1>) -> Tensor<4> {
    let [_, c, _, _] = x.dims();
    x * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1])
}
