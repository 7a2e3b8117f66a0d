//! Max pooling: each output the largest input of its window, padding never chosen (a window
//! that covers only padding, which PyTorch's shape rules rule out, gives -inf).
//!
//! Inference keeps no argmax ([`max_pool2d_forward`]); Burn's flex pooling computes the indices
//! too and was, at batch 1, a third of small-cnn's forward pass. Training keeps, per output, the
//! position of its maximum in the input plane ([`max_pool2d_forward_train`]), and the backward
//! pass adds each output gradient there ([`max_pool2d_backward`]). Burn's pooling with indices
//! was 7 % of a VGG-11 training step at batch 64, more than the optimiser.
//!
//! As in PyTorch, a NaN in a window wins it (a diverged network shows NaN, not a finite
//! maximum of the rest), and among equal values the first in row-major order wins.

use rayon::prelude::*;

/// The shape of one max pooling: input `[batch, channels, in_h, in_w]`, output
/// `[batch, channels, out_h, out_w]` (the caller's shape rule decides `out_h`/`out_w`, which
/// `ceil_mode` rounds up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

/// The input positions `[start, end)` the window of output `o` covers along one axis.
fn window(o: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize) {
    let start = (o * s) as isize - p as isize;
    let end = (start + k as isize).min(len as isize);
    (start.max(0) as usize, end.max(0) as usize)
}

/// `output = max_pool(input)` per the geometry.
pub fn max_pool2d_forward(g: &PoolGeometry, input: &[f32], output: &mut [f32]) {
    let (ip, op) = (g.in_h * g.in_w, g.out_h * g.out_w);
    assert_eq!(
        input.len(),
        g.batch * g.channels * ip,
        "max pool input length"
    );
    assert_eq!(
        output.len(),
        g.batch * g.channels * op,
        "max pool output length"
    );
    if op == 0 {
        return;
    }
    let plain_2x2 = is_plain_2x2(g);
    // Planes in chunks of about 4k outputs, so a small map is not one task per plane.
    let per_task = (4096 / op).max(1);
    output
        .par_chunks_mut(op * per_task)
        .zip(input.par_chunks(ip * per_task))
        .for_each(|(ys, xs)| {
            for (y, x) in ys.chunks_mut(op).zip(xs.chunks(ip)) {
                if plain_2x2 {
                    for (oh, y_row) in y.chunks_mut(g.out_w).enumerate() {
                        let r0 = &x[2 * oh * g.in_w..][..g.in_w];
                        let r1 = &x[(2 * oh + 1) * g.in_w..][..g.in_w];
                        for (ow, v) in y_row.iter_mut().enumerate() {
                            let c = 2 * ow;
                            *v = r0[c].max(r0[c + 1]).max(r1[c].max(r1[c + 1]));
                        }
                    }
                    continue;
                }
                for oh in 0..g.out_h {
                    let (h0, h1) = window(oh, g.kernel[0], g.stride[0], g.padding[0], g.in_h);
                    for ow in 0..g.out_w {
                        let (w0, w1) = window(ow, g.kernel[1], g.stride[1], g.padding[1], g.in_w);
                        let mut m = f32::NEG_INFINITY;
                        for ih in h0..h1 {
                            for &v in &x[ih * g.in_w + w0..ih * g.in_w + w1] {
                                m = m.max(v);
                            }
                        }
                        y[oh * g.out_w + ow] = m;
                    }
                }
            }
        });
}

fn check_lengths(g: &PoolGeometry, input: usize, output: usize) {
    let (ip, op) = (g.in_h * g.in_w, g.out_h * g.out_w);
    assert_eq!(input, g.batch * g.channels * ip, "max pool input length");
    assert_eq!(output, g.batch * g.channels * op, "max pool output length");
    assert!(
        ip <= u32::MAX as usize,
        "max pool: an input plane of {ip} values does not fit u32 indices"
    );
}

/// Planes per parallel task: about 4k outputs each, so a small map is not one task per plane.
fn planes_per_task(g: &PoolGeometry) -> usize {
    (4096 / (g.out_h * g.out_w).max(1)).max(1)
}

