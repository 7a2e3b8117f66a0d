//! Burn forwards of the per-channel ops with stored tensors: LayerNorm over the channels of each
//! position (maps `[N,C,H,W]`, vectors as `[N,C,1,1]`, tokens `[N,T,C]`), GroupNorm over blocks of
//! channels and all positions, and the per-channel affine (maps and vectors).

use burn::tensor::Tensor;

/// LayerNorm over the channel axis `dim` (1 of a `[N,C,H,W]` map, 2 of `[N,T,C]` tokens) with
/// scale `w` and shift `b` (`[C]`). With `keep` (a 0/1 gate on the input's channels) the
/// statistics leave the gated channels out and those outputs are zero, as in the compacted
/// network that no longer has them.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    dim: usize,
    w: Tensor<1>,
    b: Tensor<1>,
    eps: f64,
    keep: Option<Tensor<1>>,
) -> Tensor<D> {
    let mut shape = [1usize; D];
    shape[dim] = x.dims()[dim];
    let per_channel = |t: Tensor<1>| t.reshape(shape);
    let (w, b) = (per_channel(w), per_channel(b));
    match keep {
        None => {
            let mean = x.clone().mean_dim(dim);
            let centred = x - mean;
            let var = centred.clone().powi_scalar(2).mean_dim(dim);
            centred / (var + eps).sqrt() * w + b
        }
        Some(keep) => {
            let kept = keep.clone().sum().into_scalar::<f32>().max(1.0);
            let m = per_channel(keep);
            let mean = (x.clone() * m.clone()).sum_dim(dim) / kept;
            let centred = (x - mean) * m.clone();
            let var = centred.clone().powi_scalar(2).sum_dim(dim) / kept;
            (centred / (var + eps).sqrt() * w + b) * m
        }
    }
}

/// `x * scale[c] + shift[c]`.
pub fn affine(x: Tensor<4>, scale: Tensor<1>, shift: Tensor<1>) -> Tensor<4> {
    let [_, c, _, _] = x.dims();
    x * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1])
}

/// GroupNorm of `[N,C,H,W]` in `groups` blocks with scale `w` and shift `b` (`[C]`); with `keep`
/// the statistics of a block leave its gated channels out and those outputs are zero.
pub fn group_norm(
    x: Tensor<4>,
    w: Tensor<1>,
    b: Tensor<1>,
    groups: usize,
    eps: f64,
    keep: Option<Tensor<1>>,
) -> Tensor<4> {
    let [n, c, h, wd] = x.dims();
    let per = c / groups;
    let blocks = |t: Tensor<4>| -> Tensor<3> { t.reshape([n, groups, per * h * wd]) };
    let affine = |t: Tensor<4>| t * w.reshape([1, c, 1, 1]) + b.reshape([1, c, 1, 1]);
    match keep {
        None => {
            let xb = blocks(x);
            let mean = xb.clone().mean_dim(2);
            let centred = xb - mean;
            let var = centred.clone().powi_scalar(2).mean_dim(2);
            affine((centred / (var + eps).sqrt()).reshape([n, c, h, wd]))
        }
        Some(keep) => {
            let m4 = keep.clone().reshape([1, c, 1, 1]);
            // Kept channels per block, times the positions: each block's element count.
            let counts: Tensor<3> = keep.reshape([1, groups, per]).sum_dim(2) * (h * wd) as f32;
            let counts = counts.clamp_min(1.0);
            let xb = blocks(x * m4.clone());
            let mean = xb.clone().sum_dim(2) / counts.clone();
            let centred = (xb - mean).reshape([n, c, h, wd]) * m4.clone();
            let var = blocks(centred.clone().powi_scalar(2)).sum_dim(2) / counts;
            let normed = blocks(centred) / (var + eps).sqrt();
            affine(normed.reshape([n, c, h, wd])) * m4
        }
    }
}
