//! Training-mode BatchNorm over `[batch, channels, spatial]` (spatial = H·W, or 1 for a feature
//! matrix), forward and backward, optionally fused with the ReLU that follows. Work is split
//! over channels; each channel's statistics are accumulated per row in f32 and across rows in
//! f64, so a 64×32×32 channel loses no precision against a two-pass f64 reference.
//!
//! A row's sums use [`LANES`] partial sums (the compiler cannot reorder one running `f32` sum,
//! which left it one add per four cycles), and each channel's loops are compiled for AVX-512
//! and for AVX2 + FMA, the CPU choosing at run time: the backward pass went from 8.6 to 3.5 %
//! of a one-thread VGG-11 training step at batch 64 (`perf record`).

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
    if image_major(shape) {
        forward_by_images(shape, x, gamma, beta, eps, relu, y, mean, var);
    } else {
        forward_by_channels(shape, x, gamma, beta, eps, relu, y, mean, var);
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_by_channels(
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
    let stats: Vec<[f32; 3]> = (0..shape.batch)
        .map(|n| plane_stats_body(&x[shape.plane(n, c)]))
        .collect();
    let (mu, sigma2) = combine_planes(shape, stats.iter().copied());
    let scale = normalising_scale(gamma, sigma2, eps);
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
    let mut chunks = xs.chunks_exact(LANES);
    for ch in &mut chunks {
        for i in 0..LANES {
            acc[i] += f(ch[i]);
        }
    }
    // A last half chunk as one vector: a 4x4 plane (16 values) would otherwise be summed one
    // value at a time.
    let mut halves = chunks.remainder().chunks_exact(LANES / 2);
    for ch in &mut halves {
        for i in 0..LANES / 2 {
            acc[i] += f(ch[i]);
        }
    }
    let tail: f32 = halves.remainder().iter().map(|&v| f(v)).sum();
    fold(acc) + tail
}

/// Σ f(a, b) over two rows of equal length, in [`LANES`] partial sums per output.
#[inline(always)]
fn lane_sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f32, f32) {
    let (mut s0, mut s1) = ([0f32; LANES], [0f32; LANES]);
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            let (p, q) = f(x[i], y[i]);
            s0[i] += p;
            s1[i] += q;
        }
    }
    // A last half chunk as one vector, as in `lane_sum`.
    let (mut ha, mut hb) = (
        ca.remainder().chunks_exact(LANES / 2),
        cb.remainder().chunks_exact(LANES / 2),
    );
    for (x, y) in (&mut ha).zip(&mut hb) {
        for i in 0..LANES / 2 {
            let (p, q) = f(x[i], y[i]);
            s0[i] += p;
            s1[i] += q;
        }
    }
    let (mut t0, mut t1) = (0f32, 0f32);
    for (&x, &y) in ha.remainder().iter().zip(hb.remainder()) {
        let (p, q) = f(x, y);
        t0 += p;
        t1 += q;
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
        let scale = normalising_scale(gamma[c], var[c], eps);
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

/// `γ/√(σ² + ε)`: the forward pass's factor, which the backward pass recomputes to find the
/// ReLU mask bit for bit.
#[inline(always)]
fn normalising_scale(gamma: f32, var: f32, eps: f32) -> f32 {
    gamma / (var + eps).sqrt()
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
    if image_major(shape) {
        backward_by_images(
            shape, dy, x, gamma, beta, mean, var, eps, relu, dx_ptr, dgamma, dbeta,
        );
        return;
    }
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
    let scale = normalising_scale(gamma, var, eps);
    let mut sums = [0f64; 2];
    for n in 0..shape.batch {
        let r = shape.plane(n, c);
        let (s, sx) = plane_grad_sums_body(&dy[r.clone()], &x[r], mu, scale, beta, relu);
        sums[0] += s as f64;
        sums[1] += sx as f64;
    }
    let (coef, dgamma, dbeta) = PlaneGrad::new(shape, mu, var, gamma, beta, eps, sums);
    if let Some(ptr) = dx {
        for n in 0..shape.batch {
            let r = shape.plane(n, c);
            // SAFETY: channel c writes only its own planes (the caller's split).
            let dst = unsafe { ptr.slice(r.start, shape.spatial) };
            plane_dx_body(&dy[r.clone()], &x[r], coef, relu, dst);
        }
    }
    (dgamma, dbeta)
}

/// Whether the passes go image by image rather than channel by channel. A channel's planes lie
/// `channels × spatial` values apart, so a channel-major pass over small planes (MobileNet-V2's
/// 8x8 and 4x4 maps) jumps to a new page every few cache lines and waits on memory; image-major
/// passes read the tensor front to back. Both sum each plane the same way and add the planes
/// in image order in f64, so they give the same bits. Below 16 values a plane is too short for
/// a vector pass of its own.
fn image_major(shape: BnShape) -> bool {
    shape.spatial >= 16 && shape.batch > 1
}

/// `plane(n, c)` for every plane, images in parallel, at `[n·channels + c]`.
fn per_plane<const K: usize>(
    shape: BnShape,
    plane: impl Fn(usize, usize) -> [f32; K] + Sync,
) -> Vec<[f32; K]> {
    let mut out = vec![[0f32; K]; shape.batch * shape.channels];
    out.par_chunks_mut(shape.channels)
        .enumerate()
        .for_each(|(n, image)| {
            for (c, v) in image.iter_mut().enumerate() {
                *v = plane(n, c);
            }
        });
    out
}

/// Per channel, Σ over images (in image order, in f64) of `plane(n, c)`'s per-plane values.
fn sum_over_images<const K: usize>(
    shape: BnShape,
    plane: impl Fn(usize, usize) -> [f32; K] + Sync,
) -> Vec<[f64; K]> {
    let mut total = vec![[0f64; K]; shape.channels];
    for image in per_plane(shape, plane).chunks(shape.channels) {
        for (t, v) in total.iter_mut().zip(image) {
            for k in 0..K {
                t[k] += v[k] as f64;
            }
        }
    }
    total
}

#[allow(clippy::too_many_arguments)]
fn forward_by_images(
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
    // Every plane's statistics in one pass over the batch.
    let stats = per_plane(shape, |n, c| plane_stats(&x[shape.plane(n, c)]));
    let mut scale = vec![0f32; shape.channels];
    for c in 0..shape.channels {
        let planes = (0..shape.batch).map(|n| stats[n * shape.channels + c]);
        (mean[c], var[c]) = combine_planes(shape, planes);
        scale[c] = normalising_scale(gamma[c], var[c], eps);
    }
    let image = shape.channels * shape.spatial;
    y.par_chunks_mut(image)
        .zip(x.par_chunks(image))
        .for_each(|(yi, xi)| {
            for (c, (d, s)) in yi
                .chunks_mut(shape.spatial)
                .zip(xi.chunks(shape.spatial))
                .enumerate()
            {
                plane_affine(s, mean[c], scale[c], beta[c], relu, d);
            }
        });
}

#[allow(clippy::too_many_arguments)]
fn backward_by_images(
    shape: BnShape,
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    relu: bool,
    dx: Option<SharedMut>,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let sums = sum_over_images(shape, |n, c| {
        let r = shape.plane(n, c);
        let scale = normalising_scale(gamma[c], var[c], eps);
        let (s, sx) = plane_grad_sums(&dy[r.clone()], &x[r], mean[c], scale, beta[c], relu);
        [s, sx]
    });
    let mut coefs = Vec::with_capacity(shape.channels);
    for c in 0..shape.channels {
        let (coef, dg, db) =
            PlaneGrad::new(shape, mean[c], var[c], gamma[c], beta[c], eps, sums[c]);
        (dgamma[c], dbeta[c]) = (dg, db);
        coefs.push(coef);
    }
    let Some(ptr) = dx else { return };
    let image = shape.channels * shape.spatial;
    (0..shape.batch).into_par_iter().for_each(|n| {
        // SAFETY: image n writes only its own values.
        let d = unsafe { ptr.slice(n * image, image) };
        for (c, d) in d.chunks_mut(shape.spatial).enumerate() {
            let r = shape.plane(n, c);
            plane_dx(&dy[r.clone()], &x[r], coefs[c], relu, d);
        }
    });
}

with_simd!(plane_stats(x: &[f32]) -> [f32; 3] = plane_stats_body);

/// One plane's `[m, Σ(x − m), Σ(x − m)²]` around `m`, its mean in f32 (summed as offsets from
/// its first value, so the partial sums stay small); the second pass reads the plane from the
/// cache the first brought it into, so the batch is read from memory once, and the planes are
/// then combined by [`combine_planes`]. Two passes over the whole batch, the mean first, read
/// every activation twice: with the half-chunk sums of [`lane_sum`] the statistics went from
/// 4.7-4.9 % to 3.9-4.1 % of MobileNet-V2's two-thread training step (`perf record`).
#[inline(always)]
fn plane_stats_body(x: &[f32]) -> [f32; 3] {
    let x0 = x[0];
    let m = x0 + lane_sum(x, |v| v - x0) / x.len() as f32;
    let (r, q) = lane_sum2(x, x, |v, _| ((v - m), (v - m) * (v - m)));
    [m, r, q]
}

/// A channel's batch mean and biased variance from its planes' [`plane_stats`], in image order
/// and f64: with `n` values a plane, `Σx = n·m + r` and `Σ(x − μ)² = q + 2(m − μ)·r + n(m − μ)²`
/// exactly, so no large sums are subtracted (a plane's mean far from zero against its spread
/// keeps its variance).
fn combine_planes(shape: BnShape, planes: impl Iterator<Item = [f32; 3]> + Clone) -> (f32, f32) {
    let n = shape.spatial as f64;
    let count = shape.count() as f64;
    let mu = planes
        .clone()
        .map(|[m, r, _]| n * m as f64 + r as f64)
        .sum::<f64>()
        / count;
    let spread: f64 = planes
        .map(|[m, r, q]| {
            let d = m as f64 - mu;
            q as f64 + 2.0 * d * r as f64 + n * d * d
        })
        .sum();
    (mu as f32, (spread / count) as f32)
}

with_simd!(plane_affine(
    x: &[f32], mu: f32, scale: f32, beta: f32, relu: bool, y: &mut [f32],
) -> () = affine);

with_simd!(plane_grad_sums(
    dy: &[f32], x: &[f32], mu: f32, scale: f32, beta: f32, relu: bool,
) -> (f32, f32) = plane_grad_sums_body);
/// Σg and Σg·(x − μ) over a plane, g the output gradient behind the ReLU mask.
#[inline(always)]
fn plane_grad_sums_body(
    dy: &[f32],
    x: &[f32],
    mu: f32,
    scale: f32,
    beta: f32,
    relu: bool,
) -> (f32, f32) {
    let gate = |xv: f32| !relu || (xv - mu) * scale + beta > 0.0;
    lane_sum2(dy, x, |g, xv| {
        let g = if gate(xv) { g } else { 0.0 };
        (g, g * (xv - mu))
    })
}

/// A channel's constants for its input gradient.
#[derive(Clone, Copy)]
struct PlaneGrad {
    mu: f32,
    scale: f32,
    beta: f32,
    inv_std: f32,
    k: f32,
    mean_g: f32,
    mean_gx: f32,
}

impl PlaneGrad {
    /// The constants of a channel with batch statistics `mu`, `var` from its two gradient sums
    /// `[Σg, Σg·(x − μ)]` (see [`plane_grad_sums_body`]), with its `(dγ, dβ)`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn new(
        shape: BnShape,
        mu: f32,
        var: f32,
        gamma: f32,
        beta: f32,
        eps: f32,
        sums: [f64; 2],
    ) -> (PlaneGrad, f32, f32) {
        let m = shape.count() as f32;
        let inv_std = 1.0 / (var + eps).sqrt();
        let sum_g = sums[0] as f32;
        let sum_gx_hat = sums[1] as f32 * inv_std;
        let coef = PlaneGrad {
            mu,
            scale: normalising_scale(gamma, var, eps),
            beta,
            inv_std,
            k: gamma * inv_std,
            mean_g: sum_g / m,
            mean_gx: sum_gx_hat / m,
        };
        (coef, sum_gx_hat, sum_g)
    }
}

