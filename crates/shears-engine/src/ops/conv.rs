//! Burn forward of a convolution outside a BatchNorm fold: shears' kernels on a flex device
//! where they apply (`use_kernels` decides: depthwise inference stays on flex's own kernel),
//! with the bias (and a ReLU the executor planned after it) in the kernel's epilogue; Burn's
//! conv elsewhere. The folded paths (BatchNorm, residual epilogues) are the executor's, which
//! plans them across nodes.

use crate::fast_ops;
use burn::tensor::Tensor;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

/// `x` convolved by `weight` (`[out, in/groups, kh, kw]`) plus `bias`, and the ReLU after it
/// when `relu` is asked and the kernels take the layer with its bias: the output and whether the
/// ReLU was applied (the caller then skips its own). In the epilogue, the bias add, its gradient
/// and the ReLU do not run as Burn's single-threaded tensor ops (LeNet-5's layers).
pub fn forward(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    opts: &ConvOptions<2>,
    use_kernels: &dyn Fn(&shears_kernels::ConvGeometry) -> bool,
    relu: bool,
) -> (Tensor<4>, bool) {
    let shape: [usize; 4] = weight.dims();
    match (geometry(&x, &shape, opts).filter(|g| use_kernels(g)), bias) {
        (Some(g), Some(b)) => (fast_ops::conv2d_bias(x, weight, b, g, relu), relu),
        (Some(g), None) => (fast_ops::conv2d(x, weight, g), false),
        (None, bias) => (conv2d(x, weight, bias, opts.clone()), false),
    }
}

/// The kernels' geometry of a conv of `x` by a `shape` weight, or `None` for asymmetric
/// padding (which only Burn's conv takes).
pub fn geometry(
    x: &Tensor<4>,
    shape: &[usize; 4],
    opts: &ConvOptions<2>,
) -> Option<shears_kernels::ConvGeometry> {
    let [batch, in_channels, in_h, in_w] = x.dims();
    let [(t, b), (l, r)] = opts.padding;
    (t == b && l == r).then_some(shears_kernels::ConvGeometry {
        batch,
        in_channels,
        in_h,
        in_w,
        out_channels: shape[0],
        kernel: [shape[2], shape[3]],
        stride: opts.stride,
        padding: [t, l],
        dilation: opts.dilation,
        groups: opts.groups,
    })
}
