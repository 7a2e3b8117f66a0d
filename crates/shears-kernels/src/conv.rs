//! 2-D convolution by im2col + GEMM: forward, input gradient, weight gradient, bias gradient.
//!
//! Per image and group, with `W_g` the group's filters as a `out_per_group × col_rows` matrix
//! and `X_g` the group's im2col matrix (`col_rows × out_pixels`):
//! forward `Y_g = W_g · X_g`; input gradient `dX_g = col2im(W_gᵀ · dY_g)`; weight gradient
//! `dW_g = Σ_images dY_g · X_gᵀ`. A pointwise convolution skips im2col (its input is `X_g`).

use crate::depthwise;
use crate::geometry::{ConvGeometry, Epilogue};
use crate::im2col::{col2im_add, im2col};
use crate::matmul::{View, matmul};
use crate::parallel::{SharedMut, for_each_item, rectify, threads, with_scratch};
use rayon::prelude::*;

fn check_len(what: &str, got: usize, want: usize) {
    assert_eq!(
        got, want,
        "conv2d: {what} has {got} values, the geometry needs {want}"
    );
}

/// `output = conv(input, weight)`, then the epilogue (bias, residual, ReLU) on every value.
pub fn conv2d_forward(
    g: &ConvGeometry,
    input: &[f32],
    weight: &[f32],
    epilogue: Epilogue,
    output: &mut [f32],
) {
    g.validate();
    check_len("input", input.len(), g.input_len());
    check_len("weight", weight.len(), g.weight_len());
    check_len("output", output.len(), g.output_len());
    if let Some(b) = epilogue.bias {
        check_len("bias", b.len(), g.out_channels);
    }
    if let Some(r) = epilogue.residual {
        check_len("residual", r.len(), g.output_len());
    }
    if g.is_depthwise() {
        depthwise::forward(g, input, weight, output);
        apply_epilogue(g, epilogue, output);
        return;
    }
    let in_image = g.in_channels * g.in_pixels();
    let out_image = g.out_channels * g.out_pixels();
    let (cog, rows, pixels) = (g.out_per_group(), g.col_rows(), g.out_pixels());
    let out = SharedMut(output.as_mut_ptr());
    for_each_item(g.batch, |n, par| {
        let image = &input[n * in_image..(n + 1) * in_image];
        // SAFETY: image n writes only its own output range.
        let y = unsafe { out.slice(n * out_image, out_image) };
        for grp in 0..g.groups {
            let w = View::rows(&weight[grp * cog * rows..(grp + 1) * cog * rows], rows);
            let y_g = &mut y[grp * cog * pixels..(grp + 1) * cog * pixels];
            if g.is_pointwise() {
                let x_g = &image[grp * rows * pixels..(grp + 1) * rows * pixels];
                matmul(
                    cog,
                    pixels,
                    rows,
                    w,
                    View::rows(x_g, pixels),
                    y_g,
                    pixels,
                    false,
                    par,
                );
            } else {
                with_scratch(rows * pixels, |col| {
                    im2col(g, image, grp * g.in_per_group(), col);
                    matmul(
                        cog,
                        pixels,
                        rows,
                        w,
                        View::rows(col, pixels),
                        y_g,
                        pixels,
                        false,
                        par,
                    );
                });
            }
        }
        epilogue_image(g, epilogue, n, y);
    });
}

fn apply_epilogue(g: &ConvGeometry, e: Epilogue, output: &mut [f32]) {
    if e.bias.is_none() && e.residual.is_none() && !e.relu {
        return;
    }
    let out_image = g.out_channels * g.out_pixels();
    output
        .par_chunks_mut(out_image)
        .enumerate()
        .for_each(|(n, y)| epilogue_image(g, e, n, y));
}

/// Bias, residual and ReLU on one image's output, one pass.
fn epilogue_image(g: &ConvGeometry, e: Epilogue, n: usize, y: &mut [f32]) {
    if e.bias.is_none() && e.residual.is_none() && !e.relu {
        return;
    }
    let pixels = g.out_pixels();
    let out_image = g.out_channels * pixels;
    let residual = e.residual.map(|r| &r[n * out_image..(n + 1) * out_image]);
    for (c, plane) in y.chunks_mut(pixels).enumerate() {
        let b = e.bias.map_or(0.0, |b| b[c]);
        match residual {
            Some(r) => {
                let r = &r[c * pixels..(c + 1) * pixels];
                if e.relu {
                    plane
                        .iter_mut()
                        .zip(r)
                        .for_each(|(v, r)| *v = rectify(*v + b + r));
                } else {
                    plane.iter_mut().zip(r).for_each(|(v, r)| *v += b + r);
                }
            }
            None if e.relu => plane.iter_mut().for_each(|v| *v = rectify(*v + b)),
            None => plane.iter_mut().for_each(|v| *v += b),
        }
    }
}

