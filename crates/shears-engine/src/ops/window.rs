//! Burn forwards of Swin's map ops: spatial slices (crops and 2x2 phases) and shifted-window
//! attention on `[N, 3*H*D, Hp, Wp]` maps. Each matches its reference rule in `shears_core::ops`
//! and is differentiable through Burn's autodiff (gathers, reshapes and matrix products only).

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use shears_core::ops::{SpatialSlice, WindowAttention};

/// Rows `start..end` by `step` and likewise the columns.
pub fn spatial_slice(x: Tensor<4>, s: &SpatialSlice) -> Tensor<4> {
    let device = x.device();
    let mut x = x;
    for (axis, dim) in [(0usize, 2usize), (1, 3)] {
        let (start, end, step) = (s.start[axis], s.end[axis], s.step[axis]);
        let size = x.dims()[dim];
        x = if step == 1 {
            if (start, end) == (0, size) {
                x
            } else {
                x.narrow(dim, start, end - start)
            }
        } else {
            let picks: Vec<i64> = (start..end).step_by(step).map(|i| i as i64).collect();
            let len = picks.len();
            x.select(
                dim,
                Tensor::<1, Int>::from_data(TensorData::new(picks, [len]), &device),
            )
        };
    }
    x
}

/// `x` rolled along `dim` so that position `first` comes first.
fn roll(x: Tensor<4>, dim: usize, first: usize) -> Tensor<4> {
    let size = x.dims()[dim];
    if first % size == 0 {
        return x;
    }
    Tensor::cat(
        vec![
            x.clone().narrow(dim, first, size - first),
            x.narrow(dim, 0, first),
        ],
        dim,
    )
}

/// The constants of a window attention on a `[hp, wp]` map, made once per executor: the table
/// row of every token pair of a window (`[N*N]`) and, when shifted, the mask `[windows, 1, N, N]`.
pub fn constants(
    a: &WindowAttention,
    [hp, wp]: [usize; 2],
    device: &Device,
) -> (Tensor<1, Int>, Option<Tensor<4>>) {
    let t = a.tokens();
    let index: Vec<i64> = a.relative_index().into_iter().map(|i| i as i64).collect();
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [t * t]), device);
    let windows = (hp / a.window) * (wp / a.window);
    let mask = a
        .mask([hp, wp])
        .map(|m| Tensor::<4>::from_data(TensorData::new(m, [windows, 1, t, t]), device));
    (index, mask)
}

/// Shifted-window attention with the relative position table `table` (`[(2w-1)² * heads]`
/// flattened) and the [`constants`] of its map.
pub fn window_attention(
    x: Tensor<4>,
    table: Tensor<1>,
    index: Tensor<1, Int>,
    mask: Option<Tensor<4>>,
    a: &WindowAttention,
) -> Tensor<4> {
    let [n, c3, hp, wp] = x.dims();
    let (h, d, w) = (a.heads, a.head_dim, a.window);
    let (hd, t, nh, nw) = (h * d, w * w, hp / w, wp / w);
    let (windows, b) = (nh * nw, n * nh * nw);
    let x = roll(roll(x, 2, a.shift[0]), 3, a.shift[1]);
    // [N, 3HD, nh, w, nw, w] → [N, nh, nw, w, w, 3HD] → [N*windows, tokens, 3HD]
    let x: Tensor<3> = x
        .reshape([n, c3, nh, w, nw, w])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([b, t, c3]);
    let part = |k: usize| -> Tensor<4> {
        x.clone()
            .narrow(2, k * hd, hd)
            .reshape([b, t, h, d])
            .swap_dims(1, 2)
    };
    let (q, k, v) = (part(0), part(1), part(2));
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(a.scale);
    let bias: Tensor<4> = table
        .reshape([a.table_rows(), h])
        .select(0, index)
        .reshape([t, t, h])
        .permute([2, 0, 1])
        .unsqueeze();
    let mut scores = scores + bias;
    if let Some(mask) = mask {
        let mask: Tensor<5> = mask.unsqueeze();
        scores = (scores.reshape([n, windows, h, t, t]) + mask).reshape([b, h, t, t]);
    }
    let out = softmax(scores, 3)
        .matmul(v)
        .swap_dims(1, 2)
        .reshape([n, nh, nw, w, w, hd])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([n, hd, hp, wp]);
    roll(roll(out, 2, hp - a.shift[0]), 3, wp - a.shift[1])
}
