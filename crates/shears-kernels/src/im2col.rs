//! im2col and its adjoint col2im for one image and one group.
//!
//! Row `(c, ki, kj)` of the column matrix holds, for every output pixel `(oh, ow)`, the input
//! value the kernel tap `(ki, kj)` of channel `c` sees there, or zero in the padding. Every
//! element is written (no zero-fill first), and stride-1 rows are copied as contiguous runs.

use crate::geometry::ConvGeometry;

/// The output columns `ow` whose tap `kj` lands inside the input row, as `(first, end)`, and the
/// input column of the first.
fn valid_columns(g: &ConvGeometry, kj: usize) -> (usize, usize) {
    let (s, p, d, w, ow_n) = (g.stride[1], g.padding[1], g.dilation[1], g.in_w, g.out_w());
    // iw = ow*s + kj*d - p must satisfy 0 <= iw < w.
    let off = kj * d;
    let first = if off >= p { 0 } else { (p - off).div_ceil(s) };
    let end = if w + p > off {
        ((w + p - off - 1) / s + 1).min(ow_n)
    } else {
        0
    };
    (first.min(end), end)
}

/// Stride 1, dilation 1 and "same" padding (out = in, e.g. 3x3 with padding 1): a tap's row of
/// the column matrix is then the whole input plane shifted by `(ki − p)·W + (kj − p)`, with the
/// rows that fall off the image and the columns that wrap around an edge set to zero. One long
/// copy per row instead of one short copy per output row (those dominated the profile).
fn is_same_shift(g: &ConvGeometry) -> bool {
    g.stride == [1, 1] && g.dilation == [1, 1] && g.out_h() == g.in_h && g.out_w() == g.in_w
}

/// The output rows `[oh0, oh1)` whose tap row `ki` lands inside the image (same-shift case).
fn valid_rows(g: &ConvGeometry, ki: usize) -> (usize, usize) {
    let p = g.padding[0];
    let oh0 = p.saturating_sub(ki);
    let oh1 = (g.in_h + p).saturating_sub(ki).min(g.in_h);
    (oh0.min(oh1), oh1)
}

/// Output columns that wrap around an edge for tap column `kj` (same-shift case): `[0, left)`
/// and `[right, W)`.
fn edge_columns(g: &ConvGeometry, kj: usize) -> (usize, usize) {
    let (p, w) = (g.padding[1], g.in_w);
    let left = p.saturating_sub(kj).min(w);
    let right = (w + p).saturating_sub(kj).min(w).max(left);
    (left, right)
}

/// Copies `src` shifted by `shift` into `dst` for the flat positions `[q0, q1)`, clipping to the
/// source: `dst[q] = src[q + shift]`. Positions it cannot fill are edge columns, zeroed later.
fn shifted_copy(dst: &mut [f32], src: &[f32], shift: isize, q0: usize, q1: usize) {
    let lo = (q0 as isize).max(-shift) as usize;
    let hi = ((q1 as isize).min(src.len() as isize - shift)).max(lo as isize) as usize;
    if lo < hi {
        let s0 = (lo as isize + shift) as usize;
        dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
    }
    dst[q0..lo.min(q1)].fill(0.0);
    dst[hi.max(q0).min(q1)..q1].fill(0.0);
}

fn im2col_same(
    g: &ConvGeometry,
    image: &[f32],
    c0: usize,
    col: &mut [f32],
    ld: usize,
    offset: usize,
) {
    let (w, plane) = (g.in_w, g.in_pixels());
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (ph, pw) = (g.padding[0] as isize, g.padding[1] as isize);
    let mut row = 0;
    for c in 0..g.in_per_group() {
        let src = &image[(c0 + c) * plane..(c0 + c + 1) * plane];
        for ki in 0..kh {
            let (oh0, oh1) = valid_rows(g, ki);
            for kj in 0..kw {
                let dst = &mut col[row * ld + offset..][..plane];
                dst[..oh0 * w].fill(0.0);
                dst[oh1 * w..].fill(0.0);
                let shift = (ki as isize - ph) * w as isize + (kj as isize - pw);
                shifted_copy(dst, src, shift, oh0 * w, oh1 * w);
                let (left, right) = edge_columns(g, kj);
                if left > 0 || right < w {
                    for oh in oh0..oh1 {
                        dst[oh * w..oh * w + left].fill(0.0);
                        dst[oh * w + right..(oh + 1) * w].fill(0.0);
                    }
                }
                row += 1;
            }
        }
    }
}

