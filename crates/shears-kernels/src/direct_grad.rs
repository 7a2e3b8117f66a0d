//! Direct weight gradient of a 3x3 convolution (stride 1, padding 1, no groups) on maps at least
//! 16 pixels wide, with AVX-512: `dW[co][ci][ki][kj] = Σ_n Σ_(oh,ow) dY[n][co][oh][ow] ·
//! X[n][ci][oh + ki − 1][ow + kj − 1]`, no im2col matrix and no transposes.
//!
//! Each image's input is copied zero-padded ([`direct::pad_image`], rows `wp` wide) and its
//! output gradient copied with the same row width, zeros past each row's end. A pixel's nine
//! taps are then the padded input at nine fixed offsets from the pixel's own index, so the
//! kernel walks each plane as one flat run of 16-pixel vectors: for a pair of filters and one
//! input channel, two loads of the output gradient and nine of the input feed 18 FMAs into 18
//! zmm accumulators, which are added to per-lane sums (one 16-lane vector per gradient value)
//! and reduced once per thread at the end. The zeros past each row's end make the reads that
//! run into the next row add nothing. Through im2col + GEMM these layers (ResNet's 16 and 32
//! channels at 32x32 and 16x16) ran at half the forward pass's rate: the GEMM's output is tiny
//! and its reduction axis long, and the im2col matrix was written and packed for every image.

use crate::direct;
use crate::geometry::ConvGeometry;
use crate::parallel::{SharedMut, sum_runs, threads, with_image_scratch, with_scratch};
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
/// summing into its own per-lane sums; the runs are then reduced and added in order, so the
/// result does not depend on timing.
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
    // The last plane's last vectors read up to two values past the padded copy: zeros there.
    let plen = direct::scratch_len(g) + LANES;
    let dlen = g.out_channels * g.in_h * direct::padded_width(g);
    (0..runs).into_par_iter().for_each(|r| {
        // SAFETY: run r writes only its own accumulator.
        let part = unsafe { parts.slice(r * len, len) };
        let mut lanes = vec![0.0f32; len * LANES];
        with_scratch(plen, |padded| {
            padded[plen - LANES..].fill(0.0);
            with_image_scratch(dlen, |dy_rows| {
                for n in r * per_run..((r + 1) * per_run).min(g.batch) {
                    direct::pad_image(g, &input[n * in_image..(n + 1) * in_image], padded);
                    pad_rows(g, &grad_output[n * out_image..(n + 1) * out_image], dy_rows);
                    image(g, padded, dy_rows, &mut lanes);
                }
            })
        });
        for (p, l) in part.iter_mut().zip(lanes.chunks_exact(LANES)) {
            *p = l.iter().sum();
        }
    });
    sum_runs(&acc, grad_weight);
}

/// One image's output gradient with rows `wp` wide (the padded input's width), zeros past each
/// row's end.
fn pad_rows(g: &ConvGeometry, dy: &[f32], rows: &mut [f32]) {
    let (w, wp) = (g.in_w, direct::padded_width(g));
    for (dst, src) in rows.chunks_exact_mut(wp).zip(dy.chunks_exact(w)) {
        dst[..w].copy_from_slice(src);
        dst[w..].fill(0.0);
    }
}

