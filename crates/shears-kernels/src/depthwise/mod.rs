//! Depthwise convolution (one k×k filter per channel) as direct loops: a GEMM per channel would
//! have one row. Stride-1 "same" layers on AVX-512 read each plane in place (`flat.rs`); the
//! others work on a zero-padded copy of each plane, split into its four phases at stride 2 so
//! every tap is again a fixed offset. Work is split over (image, channel) planes; the weight
//! gradient sums each plane's own and then adds them per channel in a fixed order, so the
//! result does not depend on the number of threads.

use crate::geometry::ConvGeometry;
use rayon::prelude::*;

mod flat;

/// For tap column `kj`: the output columns whose input column is inside the row, `[first, end)`,
/// and the input column of `first`.
fn tap_columns(g: &ConvGeometry, kj: usize) -> (usize, usize, usize) {
    let (s, p, d) = (g.stride[1], g.padding[1], g.dilation[1]);
    let off = kj * d;
    let first = if off >= p { 0 } else { (p - off).div_ceil(s) };
    let end = if g.in_w + p > off {
        ((g.in_w + p - off - 1) / s + 1).min(g.out_w())
    } else {
        0
    };
    let first = first.min(end);
    (first, end, (first * s + off).saturating_sub(p))
}

/// Input row of output row `oh` under tap row `ki`, if inside the image.
fn tap_row(g: &ConvGeometry, oh: usize, ki: usize) -> Option<usize> {
    let ih = (oh * g.stride[0] + ki * g.dilation[0]) as isize - g.padding[0] as isize;
    (ih >= 0 && (ih as usize) < g.in_h).then_some(ih as usize)
}

