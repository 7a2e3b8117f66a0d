//! Optimisers over the executor's flat parameter list: SGD (momentum, Nesterov, weight decay)
//! and Adam, with PyTorch's update rules. The state is a list of plain tensors, so a checkpoint
//! saves it as safetensors and a resumed run continues bit-identically.
//!
//! On the CPU (flex) a step is one fused pass over each parameter (`shears_kernels::sgd_step`,
//! `adam_step`); elsewhere it is composed of tensor ops. Both give the same bits.

use crate::error::{EngineError, Result};
use crate::fast_ops;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use shears_kernels::{AdamStep, SgdStep};

/// Which optimiser and its hyperparameters (the learning rate comes from the schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerConfig {
    Sgd {
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
    Adam {
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "adam_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
}

fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn adam_eps() -> f64 {
    1e-8
}

impl OptimizerConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::invalid("optimizer", m));
        match *self {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad(format!("momentum must be in [0, 1), got {momentum}"));
                }
                if nesterov && momentum == 0.0 {
                    return bad("nesterov needs a momentum above 0".into());
                }
                if !(weight_decay >= 0.0) {
                    return bad(format!("weight_decay must be >= 0, got {weight_decay}"));
                }
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                    return bad(format!("betas must be in [0, 1), got {beta1}, {beta2}"));
                }
                if !(eps > 0.0) || !(weight_decay >= 0.0) {
                    return bad("eps must be > 0 and weight_decay >= 0".into());
                }
            }
        }
        Ok(())
    }
}

