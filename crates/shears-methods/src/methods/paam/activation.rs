//! The activation that turns a filter's attention logit z into its score s.
//!
//! PAAM asks three things of it: scores in (0, 1], scores that start at 1 (the dense network)
//! and can move away from it, and a non-zero gradient over the whole domain. A monotone
//! function cannot meet all three strictly (a function that is 1 at its start and never above
//! 1 is flat after it), and the paper's formula is not public, so this is our reconstruction
//! [UNVERIFIED], with the paper's rejected alternative kept for the ablation:
//!
//! - `leaky-exp` (default): s = exp(z) for z < 0 and s = 1 + α·z for z ≥ 0. Logits start at
//!   0, so scores start at exactly 1; the gradient is exp(z) below 0 and α above, never 0. The
//!   price is that a score may exceed 1 by α·z (the penalty pulls it back), which is the
//!   requirement we relax.
//! - `sigmoid`: s = σ(T·z + z₀) with z₀ = logit(`sigmoid_start`), so scores start just below 1
//!   (σ never reaches it) and saturate as the paper describes.

use serde::{Deserialize, Serialize};
use shears_engine::burn::tensor::{Tensor, activation::sigmoid};

/// Which activation, as `[method] activation` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationKind {
    LeakyExp,
    Sigmoid,
}

impl ActivationKind {
    pub fn name(self) -> &'static str {
        match self {
            ActivationKind::LeakyExp => "leaky-exp",
            ActivationKind::Sigmoid => "sigmoid",
        }
    }
}

/// The activation with its constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// exp(z) below 0, 1 + alpha·z above.
    LeakyExp { alpha: f32 },
    /// σ(temperature·z + offset), offset = logit of the starting score.
    Sigmoid { temperature: f32, offset: f32 },
}

impl Activation {
    /// The sigmoid whose score at z = 0 is `start` (in (0, 1)).
    pub fn sigmoid(temperature: f32, start: f32) -> Activation {
        Activation::Sigmoid {
            temperature,
            offset: (start / (1.0 - start)).ln(),
        }
    }

    /// Scores of logits `z` (differentiable).
    pub fn apply(&self, z: Tensor<1>) -> Tensor<1> {
        match *self {
            // exp(min(z, 0)) + α·max(z, 0): exp(z) below 0, 1 + α·z above.
            Activation::LeakyExp { alpha } => {
                z.clone().clamp_max(0.0).exp() + z.clamp_min(0.0).mul_scalar(alpha)
            }
            Activation::Sigmoid {
                temperature,
                offset,
            } => sigmoid(z.mul_scalar(temperature).add_scalar(offset)),
        }
    }

    /// The score of one logit, on the host.
    pub fn value(&self, z: f32) -> f32 {
        match *self {
            Activation::LeakyExp { alpha } => {
                if z < 0.0 {
                    z.exp()
                } else {
                    1.0 + alpha * z
                }
            }
            Activation::Sigmoid {
                temperature,
                offset,
            } => 1.0 / (1.0 + (-(temperature * z + offset)).exp()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shears_engine::burn::tensor::{Device, TensorData};

    fn tensor(v: &[f32], device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
    }

    fn grid() -> Vec<f32> {
        // Both sides of 0, the kink itself, and far into the exponential tail.
        let mut z: Vec<f32> = (-80..=40).map(|i| i as f32 * 0.25).collect();
        z.extend([-1e-4, 1e-4, 0.0]);
        z
    }

    #[test]
    fn leaky_exp_starts_at_one_stays_positive_and_never_has_a_zero_gradient() {
        let a = Activation::LeakyExp { alpha: 0.01 };
        assert_eq!(a.value(0.0), 1.0);
        let device = Device::flex().autodiff();
        let z = grid();
        let x = tensor(&z, &device).require_grad();
        let s = a.apply(x.clone());
        let values = s.clone().inner().into_data().try_to_vec::<f32>().unwrap();
        let grads = s.sum().backward();
        let g = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for ((&z, &s), &g) in z.iter().zip(&values).zip(&g) {
            assert!(s > 0.0, "score {s} at z = {z}");
            // In (0, 1] below 0; above 0 only by α·z.
            if z <= 0.0 {
                assert!(s <= 1.0, "score {s} at z = {z}");
            } else {
                assert!((s - (1.0 + 0.01 * z)).abs() < 1e-6, "score {s} at z = {z}");
            }
            assert!((s - a.value(z)).abs() < 1e-6);
            // The gradient: exp(z) below 0, α above, and not 0 anywhere on the grid.
            assert!(g > 0.0, "zero gradient at z = {z}");
            let want = if z < 0.0 { z.exp() } else { 0.01 };
            if z != 0.0 {
                assert!(
                    (g - want).abs() <= 1e-6 + 1e-4 * want,
                    "{g} vs {want} at {z}"
                );
            }
        }
    }

    #[test]
    fn sigmoid_starts_below_one_and_saturates() {
        let a = Activation::sigmoid(1.0, 0.99);
        assert!((a.value(0.0) - 0.99).abs() < 1e-6);
        // Its gradient vanishes as scores saturate: the paper's reason to reject it.
        let device = Device::flex().autodiff();
        let x = tensor(&[-20.0, 0.0, 20.0], &device).require_grad();
        let grads = a.apply(x.clone()).sum().backward();
        let g = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(g[1] > 5e-3 && g[0] < 1e-6 && g[2] < 1e-6, "{g:?}");
    }
}
