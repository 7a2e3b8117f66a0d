//! One image's 3x3 convolution (padding 1, stride 1 or 2) restricted to chosen filters and
//! chosen input channels, reading the full weight tensor where it lies: what dynamic inference
//! runs for a gated layer (and, with every filter and channel chosen, for an ungated one, for a
//! single image and for a batch of layers whose weights stay in cache).
//!
//! Gathering the chosen filters' weights into a smaller tensor first costs a copy of every
//! weight used, which on small maps (a 3x3 map reuses each weight 9 times) is as much work as
//! the convolution itself; so dynamic inference used to run such layers whole, and skipped
//! nothing there. Here each of a block's filters reads its own row of the weight tensor in
//! place (one broadcast per weight, as a packed copy would need anyway), and the input is the
//! compact image of just the live channels.
//!
//! The image is zero-padded into rows of `w + 2` and treated as one long row: output pixel
//! `(oh, ow)` sits at `p = oh·(w+2) + ow`, and tap `(ki, kj)` reads `p + ki·(w+2) + kj`. So a
//! vector of 16 consecutive `p` works for any width (a 7-pixel row wastes 2 of every 9 lanes,
//! not 9 of 16), and the columns `ow ≥ w` that the vectors also compute are dropped when the
//! rows are copied out with the bias and the ReLU. At stride 2 the padded image is split into
//! its four phases (even/odd rows and columns), so every tap again reads one fixed offset from
//! `p` with unit stride (see `Layout`). A 1x1 map is one dot product per filter.

use crate::parallel::{SharedMut, rectify, threads, with_image_scratch, with_scratch};
use rayon::prelude::*;

/// What to compute: `out[a] = bias[filters[a]] + Σ_k weight[filters[a], channels[k]] ⋆ x[k]`.
#[derive(Clone, Copy)]
pub struct Selection<'a> {
    /// The full `[out_channels, in_channels, 3, 3]` weight.
    pub weight: &'a [f32],
    /// The full `[out_channels]` bias.
    pub bias: &'a [f32],
    /// `in_channels` of the weight.
    pub in_channels: usize,
    /// The filters computed, in output order.
    pub filters: &'a [usize],
    /// The input channels read: plane `k` of the input is channel `channels[k]`.
    pub channels: &'a [usize],
}

/// The stride with which [`conv3x3_selected`] computes a convolution, if it does: 3x3,
/// padding 1, stride 1 or 2 (both axes alike), no dilation, no groups.
pub fn selected_stride(g: &crate::geometry::ConvGeometry) -> Option<usize> {
    let fits = g.kernel == [3, 3]
        && g.padding == [1, 1]
        && g.dilation == [1, 1]
        && g.groups == 1
        && g.stride[0] == g.stride[1]
        && (g.stride[0] == 1 || g.stride[0] == 2);
    fits.then_some(g.stride[0])
}

/// `out` (`filters.len()` planes of the output map) = the selected convolution of `x`
/// (`channels.len()` planes of `h × w`) with `stride` 1 or 2 (output `⌈h/stride⌉ × ⌈w/stride⌉`),
/// then the bias and, with `relu`, the ReLU.
pub fn conv3x3_selected(
    sel: Selection,
    h: usize,
    w: usize,
    stride: usize,
    x: &[f32],
    relu: bool,
    out: &mut [f32],
) {
    conv3x3_selected_on(sel, h, w, stride, x, relu, out, true)
}

