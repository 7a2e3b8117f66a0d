//! 3x3 "same" convolutions (stride 1, padding 1, no groups) on 3x3 and 4x4 maps, one GEMM per
//! tap over only the pixels that tap reads inside the map.
//!
//! On a 4x4 map a corner pixel's window holds 4 of the map's pixels and an edge pixel's 6:
//! im2col + GEMM multiplies the other taps by padding, 31 % of its arithmetic (VGG-11's 4x4
//! layers, 256 and 512 channels, were a third of its training step). Here tap `t` gathers the
//! input pixels it reads for the output pixels it serves (9 to 16 of 16 per image), multiplies
//! them by its `out × in` weight slice, and adds the products to those outputs; the input
//! gradient runs the same way with the slices transposed, and the weight gradient of tap `t`
//! is one GEMM of the gathered output gradients by the gathered inputs.

use crate::geometry::ConvGeometry;
use crate::matmul::{View, matmul, matmul_into};
use crate::parallel::{SharedMut, sum_runs, threads, with_scratch};
use rayon::prelude::*;

/// Batches below this take im2col + GEMM: their per-tap GEMMs would be too thin.
const MIN_BATCH: usize = 16;

/// Each tap's GEMM sums over the input channels alone: with 64 of them (ResNet-20's 8x8 layers,
/// tried) it ran at 60 % of im2col + GEMM's rate, and on 8x8 maps even VGG-11's 128 and 256
/// channels lost 5-20 % (a 4x4 map wastes 31 % on padding taps, an 8x8 one 16 %).
const MIN_CHANNELS: usize = 128;

/// Whether this path takes the layer.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.is_dense_same_3x3()
        && (3..=4).contains(&g.in_h)
        && (3..=4).contains(&g.in_w)
        && g.in_channels >= MIN_CHANNELS
        && g.batch >= MIN_BATCH
}

/// Whether the input gradient takes this path: as [`applies`], and also on 2x2 maps where
/// `small_map.rs` leaves wide layers on two threads (VGG-11's 512 -> 512: 306 against 216
/// GFLOP/s there).
pub(crate) fn applies_to_input(g: &ConvGeometry) -> bool {
    applies(g) || (crate::small_map::applies(g) && crate::small_map::wide_on_threads(g))
}

/// For each tap, the `(output pixel, input pixel)` pairs it joins inside the map.
fn tap_pairs(g: &ConvGeometry) -> Vec<Vec<(usize, usize)>> {
    let (h, w) = (g.in_h as isize, g.in_w as isize);
    (0..9)
        .map(|t| {
            let (dh, dw) = (t as isize / 3 - 1, t as isize % 3 - 1);
            let mut pairs = Vec::new();
            for oh in 0..h {
                for ow in 0..w {
                    let (ih, iw) = (oh + dh, ow + dw);
                    if (0..h).contains(&ih) && (0..w).contains(&iw) {
                        pairs.push(((oh * w + ow) as usize, (ih * w + iw) as usize));
                    }
                }
            }
            pairs
        })
        .collect()
}

/// The weights laid out `[ci][t][co]`: tap `t`'s `co × ci` slice then has unit stride down its
/// columns, as the GEMM's left operand wants, and each input channel's block is contiguous.
fn taps_first(g: &ConvGeometry, weight: &[f32]) -> Vec<f32> {
    let (ci_n, co_n) = (g.in_channels, g.out_channels);
    let mut wt = vec![0.0f32; weight.len()];
    wt.par_chunks_mut(9 * co_n)
        .enumerate()
        .for_each(|(ci, block)| {
            for co in 0..co_n {
                let taps = &weight[(co * ci_n + ci) * 9..][..9];
                for (t, v) in taps.iter().enumerate() {
                    block[t * co_n + co] = *v;
                }
            }
        });
    wt
}

/// Tap `t`'s weights as an `out_channels × in_channels` matrix (or its transpose).
fn tap_slice<'a>(g: &ConvGeometry, wt: &'a [f32], t: usize, transposed: bool) -> View<'a> {
    let (data, stride) = (&wt[t * g.out_channels..], 9 * g.out_channels);
    if transposed {
        View::rows(data, stride)
    } else {
        View::transposed(data, stride)
    }
}

/// Copies `src`'s values at `pick(pair)` of every image's `channels` planes into rows of
/// `images × pairs` columns: `dst[c][(i, r)] = src[i][c][pick(pairs[r])]`.
fn gather(
    src: &[f32],
    channels: usize,
    plane: usize,
    pairs: &[(usize, usize)],
    pick: impl Fn(&(usize, usize)) -> usize,
    dst: &mut [f32],
) {
    let images = src.len() / (channels * plane);
    let cols = images * pairs.len();
    for (c, row) in dst[..channels * cols].chunks_mut(cols).enumerate() {
        for (i, out) in row.chunks_mut(pairs.len()).enumerate() {
            let values = &src[(i * channels + c) * plane..][..plane];
            for (o, pair) in out.iter_mut().zip(pairs) {
                *o = values[pick(pair)];
            }
        }
    }
}