/// Adjoint of [`im2col_same`]: adds each tap's row, shifted back, onto the plane, skipping the
/// rows and edge columns that were padding.
fn col2im_same(
    g: &ConvGeometry,
    col: &[f32],
    ld: usize,
    offset: usize,
    c0: usize,
    image: &mut [f32],
) {
    let (w, plane) = (g.in_w, g.in_pixels());
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (ph, pw) = (g.padding[0] as isize, g.padding[1] as isize);
    let mut row = 0;
    for c in 0..g.in_per_group() {
        let dst = &mut image[(c0 + c) * plane..(c0 + c + 1) * plane];
        for ki in 0..kh {
            let (oh0, oh1) = valid_rows(g, ki);
            for kj in 0..kw {
                let src = &col[row * ld + offset..][..plane];
                row += 1;
                let shift = (ki as isize - ph) * w as isize + (kj as isize - pw);
                let (left, right) = edge_columns(g, kj);
                if left == 0 && right == w {
                    // No edge columns: one run over the valid rows.
                    let (q0, q1) = (oh0 * w, oh1 * w);
                    if q0 >= q1 {
                        continue;
                    }
                    let d0 = (q0 as isize + shift) as usize;
                    for (d, v) in dst[d0..d0 + (q1 - q0)].iter_mut().zip(&src[q0..q1]) {
                        *d += v;
                    }
                } else {
                    for oh in oh0..oh1 {
                        let (q0, q1) = (oh * w + left, oh * w + right);
                        if q0 >= q1 {
                            continue;
                        }
                        let d0 = (q0 as isize + shift) as usize;
                        for (d, v) in dst[d0..d0 + (q1 - q0)].iter_mut().zip(&src[q0..q1]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

/// Fills the `col_rows × out_pixels` block of `col` that starts at column `offset` of a matrix
/// with `ld` columns, from channels `c0..c0 + in_per_group` of `image`. Several images side by
/// side make one wide GEMM when each has few output pixels.
pub(crate) fn im2col(
    g: &ConvGeometry,
    image: &[f32],
    c0: usize,
    col: &mut [f32],
    ld: usize,
    offset: usize,
) {
    if is_same_shift(g) {
        return im2col_same(g, image, c0, col, ld, offset);
    }
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (sh, sw) = (g.stride[0], g.stride[1]);
    let (ph, pw) = (g.padding[0], g.padding[1]);
    let (dh, dw) = (g.dilation[0], g.dilation[1]);
    let plane = g.in_pixels();
    let mut row = 0;
    for c in 0..g.in_per_group() {
        let src = &image[(c0 + c) * plane..(c0 + c + 1) * plane];
        for ki in 0..kh {
            for kj in 0..kw {
                let start = row * ld + offset;
                let dst = &mut col[start..start + oh_n * ow_n];
                let (first, end) = valid_columns(g, kj);
                for oh in 0..oh_n {
                    let out = &mut dst[oh * ow_n..(oh + 1) * ow_n];
                    let ih = (oh * sh + ki * dh) as isize - ph as isize;
                    if ih < 0 || ih >= g.in_h as isize || first >= end {
                        out.fill(0.0);
                        continue;
                    }
                    let in_row = &src[ih as usize * g.in_w..(ih as usize + 1) * g.in_w];
                    out[..first].fill(0.0);
                    out[end..].fill(0.0);
                    let iw0 = first * sw + kj * dw - pw;
                    if sw == 1 {
                        out[first..end].copy_from_slice(&in_row[iw0..iw0 + end - first]);
                    } else {
                        for (k, o) in out[first..end].iter_mut().enumerate() {
                            *o = in_row[iw0 + k * sw];
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// Adds a column block (laid out as in [`im2col`]) back onto channels `c0..c0 + in_per_group`
/// of `image`, the adjoint of [`im2col`]: every tap's value goes to the input pixel it read.
pub(crate) fn col2im_add(
    g: &ConvGeometry,
    col: &[f32],
    ld: usize,
    offset: usize,
    c0: usize,
    image: &mut [f32],
) {
    if is_same_shift(g) {
        return col2im_same(g, col, ld, offset, c0, image);
    }
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (sh, sw) = (g.stride[0], g.stride[1]);
    let (ph, pw) = (g.padding[0], g.padding[1]);
    let (dh, dw) = (g.dilation[0], g.dilation[1]);
    let plane = g.in_pixels();
    let mut row = 0;
    for c in 0..g.in_per_group() {
        let dst = &mut image[(c0 + c) * plane..(c0 + c + 1) * plane];
        for ki in 0..kh {
            for kj in 0..kw {
                let start = row * ld + offset;
                let src = &col[start..start + oh_n * ow_n];
                let (first, end) = valid_columns(g, kj);
                row += 1;
                if first >= end {
                    continue;
                }
                for oh in 0..oh_n {
                    let ih = (oh * sh + ki * dh) as isize - ph as isize;
                    if ih < 0 || ih >= g.in_h as isize {
                        continue;
                    }
                    let in_row = &mut dst[ih as usize * g.in_w..(ih as usize + 1) * g.in_w];
                    let vals = &src[oh * ow_n + first..oh * ow_n + end];
                    let iw0 = first * sw + kj * dw - pw;
                    if sw == 1 {
                        for (d, v) in in_row[iw0..iw0 + vals.len()].iter_mut().zip(vals) {
                            *d += v;
                        }
                    } else {
                        for (k, v) in vals.iter().enumerate() {
                            in_row[iw0 + k * sw] += v;
                        }
                    }
                }
            }
        }
    }
}