/// [`conv3x3_selected`], its filter blocks spread over the threads only with `parallel` (a
/// caller running one image per thread passes false).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3_selected_on(
    sel: Selection,
    h: usize,
    w: usize,
    stride: usize,
    x: &[f32],
    relu: bool,
    out: &mut [f32],
    parallel: bool,
) {
    assert!(
        stride == 1 || stride == 2,
        "conv3x3_selected: stride {stride}"
    );
    let (nf, nc) = (sel.filters.len(), sel.channels.len());
    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
    assert_eq!(x.len(), nc * h * w, "conv3x3_selected: input size");
    assert_eq!(out.len(), nf * oh * ow, "conv3x3_selected: output size");
    assert_eq!(
        sel.bias.len() * sel.in_channels * 9,
        sel.weight.len(),
        "conv3x3_selected: weight size"
    );
    assert!(
        sel.filters.iter().all(|&f| f < sel.bias.len()),
        "conv3x3_selected: a filter index is out of range"
    );
    assert!(
        sel.channels.iter().all(|&c| c < sel.in_channels),
        "conv3x3_selected: a channel index is out of range"
    );
    if nf == 0 || h == 0 || w == 0 {
        return;
    }
    if h == 1 && w == 1 {
        single_pixel(&sel, x, relu, out);
        return;
    }
    let isa = Isa::detect();
    let layout = Layout::new(h, w, stride, nc, isa.lanes());
    with_image_scratch(layout.padded_len(), |padded| {
        layout.pad(x, padded);
        run_blocks(&sel, &layout, padded, isa, relu, out, parallel)
    });
}

/// Every filter block of the selection, from the padded image, into `out`.
fn run_blocks(
    sel: &Selection,
    layout: &Layout,
    padded: &[f32],
    isa: Isa,
    relu: bool,
    out: &mut [f32],
    parallel: bool,
) {
    let (h, w, row_len) = (layout.out_h, layout.out_w, layout.row);
    let nf = sel.filters.len();
    // Whole blocks of 8, then powers of two for the rest (as the row kernel splits them).
    let blocks = crate::direct::channel_blocks(nf);
    let out_ptr = SharedMut(out.as_mut_ptr());
    let plane = h * w;
    let run = |&(first, count): &(usize, usize)| {
        with_scratch(count * layout.staged(), |stage| {
            compute_block(isa, sel, layout, padded, first, count, stage);
            // SAFETY: each block writes only the planes of its own filters.
            let y = unsafe { out_ptr.slice(first * plane, count * plane) };
            for b in 0..count {
                let bias = sel.bias[sel.filters[first + b]];
                let src = &stage[b * layout.staged()..];
                for oh in 0..h {
                    let row = &src[oh * row_len..oh * row_len + w];
                    let dst = &mut y[(b * h + oh) * w..(b * h + oh + 1) * w];
                    if relu {
                        dst.iter_mut()
                            .zip(row)
                            .for_each(|(d, s)| *d = rectify(s + bias));
                    } else {
                        dst.iter_mut().zip(row).for_each(|(d, s)| *d = s + bias);
                    }
                }
            }
        })
    };
    if parallel && threads() > 1 && blocks.len() > 1 {
        blocks.par_iter().for_each(run);
    } else {
        blocks.iter().for_each(run);
    }
}

/// A 1x1 map: every tap but the centre reads padding, so each output is one dot product of the
/// filter's centre taps (stride 9 in its row) with the live channels' values. Pixel vectors
/// would use one lane in 16.
fn single_pixel(sel: &Selection, x: &[f32], relu: bool, out: &mut [f32]) {
    let row = sel.in_channels * 9;
    for (y, &f) in out.iter_mut().zip(sel.filters) {
        let centre = &sel.weight[f * row + 4..];
        // Four partial sums, so the adds do not wait on each other.
        let mut acc = [0f32; 4];
        let mut chunks = sel.channels.chunks_exact(4).zip(x.chunks_exact(4));
        for (cs, xs) in &mut chunks {
            for i in 0..4 {
                acc[i] += centre[cs[i] * 9] * xs[i];
            }
        }
        let done = sel.channels.len() / 4 * 4;
        let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for (c, xv) in sel.channels[done..].iter().zip(&x[done..]) {
            s += centre[c * 9] * xv;
        }
        s += sel.bias[f];
        *y = if relu { rectify(s) } else { s };
    }
}

