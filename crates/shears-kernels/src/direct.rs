//! Direct 3x3 convolution (stride 1, padding 1, no groups) for the forward pass: no im2col
//! matrix. Each output row is computed for 8 output channels × 16 pixels at a time in
//! registers, reading a zero-padded copy of the image, so the only memory traffic is the input
//! (once per 8 output channels) and the output (once). Thin layers (a few channels, as pruning
//! leaves them) spent more time writing and packing im2col than multiplying.
//!
//! The loop nest is written once with fixed-size arrays and compiled for AVX-512 and for
//! AVX2+FMA; the CPU picks at run time. Without either, callers use im2col + GEMM.

use crate::geometry::ConvGeometry;

const CB: usize = 8;

static AVX2_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the direct kernel use its AVX2 code even where AVX-512 exists, so tests on an
/// AVX-512 machine cover both. Both are exact, so flipping it while others run is harmless.
#[doc(hidden)]
pub fn use_avx2_only(on: bool) {
    AVX2_ONLY.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`use_avx2_only`] is on.
pub(crate) fn avx2_only() -> bool {
    AVX2_ONLY.load(std::sync::atomic::Ordering::Relaxed)
}

const LANES: usize = 16;

/// Whether [`forward_image`] handles this geometry on this CPU.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.is_dense_same_3x3() && g.in_w >= LANES && cpu_supported()
}

