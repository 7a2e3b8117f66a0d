//! The weight gradient of a 1x1 convolution on maps of 256+ pixels with few channels on both
//! sides (MobileNet-V2's first blocks at CIFAR size: 16-32 -> 96-192 channels at 32x32 and
//! 16x16, and back at 32x32): `dW[o][i] = Σ_n Σ_p dy[n][o][p] · x[n][i][p]`, both factors read
//! where they lie.
//!
//! Through im2col + GEMM these layers ran at 25-45 GFLOP/s: gemm wants its left factor
//! column-major, so the whole output gradient (37 MiB for 24 -> 144 at 32x32, batch 64) was
//! first copied transposed, and the reduction ran over the long pixel axis with a few dozen
//! rows on either side. Here the pixels are the vector axis: a tile of filters × input channels
//! (4 × 6 with AVX-512, 4 × 3 with AVX2) keeps one running sum per pair in a register, sixteen
//! (eight) pixels wide, while it walks the pixels of a few images; per vector of pixels, ten
//! (seven) loads feed 24 (12) FMAs. Between visits the sums stay vectors in a per-task buffer,
//! added across their lanes once at the end.

use crate::blocked::{Width, width};
use crate::geometry::ConvGeometry;
use crate::parallel::{SharedMut, threads, zeroed};
use rayon::prelude::*;
use std::ops::Range;

/// Maps below this many pixels take im2col + GEMM, which blocks several images per GEMM.
const MIN_PIXELS: usize = 256;

/// From this many pixels a layer with more input channels than filters comes here too; below
/// it (192 -> 32 at 16x16) im2col + GEMM was as fast or faster.
const NARROWING_PIXELS: usize = 1024;

/// At most this many (filter, input channel) pairs: a task's vector sums (64 B a pair, 512 KiB
/// here) should stay in L2 beside the planes it reads.
const MAX_PAIRS: usize = 8192;

/// A tile visits this many pixels (a span of one image, or whole images) before the next tile
/// takes them, so that loading and storing its sums is a few percent of its FMAs while the
/// planes stay in cache. Measured at batch 64, one thread, on MobileNet-V2's 32x32 and 16x16
/// layers: 256 and 512 pixels 10-30 % slower than 1024, 2048 as fast or faster.
const VISIT_PIXELS: usize = 2048;

static OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends the layers this path takes back to im2col + GEMM, so that a benchmark
/// (`examples/kernel_speed.rs`) or a test compares both in one process. Both are exact, so
/// flipping it while others run is harmless.
#[doc(hidden)]
pub fn use_pointwise_grad(on: bool) {
    OFF.store(!on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this path takes `g`'s weight gradient (and the CPU runs one of its widths).
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    !OFF.load(std::sync::atomic::Ordering::Relaxed)
        && width().is_some()
        && g.is_pointwise()
        && g.groups == 1
        && g.out_pixels() >= MIN_PIXELS
        && (g.in_channels <= g.out_channels || g.out_pixels() >= NARROWING_PIXELS)
        && g.in_channels * g.out_channels <= MAX_PAIRS
}

/// Filters of one tile (its rows of output gradient), at both widths.
const FILTERS: usize = 4;

/// A tile's kernel: adds to the sums of filters `o0..o0 + FILTERS` × input channels from `i0`
/// (as many as the width's tile holds) the products over `images` × the pixels of `span`.
type Tile = unsafe fn(Task, &[f32], &[f32], Range<usize>, Range<usize>, usize, usize, &mut [f32]);

/// What one task sums: its images, its filters, the planes' sizes.
#[derive(Clone, Copy)]
struct Task {
    images: (usize, usize),
    filters: (usize, usize),
    in_channels: usize,
    out_channels: usize,
    pixels: usize,
}

/// `dw = Σ over images and pixels of dy ⊗ x` for a pointwise layer [`applies`] takes.
pub(crate) fn backward_weight(g: &ConvGeometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let width = width().expect("checked by applies()");
    let (ci, co, pixels) = (g.in_channels, g.out_channels, g.out_pixels());
    let lanes = width.lanes();
    let t = threads();
    // A run of images per thread, each with its own sums; with fewer images than threads the
    // filters are split too.
    let per_chunk = g.batch.div_ceil(t.min(g.batch));
    let chunks = g.batch.div_ceil(per_chunk);
    let tiles = co.div_ceil(FILTERS);
    let parts = (t / chunks).clamp(1, tiles);
    let per_part = tiles.div_ceil(parts) * FILTERS;
    let parts = co.div_ceil(per_part);
    let pair_sums = ci * lanes;
    let mut sums = zeroed(chunks * co * pair_sums);
    let shared = SharedMut(sums.as_mut_ptr());
    (0..chunks * parts).into_par_iter().for_each(|item| {
        let (c, q) = (item / parts, item % parts);
        let images = (c * per_chunk, ((c + 1) * per_chunk).min(g.batch));
        let filters = (q * per_part, ((q + 1) * per_part).min(co));
        let task = Task {
            images,
            filters,
            in_channels: ci,
            out_channels: co,
            pixels,
        };
        let len = (filters.1 - filters.0) * pair_sums;
        // SAFETY: item (c, q) writes only chunk c's sums of its own filters.
        let part = unsafe { shared.slice((c * co + filters.0) * pair_sums, len) };
        run(width, task, x, dy, part);
    });
    // Each pair's lanes and chunks added up, in f64.
    dw.par_chunks_mut(ci).enumerate().for_each(|(o, row)| {
        for (i, v) in row.iter_mut().enumerate() {
            let mut total = 0f64;
            for c in 0..chunks {
                let s = &sums[((c * co + o) * ci + i) * lanes..][..lanes];
                total += s.iter().map(|&v| v as f64).sum::<f64>();
            }
            *v = total as f32;
        }
    });
}

/// One task's tiles, a visit at a time: a span of one image's pixels, or a few whole images.
fn run(width: Width, task: Task, x: &[f32], dy: &[f32], sums: &mut [f32]) {
    let (ci, co, p) = (task.in_channels, task.out_channels, task.pixels);
    let (n_first, n_end) = task.images;
    assert!(x.len() >= n_end * ci * p && dy.len() >= n_end * co * p);
    assert!(sums.len() >= (task.filters.1 - task.filters.0) * ci * width.lanes());
    let (tile, channels): (Tile, usize) = match width {
        #[cfg(target_arch = "x86_64")]
        Width::Sixteen => (avx512::tile, avx512::CHANNELS),
        #[cfg(target_arch = "x86_64")]
        Width::Eight => (avx2::tile, avx2::CHANNELS),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no vector width runs on this CPU"),
    };
    let (fs, fe) = task.filters;
    // Every tile of the task's filters × all input channels over one visit's pixels, the side
    // with more channels outside: the smaller side's rows are the ones read again for every
    // tile, and stay in cache.
    let mut visit = |images: Range<usize>, span: Range<usize>| {
        let mut one = |o0: usize, i0: usize| {
            // SAFETY: `width()` checked the CPU's features; the asserts above bound every
            // read and write the tile makes.
            unsafe { tile(task, x, dy, images.clone(), span.clone(), o0, i0, sums) }
        };
        if fe - fs >= ci {
            for o0 in (fs..fe).step_by(FILTERS) {
                for i0 in (0..ci).step_by(channels) {
                    one(o0, i0);
                }
            }
        } else {
            for i0 in (0..ci).step_by(channels) {
                for o0 in (fs..fe).step_by(FILTERS) {
                    one(o0, i0);
                }
            }
        }
    };
    if p >= VISIT_PIXELS {
        for n in n_first..n_end {
            for p0 in (0..p).step_by(VISIT_PIXELS) {
                visit(n..n + 1, p0..(p0 + VISIT_PIXELS).min(p));
            }
        }
    } else {
        let group = VISIT_PIXELS / p;
        for n0 in (n_first..n_end).step_by(group) {
            visit(n0..(n0 + group).min(n_end), 0..p);
        }
    }
}

/// The rows a tile reads: `first + k`, repeated past `end` (those sums are never stored).
fn clamped<const K: usize>(first: usize, end: usize) -> [usize; K] {
    std::array::from_fn(|k| (first + k).min(end - 1))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{FILTERS, Range, Task, clamped};
    use std::arch::x86_64::*;

    const LANES: usize = 16;
    /// Six input channels: 24 sums, 6 inputs and one gradient vector in the 32 registers.
    pub(super) const CHANNELS: usize = 6;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        task: Task,
        x: &[f32],
        dy: &[f32],
        images: Range<usize>,
        span: Range<usize>,
        o0: usize,
        i0: usize,
        sums: &mut [f32],
    ) {
        let (ci, co, p) = (task.in_channels, task.out_channels, task.pixels);
        let (fs, fe) = task.filters;
        let os: [usize; FILTERS] = clamped(o0, fe);
        let is: [usize; CHANNELS] = clamped(i0, ci);
        let at = |k: usize, j: usize| ((os[k] - fs) * ci + is[j]) * LANES;
        let sp = sums.as_mut_ptr();
        let mut acc = [[_mm512_setzero_ps(); CHANNELS]; FILTERS];
        for (k, row) in acc.iter_mut().enumerate() {
            for (j, a) in row.iter_mut().enumerate() {
                // SAFETY: the pair's sums lie inside the task's slice (`run` checked its size).
                *a = unsafe { _mm512_loadu_ps(sp.add(at(k, j))) };
            }
        }
        let whole = span.start + (span.len() / LANES) * LANES;
        let tail = crate::simd::first_lanes(span.end - whole);
        for n in images {
            // SAFETY: image n's planes lie inside `x` and `dy` (checked in `run`).
            let d: [*const f32; FILTERS] =
                std::array::from_fn(|k| unsafe { dy.as_ptr().add((n * co + os[k]) * p) });
            let xr: [*const f32; CHANNELS] =
                std::array::from_fn(|j| unsafe { x.as_ptr().add((n * ci + is[j]) * p) });
            let mut q = span.start;
            while q < whole {
                // SAFETY: `q + 16 <= p`, inside every plane.
                unsafe {
                    let xv: [__m512; CHANNELS] =
                        std::array::from_fn(|j| _mm512_loadu_ps(xr[j].add(q)));
                    for (k, row) in acc.iter_mut().enumerate() {
                        let dv = _mm512_loadu_ps(d[k].add(q));
                        for (a, xv) in row.iter_mut().zip(xv) {
                            *a = _mm512_fmadd_ps(dv, xv, *a);
                        }
                    }
                }
                q += LANES;
            }
            if q < span.end {
                // SAFETY: only the lanes below the span's end are read.
                unsafe {
                    let xv: [__m512; CHANNELS] =
                        std::array::from_fn(|j| _mm512_maskz_loadu_ps(tail, xr[j].add(q)));
                    for (k, row) in acc.iter_mut().enumerate() {
                        let dv = _mm512_maskz_loadu_ps(tail, d[k].add(q));
                        for (a, xv) in row.iter_mut().zip(xv) {
                            *a = _mm512_fmadd_ps(dv, xv, *a);
                        }
                    }
                }
            }
        }
        for (k, row) in acc.iter().enumerate().take(fe - o0) {
            for (j, a) in row.iter().enumerate().take(ci - i0) {
                // SAFETY: as for the loads above.
                unsafe { _mm512_storeu_ps(sp.add(at(k, j)), *a) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{FILTERS, Range, Task, clamped};
    use std::arch::x86_64::*;

    const LANES: usize = 8;
    /// Three input channels: 12 sums, 3 inputs and one gradient vector fill the 16 registers.
    pub(super) const CHANNELS: usize = 3;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        task: Task,
        x: &[f32],
        dy: &[f32],
        images: Range<usize>,
        span: Range<usize>,
        o0: usize,
        i0: usize,
        sums: &mut [f32],
    ) {
        let (ci, co, p) = (task.in_channels, task.out_channels, task.pixels);
        let (fs, fe) = task.filters;
        let os: [usize; FILTERS] = clamped(o0, fe);
        let is: [usize; CHANNELS] = clamped(i0, ci);
        let at = |k: usize, j: usize| ((os[k] - fs) * ci + is[j]) * LANES;
        let sp = sums.as_mut_ptr();
        let mut acc = [[_mm256_setzero_ps(); CHANNELS]; FILTERS];
        for (k, row) in acc.iter_mut().enumerate() {
            for (j, a) in row.iter_mut().enumerate() {
                // SAFETY: the pair's sums lie inside the task's slice (`run` checked its size).
                *a = unsafe { _mm256_loadu_ps(sp.add(at(k, j))) };
            }
        }
        let whole = span.start + (span.len() / LANES) * LANES;
        let rest = span.end - whole;
        let tail = _mm256_setr_epi32(
            -((rest > 0) as i32),
            -((rest > 1) as i32),
            -((rest > 2) as i32),
            -((rest > 3) as i32),
            -((rest > 4) as i32),
            -((rest > 5) as i32),
            -((rest > 6) as i32),
            0,
        );
        for n in images {
            // SAFETY: image n's planes lie inside `x` and `dy` (checked in `run`).
            let d: [*const f32; FILTERS] =
                std::array::from_fn(|k| unsafe { dy.as_ptr().add((n * co + os[k]) * p) });
            let xr: [*const f32; CHANNELS] =
                std::array::from_fn(|j| unsafe { x.as_ptr().add((n * ci + is[j]) * p) });
            let mut q = span.start;
            while q < whole {
                // SAFETY: `q + 8 <= p`, inside every plane.
                unsafe {
                    let xv: [__m256; CHANNELS] =
                        std::array::from_fn(|j| _mm256_loadu_ps(xr[j].add(q)));
                    for (k, row) in acc.iter_mut().enumerate() {
                        let dv = _mm256_loadu_ps(d[k].add(q));
                        for (a, xv) in row.iter_mut().zip(xv) {
                            *a = _mm256_fmadd_ps(dv, xv, *a);
                        }
                    }
                }
                q += LANES;
            }
            if rest > 0 {
                // SAFETY: only the lanes below the span's end are read.
                unsafe {
                    let xv: [__m256; CHANNELS] =
                        std::array::from_fn(|j| _mm256_maskload_ps(xr[j].add(q), tail));
                    for (k, row) in acc.iter_mut().enumerate() {
                        let dv = _mm256_maskload_ps(d[k].add(q), tail);
                        for (a, xv) in row.iter_mut().zip(xv) {
                            *a = _mm256_fmadd_ps(dv, xv, *a);
                        }
                    }
                }
            }
        }
        for (k, row) in acc.iter().enumerate().take(fe - o0) {
            for (j, a) in row.iter().enumerate().take(ci - i0) {
                // SAFETY: as for the loads above.
                unsafe { _mm256_storeu_ps(sp.add(at(k, j)), *a) };
            }
        }
    }
}