/// Optimiser state: first and second moment buffers per parameter, and the step count.
pub struct Optimizer {
    pub config: OptimizerConfig,
    pub first: Vec<Option<Tensor<1>>>,
    pub second: Vec<Option<Tensor<1>>>,
    pub steps: u64,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, params: usize) -> Result<Optimizer> {
        config.validate()?;
        Ok(Optimizer {
            config,
            first: vec![None; params],
            second: vec![None; params],
            steps: 0,
        })
    }

    /// Updates one parameter (inner, non-autodiff tensors) and returns its new value.
    pub fn update(&mut self, i: usize, param: Tensor<1>, grad: Tensor<1>, lr: f64) -> Tensor<1> {
        let device = param.device();
        if fast_ops::enabled_on(&device) {
            self.update_fused(i, param, grad, lr, &device)
        } else {
            self.update_composed(i, param, grad, lr)
        }
    }

    /// [`Optimizer::update`] as one fused pass (`shears_kernels::sgd_step` / `adam_step`).
    fn update_fused(
        &mut self,
        i: usize,
        param: Tensor<1>,
        grad: Tensor<1>,
        lr: f64,
        device: &Device,
    ) -> Tensor<1> {
        let n = param.dims()[0];
        let zeros = || Tensor::<1>::zeros([n], device);
        match self.config {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                let step = SgdStep {
                    lr: lr as f32,
                    momentum: momentum as f32,
                    nesterov,
                    weight_decay: weight_decay as f32,
                };
                let previous = self.first[i].take();
                let first = previous.is_none();
                // Without momentum the buffer is never read: an empty stand-in.
                let buffer = match previous {
                    Some(b) => b,
                    None if momentum > 0.0 => zeros(),
                    None => Tensor::<1>::zeros([0], device),
                };
                let (p, b) = fast_ops::sgd_update(param, grad, buffer, step, first);
                if momentum > 0.0 {
                    self.first[i] = Some(b);
                }
                p
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let step =
                    AdamStep::new(lr, beta1, beta2, eps, weight_decay, (self.steps + 1) as i32);
                let (m, v) = (self.first[i].take(), self.second[i].take());
                let first = m.is_none() || v.is_none();
                let (p, m, v) = fast_ops::adam_update(
                    param,
                    grad,
                    m.unwrap_or_else(zeros),
                    v.unwrap_or_else(zeros),
                    step,
                    first,
                );
                self.first[i] = Some(m);
                self.second[i] = Some(v);
                p
            }
        }
    }

    /// [`Optimizer::update`] composed of tensor ops, for any device.
    fn update_composed(
        &mut self,
        i: usize,
        param: Tensor<1>,
        grad: Tensor<1>,
        lr: f64,
    ) -> Tensor<1> {
        match self.config {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                let mut g = grad;
                if weight_decay > 0.0 {
                    g = g + param.clone().mul_scalar(weight_decay);
                }
                if momentum > 0.0 {
                    let buf = match self.first[i].take() {
                        Some(b) => b.mul_scalar(momentum) + g.clone(),
                        None => g.clone(),
                    };
                    g = if nesterov {
                        g + buf.clone().mul_scalar(momentum)
                    } else {
                        buf.clone()
                    };
                    self.first[i] = Some(buf);
                }
                param - g.mul_scalar(lr)
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let mut g = grad;
                if weight_decay > 0.0 {
                    g = g + param.clone().mul_scalar(weight_decay);
                }
                let t = (self.steps + 1) as i32;
                let m = match self.first[i].take() {
                    Some(m) => m.mul_scalar(beta1) + g.clone().mul_scalar(1.0 - beta1),
                    None => g.clone().mul_scalar(1.0 - beta1),
                };
                let v = match self.second[i].take() {
                    Some(v) => {
                        v.mul_scalar(beta2) + g.clone().powi_scalar(2).mul_scalar(1.0 - beta2)
                    }
                    None => g.powi_scalar(2).mul_scalar(1.0 - beta2),
                };
                let mhat = m.clone().div_scalar(1.0 - beta1.powi(t));
                let vhat = v.clone().div_scalar(1.0 - beta2.powi(t));
                self.first[i] = Some(m);
                self.second[i] = Some(v);
                param - (mhat / (vhat.sqrt().add_scalar(eps))).mul_scalar(lr)
            }
        }
    }

    /// Call once after all parameters of a step were updated.
    pub fn finish_step(&mut self) {
        self.steps += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(v: &[f32]) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Device::flex())
    }
    fn v(x: Tensor<1>) -> Vec<f32> {
        crate::executor::to_vec(x)
    }
    fn close(a: &[f32], b: &[f32]) {
        assert!(
            a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6),
            "{a:?} != {b:?}"
        );
    }

    #[test]
    fn sgd_momentum_nesterov_and_weight_decay_follow_pytorch() {
        let cfg = OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.1,
        };
        let mut opt = Optimizer::new(cfg, 1).unwrap();
        // Step 1: g = 1 + 0.1*2 = 1.2; buf = 1.2; nesterov g' = 1.2 + 0.9*1.2 = 2.28; w = 2 - 0.1*2.28.
        let w = opt.update(0, t(&[2.0]), t(&[1.0]), 0.1);
        close(&v(w.clone()), &[2.0 - 0.228]);
        opt.finish_step();
        // Step 2: g = 1 + 0.1*1.772 = 1.1772; buf = 0.9*1.2 + 1.1772 = 2.2572; g' = 1.1772 + 0.9*2.2572.
        let w2 = opt.update(0, w, t(&[1.0]), 0.1);
        close(&v(w2), &[1.772 - 0.1 * (1.1772 + 0.9 * 2.2572)]);
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        let cfg = OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = Optimizer::new(cfg, 1).unwrap();
        // Bias-corrected first step: m̂ = g, v̂ = g², so w moves by lr·sign(g).
        let w = opt.update(0, t(&[1.0, -1.0]), t(&[0.5, -3.0]), 0.01);
        close(&v(w), &[0.99, -0.99]);
    }

    /// Three steps of every configuration through the fused kernels and through the composed
    /// tensor ops: the same bits for the parameters and the state.
    #[test]
    fn fused_and_composed_steps_give_the_same_bits() {
        let configs = [
            OptimizerConfig::Sgd {
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            },
            OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: false,
                weight_decay: 5e-4,
            },
            OptimizerConfig::Sgd {
                momentum: 0.8,
                nesterov: true,
                weight_decay: 0.1,
            },
            OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            OptimizerConfig::Adam {
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 1e-2,
            },
        ];
        let n = 70_001;
        let param: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0)
            .collect();
        for cfg in configs {
            let run = |fused: bool| {
                crate::fast_ops::set_enabled(fused);
                let mut opt = Optimizer::new(cfg.clone(), 1).unwrap();
                let mut p = t(&param);
                for step in 0..3 {
                    let g: Vec<f32> = (0..n)
                        .map(|i| ((i * 53 + step * 7) % 97) as f32 / 40.0 - 1.2)
                        .collect();
                    p = opt.update(0, p, t(&g), 0.05);
                    opt.finish_step();
                }
                crate::fast_ops::set_enabled(true);
                let state: Vec<Vec<f32>> = [opt.first[0].clone(), opt.second[0].clone()]
                    .into_iter()
                    .flatten()
                    .map(v)
                    .collect();
                (v(p), state)
            };
            let (fused, composed) = (run(true), run(false));
            let bits = |x: &(Vec<f32>, Vec<Vec<f32>>)| {
                let mut b: Vec<u32> = x.0.iter().map(|f| f.to_bits()).collect();
                b.extend(x.1.iter().flatten().map(|f| f.to_bits()));
                b
            };
            assert_eq!(bits(&fused), bits(&composed), "{cfg:?}");
        }
    }

    #[test]
    fn invalid_hyperparameters_are_rejected() {
        let e = Optimizer::new(
            OptimizerConfig::Sgd {
                momentum: 1.5,
                nesterov: false,
                weight_decay: 0.0,
            },
            1,
        );
        assert!(e.err().unwrap().to_string().contains("momentum"));
        let e = Optimizer::new(
            OptimizerConfig::Sgd {
                momentum: 0.0,
                nesterov: true,
                weight_decay: 0.0,
            },
            1,
        );
        assert!(e.err().unwrap().to_string().contains("nesterov"));
        let e = Optimizer::new(
            OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 1.0,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            1,
        );
        assert!(e.err().unwrap().to_string().contains("betas"));
    }
}
