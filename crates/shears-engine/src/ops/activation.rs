//! Burn forward of [`Activation`]: differentiable through autodiff, equal to
//! [`Activation::apply`] within float rounding.

use burn::tensor::{Tensor, activation};
use shears_core::ops::Activation;

/// `f` applied elementwise to a tensor of any rank.
pub fn forward<const D: usize>(f: Activation, x: Tensor<D>) -> Tensor<D> {
    match f {
        Activation::Sigmoid => activation::sigmoid(x),
        Activation::HardSigmoid { alpha, beta } => {
            activation::hard_sigmoid(x, alpha as f64, beta as f64)
        }
        Activation::HardSwish => {
            // x * hard_sigmoid(x; 1/6, 1/2), written out so the slope is PyTorch's 1/6.
            let gate = activation::hard_sigmoid(x.clone(), 1.0 / 6.0, 0.5);
            x * gate
        }
        Activation::Silu => activation::silu(x),
        Activation::Gelu => activation::gelu(x),
        Activation::LeakyRelu { alpha } => activation::leaky_relu(x, alpha as f64),
        Activation::Tanh => activation::tanh(x),
        Activation::Clip { min, max } => {
            let x = if min.is_finite() { x.clamp_min(min) } else { x };
            if max.is_finite() { x.clamp_max(max) } else { x }
        }
    }
}