/// The forward pass on each plane copied once into a zero-padded scratch plane, so every tap
/// of an output row is one branch-free loop over a slice (the compiler vectorises the stride-1
/// case). Planes are grouped into tasks of about 4k outputs: a small map (MobileNetV2's 8x8 at
/// batch 1) would otherwise cost more in scheduling and per-row bounds than in arithmetic.
pub(crate) fn forward(g: &ConvGeometry, input: &[f32], weight: &[f32], output: &mut [f32]) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (sh, sw) = (g.stride[0], g.stride[1]);
    let (dh, dw) = (g.dilation[0], g.dilation[1]);
    let (ph, pw) = (g.padding[0], g.padding[1]);
    let ow_n = g.out_w();
    let (hp, wp) = (g.in_h + 2 * ph, g.in_w + 2 * pw);
    let (ip, op) = (g.in_pixels(), g.out_pixels());
    if op == 0 {
        return;
    }
    let per_task = (4096 / op).max(1);
    #[cfg(target_arch = "x86_64")]
    if flat::applies(g) {
        let masks = flat::TapMasks::new(g);
        output
            .par_chunks_mut(op * per_task)
            .zip(input.par_chunks(ip * per_task))
            .enumerate()
            .for_each(|(task, (ys, xs))| {
                // SAFETY: `applies` checked AVX-512F; a "same" stride-1 layer's planes in and
                // out are `ip` pixels, and the weights `kh·kw` per channel.
                unsafe {
                    flat::planes_forward(&masks, xs, weight, g.in_channels, task * per_task, ys)
                };
            });
        return;
    }
    output
        .par_chunks_mut(op * per_task)
        .enumerate()
        .for_each(|(task, ys)| {
            // Borders stay zero; the interior is overwritten plane by plane.
            let mut xp = vec![0.0f32; hp * wp];
            let mut acc: Vec<f32> = Vec::new();
            let mut phases: Vec<f32> = Vec::new();
            for (k, y) in ys.chunks_mut(op).enumerate() {
                let plane = task * per_task + k;
                let c = plane % g.in_channels;
                let x = &input[plane * ip..(plane + 1) * ip];
                let w = &weight[c * kh * kw..(c + 1) * kh * kw];
                if by_phases(g) {
                    // Stride 2: the plane split into the four phases of its padded copy, where
                    // each tap is a fixed offset again, and the nine-tap loop of stride 1 on
                    // rows of wq.
                    let (hq, wq) = plane_phases(x, (g.in_h, g.in_w), (ph, pw), &mut phases);
                    nine_taps(&phases, (phase_offsets(hq, wq), wq), w, &mut acc, (y, ow_n));
                    continue;
                }
                for (ih, x_row) in x.chunks(g.in_w).enumerate() {
                    xp[(ih + ph) * wp + pw..][..g.in_w].copy_from_slice(x_row);
                }
                if sh == 1 && sw == 1 {
                    // Stride 1: the output computed on the padded plane's full width, so each
                    // tap is one loop over all rows at once (the columns past `ow_n` are
                    // discarded), then the valid columns copied out.
                    if kh == 3 && kw == 3 {
                        let o = std::array::from_fn(|t| (t / 3) * dh * wp + (t % 3) * dw);
                        nine_taps(&xp, (o, wp), w, &mut acc, (y, ow_n));
                        continue;
                    }
                    let full = (y.len() / ow_n - 1) * wp + ow_n;
                    acc.clear();
                    acc.resize(full, 0.0);
                    for ki in 0..kh {
                        for kj in 0..kw {
                            let wv = w[ki * kw + kj];
                            let base = ki * dh * wp + kj * dw;
                            acc.iter_mut()
                                .zip(&xp[base..base + full])
                                .for_each(|(o, x)| *o += wv * x);
                        }
                    }
                    for (oh, y_row) in y.chunks_mut(ow_n).enumerate() {
                        y_row.copy_from_slice(&acc[oh * wp..oh * wp + ow_n]);
                    }
                    continue;
                }
                for (oh, y_row) in y.chunks_mut(ow_n).enumerate() {
                    y_row.fill(0.0);
                    for ki in 0..kh {
                        let row = &xp[(oh * sh + ki * dh) * wp..][..wp];
                        for kj in 0..kw {
                            let wv = w[ki * kw + kj];
                            let off = kj * dw;
                            if sw == 1 {
                                y_row
                                    .iter_mut()
                                    .zip(&row[off..off + ow_n])
                                    .for_each(|(o, x)| *o += wv * x);
                            } else {
                                y_row
                                    .iter_mut()
                                    .enumerate()
                                    .for_each(|(j, o)| *o += wv * row[off + j * sw]);
                            }
                        }
                    }
                }
            }
        });
}

/// 3x3 layers at stride 2 without dilation (MobileNet's downsampling ones) work on the plane
/// split into its phases (`plane_phases`).
fn by_phases(g: &ConvGeometry) -> bool {
    g.kernel == [3, 3] && g.stride == [2, 2] && g.dilation == [1, 1]
}

/// One plane's output `y` (rows `ow_n` wide) from nine taps of `src`, a plane laid out in rows
/// `width` wide, at offsets `o`: all nine taps of an output at once (one store per output instead
/// of nine read-modify-writes), over whole rows of `width` so each tap's inputs are one slice
/// (no bounds checks; the loop vectorises), the columns past the output's then dropped.
fn nine_taps(
    src: &[f32],
    (o, width): ([usize; 9], usize),
    w: &[f32],
    acc: &mut Vec<f32>,
    (y, ow_n): (&mut [f32], usize),
) {
    let full = (y.len() / ow_n - 1) * width + ow_n;
    if acc.len() < full {
        acc.resize(full, 0.0);
    }
    let x: [&[f32]; 9] = std::array::from_fn(|t| &src[o[t]..o[t] + full]);
    taps9(&mut acc[..full], &x, w);
    for (oh, y_row) in y.chunks_mut(ow_n).enumerate() {
        y_row.copy_from_slice(&acc[oh * width..oh * width + ow_n]);
    }
}