/// Adds one image's weight gradient to the per-lane sums `lanes` (16 per gradient value).
fn image(g: &ConvGeometry, padded: &[f32], dy_rows: &[f32], lanes: &mut [f32]) {
    let wp = direct::padded_width(g);
    let (x_plane, y_plane) = ((g.in_h + 2) * wp, g.in_h * wp);
    let filter = g.in_channels * 9 * LANES;
    debug_assert!(padded.len() >= g.in_channels * x_plane + 2);
    debug_assert_eq!(dy_rows.len(), g.out_channels * y_plane);
    debug_assert_eq!(lanes.len(), g.out_channels * filter);
    #[cfg(target_arch = "x86_64")]
    {
        // The nine taps of a pixel: fixed offsets in the padded plane.
        let offsets = [0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2];
        let mut co = 0;
        let x = padded.as_ptr();
        let l = lanes.as_mut_ptr();
        while co < g.out_channels {
            let pair = co + 2 <= g.out_channels;
            for ci in 0..g.in_channels {
                // SAFETY: `applies` checked AVX-512F; every read lies inside `padded` (the last
                // vector of a plane reads at most two values past it, into the next plane or
                // the zeroed slack) and `dy_rows`, every write inside `lanes` (asserted above).
                unsafe {
                    let (x, dy) = (x.add(ci * x_plane), dy_rows.as_ptr().add(co * y_plane));
                    let l = l.add(co * filter + ci * 9 * LANES);
                    if pair {
                        taps_avx512::<2, 9>(x, dy, y_plane, offsets, l, filter);
                    } else {
                        taps_avx512::<1, 9>(x, dy, y_plane, offsets, l, filter);
                    }
                }
            }
            co += if pair { 2 } else { 1 };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (padded, dy_rows, lanes, filter);
        unreachable!("the direct weight gradient is only selected on x86-64");
    }
}

/// Filters `0..B` (output-gradient planes `y_plane` apart, per-lane sums `filter` apart)
/// against one input plane `x`: `T` taps, tap `t` the input at `offsets[t]` from each pixel,
/// over the plane's `y_plane` positions (each tap's sums 16 lanes after the one before).
///
/// # Safety
/// AVX-512F; `x` readable for `y_plane` values past the largest offset, `dy` for `B` planes,
/// `lanes` for `B` filters of `T` taps of 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn taps_avx512<const B: usize, const T: usize>(
    x: *const f32,
    dy: *const f32,
    y_plane: usize,
    offsets: [usize; T],
    lanes: *mut f32,
    filter: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); T]; B];
    // One 16-pixel vector: `mask` selects the pixels inside the plane (all but at its end).
    let mut step = |q: usize, mask: __mmask16| {
        let mut d = [_mm512_setzero_ps(); B];
        for (b, d) in d.iter_mut().enumerate() {
            *d = unsafe { _mm512_maskz_loadu_ps(mask, dy.add(b * y_plane + q)) };
        }
        for (t, off) in offsets.iter().enumerate() {
            let xv = unsafe { _mm512_maskz_loadu_ps(mask, x.add(q + off)) };
            for b in 0..B {
                acc[b][t] = _mm512_fmadd_ps(d[b], xv, acc[b][t]);
            }
        }
    };
    let full = y_plane / LANES * LANES;
    let mut q = 0;
    while q < full {
        step(q, !0);
        q += LANES;
    }
    if q < y_plane {
        step(q, crate::simd::first_lanes(y_plane - q));
    }
    for (b, taps) in acc.iter().enumerate() {
        for (t, v) in taps.iter().enumerate() {
            let p = unsafe { lanes.add(b * filter + t * LANES) };
            unsafe { _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), *v)) };
        }
    }
}

