//! 2-D convolution by im2col + GEMM: forward, input gradient, weight gradient, bias gradient.
//!
//! Per image and group, with `W_g` the group's filters as a `out_per_group × col_rows` matrix
//! and `X_g` the group's im2col matrix (`col_rows × out_pixels`):
//! forward `Y_g = W_g · X_g`; input gradient `dX_g = col2im(W_gᵀ · dY_g)`; weight gradient
//! `dW_g = Σ_images dY_g · X_gᵀ`. A pointwise convolution skips im2col (its input is `X_g`).
//!
//! Layers with few output pixels (a 4x4 map has 16) make GEMMs too thin for the micro-kernels,
//! and each call would pack the whole filter bank again for a few columns. Such layers put a
//! block of images side by side, so one GEMM has about [`BLOCK_COLUMNS`] columns.

use crate::blocked;
use crate::depthwise;
use crate::direct;
use crate::direct_grad;
use crate::few_filters;
use crate::geometry::{ConvGeometry, Epilogue};
use crate::im2col::{col2im_add, im2col};
use crate::matmul::{View, matmul, matmul_into};
use crate::parallel::{SharedMut, for_each_item, rectify, sum_runs, threads, with_scratch};
use crate::pointwise_grad;
use crate::selected;
use crate::small_map;
use crate::tapwise;
use rayon::prelude::*;

fn check_len(what: &str, got: usize, want: usize) {
    assert_eq!(
        got, want,
        "conv2d: {what} has {got} values, the geometry needs {want}"
    );
}

/// Weights (floats) up to which a batch's 3x3 convolutions run image by image on the selected
/// kernel: 256 K floats (1 MiB), the L2 cache of one core here. ResNet-20's layers (at most
/// 37 K) qualify; VGG-11's 512-channel ones (2.4 M) stay on the batched GEMM, which reads each
/// weight once for many images.
const SELECTED_BATCH_WEIGHTS: usize = 256 * 1024;

/// Output pixels one GEMM should cover at least: below it, images are put side by side.
pub const BLOCK_COLUMNS: usize = 512;

/// A run of images handled by one GEMM per group: `images` side by side, `columns` in total.
#[derive(Clone, Copy)]
struct Block {
    first: usize,
    images: usize,
    columns: usize,
}