/// Splits an `h x w` plane, zero-padded by `ph` rows and `pw` columns on each side, into the
/// padded plane's four phases (even/odd rows x even/odd columns), each `hq x wq` (the padded
/// sizes halved, rounded up; what lies past the padded plane is zero), one after another in
/// `phases`: a 3x3 tap (ki, kj) at stride 2 of output (oh, ow) reads (oh + ki/2, ow + kj/2) of
/// phase (ki%2, kj%2), a fixed offset per tap. The plane is read in place, each row split into
/// its even and odd columns (before, it was first copied into a padded plane, which was then
/// read two columns apart).
fn plane_phases(
    x: &[f32],
    (h, w): (usize, usize),
    (ph, pw): (usize, usize),
    phases: &mut Vec<f32>,
) -> (usize, usize) {
    let (hq, wq) = ((h + 2 * ph).div_ceil(2), (w + 2 * pw).div_ceil(2));
    let len = hq * wq;
    phases.clear();
    phases.resize(4 * len, 0.0);
    // Padded column c = iw + pw lands in phase column c % 2 at c / 2: the row's even columns
    // (iw = 2k) in phase column pw % 2 from pw / 2 on, its odd ones in the other from
    // (pw + 1) / 2 on.
    let (even_phase, first_even, first_odd) = (pw % 2, pw / 2, pw.div_ceil(2));
    for (ih, row) in x.chunks(w).enumerate() {
        let r = ih + ph;
        let at = (r % 2) * 2 * len + (r / 2) * wq;
        let (col0, col1) = phases[at..].split_at_mut(len);
        let (col0, col1) = (&mut col0[..wq], &mut col1[..wq]);
        let (evens, odds) = if even_phase == 0 {
            (col0, col1)
        } else {
            (col1, col0)
        };
        split_columns(row, &mut evens[first_even..], &mut odds[first_odd..]);
    }
    (hq, wq)
}

with_simd!(split_columns(row: &[f32], evens: &mut [f32], odds: &mut [f32]) -> () = split_columns_body);

/// `evens[k] = row[2k]`, `odds[k] = row[2k + 1]`.
#[inline(always)]
fn split_columns_body(row: &[f32], evens: &mut [f32], odds: &mut [f32]) {
    let pairs = row.len() / 2;
    let (evens, odds) = (&mut evens[..row.len().div_ceil(2)], &mut odds[..pairs]);
    for (k, pair) in row.chunks_exact(2).enumerate() {
        evens[k] = pair[0];
        odds[k] = pair[1];
    }
    if row.len() % 2 == 1 {
        evens[pairs] = row[row.len() - 1];
    }
}

/// Where tap `t` (row-major over 3x3) of a stride-2 output reads in `plane_phases`' layout.
fn phase_offsets(hq: usize, wq: usize) -> [usize; 9] {
    std::array::from_fn(|t| {
        let (ki, kj) = (t / 3, t % 3);
        ((ki % 2) * 2 + kj % 2) * hq * wq + (ki / 2) * wq + kj / 2
    })
}

with_simd!(taps9(acc: &mut [f32], x: &[&[f32]; 9], w: &[f32]) -> () = taps9_body);

/// `acc[i] = Σ_t w[t]·x[t][i]` over nine taps.
#[inline(always)]
fn taps9_body(acc: &mut [f32], x: &[&[f32]; 9], w: &[f32]) {
    let n = acc.len();
    let x: [&[f32]; 9] = std::array::from_fn(|t| &x[t][..n]);
    let w: [f32; 9] = std::array::from_fn(|t| w[t]);
    for i in 0..n {
        acc[i] = w[0] * x[0][i]
            + w[1] * x[1][i]
            + w[2] * x[2][i]
            + w[3] * x[3][i]
            + w[4] * x[4][i]
            + w[5] * x[5][i]
            + w[6] * x[6][i]
            + w[7] * x[7][i]
            + w[8] * x[8][i];
    }
}

