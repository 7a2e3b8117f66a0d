//! Training-mode BatchNorm over `[batch, channels, spatial]` (spatial = H·W, or 1 for a feature
//! matrix), forward and backward, optionally fused with the ReLU that follows. Work is split
//! over channels; each channel's statistics are accumulated per row in f32 and across rows in
//! f64, so a 64×32×32 channel loses no precision against a two-pass f64 reference.

use crate::parallel::{SharedMut, rectify};
use rayon::prelude::*;

/// The layout of a BatchNorm input: `batch` rows of `channels` planes of `spatial` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
}

impl BnShape {
    fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }
    fn count(&self) -> usize {
        self.batch * self.spatial
    }
    /// The `spatial` values of channel `c` in image `n`.
    fn plane(&self, n: usize, c: usize) -> std::ops::Range<usize> {
        let start = (n * self.channels + c) * self.spatial;
        start..start + self.spatial
    }
    fn check(&self, what: &str, got: usize, want: usize) {
        assert_eq!(
            got, want,
            "batch_norm: {what} has {got} values, {self:?} needs {want}"
        );
    }
    /// Every per-channel buffer has one value per channel.
    fn check_channels(&self, buffers: &[(&str, usize)]) {
        for &(what, len) in buffers {
            self.check(what, len, self.channels);
        }
    }
}

/// `y = γ·(x − μ)/√(σ² + ε) + β` with the batch's mean μ and biased variance σ², then ReLU if
/// `relu`. Writes the output and the batch statistics (the caller updates running statistics).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward(
    shape: BnShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    relu: bool,
    y: &mut [f32],
    mean: &mut [f32],
    var: &mut [f32],
) {
    shape.check("input", x.len(), shape.len());
    shape.check("output", y.len(), shape.len());
    shape.check_channels(&[
        ("gamma", gamma.len()),
        ("beta", beta.len()),
        ("mean", mean.len()),
        ("var", var.len()),
    ]);
    assert!(
        shape.count() > 0,
        "batch_norm: no values per channel in {shape:?}"
    );
    let out = SharedMut(y.as_mut_ptr());
    let inv_count = 1.0 / shape.count() as f64;
    mean.par_iter_mut()
        .zip(var.par_iter_mut())
        .enumerate()
        .for_each(|(c, (m, v))| {
            let mut sum = 0.0f64;
            for n in 0..shape.batch {
                sum += x[shape.plane(n, c)].iter().sum::<f32>() as f64;
            }
            let mu = (sum * inv_count) as f32;
            let mut sq = 0.0f64;
            for n in 0..shape.batch {
                sq += x[shape.plane(n, c)]
                    .iter()
                    .map(|v| (v - mu) * (v - mu))
                    .sum::<f32>() as f64;
            }
            let sigma2 = (sq * inv_count) as f32;
            let scale = gamma[c] / (sigma2 + eps).sqrt();
            for n in 0..shape.batch {
                let r = shape.plane(n, c);
                // SAFETY: channel c writes only its own planes.
                let dst = unsafe { out.slice(r.start, shape.spatial) };
                affine(&x[r], mu, scale, beta[c], relu, dst);
            }
            *m = mu;
            *v = sigma2;
        });
}

/// Inference-mode BatchNorm with given statistics (running mean and variance), ReLU if `relu`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_infer(
    shape: BnShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    relu: bool,
    y: &mut [f32],
) {
    shape.check("input", x.len(), shape.len());
    shape.check("output", y.len(), shape.len());
    shape.check_channels(&[
        ("gamma", gamma.len()),
        ("beta", beta.len()),
        ("mean", mean.len()),
        ("var", var.len()),
    ]);
    let out = SharedMut(y.as_mut_ptr());
    (0..shape.channels).into_par_iter().for_each(|c| {
        let scale = gamma[c] / (var[c] + eps).sqrt();
        for n in 0..shape.batch {
            let r = shape.plane(n, c);
            // SAFETY: channel c writes only its own planes.
            let dst = unsafe { out.slice(r.start, shape.spatial) };
            affine(&x[r], mean[c], scale, beta[c], relu, dst);
        }
    });
}