/// The image blocks of a batch, given a per-image pixel count.
fn blocks(g: &ConvGeometry) -> (usize, impl Fn(usize) -> Block + Sync) {
    let pixels = g.out_pixels();
    // At least one block per thread when the batch allows: a single block would leave the
    // gather and the copy-out on one thread and split only the GEMM (2x2 and 4x4 maps of
    // VGG-11 gained 1.1-1.3x from a second thread that way).
    let per_thread = g.batch.div_ceil(threads()).max(1);
    let per_block = BLOCK_COLUMNS
        .div_ceil(pixels)
        .clamp(1, g.batch.max(1))
        .min(per_thread);
    let count = g.batch.div_ceil(per_block);
    let batch = g.batch;
    (count, move |b: usize| {
        let first = b * per_block;
        let images = per_block.min(batch - first);
        Block {
            first,
            images,
            columns: images * pixels,
        }
    })
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
    if small_map::applies_to_data(g) {
        small_map::forward(g, input, weight, output);
        apply_epilogue(g, epilogue, output);
        return;
    }
    if tapwise::applies(g) {
        tapwise::forward(g, input, weight, output);
        apply_epilogue(g, epilogue, output);
        return;
    }
    if blocked::applies(g) {
        blocked::forward(g, input, weight, output);
        apply_epilogue(g, epilogue, output);
        return;
    }
    if few_filters::applies(g) {
        few_filters::forward(g, input, weight, output);
        apply_epilogue(g, epilogue, output);
        return;
    }
    if let Some(stride) = selected::selected_stride(g)
        && (g.batch == 1 || g.weight_len() <= SELECTED_BATCH_WEIGHTS)
        && !(threads() == 1 && g.batch == 1 && (16..64).contains(&g.out_pixels()))
    {
        // The flattened direct kernel, image by image. It wastes fewer lanes on narrow maps
        // than either path below (one image: 1.1-2.3x on the 3x3 layers of ResNet-20 and
        // VGG-11 at 28x28 and below, 1.3-1.4x on their stride-2 ones;
        // `examples/batch1_layers.rs`), but reads the weights again for every image, so a
        // batch takes it only when they stay in cache. One image of 16 to 63 output pixels on
        // one thread goes to im2col + GEMM instead (4x4 maps: 32 -> 45 GMAC/s on the
        // 512-channel layers of VGG-16 and ResNet-18 at 3x32x32, the networks 5-10 % faster
        // at batch 1); on two threads this kernel splits its filters better (GEMM 15 % slower).
        let zeros;
        let bias = match epilogue.bias {
            Some(b) => b,
            None => {
                zeros = vec![0f32; g.out_channels];
                &zeros
            }
        };
        let filters: Vec<usize> = (0..g.out_channels).collect();
        let channels: Vec<usize> = (0..g.in_channels).collect();
        let selection = selected::Selection {
            weight,
            bias,
            in_channels: g.in_channels,
            filters: &filters,
            channels: &channels,
        };
        let relu_now = epilogue.relu && epilogue.residual.is_none();
        let (in_image, out_image) = (
            g.in_channels * g.in_pixels(),
            g.out_channels * g.out_pixels(),
        );
        if g.batch >= threads() {
            // An image per item, its filter blocks in order on that thread.
            output
                .par_chunks_mut(out_image)
                .zip(input.par_chunks(in_image))
                .for_each(|(y, x)| {
                    selected::conv3x3_selected_on(
                        selection, g.in_h, g.in_w, stride, x, relu_now, y, false,
                    )
                });
        } else {
            for (y, x) in output.chunks_mut(out_image).zip(input.chunks(in_image)) {
                selected::conv3x3_selected(selection, g.in_h, g.in_w, stride, x, relu_now, y);
            }
        }
        if epilogue.residual.is_some() {
            let rest = Epilogue {
                bias: None,
                ..epilogue
            };
            apply_epilogue(g, rest, output);
        }
        return;
    }
    let in_image = g.in_channels * g.in_pixels();
    let out_image = g.out_channels * g.out_pixels();
    if direct::applies(g) {
        // Blocks of (up to) 8 output channels; a single image still uses every thread.
        // Measured 1.5-2.5x the im2col path on 8-32-channel 16x16 and 32x32 layers.
        let blocks = direct::channel_blocks(g.out_channels);
        let per_image = blocks.len();
        // Each block's weights once per call, each image's padded copy once: every (image,
        // block) item reads both.
        let block_weights: Vec<Vec<f32>> = blocks
            .iter()
            .map(|&b| direct::block_weights_for(g, weight, b))
            .collect();
        let plen = direct::scratch_len(g);
        let out = SharedMut(output.as_mut_ptr());
        let pixels = g.out_pixels();
        let image_of = |n: usize| &input[n * in_image..(n + 1) * in_image];
        if g.batch >= threads() {
            // An image per item: padded once into the thread's scratch (still in cache for
            // its blocks), then every block of it.
            (0..g.batch).into_par_iter().for_each(|n| {
                with_scratch(plen, |pad| {
                    direct::pad_image(g, image_of(n), pad);
                    for (bi, &block) in blocks.iter().enumerate() {
                        let (co0, co1) = (block.0, block.0 + block.1);
                        // SAFETY: the item writes only image n.
                        let y = unsafe {
                            out.slice(n * out_image + co0 * pixels, (co1 - co0) * pixels)
                        };
                        direct::forward_block(g, pad, &block_weights[bi], block, y);
                        epilogue_channels(g, epilogue, n, co0..co1, y);
                    }
                });
            });
            return;
        }
        // Fewer images than threads (batch 1): each image padded once, its blocks spread over
        // the threads.
        let mut padded = vec![0f32; g.batch * plen];
        padded
            .par_chunks_mut(plen)
            .enumerate()
            .for_each(|(n, pad)| direct::pad_image(g, image_of(n), pad));
        (0..g.batch * per_image).into_par_iter().for_each(|item| {
            let (n, bi) = (item / per_image, item % per_image);
            let block = blocks[bi];
            let (co0, co1) = (block.0, block.0 + block.1);
            // SAFETY: the item writes only channels co0..co1 of image n.
            let y = unsafe { out.slice(n * out_image + co0 * pixels, (co1 - co0) * pixels) };
            direct::forward_block(
                g,
                &padded[n * plen..(n + 1) * plen],
                &block_weights[bi],
                block,
                y,
            );
            epilogue_channels(g, epilogue, n, co0..co1, y);
        });
        return;
    }
    let (cog, rows, pixels) = (g.out_per_group(), g.col_rows(), g.out_pixels());
    let out = SharedMut(output.as_mut_ptr());
    let (count, block) = blocks(g);
    for_each_item(count, |b, par| {
        let blk = block(b);
        let ncols = blk.columns;
        // SAFETY: block b writes only its own images' output range.
        let y = unsafe { out.slice(blk.first * out_image, blk.images * out_image) };
        let single = blk.images == 1;
        let col_len = if single && g.is_pointwise() {
            0
        } else {
            rows * ncols
        };
        let out_len = if single { 0 } else { cog * ncols };
        with_scratch(col_len + out_len, |buf| {
            let (col, y_block) = buf.split_at_mut(col_len);
            for grp in 0..g.groups {
                let w = View::rows(&weight[grp * cog * rows..(grp + 1) * cog * rows], rows);
                let x_g: &[f32] = if single && g.is_pointwise() {
                    let image = &input[blk.first * in_image..(blk.first + 1) * in_image];
                    &image[grp * rows * pixels..(grp + 1) * rows * pixels]
                } else {
                    for i in 0..blk.images {
                        let n = blk.first + i;
                        let image = &input[n * in_image..(n + 1) * in_image];
                        gather_columns(g, image, grp, col, ncols, i * pixels);
                    }
                    col
                };
                let x_view = View::rows(x_g, ncols);
                if single {
                    let y_g = &mut y[grp * cog * pixels..(grp + 1) * cog * pixels];
                    matmul(cog, ncols, rows, w, x_view, y_g, pixels, false, par);
                } else {
                    matmul(cog, ncols, rows, w, x_view, y_block, ncols, false, par);
                    // (co, i·pixels + p) of the block → image i, channel grp·cog + co.
                    for i in 0..blk.images {
                        for co in 0..cog {
                            let src = &y_block[co * ncols + i * pixels..][..pixels];
                            let c = grp * cog + co;
                            y[i * out_image + c * pixels..][..pixels].copy_from_slice(src);
                        }
                    }
                }
            }
        });
        for i in 0..blk.images {
            epilogue_image(
                g,
                epilogue,
                blk.first + i,
                &mut y[i * out_image..(i + 1) * out_image],
            );
        }
    });
}