pub(crate) fn backward_input(
    g: &ConvGeometry,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    if g.stride == [1, 1]
        && g.dilation == [1, 1]
        && 2 * g.padding[0] + 1 == kh
        && 2 * g.padding[1] + 1 == kw
    {
        // Stride 1 with "same" padding: the input gradient is the forward pass over the output
        // gradient with each filter turned by 180°, and the forward pass has the vector kernel
        // (the loop below was scalar: a third of MobileNet-V2's training step with the weight
        // gradient).
        let taps = kh * kw;
        let mut flipped = vec![0f32; weight.len()];
        for (f, w) in flipped.chunks_mut(taps).zip(weight.chunks(taps)) {
            for (t, v) in w.iter().enumerate() {
                f[taps - 1 - t] = *v;
            }
        }
        forward(g, grad_output, &flipped, grad_input);
        return;
    }
    if by_phases(g) && g.out_pixels() > 0 {
        backward_input_3x3_stride2(g, grad_output, weight, grad_input);
        return;
    }
    let (ow_n, sw) = (g.out_w(), g.stride[1]);
    let (ip, op) = (g.in_pixels(), g.out_pixels());
    grad_input
        .par_chunks_mut(ip)
        .enumerate()
        .for_each(|(plane, dx)| {
            let c = plane % g.in_channels;
            let dy = &grad_output[plane * op..(plane + 1) * op];
            let w = &weight[c * kh * kw..(c + 1) * kh * kw];
            dx.fill(0.0);
            for (oh, dy_row) in dy.chunks(ow_n).enumerate() {
                for ki in 0..kh {
                    let Some(ih) = tap_row(g, oh, ki) else {
                        continue;
                    };
                    let dx_row = &mut dx[ih * g.in_w..(ih + 1) * g.in_w];
                    for kj in 0..kw {
                        let wv = w[ki * kw + kj];
                        let (first, end, iw0) = tap_columns(g, kj);
                        if first == end {
                            // The tap reads only padding for every output column (a kernel
                            // wider than the padded map): nothing to add, and `iw0` would
                            // point past the row.
                            continue;
                        }
                        let src = &dy_row[first..end];
                        if sw == 1 {
                            dx_row[iw0..iw0 + src.len()]
                                .iter_mut()
                                .zip(src)
                                .for_each(|(d, v)| *d += wv * v);
                        } else {
                            src.iter()
                                .enumerate()
                                .for_each(|(k, v)| dx_row[iw0 + k * sw] += wv * v);
                        }
                    }
                }
            }
        });
}

