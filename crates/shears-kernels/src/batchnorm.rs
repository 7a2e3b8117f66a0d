//! Training-mode BatchNorm over `[batch, channels, spatial]` (spatial = H·W, or 1 for a feature
//! matrix), forward and backward, optionally fused with the ReLU that follows. Work is split
//! over channels; each channel's statistics are accumulated per row in f32 and across rows in
//! f64, so a 64×32×32 channel loses no precision against a two-pass f64 reference.
//!
//! A row's sums use [`LANES`] partial sums (the compiler cannot reorder one running `f32` sum,
//! which left it one add per four cycles), and each channel's loops are compiled for AVX-512
//! and for AVX2 + FMA, the CPU choosing at run time: 2-4x on the BatchNorms of VGG-11 at
//! batch 64.

use crate::parallel::{SharedMut, rectify};
use rayon::prelude::*;

/// Defines `$name`, which runs `$body` (an `#[inline(always)]` function with the same
/// arguments) compiled for the widest vector instructions the CPU has: AVX-512, else AVX2 +
/// FMA, else the baseline. The body's loops are inlined into functions with those features.
macro_rules! with_simd {
    ($name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $body:ident) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn narrow($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") && !crate::direct::avx2_only() {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { wide($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    return unsafe { narrow($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

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
    mean.par_iter_mut()
        .zip(var.par_iter_mut())
        .enumerate()
        .for_each(|(c, (m, v))| {
            let (mu, sigma2) = forward_channel(shape, x, c, gamma[c], beta[c], eps, relu, out);
            *m = mu;
            *v = sigma2;
        });
}

with_simd!(forward_channel(
    shape: BnShape, x: &[f32], c: usize, gamma: f32, beta: f32, eps: f32, relu: bool,
    out: SharedMut,
) -> (f32, f32) = forward_channel_body);

/// Channel `c`'s batch mean and biased variance, and its normalised output written through
/// `out`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_channel_body(
    shape: BnShape,
    x: &[f32],
    c: usize,
    gamma: f32,
    beta: f32,
    eps: f32,
    relu: bool,
    out: SharedMut,
) -> (f32, f32) {
    let inv_count = 1.0 / shape.count() as f64;
    let mut sum = 0.0f64;
    for n in 0..shape.batch {
        sum += lane_sum(&x[shape.plane(n, c)], |v| v) as f64;
    }
    let mu = (sum * inv_count) as f32;
    let mut sq = 0.0f64;
    for n in 0..shape.batch {
        sq += lane_sum(&x[shape.plane(n, c)], |v| (v - mu) * (v - mu)) as f64;
    }
    let sigma2 = (sq * inv_count) as f32;
    let scale = gamma / (sigma2 + eps).sqrt();
    for n in 0..shape.batch {
        let r = shape.plane(n, c);
        // SAFETY: channel c writes only its own planes (the caller's split).
        let dst = unsafe { out.slice(r.start, shape.spatial) };
        affine(&x[r], mu, scale, beta, relu, dst);
    }
    (mu, sigma2)
}

/// Partial sums of a row kept at once: two AVX-512 registers, four AVX2 ones.
const LANES: usize = 32;

/// Σ f(v) over `xs` in [`LANES`] partial sums.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for ch in chunks {
        for i in 0..LANES {
            acc[i] += f(ch[i]);
        }
    }
    fold(acc) + tail
}

/// Σ f(a, b) over two rows of equal length, in [`LANES`] partial sums per output.
#[inline(always)]
fn lane_sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f32, f32) {
    let (mut s0, mut s1) = ([0f32; LANES], [0f32; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (mut t0, mut t1) = (0f32, 0f32);
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        let (p, q) = f(x, y);
        t0 += p;
        t1 += q;
    }
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            let (p, q) = f(x[i], y[i]);
            s0[i] += p;
            s1[i] += q;
        }
    }
    (fold(s0) + t0, fold(s1) + t1)
}

#[inline(always)]
fn fold(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
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
        infer_channel(shape, x, c, mean[c], scale, beta[c], relu, out);
    });
}

with_simd!(infer_channel(
    shape: BnShape, x: &[f32], c: usize, mu: f32, scale: f32, beta: f32, relu: bool,
    out: SharedMut,
) -> () = infer_channel_body);

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn infer_channel_body(
    shape: BnShape,
    x: &[f32],
    c: usize,
    mu: f32,
    scale: f32,
    beta: f32,
    relu: bool,
    out: SharedMut,
) {
    for n in 0..shape.batch {
        let r = shape.plane(n, c);
        // SAFETY: channel c writes only its own planes (the caller's split).
        let dst = unsafe { out.slice(r.start, shape.spatial) };
        affine(&x[r], mu, scale, beta, relu, dst);
    }
}

/// `(x − μ)·scale + β`, in this order as in PyTorch and Burn: a constant channel (a dead one,
/// x = μ everywhere) then gives exactly β, so the ReLU mask at zero agrees with theirs.
#[inline(always)]
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
    dgamma
        .par_iter_mut()
        .zip(dbeta.par_iter_mut())
        .enumerate()
        .for_each(|(c, (dg, db))| {
            (*dg, *db) = backward_channel(
                shape, dy, x, c, mean[c], var[c], gamma[c], beta[c], eps, relu, dx_ptr,
            );
        });
}

with_simd!(backward_channel(
    shape: BnShape, dy: &[f32], x: &[f32], c: usize, mu: f32, var: f32, gamma: f32, beta: f32,
    eps: f32, relu: bool, dx: Option<SharedMut>,
) -> (f32, f32) = backward_channel_body);

/// Channel `c`'s `(dγ, dβ)`, and its input gradient written through `dx` when asked.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_channel_body(
    shape: BnShape,
    dy: &[f32],
    x: &[f32],
    c: usize,
    mu: f32,
    var: f32,
    gamma: f32,
    beta: f32,
    eps: f32,
    relu: bool,
    dx: Option<SharedMut>,
) -> (f32, f32) {
    let inv_std = 1.0 / (var + eps).sqrt();
    // The ReLU passed the gradient where its input, the BN output, was positive. The same
    // expression as the forward pass, so the ReLU mask agrees bit for bit.
    let scale = gamma / (var + eps).sqrt();
    let gate = |xv: f32| !relu || (xv - mu) * scale + beta > 0.0;
    let (mut sum_g, mut sum_gx) = (0.0f64, 0.0f64);
    for n in 0..shape.batch {
        let r = shape.plane(n, c);
        let (s, sx) = lane_sum2(&dy[r.clone()], &x[r], |g, xv| {
            let g = if gate(xv) { g } else { 0.0 };
            (g, g * (xv - mu))
        });
        sum_g += s as f64;
        sum_gx += sx as f64;
    }
    let sum_gx_hat = sum_gx as f32 * inv_std;
    if let Some(ptr) = dx {
        let m = shape.count() as f32;
        let k = gamma * inv_std;
        let mean_g = sum_g as f32 / m;
        let mean_gx = sum_gx_hat / m;
        for n in 0..shape.batch {
            let r = shape.plane(n, c);
            // SAFETY: channel c writes only its own planes (the caller's split).
            let dst = unsafe { ptr.slice(r.start, shape.spatial) };
            for ((d, g), xv) in dst.iter_mut().zip(&dy[r.clone()]).zip(&x[r.clone()]) {
                let g = if gate(*xv) { *g } else { 0.0 };
                let x_hat = (xv - mu) * inv_std;
                *d = k * (g - mean_g - x_hat * mean_gx);
            }
        }
    }
    (sum_gx_hat, sum_g as f32)
}
