//! Burn forward of a convolution outside a fusion: shears' kernels on a flex device where they
//! apply (`use_kernels` decides: depthwise inference stays on flex's own kernel), Burn's conv
//! elsewhere. The fused paths (BatchNorm folded, ReLU and residual epilogues) are the
//! executor's, which plans them across nodes.

use crate::fast_ops;
use burn::tensor::Tensor;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

/// `x` convolved by `weight` (`[out, in/groups, kh, kw]`) plus `bias`.
pub fn forward(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    opts: &ConvOptions<2>,
    use_kernels: &dyn Fn(&shears_kernels::ConvGeometry) -> bool,
) -> Tensor<4> {
    let shape: [usize; 4] = weight.dims();
    match geometry(&x, &shape, opts).filter(|g| use_kernels(g)) {
        Some(g) => {
            let y = fast_ops::conv2d(x, weight, g);
            match bias {
                Some(b) => y + b.reshape([1, shape[0], 1, 1]),
                None => y,
            }
        }
        None => conv2d(x, weight, bias, opts.clone()),
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
