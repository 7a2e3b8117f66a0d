//! The optimiser steps as one pass over each parameter: SGD (momentum, Nesterov, weight decay)
//! and Adam, PyTorch's update rules. Composed of tensor ops, an SGD step with momentum and
//! weight decay read and wrote each parameter-sized array about fifteen times (one op per
//! arithmetic step, each with a fresh output); here the parameter, its gradient and its state
//! are read once and written once, in parallel chunks.
//!
//! Every value follows the composed ops' arithmetic exactly (the same f32 operations in the
//! same order, the hyperparameters rounded to f32 as those ops round their scalars), so a run
//! gives the same bits whichever path took its steps.

use rayon::prelude::*;

/// Values per parallel task: large enough to amortise the task, small enough to split VGG-11's
/// 2.4 M-value layers over two threads evenly.
const CHUNK: usize = 1 << 15;

/// SGD hyperparameters, already rounded to f32 as the composed path rounds them.
#[derive(Clone, Copy, Debug)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

/// One SGD step on `param` in place. `buffer` is the momentum buffer (ignored without
/// momentum); `first` says it holds nothing yet, as on the first step, when PyTorch sets it to
/// the gradient.
pub fn sgd_step(s: SgdStep, param: &mut [f32], grad: &[f32], buffer: &mut [f32], first: bool) {
    assert_eq!(grad.len(), param.len(), "sgd: gradient length");
    let with_momentum = s.momentum > 0.0;
    if with_momentum {
        assert_eq!(buffer.len(), param.len(), "sgd: momentum buffer length");
    }
    let run = |(p, g, b): (&mut [f32], &[f32], &mut [f32])| {
        for i in 0..p.len() {
            let mut d = g[i];
            if s.weight_decay > 0.0 {
                d += p[i] * s.weight_decay;
            }
            if with_momentum {
                let buf = if first { d } else { b[i] * s.momentum + d };
                b[i] = buf;
                d = if s.nesterov {
                    d + buf * s.momentum
                } else {
                    buf
                };
            }
            p[i] -= d * s.lr;
        }
    };
    if with_momentum {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(buffer.par_chunks_mut(CHUNK))
            .for_each(|((p, g), b)| run((p, g, b)));
    } else {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .for_each(|(p, g)| run((p, g, &mut [])));
    }
}

/// Adam hyperparameters and the bias corrections of this step (`1 − β₁ᵗ`, `1 − β₂ᵗ`), all
/// rounded to f32 as the composed path rounds them.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub correction1: f32,
    pub correction2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl AdamStep {
    /// Step `t` (1 for the first) of Adam with these hyperparameters, each derived value
    /// computed in f64 and rounded once, as the composed path's scalars are.
    pub fn new(lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64, t: i32) -> AdamStep {
        AdamStep {
            lr: lr as f32,
            beta1: beta1 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            correction1: (1.0 - beta1.powi(t)) as f32,
            correction2: (1.0 - beta2.powi(t)) as f32,
            eps: eps as f32,
            weight_decay: weight_decay as f32,
        }
    }
}

/// One Adam step on `param` in place, with its first and second moments; `first` says they hold
/// nothing yet (the first step).
pub fn adam_step(
    s: AdamStep,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    first: bool,
) {
    assert_eq!(grad.len(), param.len(), "adam: gradient length");
    assert_eq!(m.len(), param.len(), "adam: first moment length");
    assert_eq!(v.len(), param.len(), "adam: second moment length");
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            for i in 0..p.len() {
                let mut d = g[i];
                if s.weight_decay > 0.0 {
                    d += p[i] * s.weight_decay;
                }
                let mi = if first {
                    d * s.one_minus_beta1
                } else {
                    m[i] * s.beta1 + d * s.one_minus_beta1
                };
                let sq = d * d;
                let vi = if first {
                    sq * s.one_minus_beta2
                } else {
                    v[i] * s.beta2 + sq * s.one_minus_beta2
                };
                m[i] = mi;
                v[i] = vi;
                let m_hat = mi / s.correction1;
                let v_hat = vi / s.correction2;
                p[i] -= (m_hat / (v_hat.sqrt() + s.eps)) * s.lr;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two SGD steps against the rule written out in f64 (PyTorch's documentation).
    #[test]
    fn sgd_follows_the_rule_over_two_steps_and_chunk_edges() {
        for (momentum, nesterov, wd) in [(0.0, false, 0.0), (0.9, false, 5e-4), (0.9, true, 0.1)] {
            let n = CHUNK + 37;
            let mut p: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
            let mut b = vec![f32::NAN; n];
            let mut want: Vec<f64> = p.iter().map(|&x| x as f64).collect();
            let mut want_b = vec![0f64; n];
            let s = SgdStep {
                lr: 0.1,
                momentum,
                nesterov,
                weight_decay: wd,
            };
            for step in 0..2 {
                let g: Vec<f32> = (0..n).map(|i| ((i * 7 + step) % 11) as f32 - 5.0).collect();
                sgd_step(s, &mut p, &g, &mut b, step == 0);
                for i in 0..n {
                    let mut d = g[i] as f64 + want[i] * wd as f64;
                    if momentum > 0.0 {
                        want_b[i] = if step == 0 {
                            d
                        } else {
                            want_b[i] * momentum as f64 + d
                        };
                        d = if nesterov {
                            d + want_b[i] * momentum as f64
                        } else {
                            want_b[i]
                        };
                    }
                    want[i] -= d * 0.1;
                }
            }
            for (a, w) in p.iter().zip(&want) {
                assert!(
                    (*a as f64 - w).abs() < 1e-5,
                    "{momentum} {nesterov}: {a} vs {w}"
                );
            }
        }
    }

    /// Adam's first step moves every weight by the learning rate against its gradient's sign;
    /// the second follows the rule in f64.
    #[test]
    fn adam_follows_the_rule_over_two_steps() {
        let n = 1000;
        let (b1, b2, eps, lr) = (0.9f64, 0.999f64, 1e-8f64, 0.01f64);
        let mut p: Vec<f32> = (0..n).map(|i| (i % 13) as f32 / 13.0).collect();
        let p0 = p.clone();
        let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
        let g1: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 2.5).collect();
        let g2: Vec<f32> = (0..n).map(|i| (i % 3) as f32 - 0.5).collect();
        let step = |t: i32| AdamStep::new(lr, b1, b2, eps, 0.0, t);
        adam_step(step(1), &mut p, &g1, &mut m, &mut v, true);
        for i in 0..n {
            let want = p0[i] as f64 - lr * (g1[i] as f64).signum();
            assert!((p[i] as f64 - want).abs() < 1e-6, "step 1, {i}");
        }
        let p1 = p.clone();
        adam_step(step(2), &mut p, &g2, &mut m, &mut v, false);
        for i in 0..n {
            let (g1, g2) = (g1[i] as f64, g2[i] as f64);
            let mm = b1 * (1.0 - b1) * g1 + (1.0 - b1) * g2;
            let vv = b2 * (1.0 - b2) * g1 * g1 + (1.0 - b2) * g2 * g2;
            let upd = (mm / (1.0 - b1 * b1)) / ((vv / (1.0 - b2 * b2)).sqrt() + eps);
            let want = p1[i] as f64 - lr * upd;
            assert!((p[i] as f64 - want).abs() < 1e-5, "step 2, {i}");
        }
    }
}