/// The input gradient of a 3x3 stride-2 layer by phases: the gradient of the padded plane's
/// phase (s0, t0) (`plane_phases`) at (a, b) is `Σ w[ki][kj]·dy[a − ki/2][b − kj/2]` over the taps
/// with ki ≡ s0 and kj ≡ t0 (mod 2) — four, two, two and one of them — so with the output
/// gradient shifted one row and column into a zero border each tap is again a fixed offset and
/// the loop over a whole phase is elementwise. The scattered `+=` loop this replaces was a fifth
/// of MobileNet-V2's depthwise time for three of its seventeen layers.
fn backward_input_3x3_stride2(
    g: &ConvGeometry,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (ph, pw) = (g.padding[0], g.padding[1]);
    let (hp, wp) = (g.in_h + 2 * ph, g.in_w + 2 * pw);
    let (hq, wq) = (hp.div_ceil(2), wp.div_ceil(2));
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    let (ip, op) = (g.in_pixels(), g.out_pixels());
    // dy at (oh + 1, ow + 1) of a (hq + 1) x (wq + 1) plane: oh_n <= hq - 1 and ow_n <= wq - 1.
    let wd = wq + 1;
    let full = (hq - 1) * wd + wq;
    let per_task = (4096 / ip.max(1)).max(1);
    grad_input
        .par_chunks_mut(ip * per_task)
        .enumerate()
        .for_each(|(task, dxs)| {
            let mut dyp = vec![0f32; (hq + 1) * wd];
            let mut phases = vec![0f32; 4 * full];
            for (k, dx) in dxs.chunks_mut(ip).enumerate() {
                let plane = task * per_task + k;
                let c = plane % g.in_channels;
                let w = &weight[c * 9..(c + 1) * 9];
                let dy = &grad_output[plane * op..(plane + 1) * op];
                for (oh, row) in dy.chunks(ow_n).enumerate() {
                    dyp[(oh + 1) * wd + 1..][..ow_n].copy_from_slice(row);
                }
                debug_assert!(oh_n < hq && ow_n < wq);
                for (q, phase) in phases.chunks_mut(full).enumerate() {
                    let (s0, t0) = (q / 2, q % 2);
                    let mut xs: [&[f32]; 4] = [&[]; 4];
                    let mut ws = [0f32; 4];
                    let mut n = 0;
                    for ki in (s0..3).step_by(2) {
                        for kj in (t0..3).step_by(2) {
                            let at = (1 - ki / 2) * wd + (1 - kj / 2);
                            xs[n] = &dyp[at..at + full];
                            ws[n] = w[ki * 3 + kj];
                            n += 1;
                        }
                    }
                    taps_up_to_4(phase, &xs[..n], &ws[..n]);
                }
                for (ih, dx_row) in dx.chunks_mut(g.in_w).enumerate() {
                    let r = ih + ph;
                    let (even, odd) = (
                        &phases[(r % 2 * 2) * full + r / 2 * wd..],
                        &phases[(r % 2 * 2 + 1) * full + r / 2 * wd..],
                    );
                    for (iw, v) in dx_row.iter_mut().enumerate() {
                        let col = iw + pw;
                        *v = if col % 2 == 0 {
                            even[col / 2]
                        } else {
                            odd[col / 2]
                        };
                    }
                }
            }
        });
}

with_simd!(taps_up_to_4(acc: &mut [f32], x: &[&[f32]], w: &[f32]) -> () = taps_up_to_4_body);

/// `acc[i] = Σ_t w[t]·x[t][i]` over one to four taps.
#[inline(always)]
fn taps_up_to_4_body(acc: &mut [f32], x: &[&[f32]], w: &[f32]) {
    let n = acc.len();
    match *x {
        [a] => {
            let a = &a[..n];
            for i in 0..n {
                acc[i] = w[0] * a[i];
            }
        }
        [a, b] => {
            let (a, b) = (&a[..n], &b[..n]);
            for i in 0..n {
                acc[i] = w[0] * a[i] + w[1] * b[i];
            }
        }
        [a, b, c, d] => {
            let (a, b, c, d) = (&a[..n], &b[..n], &c[..n], &d[..n]);
            for i in 0..n {
                acc[i] = w[0] * a[i] + w[1] * b[i] + w[2] * c[i] + w[3] * d[i];
            }
        }
        _ => unreachable!("a 3x3 stride-2 phase has one, two or four taps"),
    }
}