/// The gradient with respect to the input: `grad_input = convᵀ(grad_output, weight)`.
pub fn conv2d_backward_input(
    g: &ConvGeometry,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    g.validate();
    check_len("output gradient", grad_output.len(), g.output_len());
    check_len("weight", weight.len(), g.weight_len());
    check_len("input gradient", grad_input.len(), g.input_len());
    if g.is_depthwise() {
        depthwise::backward_input(g, grad_output, weight, grad_input);
        return;
    }
    let in_image = g.in_channels * g.in_pixels();
    let out_image = g.out_channels * g.out_pixels();
    let (cog, rows, pixels) = (g.out_per_group(), g.col_rows(), g.out_pixels());
    let dx_all = SharedMut(grad_input.as_mut_ptr());
    for_each_item(g.batch, |n, par| {
        let dy = &grad_output[n * out_image..(n + 1) * out_image];
        // SAFETY: image n writes only its own input-gradient range.
        let dx = unsafe { dx_all.slice(n * in_image, in_image) };
        if !g.is_pointwise() {
            dx.fill(0.0);
        }
        for grp in 0..g.groups {
            let w_t = View::transposed(&weight[grp * cog * rows..(grp + 1) * cog * rows], rows);
            let dy_g = View::rows(&dy[grp * cog * pixels..(grp + 1) * cog * pixels], pixels);
            if g.is_pointwise() {
                let dx_g = &mut dx[grp * rows * pixels..(grp + 1) * rows * pixels];
                matmul(rows, pixels, cog, w_t, dy_g, dx_g, pixels, false, par);
            } else {
                with_scratch(rows * pixels, |col| {
                    matmul(rows, pixels, cog, w_t, dy_g, col, pixels, false, par);
                    col2im_add(g, col, grp * g.in_per_group(), dx);
                });
            }
        }
    });
}

/// The gradient with respect to the weight, summed over the batch.
pub fn conv2d_backward_weight(
    g: &ConvGeometry,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) {
    g.validate();
    check_len("input", input.len(), g.input_len());
    check_len("output gradient", grad_output.len(), g.output_len());
    check_len("weight gradient", grad_weight.len(), g.weight_len());
    if g.is_depthwise() {
        depthwise::backward_weight(g, input, grad_output, grad_weight);
        return;
    }
    let in_image = g.in_channels * g.in_pixels();
    let out_image = g.out_channels * g.out_pixels();
    let (cog, rows, pixels) = (g.out_per_group(), g.col_rows(), g.out_pixels());
    // One partial sum per thread over a contiguous run of images, then one reduction: no locks,
    // and with a single image the GEMM itself is parallel.
    let t = threads();
    let chunks = if t > 1 && g.batch >= t { t } else { 1 };
    let par = if chunks == 1 && t > 1 {
        gemm::Parallelism::Rayon(t)
    } else {
        gemm::Parallelism::None
    };
    let per_chunk = g.batch.div_ceil(chunks);
    let accumulate_images = |images: std::ops::Range<usize>, dw: &mut [f32]| {
        for (k, n) in images.enumerate() {
            let x = &input[n * in_image..(n + 1) * in_image];
            let dy = &grad_output[n * out_image..(n + 1) * out_image];
            for grp in 0..g.groups {
                let dy_g = View::rows(&dy[grp * cog * pixels..(grp + 1) * cog * pixels], pixels);
                let dw_g = &mut dw[grp * cog * rows..(grp + 1) * cog * rows];
                if g.is_pointwise() {
                    let x_t = View::transposed(
                        &x[grp * rows * pixels..(grp + 1) * rows * pixels],
                        pixels,
                    );
                    matmul(cog, rows, pixels, dy_g, x_t, dw_g, rows, k > 0, par);
                } else {
                    with_scratch(rows * pixels, |col| {
                        im2col(g, x, grp * g.in_per_group(), col);
                        matmul(
                            cog,
                            rows,
                            pixels,
                            dy_g,
                            View::transposed(col, pixels),
                            dw_g,
                            rows,
                            k > 0,
                            par,
                        );
                    });
                }
            }
        }
    };
    if chunks == 1 {
        accumulate_images(0..g.batch, grad_weight);
        return;
    }
    let mut partials = vec![0.0f32; (chunks - 1) * g.weight_len()];
    let first = SharedMut(grad_weight.as_mut_ptr());
    let rest = SharedMut(partials.as_mut_ptr());
    (0..chunks).into_par_iter().for_each(|c| {
        let images = c * per_chunk..((c + 1) * per_chunk).min(g.batch);
        // SAFETY: chunk 0 writes the output, chunk c > 0 its own partial range.
        let dw = unsafe {
            if c == 0 {
                first.slice(0, g.weight_len())
            } else {
                rest.slice((c - 1) * g.weight_len(), g.weight_len())
            }
        };
        if images.is_empty() {
            dw.fill(0.0);
        } else {
            accumulate_images(images, dw);
        }
    });
    for p in partials.chunks(g.weight_len()) {
        grad_weight.iter_mut().zip(p).for_each(|(d, v)| *d += v);
    }
}

/// The gradient with respect to the bias: the output gradient summed over images and pixels.
pub fn conv2d_backward_bias(g: &ConvGeometry, grad_output: &[f32], grad_bias: &mut [f32]) {
    check_len("output gradient", grad_output.len(), g.output_len());
    check_len("bias gradient", grad_bias.len(), g.out_channels);
    let pixels = g.out_pixels();
    let out_image = g.out_channels * pixels;
    grad_bias.par_iter_mut().enumerate().for_each(|(c, db)| {
        let mut s = 0.0f64;
        for n in 0..g.batch {
            let plane = &grad_output[n * out_image + c * pixels..n * out_image + (c + 1) * pixels];
            s += plane.iter().sum::<f32>() as f64;
        }
        *db = s as f32;
    });
}
