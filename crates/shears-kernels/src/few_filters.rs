//! The forward pass of an unpadded, stride-1 convolution with few filters (up to 16) and few
//! input channels (up to 16), with AVX-512: a network's first layers, LeNet-5's 5x5 ones with 6
//! and 16 filters. Through im2col + GEMM such a layer kept 6 of a register's 16 rows working and wrote
//! 25 copies of every input value; here the output is summed directly.
//!
//! Each output row is computed as wide as the input's rows (the columns past the output's end
//! are thrown away), so that every tap of every pixel is the input at a fixed offset from the
//! pixel's own index and a plane is one flat run of 16-pixel vectors. Every filter's sums for
//! a few vectors stay in registers (six filters by four vectors, 24 accumulators) while each
//! tap's weights are broadcast and its shifted input vectors loaded once for all filters. The
//! weight gradient of the same layers is `direct_grad::backward_weight_unpadded`. (The input
//! gradient as the same kernel on the output gradient padded by `k − 1` summed 2.5 times the
//! products im2col + GEMM does on LeNet-5's second layer, and was slower: 0.75 against 0.67 ms.)

use crate::geometry::ConvGeometry;
use crate::parallel::with_scratch;
use rayon::prelude::*;

const LANES: usize = 16;

/// Whether [`forward`] takes `g`: the layers of `direct_grad::applies_unpadded`.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    crate::direct_grad::applies_unpadded(g)
}

/// `y = conv(x, w)` (no bias) for a layer [`applies`] takes, image by image.
pub(crate) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    assert!(applies(g), "few_filters: not a layer it takes, {g:?}");
    let in_image = g.in_channels * g.in_pixels();
    let out_image = g.out_channels * g.out_pixels();
    let (w_in, ow) = (g.in_w, g.out_w());
    let wide_plane = g.out_h() * w_in;
    y.par_chunks_mut(out_image)
        .zip(x.par_chunks(in_image))
        .for_each(|(yn, xn)| {
            // The input with zeros after it (the last rows' columns past the output's end
            // read up to `kw − 2` values past the image), then the output in wide rows.
            with_scratch(in_image + LANES + g.out_channels * wide_plane, |buf| {
                let (xs, wide) = buf.split_at_mut(in_image + LANES);
                xs[..in_image].copy_from_slice(xn);
                xs[in_image..].fill(0.0);
                image(g, xs, w, wide);
                for (dst, src) in yn.chunks_exact_mut(ow).zip(wide.chunks_exact(w_in)) {
                    dst.copy_from_slice(&src[..ow]);
                }
            })
        });
}

/// One image's output in rows `in_w` wide: `wide[o][oh·in_w + ow]`.
fn image(g: &ConvGeometry, xs: &[f32], w: &[f32], wide: &mut [f32]) {
    let (kw_n, w_in) = (g.kernel[1], g.in_w);
    let wide_plane = g.out_h() * w_in;
    // Every read: the input at `c·plane + kh·in_w + kw + q` for q < wide_plane, at most
    // `kw_n − 2` past the image, inside the zeros; the weights `[o][c][kh][kw]`.
    assert!(xs.len() >= g.in_channels * g.in_pixels() + kw_n.saturating_sub(1));
    assert_eq!(w.len(), g.weight_len());
    assert_eq!(wide.len(), g.out_channels * wide_plane);
    #[cfg(target_arch = "x86_64")]
    {
        // Up to eight filters at a time (sixteen, LeNet-5's second layer, in two groups: the
        // input, in L1, is read once per group).
        let filter_len = g.in_channels * g.kernel[0] * kw_n;
        let mut first = 0;
        while first < g.out_channels {
            let filters = (g.out_channels - first).min(8);
            let vectors = (24 / filters).clamp(1, 4);
            let step = vectors * LANES;
            let w = &w[first * filter_len..(first + filters) * filter_len];
            let wide = &mut wide[first * wide_plane..(first + filters) * wide_plane];
            let mut q = 0;
            while q < wide_plane {
                // SAFETY: `applies` checked AVX-512F; reads and writes stay inside the buffers
                // asserted above (vectors past `wide_plane` are masked off).
                unsafe { tile(g, filters, xs, w, wide, q, vectors) };
                q += step;
            }
            first += filters;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xs, w, wide, kw_n, w_in, wide_plane);
        unreachable!("few_filters is only selected on x86-64");
    }
}

/// [`tile_avx512`] for `vectors` (1 to 4) vectors from `q`, for the `filters` (1 to 8) filters
/// whose weights are `w` and whose wide output is `wide`.
///
/// # Safety
/// As [`tile_avx512`].
#[cfg(target_arch = "x86_64")]
unsafe fn tile(
    g: &ConvGeometry,
    filters: usize,
    xs: &[f32],
    w: &[f32],
    wide: &mut [f32],
    q: usize,
    vectors: usize,
) {
    macro_rules! go {
        ($b:literal) => {
            match vectors {
                4 => unsafe { tile_avx512::<$b, 4>(g, xs, w, wide, q) },
                3 => unsafe { tile_avx512::<$b, 3>(g, xs, w, wide, q) },
                2 => unsafe { tile_avx512::<$b, 2>(g, xs, w, wide, q) },
                _ => unsafe { tile_avx512::<$b, 1>(g, xs, w, wide, q) },
            }
        };
    }
    match filters {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        5 => go!(5),
        6 => go!(6),
        7 => go!(7),
        _ => go!(8),
    }
}

/// `P` vectors of every one of the `B` filters' wide output from pixel `q`, summed over every
/// input channel and tap.
///
/// # Safety
/// AVX-512F; `xs` as asserted in [`image`], `w` and `wide` those of `B` filters.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
// The accumulators are indexed by filter and vector together.
#[allow(clippy::needless_range_loop)]
unsafe fn tile_avx512<const B: usize, const P: usize>(
    g: &ConvGeometry,
    xs: &[f32],
    w: &[f32],
    wide: &mut [f32],
    q: usize,
) {
    use crate::simd::first_lanes;
    use std::arch::x86_64::*;
    let (kh_n, kw_n, w_in) = (g.kernel[0], g.kernel[1], g.in_w);
    let (plane, taps) = (g.in_pixels(), kh_n * kw_n);
    let wide_plane = g.out_h() * w_in;
    // The pixels of each vector inside the plane (none past its end).
    let masks: [__mmask16; P] =
        std::array::from_fn(|p| first_lanes(wide_plane.saturating_sub(q + p * LANES)));
    let mut acc = [[_mm512_setzero_ps(); P]; B];
    let (x, wt) = (xs.as_ptr(), w.as_ptr());
    for c in 0..g.in_channels {
        for kh in 0..kh_n {
            for kw in 0..kw_n {
                let at = c * plane + kh * w_in + kw + q;
                let mut xv = [_mm512_setzero_ps(); P];
                for p in 0..P {
                    xv[p] = unsafe { _mm512_maskz_loadu_ps(masks[p], x.add(at + p * LANES)) };
                }
                let tap = (c * kh_n + kh) * kw_n + kw;
                for b in 0..B {
                    let wv = _mm512_set1_ps(unsafe { *wt.add(b * g.in_channels * taps + tap) });
                    for p in 0..P {
                        acc[b][p] = _mm512_fmadd_ps(wv, xv[p], acc[b][p]);
                    }
                }
            }
        }
    }
    let y = wide.as_mut_ptr();
    for b in 0..B {
        for p in 0..P {
            unsafe {
                _mm512_mask_storeu_ps(y.add(b * wide_plane + q + p * LANES), masks[p], acc[b][p])
            };
        }
    }
}