pub(crate) fn backward_weight(
    g: &ConvGeometry,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) {
    let taps = g.kernel[0] * g.kernel[1];
    let (ip, op) = (g.in_pixels(), g.out_pixels());
    let planes = g.batch * g.in_channels;
    if op == 0 || planes == 0 {
        grad_weight.fill(0.0);
        return;
    }
    // Every plane's own filter gradient, in tasks of about 4k outputs; then each channel's
    // planes added image after image in f64: the result does not depend on the number of
    // threads.
    let per_task = (4096 / op).max(1);
    #[cfg(target_arch = "x86_64")]
    let masks = flat::applies(g).then(|| flat::TapMasks::new(g));
    #[cfg(not(target_arch = "x86_64"))]
    let masks: Option<()> = None;
    let mut per_plane = vec![0f32; planes * taps];
    per_plane
        .par_chunks_mut(per_task * taps)
        .enumerate()
        .for_each(|(task, outs)| {
            let mut scratch = masks.is_none().then(|| PlaneScratch::new(g));
            for (k, out) in outs.chunks_mut(taps).enumerate() {
                let plane = task * per_task + k;
                let x = &input[plane * ip..(plane + 1) * ip];
                let dy = &grad_output[plane * op..(plane + 1) * op];
                match (&masks, &mut scratch) {
                    #[cfg(target_arch = "x86_64")]
                    (Some(m), _) => {
                        // SAFETY: `applies` checked AVX-512F; `x` and `dy` are one plane of a
                        // "same" stride-1 layer; `out` and the masks have `taps` taps.
                        unsafe {
                            match taps {
                                9 => flat::plane_weight_grad::<9>(m, x, dy, out),
                                25 => flat::plane_weight_grad::<25>(m, x, dy, out),
                                _ => flat::plane_weight_grad::<49>(m, x, dy, out),
                            }
                        }
                    }
                    (_, Some(s)) => out.copy_from_slice(plane_weight_grad(g, x, dy, s)),
                    _ => unreachable!("a plane has the masks or the scratch"),
                }
            }
        });
    let mut total = vec![0f64; g.in_channels * taps];
    for image in per_plane.chunks(g.in_channels * taps) {
        total
            .iter_mut()
            .zip(image)
            .for_each(|(t, v)| *t += *v as f64);
    }
    grad_weight
        .iter_mut()
        .zip(&total)
        .for_each(|(d, t)| *d = *t as f32);
}

/// A zero-padded copy of one input plane, its phases at stride 2, the output gradient in rows as
/// wide as the taps' reads and one row of partial sums per tap.
struct PlaneScratch {
    padded: Vec<f32>,
    phases: Vec<f32>,
    grad_rows: Vec<f32>,
    sums: Vec<f32>,
    result: Vec<f32>,
}

impl PlaneScratch {
    fn new(g: &ConvGeometry) -> PlaneScratch {
        let (hp, wp) = (g.in_h + 2 * g.padding[0], g.in_w + 2 * g.padding[1]);
        let taps = g.kernel[0] * g.kernel[1];
        PlaneScratch {
            // Borders stay zero; the interior is overwritten plane by plane.
            padded: vec![0f32; hp * wp],
            phases: Vec::new(),
            // Its columns past the output's stay zero.
            grad_rows: Vec::new(),
            sums: vec![0f32; taps * g.out_w()],
            result: vec![0f32; taps],
        }
    }
}

/// 3x3 layers at stride 1 or 2 without dilation (all of MobileNet's) take `weight_dots`.
fn weight_dots_apply(g: &ConvGeometry) -> bool {
    by_phases(g) || (g.kernel == [3, 3] && g.dilation == [1, 1] && g.stride == [1, 1])
}

/// One plane's filter gradient, `dw[ki][kj] = Σ dy[oh][ow] · x[oh·s + ki·d − p][ow·s + kj·d − p]`.
/// For `weight_dots_apply` layers each tap is one dot product: the output gradient laid out in
/// rows as wide as the padded plane (stride 1) or its phases (stride 2, `plane_phases`), zero past
/// the output's columns, against the plane at the tap's fixed offset — nine running sums kept in
/// registers over one pass. Otherwise every tap keeps a partial sum per output column, so the
/// loop over a row is elementwise, and the columns are added once at the end.
fn plane_weight_grad<'a>(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    scratch: &'a mut PlaneScratch,
) -> &'a [f32] {
    let wp = g.in_w + 2 * g.padding[1];
    let pad_plane = |padded: &mut [f32]| {
        for (ih, x_row) in x.chunks(g.in_w).enumerate() {
            padded[(ih + g.padding[0]) * wp + g.padding[1]..][..g.in_w].copy_from_slice(x_row);
        }
    };
    if weight_dots_apply(g) {
        let (plane, row, o): (&[f32], usize, [usize; 9]) = if g.stride == [1, 1] {
            pad_plane(&mut scratch.padded);
            let o = std::array::from_fn(|t| (t / 3) * wp + t % 3);
            (&scratch.padded, wp, o)
        } else {
            let sizes = (g.in_h, g.in_w);
            let pads = (g.padding[0], g.padding[1]);
            let (hq, wq) = plane_phases(x, sizes, pads, &mut scratch.phases);
            (&scratch.phases, wq, phase_offsets(hq, wq))
        };
        let ow_n = g.out_w();
        let full = (g.out_h() - 1) * row + ow_n;
        if scratch.grad_rows.len() != full {
            scratch.grad_rows.clear();
            scratch.grad_rows.resize(full, 0.0);
        }
        for (oh, dy_row) in dy.chunks(ow_n).enumerate() {
            scratch.grad_rows[oh * row..][..ow_n].copy_from_slice(dy_row);
        }
        let xs: [&[f32]; 9] = std::array::from_fn(|t| &plane[o[t]..o[t] + full]);
        weight_dots(&scratch.grad_rows, &xs, &mut scratch.result);
        return &scratch.result;
    }
    pad_plane(&mut scratch.padded);
    plane_weight_sums(
        *g,
        &scratch.padded,
        dy,
        &mut scratch.sums,
        &mut scratch.result,
    );
    &scratch.result
}