with_simd!(plane_dx(dy: &[f32], x: &[f32], c: PlaneGrad, relu: bool, dx: &mut [f32]) -> () = plane_dx_body);
#[inline(always)]
fn plane_dx_body(dy: &[f32], x: &[f32], c: PlaneGrad, relu: bool, dx: &mut [f32]) {
    let gate = |xv: f32| !relu || (xv - c.mu) * c.scale + c.beta > 0.0;
    for ((d, g), xv) in dx.iter_mut().zip(dy).zip(x) {
        let g = if gate(*xv) { *g } else { 0.0 };
        let x_hat = (xv - c.mu) * c.inv_std;
        *d = c.k * (g - c.mean_g - x_hat * c.mean_gx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel whose values sit far from zero against their spread (mean 1000, deviations of
    /// 0.01) keeps its variance: the planes' statistics are deviations from their own means,
    /// never a difference of large sums. Both passes, against the two-pass f64 formula.
    #[test]
    fn variance_survives_a_large_mean() {
        let shape = BnShape {
            batch: 6,
            channels: 1,
            spatial: 50,
        };
        let x: Vec<f32> = (0..300)
            .map(|i| 1000.0 + ((i * 37) % 29) as f32 * 0.001 + (i / 50) as f32 * 0.004)
            .collect();
        let mean64 = x.iter().map(|&v| v as f64).sum::<f64>() / 300.0;
        let var64 = x.iter().map(|&v| (v as f64 - mean64).powi(2)).sum::<f64>() / 300.0;
        for images in [true, false] {
            let (mut y, mut m, mut v) = (vec![0f32; 300], [0f32], [0f32]);
            let args = (shape, &x[..], &[1f32][..], &[0f32][..], 1e-5f32, false);
            if images {
                forward_by_images(
                    args.0, args.1, args.2, args.3, args.4, args.5, &mut y, &mut m, &mut v,
                );
            } else {
                forward_by_channels(
                    args.0, args.1, args.2, args.3, args.4, args.5, &mut y, &mut m, &mut v,
                );
            }
            assert!(
                (m[0] as f64 - mean64).abs() < 1e-4,
                "mean {} vs {mean64}",
                m[0]
            );
            let rel = (v[0] as f64 - var64).abs() / var64;
            assert!(
                rel < 1e-3,
                "images {images}: variance {} vs {var64} ({rel})",
                v[0]
            );
        }
    }

    /// The image-major passes give the channel-major ones' bits, forward and backward, with and
    /// without the ReLU.
    #[test]
    fn image_major_and_channel_major_passes_agree_bit_for_bit() {
        let shape = BnShape {
            batch: 5,
            channels: 7,
            spatial: 37,
        };
        let len = shape.batch * shape.channels * shape.spatial;
        let x: Vec<f32> = (0..len)
            .map(|i| ((i * 7919) % 211) as f32 / 50.0 - 2.0)
            .collect();
        let dy: Vec<f32> = (0..len)
            .map(|i| ((i * 104729) % 97) as f32 / 40.0 - 1.2)
            .collect();
        let gamma: Vec<f32> = (0..7).map(|c| 0.5 + c as f32 * 0.1).collect();
        let beta: Vec<f32> = (0..7).map(|c| c as f32 * 0.05 - 0.1).collect();
        for relu in [false, true] {
            let run = |images: bool| {
                let (mut y, mut m, mut v) = (vec![0f32; len], vec![0f32; 7], vec![0f32; 7]);
                if images {
                    forward_by_images(shape, &x, &gamma, &beta, 1e-5, relu, &mut y, &mut m, &mut v);
                } else {
                    forward_by_channels(
                        shape, &x, &gamma, &beta, 1e-5, relu, &mut y, &mut m, &mut v,
                    );
                }
                let (mut dx, mut dg, mut db) = (vec![0f32; len], vec![0f32; 7], vec![0f32; 7]);
                let ptr = Some(SharedMut(dx.as_mut_ptr()));
                if images {
                    backward_by_images(
                        shape, &dy, &x, &gamma, &beta, &m, &v, 1e-5, relu, ptr, &mut dg, &mut db,
                    );
                } else {
                    for c in 0..7 {
                        (dg[c], db[c]) = backward_channel(
                            shape, &dy, &x, c, m[c], v[c], gamma[c], beta[c], 1e-5, relu, ptr,
                        );
                    }
                }
                (y, m, v, dx, dg, db)
            };
            assert_eq!(run(true), run(false), "relu {relu}");
        }
    }
}