/// Writes group `grp`'s im2col matrix of one image (for a pointwise convolution, its input
/// rows) into columns `offset..offset + out_pixels` of a matrix with `ld` columns.
fn gather_columns(
    g: &ConvGeometry,
    image: &[f32],
    grp: usize,
    col: &mut [f32],
    ld: usize,
    offset: usize,
) {
    if g.is_pointwise() {
        let (rows, pixels) = (g.col_rows(), g.out_pixels());
        let x_g = &image[grp * rows * pixels..(grp + 1) * rows * pixels];
        for (r, src) in x_g.chunks(pixels).enumerate() {
            col[r * ld + offset..][..pixels].copy_from_slice(src);
        }
    } else {
        im2col(g, image, grp * g.in_per_group(), col, ld, offset);
    }
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
    epilogue_channels(g, e, n, 0..g.out_channels, y)
}

/// The epilogue on channels `channels` of image `n`, whose planes `y` holds.
fn epilogue_channels(
    g: &ConvGeometry,
    e: Epilogue,
    n: usize,
    channels: std::ops::Range<usize>,
    y: &mut [f32],
) {
    if e.bias.is_none() && e.residual.is_none() && !e.relu {
        return;
    }
    let pixels = g.out_pixels();
    let out_image = g.out_channels * pixels;
    let residual = e.residual.map(|r| &r[n * out_image..(n + 1) * out_image]);
    for (c, plane) in channels.zip(y.chunks_mut(pixels)) {
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
    if small_map::applies_to_data(g) {
        small_map::backward_input(g, grad_output, weight, grad_input);
        return;
    }
    if tapwise::applies_to_input(g) {
        tapwise::backward_input(g, grad_output, weight, grad_input);
        return;
    }
    if blocked::applies(g) {
        blocked::backward_input(g, grad_output, weight, grad_input);
        return;
    }
    // For a stride-1 3x3 "same" convolution the input gradient is the same convolution of the
    // output gradient with the filters flipped and their channel axes swapped: the direct kernel.
    let transposed = ConvGeometry {
        in_channels: g.out_channels,
        out_channels: g.in_channels,
        ..*g
    };
    if direct::applies(g) && direct::applies(&transposed) {
        let (ci_n, co_n) = (g.in_channels, g.out_channels);
        let mut flipped = vec![0.0f32; g.weight_len()];
        for co in 0..co_n {
            for ci in 0..ci_n {
                for tap in 0..9 {
                    flipped[(ci * co_n + co) * 9 + (8 - tap)] = weight[(co * ci_n + ci) * 9 + tap];
                }
            }
        }
        conv2d_forward(
            &transposed,
            grad_output,
            &flipped,
            Epilogue::default(),
            grad_input,
        );
        return;
    }
    let in_image = g.in_channels * g.in_pixels();
    let out_image = g.out_channels * g.out_pixels();
    let (cog, rows, pixels) = (g.out_per_group(), g.col_rows(), g.out_pixels());
    let dx_all = SharedMut(grad_input.as_mut_ptr());
    let (count, block) = blocks(g);
    for_each_item(count, |b, par| {
        let blk = block(b);
        let ncols = blk.columns;
        let single = blk.images == 1;
        // SAFETY: block b writes only its own images' input-gradient range.
        let dx = unsafe { dx_all.slice(blk.first * in_image, blk.images * in_image) };
        if !g.is_pointwise() {
            dx.fill(0.0);
        }
        let dy = &grad_output[blk.first * out_image..(blk.first + blk.images) * out_image];
        let dy_len = if single { 0 } else { cog * ncols };
        let col_len = if single && g.is_pointwise() {
            0
        } else {
            rows * ncols
        };
        with_scratch(dy_len + col_len, |buf| {
            let (dy_block, col) = buf.split_at_mut(dy_len);
            for grp in 0..g.groups {
                let w_t = View::transposed(&weight[grp * cog * rows..(grp + 1) * cog * rows], rows);
                let dy_g: &[f32] = if single {
                    &dy[grp * cog * pixels..(grp + 1) * cog * pixels]
                } else {
                    for i in 0..blk.images {
                        for co in 0..cog {
                            let src = &dy[i * out_image + (grp * cog + co) * pixels..][..pixels];
                            dy_block[co * ncols + i * pixels..][..pixels].copy_from_slice(src);
                        }
                    }
                    dy_block
                };
                let dy_view = View::rows(dy_g, ncols);
                if single && g.is_pointwise() {
                    let dx_g = &mut dx[grp * rows * pixels..(grp + 1) * rows * pixels];
                    matmul(rows, ncols, cog, w_t, dy_view, dx_g, pixels, false, par);
                    continue;
                }
                matmul(rows, ncols, cog, w_t, dy_view, col, ncols, false, par);
                for i in 0..blk.images {
                    let image = &mut dx[i * in_image..(i + 1) * in_image];
                    if g.is_pointwise() {
                        for r in 0..rows {
                            let src = &col[r * ncols + i * pixels..][..pixels];
                            image[(grp * rows + r) * pixels..][..pixels].copy_from_slice(src);
                        }
                    } else {
                        col2im_add(g, col, ncols, i * pixels, grp * g.in_per_group(), image);
                    }
                }
            }
        });
    });
}

/// The gradient with respect to the weight, summed over the batch.
///
/// Both factors, `dY_g` and `X_g`, run along the pixels, which is the reduction axis here; gemm
/// is fast only when its left operand and output have unit stride down a column, so each
/// image's `dY_g` is transposed (cheap: out_per_group × pixels) and the sum is accumulated as
/// `dW_gᵀ` (col_rows × out_per_group), transposed once at the end. Measured on a 16-channel
/// 32x32 layer: 44 µs per image against 454 µs with the plain layout.
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
    if small_map::applies(g) {
        small_map::backward_weight(g, input, grad_output, grad_weight);
        return;
    }
    if tapwise::applies(g) {
        tapwise::backward_weight(g, input, grad_output, grad_weight);
        return;
    }
    if blocked::applies(g) {
        blocked::backward_weight(g, input, grad_output, grad_weight);
        return;
    }
    // Up to 16 input channels (a network's first layer, ResNet's first stage, pruned layers):
    // the direct kernel (`examples/kernel_speed.rs`, GFLOP/s on one / two threads: VGG-11's
    // 3 -> 64 at 32x32 from 19 / 39 through im2col + GEMM to 72 / 141; ResNet-20's 16 -> 16 at
    // 32x32 from 58 / 118 to 100 / 162). With 32+ input channels im2col + GEMM is as fast or
    // faster (32 -> 32 at 16x16: 95 / 186 against 93 / 156 direct).
    if direct_grad::applies_unpadded(g) {
        direct_grad::backward_weight_unpadded(g, input, grad_output, grad_weight);
        return;
    }
    if g.in_channels <= 16 && direct_grad::applies(g) {
        direct_grad::backward_weight(g, input, grad_output, grad_weight);
        return;
    }
    if pointwise_grad::applies(g) {
        pointwise_grad::backward_weight(g, input, grad_output, grad_weight);
        return;
    }
    let t = threads();
    // Splitting over images costs every extra thread a whole gradient to write and add up;
    // splitting over input channels costs it a transposed copy of the output gradient. The
    // smaller of the two decides.
    if t > 1
        && g.groups == 1
        && g.in_channels >= t
        && !g.is_pointwise()
        && g.weight_len() > g.output_len()
    {
        backward_weight_by_channels(g, input, grad_output, grad_weight);
        return;
    }
    let in_image = g.in_channels * g.in_pixels();
    let out_image = g.out_channels * g.out_pixels();
    let (cog, rows, pixels) = (g.out_per_group(), g.col_rows(), g.out_pixels());
    // One partial sum per thread over a contiguous run of images, then one reduction: no locks,
    // and with a single image the GEMM itself is parallel.
    let chunks = if t > 1 && g.batch >= t { t } else { 1 };
    let par = if chunks == 1 && t > 1 {
        gemm::Parallelism::Rayon(t)
    } else {
        gemm::Parallelism::None
    };
    let per_chunk = g.batch.div_ceil(chunks);
    // With many filters per group the GEMM writes the gradient in its own layout (groups × cog ×
    // rows): measured on VGG-11's 512-channel layers, 1 thread, 55 -> 77 GFLOP/s at 2x2 and
    // 90 -> 100 at 4x4. With few it is 2-3x slower that way (ResNet-20's 16-64 filters), so
    // those accumulate `dW_gᵀ` (groups × rows × cog) and transpose once at the end.
    let own_layout = cog >= 256;
    let out_strides = if own_layout { (rows, 1) } else { (1, cog) };
    // Sums the gradient for every group over `images` into `acc`, a block of images per GEMM.
    let accumulate_images = |images: std::ops::Range<usize>, acc: &mut [f32]| {
        let per_block = BLOCK_COLUMNS.div_ceil(pixels).max(1);
        let mut first = images.start;
        let mut started = false;
        while first < images.end {
            let count = per_block.min(images.end - first);
            let ncols = count * pixels;
            let single_pointwise = count == 1 && g.is_pointwise();
            let col_len = if single_pointwise { 0 } else { rows * ncols };
            with_scratch(col_len + cog * ncols, |buf| {
                let (col, dy_t) = buf.split_at_mut(col_len);
                for grp in 0..g.groups {
                    // (co, i·pixels + p) of the block's dY_g, stored transposed.
                    for i in 0..count {
                        let n = first + i;
                        let dy = &grad_output[n * out_image..(n + 1) * out_image];
                        let dy_g = &dy[grp * cog * pixels..(grp + 1) * cog * pixels];
                        transpose_planes(dy_g, pixels, dy_t, i * pixels);
                    }
                    let x_g: &[f32] = if single_pointwise {
                        let x = &input[first * in_image..(first + 1) * in_image];
                        &x[grp * rows * pixels..(grp + 1) * rows * pixels]
                    } else {
                        for i in 0..count {
                            let n = first + i;
                            let x = &input[n * in_image..(n + 1) * in_image];
                            gather_columns(g, x, grp, col, ncols, i * pixels);
                        }
                        col
                    };
                    // (co, j) of dY_g at j·cog + co; (j, r) of X_gᵀ at r·ncols + j.
                    let a = View {
                        data: dy_t,
                        row_stride: 1,
                        col_stride: cog,
                    };
                    let b = View {
                        data: x_g,
                        row_stride: 1,
                        col_stride: ncols,
                    };
                    let acc_g = &mut acc[grp * rows * cog..(grp + 1) * rows * cog];
                    matmul_into(cog, rows, ncols, a, b, acc_g, out_strides, started, par);
                }
            });
            started = true;
            first += count;
        }
    };
    let len = g.weight_len();
    let mut acc = vec![0.0f32; chunks * len];
    let parts = SharedMut(acc.as_mut_ptr());
    let run_chunk = |c: usize| {
        let images = c * per_chunk..((c + 1) * per_chunk).min(g.batch);
        // SAFETY: chunk c writes only its own accumulator.
        let part = unsafe { parts.slice(c * len, len) };
        if images.is_empty() {
            part.fill(0.0);
        } else {
            accumulate_images(images, part);
        }
    };
    if chunks == 1 {
        run_chunk(0);
    } else {
        (0..chunks).into_par_iter().for_each(run_chunk);
    }
    if own_layout {
        sum_runs(&acc, grad_weight);
        return;
    }
    let summed;
    let total: &[f32] = if chunks == 1 {
        &acc
    } else {
        let mut t = vec![0.0f32; len];
        sum_runs(&acc, &mut t);
        summed = t;
        &summed
    };
    // groups × rows × cog → groups × cog × rows.
    for grp in 0..g.groups {
        transpose(
            &total[grp * rows * cog..(grp + 1) * rows * cog],
            rows,
            cog,
            &mut grad_weight[grp * cog * rows..(grp + 1) * cog * rows],
        );
    }
}

