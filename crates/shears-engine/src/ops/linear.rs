//! Burn forward of a linear layer: `x Wᵀ + b` with the weight held transposed (`[in, out]`,
//! Burn's layout), as the executor stores it.

use burn::tensor::Tensor;
use burn::tensor::module::linear;

pub fn forward(x: Tensor<2>, weight_in_out: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    linear(x, weight_in_out, bias)
}