/// Training max pooling: `output` as [`max_pool2d_forward`] (but NaN-propagating), and in
/// `argmax` each output's position in its input plane (`ih * in_w + iw`) for the backward pass.
/// A window over padding alone (never from PyTorch's shape rules) records `u32::MAX`.
pub fn max_pool2d_forward_train(
    g: &PoolGeometry,
    input: &[f32],
    output: &mut [f32],
    argmax: &mut [u32],
) {
    check_lengths(g, input.len(), output.len());
    assert_eq!(argmax.len(), output.len(), "max pool argmax length");
    let (ip, op) = (g.in_h * g.in_w, g.out_h * g.out_w);
    if op == 0 {
        return;
    }
    let per_task = planes_per_task(g);
    output
        .par_chunks_mut(op * per_task)
        .zip(argmax.par_chunks_mut(op * per_task))
        .zip(input.par_chunks(ip * per_task))
        .for_each(|((ys, is), xs)| {
            for ((y, idx), x) in ys.chunks_mut(op).zip(is.chunks_mut(op)).zip(xs.chunks(ip)) {
                if is_plain_2x2(g) {
                    // Four candidates in row-major order, without the window arithmetic (the
                    // generic loop below took 4 % of a VGG-11 training step).
                    let w = g.in_w;
                    for oh in 0..g.out_h {
                        let r0 = 2 * oh * w;
                        let rows = &x[r0..r0 + 2 * w];
                        let (y_row, i_row) = (
                            &mut y[oh * g.out_w..(oh + 1) * g.out_w],
                            &mut idx[oh * g.out_w..(oh + 1) * g.out_w],
                        );
                        pool_2x2_row(rows, w, r0 as u32, y_row, i_row);
                    }
                    continue;
                }
                for oh in 0..g.out_h {
                    let (h0, h1) = window(oh, g.kernel[0], g.stride[0], g.padding[0], g.in_h);
                    for ow in 0..g.out_w {
                        let (w0, w1) = window(ow, g.kernel[1], g.stride[1], g.padding[1], g.in_w);
                        let mut m = f32::NEG_INFINITY;
                        let mut at = u32::MAX;
                        'window: for ih in h0..h1 {
                            for iw in w0..w1 {
                                let i = ih * g.in_w + iw;
                                let v = x[i];
                                if v > m || v.is_nan() || at == u32::MAX {
                                    m = v;
                                    at = i as u32;
                                    if v.is_nan() {
                                        break 'window;
                                    }
                                }
                            }
                        }
                        y[oh * g.out_w + ow] = m;
                        idx[oh * g.out_w + ow] = at;
                    }
                }
            }
        });
}

/// 2x2 windows at stride 2 without padding, all inside the input.
fn is_plain_2x2(g: &PoolGeometry) -> bool {
    g.kernel == [2, 2]
        && g.stride == [2, 2]
        && g.padding == [0, 0]
        && g.out_h * 2 <= g.in_h
        && g.out_w * 2 <= g.in_w
}