/// The padded, flattened image and the pixel vectors that cover the output.
///
/// Stride 1: each channel is the zero-padded image, rows of `w + 2`; output pixel `(oh, ow)` is
/// `p = oh·(w+2) + ow` and tap `(ki, kj)` reads `p + ki·(w+2) + kj`.
///
/// Stride 2: each channel is the padded image split into its four phases (even/odd rows ×
/// even/odd columns), each `hq × wq` with `hq = ⌈(h+2)/2⌉`, `wq = ⌈(w+2)/2⌉`. Padded pixel
/// `(2a + s, 2b + t)` is `(a, b)` of phase `(s, t)`, so tap `(ki, kj)` of output `(oh, ow)`
/// reads `(oh + ki/2, ow + kj/2)` of phase `(ki%2, kj%2)`: with `p = oh·wq + ow`, again one
/// fixed offset per tap and unit stride along a vector.
struct Layout {
    h: usize,
    w: usize,
    stride: usize,
    channels: usize,
    /// Floats per channel of the padded input (one plane, or four phases).
    plane: usize,
    /// Floats per padded (phase) row.
    row: usize,
    out_h: usize,
    out_w: usize,
    /// Where each tap reads, relative to `p`, within its channel.
    offsets: [usize; 9],
    /// Pixel vectors per filter: they cover `p` in `0..out_h·row`.
    vectors: usize,
    lanes: usize,
}

impl Layout {
    fn new(h: usize, w: usize, stride: usize, channels: usize, lanes: usize) -> Layout {
        let (out_h, out_w) = (h.div_ceil(stride), w.div_ceil(stride));
        let (row, plane, offsets) = if stride == 1 {
            let wp = w + 2;
            let offsets = std::array::from_fn(|tap| (tap / 3) * wp + tap % 3);
            (wp, (h + 2) * wp, offsets)
        } else {
            let (hq, wq) = ((h + 2).div_ceil(2), (w + 2).div_ceil(2));
            let offsets = std::array::from_fn(|tap| {
                let (ki, kj) = (tap / 3, tap % 3);
                ((ki % 2) * 2 + kj % 2) * hq * wq + (ki / 2) * wq + kj / 2
            });
            (wq, 4 * hq * wq, offsets)
        };
        Layout {
            h,
            w,
            stride,
            channels,
            plane,
            row,
            out_h,
            out_w,
            offsets,
            vectors: (out_h * row).div_ceil(lanes),
            lanes,
        }
    }

    /// A valid output pixel reads inside its own channel (stride 1: `(h-1)·wp + w-1 + 2·wp + 2
    /// < plane`; stride 2: `oh·wq + ow + wq + 1 < hq·wq` in the last phase, as `hq ≥ out_h + 1`
    /// and `wq ≥ out_w + 1`). The last vector of the last channel reads up to `lanes` floats
    /// past the planes; such lanes are columns `≥ out_w` or rows `≥ out_h`, which are dropped.
    fn padded_len(&self) -> usize {
        self.channels * self.plane + self.lanes
    }

    /// Floats of one filter's staged output: every computed `p`.
    fn staged(&self) -> usize {
        self.vectors * self.lanes
    }

