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

/// Fills `col` (`col_rows × out_pixels`) from channels `c0..c0 + in_per_group` of `image`.
pub(crate) fn im2col(g: &ConvGeometry, image: &[f32], c0: usize, col: &mut [f32]) {
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
                let dst = &mut col[row * oh_n * ow_n..(row + 1) * oh_n * ow_n];
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

/// Adds the column matrix back onto channels `c0..c0 + in_per_group` of `image` (the adjoint of
/// [`im2col`]): every tap's value goes to the input pixel it read.
pub(crate) fn col2im_add(g: &ConvGeometry, col: &[f32], c0: usize, image: &mut [f32]) {
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
                let src = &col[row * oh_n * ow_n..(row + 1) * oh_n * ow_n];
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
