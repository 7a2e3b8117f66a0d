//! Burn forward of a linear layer: `x Wᵀ + b` with the weight held transposed (`[in, out]`,
//! Burn's layout), as the executor stores it. With a bias on a flex device (`use_kernels`) it
//! runs through shears' kernels, which split the product over threads from a smaller size than
//! Burn's flex matmul and add the bias in the same call.

use crate::fast_ops;
use burn::tensor::Tensor;
use burn::tensor::module::linear;

pub fn forward(
    x: Tensor<2>,
    weight_in_out: Tensor<2>,
    bias: Option<Tensor<1>>,
    use_kernels: bool,
) -> Tensor<2> {
    match bias {
        Some(bias) if use_kernels => fast_ops::linear(x, weight_in_out, bias),
        bias => linear(x, weight_in_out, bias),
    }
}