/// One output row of a 2x2 stride-2 pooling with its argmax: `rows` holds the two input rows
/// (`w` values each) starting at plane position `at`. Sixteen outputs at a time with AVX-512,
/// eight with AVX2 (even and odd columns split in registers; LeNet-5's two pools were a tenth of
/// its training step written as the scalar loop), else that loop.
fn pool_2x2_row(rows: &[f32], w: usize, at: u32, y: &mut [f32], idx: &mut [u32]) {
    assert!(rows.len() >= 2 * w && 2 * y.len() <= w && idx.len() == y.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && !crate::direct::avx2_only() {
        // SAFETY: AVX-512F checked just above; lengths checked by the assert.
        unsafe { avx512::pool_2x2_row(rows, w, at, y, idx) };
        return;
    }
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 checked just above; lengths checked by the assert.
        done = unsafe { avx2::pool_2x2_row(rows, w, at, y, idx) };
    }
    for (ow, (v, a)) in y.iter_mut().zip(idx.iter_mut()).enumerate().skip(done) {
        let i = 2 * ow;
        let mut best = (rows[i], at + i as u32);
        for j in [i + 1, i + w, i + w + 1] {
            best = first_max(best, (rows[j], at + j as u32));
        }
        (*v, *a) = best;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::simd::first_lanes;
    use std::arch::x86_64::*;

    /// [`super::pool_2x2_row`] sixteen outputs at a time. A candidate replaces the running
    /// maximum where that is not NaN and the candidate is not at most it (larger, or NaN):
    /// [`super::first_max`] lane by lane.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pool_2x2_row(
        rows: &[f32],
        w: usize,
        at: u32,
        y: &mut [f32],
        idx: &mut [u32],
    ) {
        // SAFETY: the caller checked the lengths: every load reads inside `rows`' two rows
        // (masked past `2 · y.len()` values), every store inside `y` and `idx`.
        unsafe {
            // Lane `l` takes column `2l` (and `2l + 1`) of the 32 values loaded: the offsets of
            // its window's first candidate too.
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
            let (r0, r1) = (rows.as_ptr(), rows.as_ptr().add(w));
            let mut ow = 0;
            while ow < y.len() {
                let n = (y.len() - ow).min(16);
                let (lo, hi) = (first_lanes(2 * n), first_lanes((2 * n).saturating_sub(16)));
                let split = |r: *const f32| {
                    let a = _mm512_maskz_loadu_ps(lo, r.add(2 * ow));
                    let b = _mm512_maskz_loadu_ps(hi, r.add(2 * ow + 16));
                    (
                        _mm512_permutex2var_ps(a, even, b),
                        _mm512_permutex2var_ps(a, odd, b),
                    )
                };
                let (a, b) = split(r0);
                let (c, d) = split(r1);
                let ia = _mm512_add_epi32(even, _mm512_set1_epi32((at as usize + 2 * ow) as i32));
                let mut best = a;
                let mut at_best = ia;
                for (v, offset) in [(b, 1), (c, w), (d, w + 1)] {
                    let take = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(best, best)
                        & _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(v, best);
                    best = _mm512_mask_mov_ps(best, take, v);
                    let iv = _mm512_add_epi32(ia, _mm512_set1_epi32(offset as i32));
                    at_best = _mm512_mask_mov_epi32(at_best, take, iv);
                }
                let m = first_lanes(n);
                _mm512_mask_storeu_ps(y.as_mut_ptr().add(ow), m, best);
                _mm512_mask_storeu_epi32(idx.as_mut_ptr().add(ow) as *mut i32, m, at_best);
                ow += 16;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::pool_2x2_row`] eight outputs at a time, as far as whole groups of eight go: how
    /// many outputs it wrote (the caller's loop does the rest). The same rule as the AVX-512
    /// kernel, with comparison results as lane masks.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pool_2x2_row(
        rows: &[f32],
        w: usize,
        at: u32,
        y: &mut [f32],
        idx: &mut [u32],
    ) -> usize {
        let whole = y.len() / 8 * 8;
        // SAFETY: each group of eight outputs reads the 16 values `2·ow..2·ow + 16` of both
        // rows, inside them since `2 · y.len() <= w` (caller's assert); stores stay in `y`, `idx`.
        unsafe {
            let even_cols = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
            let (r0, r1) = (rows.as_ptr(), rows.as_ptr().add(w));
            // Even and odd columns of 16 values: shuffles within 128-bit halves, then the
            // 64-bit quarters put in order.
            let split = |r: *const f32| {
                let (a, b) = (_mm256_loadu_ps(r), _mm256_loadu_ps(r.add(8)));
                let order = |v: __m256| {
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
                };
                (
                    order(_mm256_shuffle_ps::<0b10_00_10_00>(a, b)),
                    order(_mm256_shuffle_ps::<0b11_01_11_01>(a, b)),
                )
            };
            let mut ow = 0;
            while ow < whole {
                let (a, b) = split(r0.add(2 * ow));
                let (c, d) = split(r1.add(2 * ow));
                let ia =
                    _mm256_add_epi32(even_cols, _mm256_set1_epi32((at as usize + 2 * ow) as i32));
                let mut best = a;
                let mut at_best = _mm256_castsi256_ps(ia);
                for (v, offset) in [(b, 1), (c, w), (d, w + 1)] {
                    let take = _mm256_and_ps(
                        _mm256_cmp_ps::<_CMP_ORD_Q>(best, best),
                        _mm256_cmp_ps::<_CMP_NLE_UQ>(v, best),
                    );
                    best = _mm256_blendv_ps(best, v, take);
                    let iv = _mm256_add_epi32(ia, _mm256_set1_epi32(offset as i32));
                    at_best = _mm256_blendv_ps(at_best, _mm256_castsi256_ps(iv), take);
                }
                _mm256_storeu_ps(y.as_mut_ptr().add(ow), best);
                _mm256_storeu_si256(
                    idx.as_mut_ptr().add(ow) as *mut __m256i,
                    _mm256_castps_si256(at_best),
                );
                ow += 8;
            }
        }
        whole
    }
}

/// The later candidate replaces the running maximum only if larger, or a NaN where the maximum
/// is not yet one: the first maximum (or the first NaN) in scan order wins.
#[inline(always)]
fn first_max(best: (f32, u32), next: (f32, u32)) -> (f32, u32) {
    if next.0 > best.0 || (next.0.is_nan() && !best.0.is_nan()) {
        next
    } else {
        best
    }
}

/// The input gradient of a max pooling: each output gradient added at its argmax (overlapping
/// windows can share one), zero elsewhere. Every value of `grad_input` is written.
pub fn max_pool2d_backward(
    g: &PoolGeometry,
    grad_output: &[f32],
    argmax: &[u32],
    grad_input: &mut [f32],
) {
    check_lengths(g, grad_input.len(), grad_output.len());
    assert_eq!(argmax.len(), grad_output.len(), "max pool argmax length");
    let (ip, op) = (g.in_h * g.in_w, g.out_h * g.out_w);
    if ip == 0 {
        return;
    }
    if op == 0 {
        grad_input.fill(0.0);
        return;
    }
    let per_task = planes_per_task(g);
    grad_input
        .par_chunks_mut(ip * per_task)
        .zip(grad_output.par_chunks(op * per_task))
        .zip(argmax.par_chunks(op * per_task))
        .for_each(|((dxs, dys), is)| {
            dxs.fill(0.0);
            for ((dx, dy), idx) in dxs.chunks_mut(ip).zip(dys.chunks(op)).zip(is.chunks(op)) {
                for (&d, &i) in dy.iter().zip(idx) {
                    if let Some(slot) = dx.get_mut(i as usize) {
                        *slot += d;
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time.
    fn naive(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
        naive_first_max(g, x).into_iter().map(|(v, _)| v).collect()
    }

    /// Each output's window maximum and the flat input index of its first occurrence
    /// (row-major), one output at a time; NaN-free input.
    fn naive_first_max(g: &PoolGeometry, x: &[f32]) -> Vec<(f32, usize)> {
        let mut y = Vec::new();
        for plane in 0..g.batch * g.channels {
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let mut best = (f32::NEG_INFINITY, usize::MAX);
                    for kh in 0..g.kernel[0] {
                        for kw in 0..g.kernel[1] {
                            let ih = (oh * g.stride[0] + kh) as isize - g.padding[0] as isize;
                            let iw = (ow * g.stride[1] + kw) as isize - g.padding[1] as isize;
                            if ih >= 0
                                && iw >= 0
                                && (ih as usize) < g.in_h
                                && (iw as usize) < g.in_w
                            {
                                let i =
                                    plane * g.in_h * g.in_w + ih as usize * g.in_w + iw as usize;
                                if best.1 == usize::MAX || x[i] > best.0 {
                                    best = (x[i], i);
                                }
                            }
                        }
                    }
                    y.push(best);
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_definition_with_padding_odd_sizes_and_ceil_mode() {
        // (in, kernel, stride, padding, out): plain 2x2, 3x3 /2 pad 1 (ResNet's stem), a ceil-mode
        // last window hanging over the edge, a 1x1 map.
        for (n, c, h, w, k, s, p, oh, ow) in [
            (2, 3, 8, 6, [2, 2], [2, 2], [0, 0], 4, 3),
            (1, 5, 7, 7, [2, 2], [2, 2], [0, 0], 3, 3),
            (1, 4, 9, 11, [3, 3], [2, 2], [1, 1], 5, 6),
            (2, 2, 7, 7, [3, 3], [2, 2], [0, 0], 3, 3),
            (1, 2, 6, 6, [3, 3], [2, 2], [0, 0], 3, 3), // ceil mode: 3 where floor gives 2
            (1, 3, 1, 1, [1, 1], [1, 1], [0, 0], 1, 1),
        ] {
            let g = PoolGeometry {
                batch: n,
                channels: c,
                in_h: h,
                in_w: w,
                out_h: oh,
                out_w: ow,
                kernel: k,
                stride: s,
                padding: p,
            };
            let x: Vec<f32> = (0..n * c * h * w)
                .map(|i| ((i * 7919) % 101) as f32 - 50.0)
                .collect();
            // NaN: a value the kernel leaves unwritten fails the comparison.
            let mut y = vec![f32::NAN; n * c * oh * ow];
            max_pool2d_forward(&g, &x, &mut y);
            assert_eq!(y, naive(&g, &x), "{g:?}");
        }
    }

    /// The training forward against the definition (value and first argmax), and the backward
    /// against the gradient of the definition in f64: overlapping windows (3x3 stride 2) add
    /// into shared inputs, padding and ceil-mode edges, ties and a NaN.
    #[test]
    fn training_pool_matches_the_definition_and_its_gradient() {
        for (n, c, h, w, k, s, p, oh, ow) in [
            (2, 3, 8, 6, [2, 2], [2, 2], [0, 0], 4, 3),
            (1, 4, 9, 11, [3, 3], [2, 2], [1, 1], 5, 6),
            (2, 2, 7, 7, [3, 3], [2, 2], [0, 0], 3, 3),
            (1, 2, 6, 6, [3, 3], [2, 2], [0, 0], 3, 3),
            (3, 70, 2, 2, [2, 2], [2, 2], [0, 0], 1, 1),
            // Rows of more than sixteen outputs (a full vector and a tail), an odd width.
            (2, 3, 36, 37, [2, 2], [2, 2], [0, 0], 18, 18),
            (1, 2, 10, 64, [2, 2], [2, 2], [0, 0], 5, 32),
        ] {
            let g = PoolGeometry {
                batch: n,
                channels: c,
                in_h: h,
                in_w: w,
                out_h: oh,
                out_w: ow,
                kernel: k,
                stride: s,
                padding: p,
            };
            // Few distinct values, so windows hold ties.
            let x: Vec<f32> = (0..n * c * h * w)
                .map(|i| ((i * 7919) % 13) as f32 - 6.0)
                .collect();
            // NaN: a value the kernel leaves unwritten fails the comparison.
            let mut y = vec![f32::NAN; n * c * oh * ow];
            let mut idx = vec![0u32; y.len()];
            max_pool2d_forward_train(&g, &x, &mut y, &mut idx);
            assert_eq!(y, naive(&g, &x), "{g:?}");
            let dy: Vec<f32> = (0..y.len()).map(|i| (i % 7) as f32 * 0.5 - 1.0).collect();
            let mut dx = vec![f32::NAN; x.len()];
            max_pool2d_backward(&g, &dy, &idx, &mut dx);
            // The definition: the first maximum of each window (row-major) takes the gradient.
            let mut want = vec![0.0f64; x.len()];
            for ((_, i), d) in naive_first_max(&g, &x).into_iter().zip(&dy) {
                want[i] += *d as f64;
            }
            for (a, b) in dx.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-6, "{g:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_nan_wins_its_window_in_training() {
        let g = PoolGeometry {
            batch: 1,
            channels: 1,
            in_h: 2,
            in_w: 4,
            out_h: 1,
            out_w: 2,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
        };
        let x = [1.0, f32::NAN, 5.0, 2.0, 3.0, 9.0, 1.0, 7.0];
        let (mut y, mut idx) = ([0.0; 2], [0u32; 2]);
        max_pool2d_forward_train(&g, &x, &mut y, &mut idx);
        assert!(y[0].is_nan() && idx[0] == 1, "{y:?} {idx:?}");
        assert_eq!((y[1], idx[1]), (7.0, 7));
    }

    /// The vector 2x2 rows (sixteen and eight lanes) against the scalar loop they replace, NaN
    /// in every window position and ties included, every row length up to two vectors and a
    /// tail.
    #[test]
    fn the_vector_2x2_row_picks_what_the_scalar_loop_picks() {
        for out_w in 1..=35 {
            let w = 2 * out_w + out_w % 2;
            let rows: Vec<f32> = (0..2 * w)
                .map(|i| match (i * 31) % 23 {
                    0 => f32::NAN,
                    r => (r % 5) as f32 - 2.0,
                })
                .collect();
            let mut want = (vec![0f32; out_w], vec![0u32; out_w]);
            for ow in 0..out_w {
                let i = 2 * ow;
                let mut best = (rows[i], 100 + i as u32);
                for j in [i + 1, i + w, i + w + 1] {
                    best = first_max(best, (rows[j], 100 + j as u32));
                }
                (want.0[ow], want.1[ow]) = best;
            }
            // Sixteen lanes, then eight (the kernels held to AVX2).
            for avx2 in [false, true] {
                crate::use_avx2_only(avx2);
                let mut got = (vec![7f32; out_w], vec![7u32; out_w]);
                pool_2x2_row(&rows, w, 100, &mut got.0, &mut got.1);
                crate::use_avx2_only(false);
                assert_eq!(got.1, want.1, "argmax, {out_w} outputs, AVX2 only: {avx2}");
                for (a, b) in got.0.iter().zip(&want.0) {
                    assert!(a == b || (a.is_nan() && b.is_nan()), "{out_w}: {a} vs {b}");
                }
            }
        }
    }
}