/// The reverse of [`gather`], adding: `dst[i][c][pick(pairs[r])] += src[c][(i, r)]`.
fn scatter_add(
    src: &[f32],
    channels: usize,
    plane: usize,
    pairs: &[(usize, usize)],
    pick: impl Fn(&(usize, usize)) -> usize,
    dst: &mut [f32],
) {
    let images = dst.len() / (channels * plane);
    let cols = images * pairs.len();
    for (c, row) in src[..channels * cols].chunks(cols).enumerate() {
        for (i, values) in row.chunks(pairs.len()).enumerate() {
            let out = &mut dst[(i * channels + c) * plane..][..plane];
            for (v, pair) in values.iter().zip(pairs) {
                out[pick(pair)] += v;
            }
        }
    }
}

/// Images per parallel run: one run per thread.
fn per_run(g: &ConvGeometry) -> usize {
    g.batch.div_ceil(threads()).max(1)
}

/// `y = conv(x, w)`: for each tap, `Y[:, outputs] += W_t · X[:, inputs]`.
pub(crate) fn forward(g: &ConvGeometry, input: &[f32], weight: &[f32], output: &mut [f32]) {
    through_taps(g, weight, input, output, false);
}

/// `dx`: for each tap, `dX[:, inputs] += W_tᵀ · dY[:, outputs]`.
pub(crate) fn backward_input(
    g: &ConvGeometry,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    through_taps(g, weight, grad_output, grad_input, true);
}

/// The forward pass (`backward` false: from the input to the output) or the input gradient
/// (true: from the output gradient back through the transposed taps), one run of images per
/// thread: for each tap, gather the source pixels it reads, one GEMM, add into the pixels it
/// writes.
fn through_taps(g: &ConvGeometry, weight: &[f32], src: &[f32], dst: &mut [f32], backward: bool) {
    let (ci_n, co_n, p_n) = (g.in_channels, g.out_channels, g.in_pixels());
    let (from_n, to_n) = if backward { (co_n, ci_n) } else { (ci_n, co_n) };
    // A pair is (output pixel, input pixel): the side read, then the side written.
    let from = |&(p, q): &(usize, usize)| if backward { p } else { q };
    let to = |&(p, q): &(usize, usize)| if backward { q } else { p };
    let (pairs, wt) = (tap_pairs(g), taps_first(g, weight));
    let per = per_run(g);
    dst.par_chunks_mut(per * to_n * p_n)
        .zip(src.par_chunks(per * from_n * p_n))
        .for_each(|(dst, src)| {
            dst.fill(0.0);
            let cols = (src.len() / (from_n * p_n)) * p_n;
            with_scratch((ci_n + co_n) * cols, |buf| {
                let (gathered, products) = buf.split_at_mut(from_n * cols);
                for (t, pairs) in pairs.iter().enumerate() {
                    let cols = cols / p_n * pairs.len();
                    gather(src, from_n, p_n, pairs, from, gathered);
                    let b = View::rows(&gathered[..from_n * cols], cols);
                    let a = tap_slice(g, &wt, t, backward);
                    let products = &mut products[..to_n * cols];
                    let none = gemm::Parallelism::None;
                    matmul(to_n, cols, from_n, a, b, products, cols, false, none);
                    scatter_add(products, to_n, p_n, pairs, to, dst);
                }
            });
        });
}

/// `dW[:, :, t] = dY[:, outputs] · X[:, inputs]ᵀ`, summed over one run of images per thread,
/// the runs then added in order.
pub(crate) fn backward_weight(
    g: &ConvGeometry,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) {
    let (ci_n, co_n, p_n) = (g.in_channels, g.out_channels, g.in_pixels());
    let pairs = tap_pairs(g);
    let per = per_run(g);
    let runs = g.batch.div_ceil(per);
    let len = g.weight_len();
    let mut acc = vec![0.0f32; runs * len];
    let parts = SharedMut(acc.as_mut_ptr());
    (0..runs).into_par_iter().for_each(|r| {
        // SAFETY: run r writes only its own partial gradient.
        let part = unsafe { parts.slice(r * len, len) };
        let images = r * per..((r + 1) * per).min(g.batch);
        let x = &input[images.start * ci_n * p_n..images.end * ci_n * p_n];
        let dy = &grad_output[images.start * co_n * p_n..images.end * co_n * p_n];
        let cols = images.len() * p_n;
        with_scratch((ci_n + co_n) * cols, |buf| {
            let (xt, dyt) = buf.split_at_mut(ci_n * cols);
            for (t, pairs) in pairs.iter().enumerate() {
                let cols = images.len() * pairs.len();
                gather(x, ci_n, p_n, pairs, |&(_, q)| q, xt);
                gather(dy, co_n, p_n, pairs, |&(p, _)| p, dyt);
                let a = View::rows(&dyt[..co_n * cols], cols);
                let b = View::transposed(&xt[..ci_n * cols], cols);
                let out = &mut part[t..];
                let strides = (ci_n * 9, 9);
                matmul_into(
                    co_n,
                    ci_n,
                    cols,
                    a,
                    b,
                    out,
                    strides,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    });
    sum_runs(&acc, grad_weight);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_4x4_map_joins_100_pixel_pairs_over_its_taps() {
        let g = ConvGeometry {
            batch: 16,
            in_channels: 1,
            in_h: 4,
            in_w: 4,
            out_channels: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
        };
        let pairs = tap_pairs(&g);
        let counts: Vec<usize> = pairs.iter().map(Vec::len).collect();
        assert_eq!(counts, [9, 12, 9, 12, 16, 12, 9, 12, 9]);
        // The top-left tap joins output (1, 1) to input (0, 0).
        assert_eq!(pairs[0][0], (5, 0));
    }
}