/// Whether [`backward_weight_unpadded`] takes `g`: an ungrouped, unpadded, stride-1 layer with
/// a kernel of at most 7x7, up to 16 input channels and 16 filters and output rows of 8+
/// pixels, with AVX-512 (a network's first layers: LeNet-5's 5x5 ones with 6 filters, which
/// im2col + GEMM ran at 30 GFLOP/s, six of a register's sixteen rows working).
pub(crate) fn applies_unpadded(g: &ConvGeometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        g.groups == 1
            && g.stride == [1, 1]
            && g.padding == [0, 0]
            && g.dilation == [1, 1]
            && g.kernel[0] <= 7
            && g.kernel[1] <= 7
            && g.in_channels <= 16
            && g.out_channels <= 16
            && g.out_w() >= 8
            && std::arch::is_x86_feature_detected!("avx512f")
            && !direct::avx2_only()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// [`backward_weight`] for the unpadded layers of [`applies_unpadded`]. The output gradient's
/// rows are widened to the input's width (zeros past each row's end), so that a pixel's taps
/// are the input at fixed offsets from the pixel's own index and each plane is one flat run of
/// 16-pixel vectors; one kernel row of up to four filters at a time, `4 × kw` accumulators.
pub(crate) fn backward_weight_unpadded(
    g: &ConvGeometry,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) {
    assert!(
        applies_unpadded(g),
        "direct_grad: not an unpadded layer it takes, {g:?}"
    );
    let len = g.weight_len();
    let w = g.in_w;
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    let in_image = g.in_channels * g.in_pixels();
    let out_image = g.out_channels * g.out_pixels();
    let y_plane = oh_n * w;
    let runs = threads().min(g.batch).max(1);
    let per_run = g.batch.div_ceil(runs);
    let mut acc = vec![0.0f32; runs * len];
    let parts = SharedMut(acc.as_mut_ptr());
    (0..runs).into_par_iter().for_each(|r| {
        // SAFETY: run r writes only its own accumulator.
        let part = unsafe { parts.slice(r * len, len) };
        let mut lanes = vec![0.0f32; len * LANES];
        // The input copied with zeros after it: a plane's last vectors read up to `kw − 2`
        // values past the last plane (multiplied by the zeros past the last output row).
        with_scratch(in_image + LANES, |xs| {
            xs[in_image..].fill(0.0);
            with_image_scratch(g.out_channels * y_plane, |dy_rows| {
                for n in r * per_run..((r + 1) * per_run).min(g.batch) {
                    xs[..in_image].copy_from_slice(&input[n * in_image..(n + 1) * in_image]);
                    let dy = &grad_output[n * out_image..(n + 1) * out_image];
                    for (dst, src) in dy_rows.chunks_exact_mut(w).zip(dy.chunks_exact(ow_n)) {
                        dst[..ow_n].copy_from_slice(src);
                        dst[ow_n..].fill(0.0);
                    }
                    unpadded_image(g, xs, dy_rows, y_plane, &mut lanes);
                }
            })
        });
        for (p, l) in part.iter_mut().zip(lanes.chunks_exact(LANES)) {
            *p = l.iter().sum();
        }
    });
    sum_runs(&acc, grad_weight);
}

/// Adds one image's weight gradient to the per-lane sums (16 per gradient value).
fn unpadded_image(
    g: &ConvGeometry,
    xs: &[f32],
    dy_rows: &[f32],
    y_plane: usize,
    lanes: &mut [f32],
) {
    let (kh_n, kw_n, w) = (g.kernel[0], g.kernel[1], g.in_w);
    let taps = kh_n * kw_n;
    let filter = g.in_channels * taps * LANES;
    let x_plane = g.in_pixels();
    // Every read below: `dy_rows` planes of `y_plane`; the input at a plane's start plus
    // `kh·w + q + kw` for q < y_plane, at most `kw_n − 2` past the last plane, inside the slack.
    assert!(xs.len() >= g.in_channels * x_plane + kw_n.saturating_sub(1));
    assert_eq!(dy_rows.len(), g.out_channels * y_plane);
    assert_eq!(lanes.len(), g.out_channels * filter);
    #[cfg(target_arch = "x86_64")]
    {
        let most = (24 / kw_n).clamp(1, 4);
        let mut co = 0;
        while co < g.out_channels {
            let b = most.min(g.out_channels - co);
            for ci in 0..g.in_channels {
                for kh in 0..kh_n {
                    // SAFETY: `applies_unpadded` checked AVX-512F; the reads and writes stay
                    // inside the buffers asserted above.
                    unsafe {
                        let x = xs.as_ptr().add(ci * x_plane + kh * w);
                        let dy = dy_rows.as_ptr().add(co * y_plane);
                        let l = lanes
                            .as_mut_ptr()
                            .add(co * filter + (ci * taps + kh * kw_n) * LANES);
                        row_taps(b, kw_n, x, dy, y_plane, l, filter);
                    }
                }
            }
            co += b;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xs, dy_rows, y_plane, lanes, filter, kh_n, w);
        unreachable!("the direct weight gradient is only selected on x86-64");
    }
}

/// One kernel row's `k` taps (1 to 7) of filters `0..b` (1 to 4) over one input plane `x`
/// already offset by the kernel row: [`taps_avx512`] at offsets `0..k`.
///
/// # Safety
/// As [`taps_avx512`]: `x` readable for `y_plane + k − 1` values.
#[cfg(target_arch = "x86_64")]
unsafe fn row_taps(
    b: usize,
    k: usize,
    x: *const f32,
    dy: *const f32,
    y_plane: usize,
    lanes: *mut f32,
    filter: usize,
) {
    // Taps 1 to 6 by their count, 7 for the rest; the offsets are `0..k`.
    macro_rules! go {
        ($b:literal) => {
            go!($b; 1 2 3 4 5 6)
        };
        ($b:literal; $($n:literal)*) => {
            match k {
                $($n => unsafe {
                    taps_avx512::<$b, $n>(x, dy, y_plane, std::array::from_fn(|t| t), lanes, filter)
                },)*
                _ => unsafe {
                    taps_avx512::<$b, 7>(x, dy, y_plane, std::array::from_fn(|t| t), lanes, filter)
                },
            }
        };
    }
    match b {
        4 => go!(4),
        3 => go!(3),
        2 => go!(2),
        _ => go!(1),
    }
}