fn cpu_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            || (std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Scratch floats [`forward_image`] needs: the padded image.
pub(crate) fn scratch_len(g: &ConvGeometry) -> usize {
    g.in_channels * (g.in_h + 2) * padded_width(g)
}

/// Row width of the padded copy: one zero column left, the image, and zeros up to a whole
/// number of 16-pixel chunks plus the right halo.
pub(crate) fn padded_width(g: &ConvGeometry) -> usize {
    g.in_w.div_ceil(LANES) * LANES + 2
}

/// The output-channel blocks `(first, count)` of a layer: full blocks of 8, then the rest in
/// power-of-two pieces, so that a pruned layer (or a dynamically gated one) with 13 channels
/// computes 8 + 4 + 1 channels, not 8 + 8.
pub(crate) fn channel_blocks(out_channels: usize) -> Vec<(usize, usize)> {
    let mut blocks = Vec::with_capacity(out_channels / CB + 3);
    let mut co = 0;
    while co < out_channels {
        let rest = out_channels - co;
        let cb = if rest >= CB {
            CB
        } else {
            1 << (usize::BITS - 1 - rest.leading_zeros())
        };
        blocks.push((co, cb));
        co += cb;
    }
    blocks
}

/// Copies one image `[C, H, W]` into `padded` ([`scratch_len`] floats): a zero border of one
/// pixel, rows widened to whole 16-pixel chunks. Every block of the image reads this one copy.
pub(crate) fn pad_image(g: &ConvGeometry, image: &[f32], padded: &mut [f32]) {
    let (c, h, w) = (g.in_channels, g.in_h, g.in_w);
    let wp = padded_width(g);
    let padded = &mut padded[..scratch_len(g)];
    // Only the halo needs zeros, but rows are short: one fill is simpler and as fast.
    padded.fill(0.0);
    for ci in 0..c {
        for ih in 0..h {
            let dst = (ci * (h + 2) + ih + 1) * wp + 1;
            padded[dst..dst + w].copy_from_slice(&image[(ci * h + ih) * w..][..w]);
        }
    }
}

/// The weights of block `(co0, cb)` laid out for its kernel (see [`block_weights`]); made once
/// per call and shared by every image.
pub(crate) fn block_weights_for(
    g: &ConvGeometry,
    weight: &[f32],
    (co0, cb): (usize, usize),
) -> Vec<f32> {
    match cb {
        8 => block_weights::<8>(g, weight, co0),
        4 => block_weights::<4>(g, weight, co0),
        2 => block_weights::<2>(g, weight, co0),
        _ => block_weights::<1>(g, weight, co0),
    }
}

/// Channels `co0..co0 + cb` (`cb` one of 8, 4, 2, 1; see [`channel_blocks`]) of one image, from
/// its [`pad_image`] copy and the block's [`block_weights_for`] → `out`, the planes of just
/// those channels.
pub(crate) fn forward_block(
    g: &ConvGeometry,
    padded: &[f32],
    wb: &[f32],
    (co0, cb): (usize, usize),
    out: &mut [f32],
) {
    debug_assert!(cb.is_power_of_two() && cb <= CB && co0 + cb <= g.out_channels);
    let padded = &padded[..scratch_len(g)];
    #[cfg(target_arch = "x86_64")]
    {
        let avx2_only = AVX2_ONLY.load(std::sync::atomic::Ordering::Relaxed)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if std::arch::is_x86_feature_detected!("avx512f") && !avx2_only {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe {
                match cb {
                    8 => rows_avx512::<8, { rows_per_group(8) }>(g, padded, wb, co0, out),
                    4 => rows_avx512::<4, { rows_per_group(4) }>(g, padded, wb, co0, out),
                    2 => rows_avx512::<2, { rows_per_group(2) }>(g, padded, wb, co0, out),
                    _ => rows_avx512::<1, { rows_per_group(1) }>(g, padded, wb, co0, out),
                }
            }
            return;
        }
        // SAFETY: `applies` checked AVX2 and FMA when AVX-512F is absent (or `avx2_only` did).
        unsafe {
            match cb {
                8 => rows_avx2::<8, { rows_per_group(8) }>(g, padded, wb, co0, out),
                4 => rows_avx2::<4, { rows_per_group(4) }>(g, padded, wb, co0, out),
                2 => rows_avx2::<2, { rows_per_group(2) }>(g, padded, wb, co0, out),
                _ => rows_avx2::<1, { rows_per_group(1) }>(g, padded, wb, co0, out),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct convolution is only selected on x86-64");
}

/// This block's weights as `[ci][tap][b]` (b over `B` output channels, zero past the end).
fn block_weights<const B: usize>(g: &ConvGeometry, weight: &[f32], co0: usize) -> Vec<f32> {
    let (c, o) = (g.in_channels, g.out_channels);
    let mut wb = vec![0.0f32; c * 9 * B];
    for b in 0..B.min(o - co0) {
        for ci in 0..c {
            for tap in 0..9 {
                wb[(ci * 9 + tap) * B + b] = weight[((co0 + b) * c + ci) * 9 + tap];
            }
        }
    }
    wb
}

/// Output rows computed together for a block of `B` channels: `B × P = 8` accumulators, so that
/// a small block (a pruned or gated layer's last channels) still keeps eight independent FMA
/// chains in flight instead of waiting on one (a 1-channel block is otherwise ~8x slower per
/// channel than a full one).
const fn rows_per_group(b: usize) -> usize {
    CB / b
}

/// AVX-512: `B` output channels × 16 pixels × `P` rows in `B·P` zmm accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512<const B: usize, const P: usize>(
    g: &ConvGeometry,
    padded: &[f32],
    wb: &[f32],
    co0: usize,
    out: &mut [f32],
) {
    let h = g.in_h;
    debug_assert_eq!(wb.len(), g.in_channels * 9 * B);
    let mut oh = 0;
    while oh + P <= h {
        unsafe { group_avx512::<B, P>(g, padded, wb, co0, oh, out) };
        oh += P;
    }
    while oh < h {
        unsafe { group_avx512::<B, 1>(g, padded, wb, co0, oh, out) };
        oh += 1;
    }
}

/// Rows `oh0..oh0 + P` of a block (see [`rows_avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn group_avx512<const B: usize, const P: usize>(
    g: &ConvGeometry,
    padded: &[f32],
    wb: &[f32],
    co0: usize,
    oh0: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (c, h, w, o) = (g.in_channels, g.in_h, g.in_w, g.out_channels);
    let wp = padded_width(g);
    let cb = B.min(o - co0);
    for ow0 in (0..w).step_by(LANES) {
        let mut acc = [[_mm512_setzero_ps(); B]; P];
        for ci in 0..c {
            for ki in 0..3 {
                for kj in 0..3 {
                    let ws = &wb[(ci * 9 + ki * 3 + kj) * B..][..B];
                    for (p, acc_p) in acc.iter_mut().enumerate() {
                        let at = (ci * (h + 2) + oh0 + p + ki) * wp + ow0 + kj;
                        // In bounds: ow0 + kj + 16 <= the padded width (see padded_width).
                        debug_assert!(at + LANES <= padded.len());
                        let xv = unsafe { _mm512_loadu_ps(padded.as_ptr().add(at)) };
                        for b in 0..B {
                            acc_p[b] = _mm512_fmadd_ps(_mm512_set1_ps(ws[b]), xv, acc_p[b]);
                        }
                    }
                }
            }
        }
        let n = LANES.min(w - ow0);
        let mut lane = [0.0f32; LANES];
        for (p, acc_p) in acc.iter().enumerate() {
            for (b, v) in acc_p.iter().enumerate().take(cb) {
                unsafe { _mm512_storeu_ps(lane.as_mut_ptr(), *v) };
                let dst = (b * h + oh0 + p) * w + ow0;
                out[dst..dst + n].copy_from_slice(&lane[..n]);
            }
        }
    }
}

/// AVX2 + FMA: `B` output channels × 8 pixels × `P` rows in `B·P` ymm accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<const B: usize, const P: usize>(
    g: &ConvGeometry,
    padded: &[f32],
    wb: &[f32],
    co0: usize,
    out: &mut [f32],
) {
    let h = g.in_h;
    debug_assert_eq!(wb.len(), g.in_channels * 9 * B);
    let mut oh = 0;
    while oh + P <= h {
        unsafe { group_avx2::<B, P>(g, padded, wb, co0, oh, out) };
        oh += P;
    }
    while oh < h {
        unsafe { group_avx2::<B, 1>(g, padded, wb, co0, oh, out) };
        oh += 1;
    }
}

/// Rows `oh0..oh0 + P` of a block (see [`rows_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_avx2<const B: usize, const P: usize>(
    g: &ConvGeometry,
    padded: &[f32],
    wb: &[f32],
    co0: usize,
    oh0: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    const HALF: usize = LANES / 2;
    let (c, h, w, o) = (g.in_channels, g.in_h, g.in_w, g.out_channels);
    let wp = padded_width(g);
    let cb = B.min(o - co0);
    for ow0 in (0..w).step_by(HALF) {
        let mut acc = [[_mm256_setzero_ps(); B]; P];
        for ci in 0..c {
            for ki in 0..3 {
                for kj in 0..3 {
                    let ws = &wb[(ci * 9 + ki * 3 + kj) * B..][..B];
                    for (p, acc_p) in acc.iter_mut().enumerate() {
                        let at = (ci * (h + 2) + oh0 + p + ki) * wp + ow0 + kj;
                        debug_assert!(at + HALF <= padded.len());
                        let xv = unsafe { _mm256_loadu_ps(padded.as_ptr().add(at)) };
                        for b in 0..B {
                            acc_p[b] = _mm256_fmadd_ps(_mm256_set1_ps(ws[b]), xv, acc_p[b]);
                        }
                    }
                }
            }
        }
        let n = HALF.min(w - ow0);
        let mut lane = [0.0f32; HALF];
        for (p, acc_p) in acc.iter().enumerate() {
            for (b, v) in acc_p.iter().enumerate().take(cb) {
                unsafe { _mm256_storeu_ps(lane.as_mut_ptr(), *v) };
                let dst = (b * h + oh0 + p) * w + ow0;
                out[dst..dst + n].copy_from_slice(&lane[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::channel_blocks;

    #[test]
    fn channel_blocks_cover_every_channel_once_in_power_of_two_pieces() {
        assert_eq!(channel_blocks(16), vec![(0, 8), (8, 8)]);
        assert_eq!(channel_blocks(13), vec![(0, 8), (8, 4), (12, 1)]);
        assert_eq!(channel_blocks(7), vec![(0, 4), (4, 2), (6, 1)]);
        assert_eq!(channel_blocks(1), vec![(0, 1)]);
        for n in 1..70 {
            let blocks = channel_blocks(n);
            let mut next = 0;
            for (co, cb) in blocks {
                assert_eq!(co, next);
                assert!(cb.is_power_of_two() && cb <= 8);
                next += cb;
            }
            assert_eq!(next, n);
        }
    }
}
