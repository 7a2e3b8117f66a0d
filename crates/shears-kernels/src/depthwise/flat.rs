//! Depthwise "same" convolutions at stride 1 (square k×k for k = 3, 5, 7, padding (k − 1)/2, no
//! dilation) with AVX-512, on each plane as it lies in memory: no padded copy and no rows to
//! copy out.
//!
//! A plane of `h × w` pixels is read as one flat run of 16-pixel vectors. Tap (ki, kj) of the
//! output at flat index `i` reads the input at `i + (ki − p)·w + (kj − p)`, a fixed offset, except
//! where that pixel lies outside the image (above, below, or across the row's left or right
//! edge): those lanes are masked off the load, which reads them as zeros — exactly the padding.
//! The masks depend only on the geometry and are computed once per call. The forward pass (and
//! with the filters turned by 180°, the input gradient) keeps four output vectors' sums in
//! registers while it walks the taps; the weight gradient keeps one running sum per tap.
//! Before, every plane was copied into a zero-padded scratch plane and every output row copied
//! out of a wide one: on MobileNet-V2's 8x8 and 4x4 maps those row copies (8 and 4 values per
//! `memcpy`) took longer than the arithmetic.

use crate::geometry::ConvGeometry;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const LANES: usize = 16;
/// Output vectors summed together in the forward pass: four independent chains of
/// multiply-adds hide the latency of each.
const GROUP: usize = 4;

/// Whether this module takes `g`: the CPU has AVX-512 (not held to AVX2) and the layer is a
/// depthwise stride-1 "same" 3x3, 5x5 or 7x7.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let k = g.kernel[0];
        std::arch::is_x86_feature_detected!("avx512f")
            && !crate::direct::avx2_only()
            && g.is_depthwise()
            && matches!(k, 3 | 5 | 7)
            && g.kernel == [k, k]
            && g.stride == [1, 1]
            && g.dilation == [1, 1]
            && g.padding == [(k - 1) / 2, (k - 1) / 2]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// Each tap's offset and, for every output vector, the lanes whose tap reads inside the image.
pub(super) struct TapMasks {
    taps: usize,
    offsets: Vec<isize>,
    /// `[vector][tap]`, with whole zero vectors up to a multiple of [`GROUP`] (nothing is read
    /// there).
    masks: Vec<u16>,
    /// Output vectors of a plane (the last one may be partial).
    vectors: usize,
    pixels: usize,
}

impl TapMasks {
    pub(super) fn new(g: &ConvGeometry) -> TapMasks {
        let (h, w, k) = (g.in_h as isize, g.in_w as isize, g.kernel[0] as isize);
        let p = (k - 1) / 2;
        let pixels = g.in_pixels();
        let taps = (k * k) as usize;
        let offsets = (0..taps as isize)
            .map(|t| (t / k - p) * w + (t % k - p))
            .collect();
        let vectors = pixels.div_ceil(LANES);
        let mut masks = vec![0u16; vectors.div_ceil(GROUP) * GROUP * taps];
        for v in 0..vectors {
            for t in 0..taps as isize {
                let mut m = 0u16;
                for lane in 0..LANES {
                    let i = (v * LANES + lane) as isize;
                    let (r, c) = (i / w + t / k - p, i % w + t % k - p);
                    if i < pixels as isize && (0..h).contains(&r) && (0..w).contains(&c) {
                        m |= 1 << lane;
                    }
                }
                masks[v * taps + t as usize] = m;
            }
        }
        TapMasks {
            taps,
            offsets,
            masks,
            vectors,
            pixels,
        }
    }
}

/// One plane's output: `y[i] = Σ_t w[t]·x[i + offset[t]]` over the taps inside the image.
///
/// # Safety
/// The CPU has AVX-512F; `x` and `y` hold `m.pixels` values, `w` `m.taps`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn plane_forward(m: &TapMasks, x: &[f32], w: &[f32], y: &mut [f32]) {
    debug_assert!(x.len() == m.pixels && y.len() == m.pixels && w.len() == m.taps);
    for v0 in (0..m.vectors).step_by(GROUP) {
        let mut acc = [_mm512_setzero_ps(); GROUP];
        for (t, &wt) in w.iter().enumerate() {
            let wt = _mm512_set1_ps(wt);
            for (j, a) in acc.iter_mut().enumerate() {
                let v = v0 + j;
                let mask = m.masks[v * m.taps + t];
                // The masked lanes are never read (a masked load does not touch them), so
                // the address may lie before or past the plane; the others are inside it.
                let at = x
                    .as_ptr()
                    .wrapping_offset((v * LANES) as isize + m.offsets[t]);
                // SAFETY: every unmasked lane is a pixel of the plane.
                *a = _mm512_fmadd_ps(wt, unsafe { _mm512_maskz_loadu_ps(mask, at) }, *a);
            }
        }
        for (j, a) in acc.into_iter().enumerate() {
            let v = v0 + j;
            if v >= m.vectors {
                break;
            }
            let left = m.pixels - v * LANES;
            // SAFETY: the stored lanes are the plane's pixels v·16 .. v·16 + min(16, left).
            unsafe {
                _mm512_mask_storeu_ps(
                    y.as_mut_ptr().add(v * LANES),
                    crate::simd::first_lanes(left),
                    a,
                )
            };
        }
    }
}