    /// Writes every float of `padded` (`padded_len()`, contents unknown): the zero border and
    /// the tail, and the image inside.
    fn pad(&self, x: &[f32], padded: &mut [f32]) {
        let (h, w) = (self.h, self.w);
        for k in 0..self.channels {
            let plane = &mut padded[k * self.plane..(k + 1) * self.plane];
            let image = &x[k * h * w..(k + 1) * h * w];
            if self.stride == 1 {
                let wp = self.row;
                plane[..wp].fill(0.0);
                plane[(h + 1) * wp..].fill(0.0);
                for ih in 0..h {
                    let row = &mut plane[(ih + 1) * wp..(ih + 2) * wp];
                    row[0] = 0.0;
                    row[1..=w].copy_from_slice(&image[ih * w..(ih + 1) * w]);
                    row[w + 1] = 0.0;
                }
            } else {
                let (wq, phase) = (self.row, self.plane / 4);
                plane.fill(0.0);
                for ih in 0..h {
                    // Padded row ih + 1 is row (ih + 1) / 2 of row phase (ih + 1) % 2.
                    let (pr, s) = (ih.div_ceil(2), (ih + 1) % 2);
                    let src = &image[ih * w..(ih + 1) * w];
                    // Padded column iw + 1: odd for even iw (phase t = 1, column iw / 2), even
                    // for odd iw (phase t = 0, column (iw + 1) / 2).
                    let odd = &mut plane[(s * 2 + 1) * phase + pr * wq..][..w.div_ceil(2)];
                    odd.iter_mut()
                        .zip(src.iter().step_by(2))
                        .for_each(|(d, v)| *d = *v);
                    let even = &mut plane[s * 2 * phase + pr * wq + 1..][..w / 2];
                    even.iter_mut()
                        .zip(src.iter().skip(1).step_by(2))
                        .for_each(|(d, v)| *d = *v);
                }
            }
        }
        padded[self.channels * self.plane..self.padded_len()].fill(0.0);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Scalar,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && !crate::direct::avx2_only() {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    fn lanes(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 16,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 8,
            Isa::Scalar => 8,
        }
    }
}

/// Filters `first..first + count` (count a power of two ≤ 8) into `stage`, one `staged()` run
/// of floats per filter.
fn compute_block(
    isa: Isa,
    sel: &Selection,
    layout: &Layout,
    padded: &[f32],
    first: usize,
    count: usize,
    stage: &mut [f32],
) {
    let row = sel.in_channels * 9;
    let rows: Vec<&[f32]> = sel.filters[first..first + count]
        .iter()
        .map(|&f| &sel.weight[f * row..(f + 1) * row])
        .collect();
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` found AVX-512F.
        Isa::Avx512 => unsafe { avx512::block(layout, padded, &rows, sel.channels, stage) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` found AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::block(layout, padded, &rows, sel.channels, stage) },
        Isa::Scalar => scalar_block(layout, padded, &rows, sel.channels, stage),
    }
}

/// The plain loop the SIMD versions unroll; for CPUs without AVX2.
fn scalar_block(
    layout: &Layout,
    padded: &[f32],
    rows: &[&[f32]],
    channels: &[usize],
    stage: &mut [f32],
) {
    let n = layout.staged();
    for (b, wrow) in rows.iter().enumerate() {
        let acc = &mut stage[b * n..(b + 1) * n];
        acc.fill(0.0);
        for (k, &c) in channels.iter().enumerate() {
            let x = &padded[k * layout.plane..];
            for tap in 0..9 {
                let wv = wrow[c * 9 + tap];
                let off = layout.offsets[tap];
                for (p, a) in acc.iter_mut().enumerate() {
                    // Past the buffer only for dropped lanes of the last channel.
                    if let Some(xv) = x.get(p + off) {
                        *a += xv * wv;
                    }
                }
            }
        }
    }
}