/// `out[t] = Σ_i d[i]·x[t][i]` for nine taps: one running sum per tap in a vector register over
/// a single pass (the compiler left the arrays-of-lanes form of this loop scalar), added across
/// at the end.
fn weight_dots(d: &[f32], x: &[&[f32]; 9], out: &mut [f32]) {
    let n = d.len();
    assert!(x.iter().all(|xt| xt.len() >= n) && out.len() >= 9);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && !crate::direct::avx2_only() {
            // SAFETY: the CPU has AVX-512F; every read is below `n`, checked above.
            return unsafe { weight_dots_avx512(d, x, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA; every read is below `n`, checked above.
            return unsafe { weight_dots_avx2(d, x, out) };
        }
    }
    for (o, xt) in out.iter_mut().zip(x) {
        *o = d.iter().zip(&xt[..n]).map(|(a, b)| a * b).sum();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_dots_avx512(d: &[f32], x: &[&[f32]; 9], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = d.len();
    let mut acc = [_mm512_setzero_ps(); 9];
    let mut i = 0;
    while i < n {
        // The last vector's lanes past `n` are neither read nor summed.
        let m = crate::simd::first_lanes(n - i);
        // SAFETY: the masked lanes are below `n`, inside `d` and every `x[t]`.
        unsafe {
            let dv = _mm512_maskz_loadu_ps(m, d.as_ptr().add(i));
            for (a, xt) in acc.iter_mut().zip(x) {
                *a = _mm512_fmadd_ps(dv, _mm512_maskz_loadu_ps(m, xt.as_ptr().add(i)), *a);
            }
        }
        i += 16;
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = _mm512_reduce_add_ps(a);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_dots_avx2(d: &[f32], x: &[&[f32]; 9], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = d.len();
    let whole = n / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); 9];
    for i in (0..whole).step_by(8) {
        // SAFETY: `i + 8 <= n`, inside `d` and every `x[t]`.
        unsafe {
            let dv = _mm256_loadu_ps(d.as_ptr().add(i));
            for (a, xt) in acc.iter_mut().zip(x) {
                *a = _mm256_fmadd_ps(dv, _mm256_loadu_ps(xt.as_ptr().add(i)), *a);
            }
        }
    }
    for ((o, a), xt) in out.iter_mut().zip(acc).zip(x) {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds eight values.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
        let tail: f32 = (whole..n).map(|i| d[i] * xt[i]).sum();
        *o = lanes.iter().sum::<f32>() + tail;
    }
}

with_simd!(plane_weight_sums(
    g: ConvGeometry, padded: &[f32], dy: &[f32], sums: &mut [f32], result: &mut [f32],
) -> () = plane_weight_sums_body);

#[inline(always)]
fn plane_weight_sums_body(
    g: ConvGeometry,
    padded: &[f32],
    dy: &[f32],
    sums: &mut [f32],
    result: &mut [f32],
) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (sh, sw) = (g.stride[0], g.stride[1]);
    let (dh, dw) = (g.dilation[0], g.dilation[1]);
    let wp = g.in_w + 2 * g.padding[1];
    let ow_n = g.out_w();
    sums.fill(0.0);
    for (oh, dy_row) in dy.chunks(ow_n).enumerate() {
        for ki in 0..kh {
            let row = &padded[(oh * sh + ki * dh) * wp..][..wp];
            for kj in 0..kw {
                let s = &mut sums[(ki * kw + kj) * ow_n..][..ow_n];
                if sw == 1 {
                    let xs = &row[kj * dw..kj * dw + ow_n];
                    for ((a, d), v) in s.iter_mut().zip(dy_row).zip(xs) {
                        *a += d * v;
                    }
                } else {
                    for (ow, (a, d)) in s.iter_mut().zip(dy_row).enumerate() {
                        *a += d * row[ow * sw + kj * dw];
                    }
                }
            }
        }
    }
    for (r, s) in result.iter_mut().zip(sums.chunks(ow_n)) {
        *r = s.iter().sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time.
    fn naive(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (oh_n, ow_n) = (g.out_h(), g.out_w());
        let mut y = vec![0.0; g.output_len()];
        for plane in 0..g.batch * g.in_channels {
            let c = plane % g.in_channels;
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut s = 0.0;
                    for ki in 0..g.kernel[0] {
                        for kj in 0..g.kernel[1] {
                            let ih = (oh * g.stride[0] + ki * g.dilation[0]) as isize
                                - g.padding[0] as isize;
                            let iw = (ow * g.stride[1] + kj * g.dilation[1]) as isize
                                - g.padding[1] as isize;
                            if ih >= 0
                                && iw >= 0
                                && (ih as usize) < g.in_h
                                && (iw as usize) < g.in_w
                            {
                                s += w[(c * g.kernel[0] + ki) * g.kernel[1] + kj]
                                    * x[plane * g.in_pixels() + ih as usize * g.in_w + iw as usize];
                            }
                        }
                    }
                    y[plane * oh_n * ow_n + oh * ow_n + ow] = s;
                }
            }
        }
        y
    }

    #[test]
    fn every_forward_path_matches_the_definition() {
        // 3x3 stride 1 and 2 (the nine-tap paths) at even and odd sizes and paddings 0-2, a
        // 5x5, a dilated 3x3 and a 3x3 wider than its padded map (the general loops).
        for (n, c, h, w, k, s, p, d) in [
            (1, 3, 8, 8, 3, 1, 1, 1),
            (2, 5, 7, 9, 3, 1, 0, 1),
            (1, 4, 8, 8, 3, 2, 1, 1),
            (2, 3, 7, 5, 3, 2, 1, 1),
            (1, 2, 9, 9, 3, 2, 0, 1),
            (1, 2, 6, 6, 3, 2, 2, 1),
            (1, 3, 9, 7, 5, 2, 2, 1),
            (1, 2, 9, 9, 3, 1, 2, 2),
            (1, 2, 1, 1, 3, 1, 1, 1),
            (1, 2, 2, 2, 3, 2, 1, 1),
        ] {
            let g = ConvGeometry {
                batch: n,
                in_channels: c,
                in_h: h,
                in_w: w,
                out_channels: c,
                kernel: [k, k],
                stride: [s, s],
                padding: [p, p],
                dilation: [d, d],
                groups: c,
            };
            let x: Vec<f32> = (0..g.input_len())
                .map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5)
                .collect();
            let wt: Vec<f32> = (0..g.weight_len())
                .map(|i| ((i * 13) % 11) as f32 / 5.0 - 1.0)
                .collect();
            let mut y = vec![f32::NAN; g.output_len()];
            forward(&g, &x, &wt, &mut y);
            let want = naive(&g, &x, &wt);
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{g:?}: {a} vs {b}"
                );
            }
        }
    }
}
