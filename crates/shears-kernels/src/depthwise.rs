//! Depthwise convolution (one k×k filter per channel) as direct loops over output rows: a GEMM
//! per channel would have one row. Work is split over (image, channel) planes, and for the
//! weight gradient over channels, so no two threads write the same value.

use crate::geometry::ConvGeometry;
use crate::parallel::SharedMut;
use rayon::prelude::*;

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

pub(crate) fn forward(g: &ConvGeometry, input: &[f32], weight: &[f32], output: &mut [f32]) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (ow_n, sw) = (g.out_w(), g.stride[1]);
    let (ip, op) = (g.in_pixels(), g.out_pixels());
    output
        .par_chunks_mut(op)
        .enumerate()
        .for_each(|(plane, y)| {
            let c = plane % g.in_channels;
            let x = &input[plane * ip..(plane + 1) * ip];
            let w = &weight[c * kh * kw..(c + 1) * kh * kw];
            y.fill(0.0);
            for (oh, y_row) in y.chunks_mut(ow_n).enumerate() {
                for ki in 0..kh {
                    let Some(ih) = tap_row(g, oh, ki) else {
                        continue;
                    };
                    let x_row = &x[ih * g.in_w..(ih + 1) * g.in_w];
                    for kj in 0..kw {
                        let wv = w[ki * kw + kj];
                        let (first, end, iw0) = tap_columns(g, kj);
                        if first == end {
                            // The tap reads only padding for every output column (a kernel
                            // wider than the padded map): nothing to add, and `iw0` would
                            // point past the row.
                            continue;
                        }
                        let out = &mut y_row[first..end];
                        if sw == 1 {
                            let len = out.len();
                            out.iter_mut()
                                .zip(&x_row[iw0..iw0 + len])
                                .for_each(|(o, x)| *o += wv * x);
                        } else {
                            out.iter_mut()
                                .enumerate()
                                .for_each(|(k, o)| *o += wv * x_row[iw0 + k * sw]);
                        }
                    }
                }
            }
        });
}

pub(crate) fn backward_input(
    g: &ConvGeometry,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
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

pub(crate) fn backward_weight(
    g: &ConvGeometry,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (ow_n, sw) = (g.out_w(), g.stride[1]);
    let (ip, op) = (g.in_pixels(), g.out_pixels());
    let dw_all = SharedMut(grad_weight.as_mut_ptr());
    (0..g.in_channels).into_par_iter().for_each(|c| {
        // SAFETY: channel c writes only its own k×k filter gradient.
        let dw = unsafe { dw_all.slice(c * kh * kw, kh * kw) };
        let mut acc = vec![0.0f64; kh * kw];
        for n in 0..g.batch {
            let plane = n * g.in_channels + c;
            let x = &input[plane * ip..(plane + 1) * ip];
            let dy = &grad_output[plane * op..(plane + 1) * op];
            for (oh, dy_row) in dy.chunks(ow_n).enumerate() {
                for ki in 0..kh {
                    let Some(ih) = tap_row(g, oh, ki) else {
                        continue;
                    };
                    let x_row = &x[ih * g.in_w..(ih + 1) * g.in_w];
                    for kj in 0..kw {
                        let (first, end, iw0) = tap_columns(g, kj);
                        if first == end {
                            // The tap reads only padding for every output column (a kernel
                            // wider than the padded map): nothing to add, and `iw0` would
                            // point past the row.
                            continue;
                        }
                        let src = &dy_row[first..end];
                        let s: f32 = if sw == 1 {
                            src.iter()
                                .zip(&x_row[iw0..iw0 + src.len()])
                                .map(|(a, b)| a * b)
                                .sum()
                        } else {
                            src.iter()
                                .enumerate()
                                .map(|(k, v)| v * x_row[iw0 + k * sw])
                                .sum()
                        };
                        acc[ki * kw + kj] += s as f64;
                    }
                }
            }
        }
        dw.iter_mut().zip(&acc).for_each(|(d, a)| *d = *a as f32);
    });
}