/// The SIMD block kernel for one instruction set: `B` filters × `P` pixel vectors of
/// accumulators, one broadcast of a weight per `P` FMAs and one load of a pixel vector per `B`.
macro_rules! simd_kernel {
    ($name:ident, $feature:literal, $lanes:expr, $vec:ty, $zero:ident, $load:ident, $store:ident,
     $set1:ident, $fma:ident, [$(($b:literal, $p:literal)),*]) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::Layout;
            use std::arch::x86_64::*;

            const LANES: usize = $lanes;

            /// See `compute_block`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn block(
                layout: &Layout,
                padded: &[f32],
                rows: &[&[f32]],
                channels: &[usize],
                stage: &mut [f32],
            ) {
                debug_assert_eq!(layout.lanes, LANES);
                let mut v = 0;
                while v < layout.vectors {
                    let rest = layout.vectors - v;
                    // The most pixel vectors this block size keeps in registers, or fewer at
                    // the end of the image.
                    let step = match (rows.len(), rest) {
                        $(
                            ($b, r) if r >= $p => {
                                unsafe { group::<$b, $p>(layout, padded, rows, channels, v, stage) };
                                $p
                            }
                        )*
                        (b, _) => unreachable!("block of {b} filters"),
                    };
                    v += step;
                }
            }

            /// Pixel vectors `v0..v0 + P` of `B` filters.
            #[target_feature(enable = $feature)]
            #[inline]
            unsafe fn group<const B: usize, const P: usize>(
                layout: &Layout,
                padded: &[f32],
                rows: &[&[f32]],
                channels: &[usize],
                v0: usize,
                stage: &mut [f32],
            ) {
                let offsets = layout.offsets;
                let q0 = v0 * LANES;
                let mut acc: [[$vec; B]; P] = [[$zero(); B]; P];
                let wrows: [*const f32; B] = std::array::from_fn(|b| rows[b].as_ptr());
                for (k, &c) in channels.iter().enumerate() {
                    let base = k * layout.plane + q0;
                    // Every read is inside `padded` (see `Layout::padded_len`).
                    debug_assert!(
                        base + (P - 1) * LANES + offsets.iter().max().unwrap() + LANES
                            <= padded.len()
                    );
                    let x = unsafe { padded.as_ptr().add(base) };
                    for tap in 0..9 {
                        let off = offsets[tap];
                        let mut xv: [$vec; P] = [$zero(); P];
                        for (p, v) in xv.iter_mut().enumerate() {
                            *v = unsafe { $load(x.add(off + p * LANES)) };
                        }
                        for b in 0..B {
                            // SAFETY: c < in_channels, so c·9 + tap is inside the row.
                            let wv = $set1(unsafe { *wrows[b].add(c * 9 + tap) });
                            for p in 0..P {
                                acc[p][b] = $fma(wv, xv[p], acc[p][b]);
                            }
                        }
                    }
                }
                let n = layout.staged();
                for p in 0..P {
                    for b in 0..B {
                        let at = b * n + q0 + p * LANES;
                        debug_assert!(at + LANES <= stage.len());
                        unsafe { $store(stage.as_mut_ptr().add(at), acc[p][b]) };
                    }
                }
            }
        }
    };
}

