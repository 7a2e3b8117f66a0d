//! Direct weight gradient of a 3x3 convolution (stride 1, padding 1, no groups) on maps at least
//! 16 pixels wide, with AVX-512: `dW[co][ci][ki][kj] = Σ_n Σ_(oh,ow) dY[n][co][oh][ow] ·
//! X[n][ci][oh + ki − 1][ow + kj − 1]`, no im2col matrix and no transposes.
//!
//! For a pair of filters and one input channel, the 18 gradients (2 filters × 9 taps) stay in
//! 18 zmm accumulators while the kernel walks the output rows 16 pixels at a time: two loads of
//! the output gradient and nine of the zero-padded input (the same copy the forward kernel
//! reads, [`direct::pad_image`]) feed 18 FMAs. Through im2col + GEMM these layers (ResNet's 16
//! and 32 channels at 32x32 and 16x16) ran at half the forward pass's rate: the GEMM's output
//! is tiny and its reduction axis long, and the im2col matrix and the transposed output
//! gradient were written for every image.

use crate::direct;
use crate::geometry::ConvGeometry;
use crate::parallel::{SharedMut, threads, with_scratch};
use rayon::prelude::*;

const LANES: usize = 16;

/// Whether [`backward_weight`] handles this geometry on this CPU (AVX-512; elsewhere im2col +
/// GEMM).
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        direct::applies(g) && std::arch::is_x86_feature_detected!("avx512f") && !direct::avx2_only()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// The weight gradient summed over the batch. Images are split into one run per thread, each
/// summing into its own gradient; the runs are then added in order.
pub(crate) fn backward_weight(
    g: &ConvGeometry,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) {
    let len = g.weight_len();
    let in_image = g.in_channels * g.in_pixels();
    let out_image = g.out_channels * g.out_pixels();
    let runs = threads().min(g.batch).max(1);
    let per_run = g.batch.div_ceil(runs);
    let mut acc = vec![0.0f32; runs * len];
    let parts = SharedMut(acc.as_mut_ptr());
    let plen = direct::scratch_len(g);
    (0..runs).into_par_iter().for_each(|r| {
        // SAFETY: run r writes only its own accumulator.
        let part = unsafe { parts.slice(r * len, len) };
        with_scratch(plen, |padded| {
            for n in r * per_run..((r + 1) * per_run).min(g.batch) {
                direct::pad_image(g, &input[n * in_image..(n + 1) * in_image], padded);
                let dy = &grad_output[n * out_image..(n + 1) * out_image];
                image(g, padded, dy, part);
            }
        });
    });
    let (total, rest) = acc.split_at_mut(len);
    for p in rest.chunks(len) {
        total.iter_mut().zip(p).for_each(|(d, v)| *d += v);
    }
    grad_weight.copy_from_slice(total);
}

/// Adds one image's weight gradient to `dw`.
fn image(g: &ConvGeometry, padded: &[f32], dy: &[f32], dw: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut co = 0;
        while co + 2 <= g.out_channels {
            for ci in 0..g.in_channels {
                // SAFETY: `applies` checked AVX-512F.
                unsafe { filters_avx512::<2>(g, padded, dy, co, ci, dw) };
            }
            co += 2;
        }
        if co < g.out_channels {
            for ci in 0..g.in_channels {
                // SAFETY: as above.
                unsafe { filters_avx512::<1>(g, padded, dy, co, ci, dw) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, padded, dy, dw);
        unreachable!("the direct weight gradient is only selected on x86-64");
    }
}

/// Filters `co..co + B`, input channel `ci`: their 9 taps each, summed over one image.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn filters_avx512<const B: usize>(
    g: &ConvGeometry,
    padded: &[f32],
    dy: &[f32],
    co: usize,
    ci: usize,
    dw: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (h, w) = (g.in_h, g.in_w);
    let wp = direct::padded_width(g);
    let plane = h * w;
    let mut acc = [[_mm512_setzero_ps(); 9]; B];
    for oh in 0..h {
        for ow0 in (0..w).step_by(LANES) {
            // The output gradient past the row's end counts as zero, so the padded input read
            // there (inside the padded copy's width) adds nothing.
            let n = LANES.min(w - ow0);
            let mask: __mmask16 = if n == LANES { !0 } else { (1u16 << n) - 1 };
            let mut d = [_mm512_setzero_ps(); B];
            for (b, d) in d.iter_mut().enumerate() {
                let at = (co + b) * plane + oh * w + ow0;
                debug_assert!(at + n <= dy.len());
                // SAFETY: the mask reads only the n values inside the row.
                *d = unsafe { _mm512_maskz_loadu_ps(mask, dy.as_ptr().add(at)) };
            }
            for ki in 0..3 {
                let row = (ci * (h + 2) + oh + ki) * wp + ow0;
                for kj in 0..3 {
                    debug_assert!(row + kj + LANES <= padded.len());
                    // SAFETY: ow0 + kj + 16 <= the padded width (see `direct::padded_width`).
                    let xv = unsafe { _mm512_loadu_ps(padded.as_ptr().add(row + kj)) };
                    for b in 0..B {
                        acc[b][ki * 3 + kj] = _mm512_fmadd_ps(d[b], xv, acc[b][ki * 3 + kj]);
                    }
                }
            }
        }
    }
    let c = g.in_channels;
    for (b, taps) in acc.iter().enumerate() {
        for (t, v) in taps.iter().enumerate() {
            dw[((co + b) * c + ci) * 9 + t] += _mm512_reduce_add_ps(*v);
        }
    }
}