/// Consecutive planes' outputs, `y[i] = Σ_t w[t]·x[i + offset[t]]` over the taps inside the
/// image, `first` the index of the first plane (its channel is `first % channels`). The work is
/// a list of (plane, vector) items taken [`GROUP`] at a time, so maps of fewer than `GROUP`
/// vectors (4x4: one a plane) keep four chains going, where [`plane_forward`] would sum mostly
/// masked-off vectors; a last group short of items repeats its last. (On larger maps the
/// per-item index arithmetic costs more than it saves: 32x32 planes took 7.3 ms here against
/// 4.1 by plane.)
///
/// # Safety
/// The CPU has AVX-512F; `x` and `y` hold the same whole number of planes of `m.pixels` values,
/// `weight` `m.taps` values per channel for every channel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn planes_forward(
    m: &TapMasks,
    x: &[f32],
    weight: &[f32],
    channels: usize,
    first: usize,
    y: &mut [f32],
) {
    debug_assert!(x.len() == y.len() && y.len().is_multiple_of(m.pixels));
    debug_assert!(weight.len() == channels * m.taps);
    if m.vectors >= GROUP {
        for (k, (yp, xp)) in y.chunks_mut(m.pixels).zip(x.chunks(m.pixels)).enumerate() {
            let c = (first + k) % channels;
            // SAFETY: as this function's.
            unsafe { plane_forward(m, xp, &weight[c * m.taps..(c + 1) * m.taps], yp) };
        }
        return;
    }
    let items = y.len() / m.pixels * m.vectors;
    for i0 in (0..items).step_by(GROUP) {
        // Each item's plane and vector, its first input value and its filter.
        let item: [(usize, usize); GROUP] = std::array::from_fn(|j| {
            let i = (i0 + j).min(items - 1);
            (i / m.vectors, i % m.vectors)
        });
        let at = item.map(|(plane, v)| plane * m.pixels + v * LANES);
        let filter = item.map(|(plane, _)| ((first + plane) % channels) * m.taps);
        let mut acc = [_mm512_setzero_ps(); GROUP];
        for t in 0..m.taps {
            for j in 0..GROUP {
                let mask = m.masks[item[j].1 * m.taps + t];
                // The masked lanes are never read (a masked load does not touch them), so
                // the address may lie before or past the plane; the others are inside it.
                let from = x.as_ptr().wrapping_offset(at[j] as isize + m.offsets[t]);
                // SAFETY: every unmasked lane is a pixel of item j's plane.
                let xv = unsafe { _mm512_maskz_loadu_ps(mask, from) };
                acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(weight[filter[j] + t]), xv, acc[j]);
            }
        }
        for j in 0..GROUP.min(items - i0) {
            let left = m.pixels - item[j].1 * LANES;
            // SAFETY: the stored lanes are pixels v·16 .. v·16 + min(16, left) of the plane.
            unsafe {
                _mm512_mask_storeu_ps(
                    y.as_mut_ptr().add(at[j]),
                    crate::simd::first_lanes(left),
                    acc[j],
                )
            };
        }
    }
}

/// One plane's filter gradient: `out[t] = Σ_i dy[i]·x[i + offset[t]]` over the pixels whose tap
/// lies inside the image, one running sum per tap (`T` of them) in a register.
///
/// # Safety
/// The CPU has AVX-512F; `x` and `dy` hold `m.pixels` values, `out` `T`, and `m.taps == T`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn plane_weight_grad<const T: usize>(
    m: &TapMasks,
    x: &[f32],
    dy: &[f32],
    out: &mut [f32],
) {
    debug_assert!(m.taps == T && x.len() == m.pixels && dy.len() == m.pixels);
    let mut acc = [_mm512_setzero_ps(); T];
    for v in 0..m.vectors {
        let left = m.pixels - v * LANES;
        // SAFETY: the lanes read are the plane's pixels v·16 .. v·16 + min(16, left).
        let d = unsafe {
            _mm512_maskz_loadu_ps(crate::simd::first_lanes(left), dy.as_ptr().add(v * LANES))
        };
        for (t, a) in acc.iter_mut().enumerate() {
            let at = x
                .as_ptr()
                .wrapping_offset((v * LANES) as isize + m.offsets[t]);
            // SAFETY: every unmasked lane is a pixel of the plane (see `plane_forward`).
            let xv = unsafe { _mm512_maskz_loadu_ps(m.masks[v * T + t], at) };
            *a = _mm512_fmadd_ps(d, xv, *a);
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = _mm512_reduce_add_ps(a);
    }
}