// AVX-512 has 32 registers: B·P ≤ 24 accumulators plus the P pixel vectors. Eight filters
// take three pixel vectors at a time: with one, each FMA waited on its own load (a pixel vector
// and eight broadcasts per eight FMAs), and the 3x3 layers of small-cnn ran at 55 GMAC/s.
simd_kernel!(
    avx512,
    "avx512f",
    16,
    __m512,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    [
        (8, 3),
        (8, 2),
        (8, 1),
        (4, 4),
        (4, 2),
        (4, 1),
        (2, 8),
        (2, 4),
        (2, 2),
        (2, 1),
        (1, 8),
        (1, 4),
        (1, 2),
        (1, 1)
    ]
);
// AVX2 has 16: B·P ≤ 8.
simd_kernel!(
    avx2,
    "avx2,fma",
    8,
    __m256,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    [
        (8, 1),
        (4, 2),
        (4, 1),
        (2, 4),
        (2, 2),
        (2, 1),
        (1, 4),
        (1, 2),
        (1, 1)
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The selected convolution by its definition, in f64.
    fn reference(
        sel: &Selection,
        h: usize,
        w: usize,
        stride: usize,
        x: &[f32],
        relu: bool,
    ) -> Vec<f64> {
        let (out_h, out_w) = (h.div_ceil(stride), w.div_ceil(stride));
        let mut out = vec![0f64; sel.filters.len() * out_h * out_w];
        for (a, &f) in sel.filters.iter().enumerate() {
            for oh in 0..out_h {
                for ow in 0..out_w {
                    let mut s = sel.bias[f] as f64;
                    for (k, &c) in sel.channels.iter().enumerate() {
                        for ki in 0..3 {
                            for kj in 0..3 {
                                let (ih, iw) = (oh * stride + ki, ow * stride + kj);
                                if ih == 0 || iw == 0 || ih > h || iw > w {
                                    continue;
                                }
                                let xv = x[(k * h + ih - 1) * w + iw - 1] as f64;
                                let wv = sel.weight[((f * sel.in_channels + c) * 3 + ki) * 3 + kj];
                                s += xv * wv as f64;
                            }
                        }
                    }
                    out[(a * out_h + oh) * out_w + ow] = if relu { s.max(0.0) } else { s };
                }
            }
        }
        out
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 - 1001.0) / 700.0)
            .collect()
    }

    fn check(isa_avx2_only: bool) {
        crate::direct::use_avx2_only(isa_avx2_only);
        // Maps from 1x1 to wider than a vector, filter counts that leave blocks of every size,
        // channel lists with gaps and out of order.
        let maps = [
            (1, 1),
            (3, 3),
            (2, 5),
            (7, 7),
            (14, 14),
            (5, 19),
            (28, 28),
            (4, 2),
        ];
        for (&(h, w), stride) in maps.iter().flat_map(|m| [(m, 1), (m, 2)]) {
            for &(o, c) in &[(1, 1), (13, 6), (16, 16), (23, 9)] {
                let weight = values(o * c * 9, o + c);
                let bias = values(o, 3);
                let filters: Vec<usize> = (0..o).filter(|f| f % 3 != 1 || o == 1).collect();
                let channels: Vec<usize> = (0..c).rev().filter(|k| k % 4 != 2 || c == 1).collect();
                let x = values(channels.len() * h * w, h * w);
                let sel = Selection {
                    weight: &weight,
                    bias: &bias,
                    in_channels: c,
                    filters: &filters,
                    channels: &channels,
                };
                for relu in [false, true] {
                    let out_len = filters.len() * h.div_ceil(stride) * w.div_ceil(stride);
                    let mut out = vec![f32::NAN; out_len];
                    conv3x3_selected(sel, h, w, stride, &x, relu, &mut out);
                    let want = reference(&sel, h, w, stride, &x, relu);
                    for (i, (g, r)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (*g as f64 - r).abs() < 1e-4 * (1.0 + r.abs()),
                            "{h}x{w} stride {stride}, {o} filters, {c} channels, relu {relu}, \
                             value {i}: {g} vs {r}"
                        );
                    }
                }
            }
        }
        crate::direct::use_avx2_only(false);
    }

    #[test]
    fn selected_convolution_matches_its_definition() {
        check(false);
        check(true);
    }

    #[test]
    fn scalar_kernel_matches_too() {
        let (h, w, o, c) = (5, 6, 3, 4);
        let weight = values(o * c * 9, 1);
        let bias = values(o, 2);
        let (filters, channels) = (vec![2, 0], vec![3, 1, 2]);
        let x = values(channels.len() * h * w, 5);
        let sel = Selection {
            weight: &weight,
            bias: &bias,
            in_channels: c,
            filters: &filters,
            channels: &channels,
        };
        for stride in [1, 2] {
            let layout = Layout::new(h, w, stride, channels.len(), 8);
            let mut padded = vec![f32::NAN; layout.padded_len()];
            layout.pad(&x, &mut padded);
            let rows: Vec<&[f32]> = filters
                .iter()
                .map(|&f| &weight[f * c * 9..(f + 1) * c * 9])
                .collect();
            let mut stage = vec![0f32; filters.len() * layout.staged()];
            scalar_block(&layout, &padded, &rows, &channels, &mut stage);
            let want = reference(&sel, h, w, stride, &x, false);
            let (oh_n, ow_n) = (layout.out_h, layout.out_w);
            for (a, &f) in filters.iter().enumerate() {
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let got = stage[a * layout.staged() + oh * layout.row + ow] + bias[f];
                        let r = want[(a * oh_n + oh) * ow_n + ow];
                        assert!(
                            (got as f64 - r).abs() < 1e-4 * (1.0 + r.abs()),
                            "stride {stride}"
                        );
                    }
                }
            }
        }
    }
}
