//! Burn forwards of the pools: windowed max and average pooling with PyTorch's `ceil_mode` and
//! `count_include_pad`, and global average pooling to `[N,C]` or `[N,C,1,1]`.

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use shears_core::ops::{Pool2d, Resize, ResizeMode};

pub fn max(x: Tensor<4>, a: &Pool2d) -> Tensor<4> {
    max_pool2d(
        x,
        MaxPoolOptions::new(a.kernel)
            .with_stride(a.stride)
            .with_padding(a.padding)
            .with_ceil_mode(a.ceil_mode),
    )
}

pub fn avg(x: Tensor<4>, a: &Pool2d) -> Tensor<4> {
    avg_pool2d(
        x,
        AvgPoolOptions::new(a.kernel)
            .with_stride(a.stride)
            .with_padding(a.padding)
            .with_count_include_pad(a.count_include_pad)
            .with_ceil_mode(a.ceil_mode),
    )
}

/// The spatial mean of `[N,C,H,W]`: `[N,C,1,1]` kept as a map, else flattened to `[N,C]`.
pub fn global_avg(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c, 1, 1])
}

/// Upsampling by integer factors: nearest (floor) or bilinear with half-pixel centres, as
/// [`Resize::taps`] defines them.
pub fn resize(x: Tensor<4>, r: &Resize) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let mode = match r.mode {
        ResizeMode::Nearest => InterpolateMode::Nearest,
        ResizeMode::Bilinear => InterpolateMode::Bilinear,
    };
    let mut opts = InterpolateOptions::new(mode);
    opts.align_corners = false;
    opts.output_size = Some([h * r.scale[0], w * r.scale[1]]);
    interpolate(x, opts)
}

/// The spatial maximum of `[N,C,H,W]` as `[N,C,1,1]`.
pub fn global_max(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).max_dim(2).reshape([n, c, 1, 1])
}