/// Writes the planes of `pixels` values in `planes` (one per output channel) as columns of
/// `dst`, a row per pixel: pixel `p` of plane `co` to `dst[(first_row + p) · planes + co]`.
/// The weight gradient's GEMM wants the output gradient this way round.
fn transpose_planes(planes: &[f32], pixels: usize, dst: &mut [f32], first_row: usize) {
    let count = planes.len() / pixels;
    for (co, plane) in planes.chunks(pixels).enumerate() {
        for (p, v) in plane.iter().enumerate() {
            dst[(first_row + p) * count + co] = *v;
        }
    }
}

/// `dst (cols × rows) = srcᵀ` for a row-major `src` (rows × cols), in 16 × 16 tiles so that both
/// sides stay in cache (an element-by-element transpose of VGG-11's 2.4 M-value weight gradient
/// missed the cache on every read and cost as much as the GEMM of a 2x2 layer), filters split
/// over the threads.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 16;
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(block, out)| {
            let c0 = block * TILE;
            let c1 = (c0 + TILE).min(cols);
            for r0 in (0..rows).step_by(TILE) {
                let r1 = (r0 + TILE).min(rows);
                for c in c0..c1 {
                    let line = &mut out[(c - c0) * rows..(c - c0 + 1) * rows];
                    for r in r0..r1 {
                        line[r] = src[r * cols + c];
                    }
                }
            }
        });
}