/// `(x − μ)·scale + β`, in this order as in PyTorch and Burn: a constant channel (a dead one,
/// x = μ everywhere) then gives exactly β, so the ReLU mask at zero agrees with theirs.
fn affine(src: &[f32], mu: f32, scale: f32, beta: f32, relu: bool, dst: &mut [f32]) {
    if relu {
        dst.iter_mut()
            .zip(src)
            .for_each(|(d, s)| *d = rectify((s - mu) * scale + beta));
    } else {
        dst.iter_mut()
            .zip(src)
            .for_each(|(d, s)| *d = (s - mu) * scale + beta);
    }
}

/// Gradients of [`batch_norm_forward`] (with the same `relu`) given the output gradient `dy`,
/// the forward input `x` and the batch statistics it returned. With x̂ the normalised input and
/// g the output gradient behind the ReLU mask: `dβ = Σg`, `dγ = Σg·x̂`,
/// `dx = γ/√(σ²+ε) · (g − dβ/M − x̂·dγ/M)`. `dx` is skipped when the input needs no gradient.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    shape: BnShape,
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    relu: bool,
    dx: Option<&mut [f32]>,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    shape.check("output gradient", dy.len(), shape.len());
    shape.check("input", x.len(), shape.len());
    shape.check_channels(&[
        ("gamma", gamma.len()),
        ("beta", beta.len()),
        ("mean", mean.len()),
        ("var", var.len()),
        ("gamma gradient", dgamma.len()),
        ("beta gradient", dbeta.len()),
    ]);
    let dx_ptr = dx.map(|d| {
        shape.check("input gradient", d.len(), shape.len());
        SharedMut(d.as_mut_ptr())
    });
    let m = shape.count() as f32;
    dgamma
        .par_iter_mut()
        .zip(dbeta.par_iter_mut())
        .enumerate()
        .for_each(|(c, (dg, db))| {
            let inv_std = 1.0 / (var[c] + eps).sqrt();
            let mu = mean[c];
            // The ReLU passed the gradient where its input, the BN output, was positive.
            // The same expression as the forward pass, so the ReLU mask agrees bit for bit.
            let scale = gamma[c] / (var[c] + eps).sqrt();
            let gate = |xv: f32| !relu || (xv - mu) * scale + beta[c] > 0.0;
            let (mut sum_g, mut sum_gx) = (0.0f64, 0.0f64);
            for n in 0..shape.batch {
                let r = shape.plane(n, c);
                let (mut s, mut sx) = (0.0f32, 0.0f32);
                for (g, xv) in dy[r.clone()].iter().zip(&x[r]) {
                    if gate(*xv) {
                        s += g;
                        sx += g * (xv - mu);
                    }
                }
                sum_g += s as f64;
                sum_gx += sx as f64;
            }
            let sum_gx_hat = sum_gx as f32 * inv_std;
            *db = sum_g as f32;
            *dg = sum_gx_hat;
            if let Some(ptr) = dx_ptr {
                let k = gamma[c] * inv_std;
                let mean_g = sum_g as f32 / m;
                let mean_gx = sum_gx_hat / m;
                for n in 0..shape.batch {
                    let r = shape.plane(n, c);
                    // SAFETY: channel c writes only its own planes.
                    let dst = unsafe { ptr.slice(r.start, shape.spatial) };
                    for ((d, g), xv) in dst.iter_mut().zip(&dy[r.clone()]).zip(&x[r.clone()]) {
                        let g = if gate(*xv) { *g } else { 0.0 };
                        let x_hat = (xv - mu) * inv_std;
                        *d = k * (g - mean_g - x_hat * mean_gx);
                    }
                }
            }
        });
}