/// [`conv2d_backward_weight`] on several threads for an ungrouped convolution: each thread owns
/// a run of input channels, so it gathers only their im2col rows and writes only their slice of
/// the gradient, over the whole batch. No partial sums to add up: splitting over images instead
/// gave every thread a whole copy of the gradient to write and then reduce, which on VGG-11's
/// 512-channel layers (2.4 M weights, 2x2 and 4x4 maps) cost more than the GEMMs (1.1-1.3x from
/// the second thread).
fn backward_weight_by_channels(
    g: &ConvGeometry,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) {
    let in_image = g.in_channels * g.in_pixels();
    let out_image = g.out_channels * g.out_pixels();
    let (cog, pixels) = (g.out_channels, g.out_pixels());
    let taps = g.kernel[0] * g.kernel[1];
    let rows_all = g.col_rows();
    let t = threads();
    let per_part = g.in_channels.div_ceil(t);
    let parts = g.in_channels.div_ceil(per_part);
    // Part p owns the columns of its channels in every filter's row of dW (cog × rows).
    let dw_all = SharedMut(grad_weight.as_mut_ptr());
    let per_block = BLOCK_COLUMNS.div_ceil(pixels).max(1);
    (0..parts).into_par_iter().for_each(|p| {
        let c0 = p * per_part;
        let c1 = ((p + 1) * per_part).min(g.in_channels);
        let sub = ConvGeometry {
            in_channels: c1 - c0,
            ..*g
        };
        let rows = (c1 - c0) * taps;
        // SAFETY: part p writes only the columns of its own channels, (co, r) at
        // co · rows_all + r for r in its range; the slice runs from its first column to the end.
        let first_col = c0 * taps;
        let dw_p = unsafe { dw_all.slice(first_col, g.weight_len() - first_col) };
        let mut first = 0;
        let mut started = false;
        while first < g.batch {
            let count = per_block.min(g.batch - first);
            let ncols = count * pixels;
            with_scratch(rows * ncols + cog * ncols, |buf| {
                let (col, dy_t) = buf.split_at_mut(rows * ncols);
                for i in 0..count {
                    let n = first + i;
                    let dy = &grad_output[n * out_image..(n + 1) * out_image];
                    transpose_planes(dy, pixels, dy_t, i * pixels);
                    let x = &input[n * in_image..(n + 1) * in_image];
                    im2col(&sub, x, c0, col, ncols, i * pixels);
                }
                let a = View {
                    data: dy_t,
                    row_stride: 1,
                    col_stride: cog,
                };
                let b = View {
                    data: col,
                    row_stride: 1,
                    col_stride: ncols,
                };
                matmul_into(
                    cog,
                    rows,
                    ncols,
                    a,
                    b,
                    dw_p,
                    (rows_all, 1),
                    started,
                    gemm::Parallelism::None,
                );
            });
            started = true;
            first += count;
        }
    });
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
            s += crate::vector::sum(plane) as f64;
        }
        *db = s as f32;
    });
}
