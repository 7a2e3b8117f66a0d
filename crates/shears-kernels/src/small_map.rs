//! 3x3 "same" convolutions (stride 1, padding 1, no groups) on maps of at most 2x2 pixels, as
//! one dense layer over the whole map.
//!
//! On such a map every input pixel lies inside every output pixel's window, so output pixel `p`
//! reads input pixel `q` through tap `(qh − ph + 1, qw − pw + 1)` and the convolution is a matrix
//! `D` of `(out_channels·P) × (in_channels·P)` (P pixels) applied to each image's values as they
//! lie in memory: `y = D·x`, `dx = Dᵀ·dy`, and the weight gradient is `Σ_n dy·xᵀ` folded back
//! onto the taps. Through im2col + GEMM five of the nine taps of a 2x2 map multiply padding:
//! VGG-11's two 512-channel 2x2 layers did 2.25x the arithmetic needed and were its slowest
//! (80 GFLOP/s counted on one thread, against 100-120 for its larger maps).

use crate::geometry::ConvGeometry;
use crate::matmul::{View, matmul_into};
use crate::parallel::{threads, with_scratch};
use rayon::prelude::*;

/// Images below which building `D` (as large as the weights times P²/9) costs more than the
/// padding taps it saves; a single image keeps the direct kernel.
const MIN_BATCH: usize = 16;

/// Whether this path takes the layer.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.is_dense_same_3x3() && g.in_h <= 2 && g.in_w <= 2 && g.batch >= MIN_BATCH
}

/// Whether the forward pass and the input gradient take this path: not for layers with 512+
/// channels on two threads or more, where `D` (16 MiB) is written and read again at the speed
/// of the memory both cores share. VGG-11's 512 -> 512 at 2x2, batch 64, two threads
/// (`examples/kernel_speed.rs`, GFLOP/s counting all taps), on the Xeon: forward 200 here
/// against 228 through im2col + GEMM, input gradient 216 against 306 per tap (`tapwise.rs`); on
/// one thread this path is the fastest for all three passes (155 / 186 / 199 against 115 / 184 /
/// 144 at best). With 256 channels (`D` 4 MiB) it is the fastest on two threads too: ResNet-18's
/// 256 -> 256 at 2x2, batch 64, forward on two threads after 200 warm-up calls, 2.8-3.2 ms
/// through im2col + GEMM against 0.98-1.09 ms here (AMD EPYC). On that EPYC VGG-11's 512 -> 512
/// forward was faster here too (6.5-8.5 ms against 8.4-10.9, input gradient 4.4-5.6 against
/// 5.2-5.7 per tap), the opposite of the Xeon's figures above; it stays on the Xeon's choice.
pub(crate) fn applies_to_data(g: &ConvGeometry) -> bool {
    applies(g) && !wide_on_threads(g)
}

/// A 2x2 layer with 512+ channels on both sides, run on two threads or more.
pub(crate) fn wide_on_threads(g: &ConvGeometry) -> bool {
    g.in_h == 2 && g.in_w == 2 && g.in_channels >= 512 && g.out_channels >= 512 && threads() > 1
}

/// The tap through which output pixel `p` reads input pixel `q` of a map `w` wide.
fn tap(p: usize, q: usize, w: usize) -> usize {
    let (ph, pw, qh, qw) = (p / w, p % w, q / w, q % w);
    (qh + 1 - ph) * 3 + (qw + 1 - pw)
}

/// The tap through which each output pixel reads each input pixel: `table[p][q]`.
fn tap_table(g: &ConvGeometry) -> [[usize; 4]; 4] {
    let mut table = [[0; 4]; 4];
    for (p, row) in table.iter_mut().enumerate().take(g.in_pixels()) {
        for (q, t) in row.iter_mut().enumerate().take(g.in_pixels()) {
            *t = tap(p, q, g.in_w);
        }
    }
    table
}

/// `D`, stored row-major `[(co, p)][(ci, q)]`: each filter's taps are read once, in order, and
/// its `P` rows written in order.
fn dense(g: &ConvGeometry, weight: &[f32], d: &mut [f32]) {
    let (ci_n, p_n) = (g.in_channels, g.in_pixels());
    let ki = ci_n * p_n;
    let taps = tap_table(g);
    d.par_chunks_mut(p_n * ki)
        .zip(weight.par_chunks(ci_n * 9))
        .for_each(|(rows, filter)| {
            for (p, row) in rows.chunks_mut(ki).enumerate() {
                for (values, w) in row.chunks_mut(p_n).zip(filter.chunks(9)) {
                    for (q, v) in values.iter_mut().enumerate() {
                        *v = w[taps[p][q]];
                    }
                }
            }
        });
}

/// `Dᵀ`, stored row-major `[(ci, q)][(co, p)]`, the layout the forward pass's GEMM wants for its
/// left operand (unit stride down a column; row-major, gemm packed it on every call and the
/// forward pass ran at two thirds of the input gradient's rate). Built in tiles of 16 × 16
/// channels: a filter-major order would scatter its writes, a channel-major one its reads.
fn dense_transposed(g: &ConvGeometry, weight: &[f32], d: &mut [f32]) {
    const TILE: usize = 16;
    let (ci_n, co_n, p_n) = (g.in_channels, g.out_channels, g.in_pixels());
    let ko = co_n * p_n;
    let taps = tap_table(g);
    d.par_chunks_mut(TILE * p_n * ko)
        .enumerate()
        .for_each(|(block, rows)| {
            let ci0 = block * TILE;
            for co0 in (0..co_n).step_by(TILE) {
                for (i, channel) in rows.chunks_mut(p_n * ko).enumerate() {
                    let ci = ci0 + i;
                    for (q, row) in channel.chunks_mut(ko).enumerate() {
                        for co in co0..(co0 + TILE).min(co_n) {
                            let w = &weight[(co * ci_n + ci) * 9..][..9];
                            for (p, v) in row[co * p_n..][..p_n].iter_mut().enumerate() {
                                *v = w[taps[p][q]];
                            }
                        }
                    }
                }
            }
        });
}

fn parallelism() -> gemm::Parallelism {
    match threads() {
        1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    }
}

/// `y = conv(x, w)` for the whole batch: `yᵀ = D · xᵀ` with each image a column.
pub(crate) fn forward(g: &ConvGeometry, input: &[f32], weight: &[f32], output: &mut [f32]) {
    let (ki, ko) = (
        g.in_channels * g.in_pixels(),
        g.out_channels * g.out_pixels(),
    );
    // The scratch buffer is reused from call to call (every value is rewritten): 16 MiB for a
    // 512-channel 2x2 layer, which a fresh zeroed buffer would cost a pass over memory.
    with_scratch(ki * ko, |d| {
        dense_transposed(g, weight, d);
        let a = View::transposed(d, ko);
        let b = View::transposed(input, ki);
        matmul_into(ko, g.batch, ki, a, b, output, (1, ko), false, parallelism());
    });
}

/// `dx = Dᵀ · dy`, each image a column.
pub(crate) fn backward_input(
    g: &ConvGeometry,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (ki, ko) = (
        g.in_channels * g.in_pixels(),
        g.out_channels * g.out_pixels(),
    );
    with_scratch(ki * ko, |d| {
        dense(g, weight, d);
        let a = View::transposed(d, ki);
        let b = View::transposed(grad_output, ko);
        matmul_into(
            ki,
            g.batch,
            ko,
            a,
            b,
            grad_input,
            (1, ki),
            false,
            parallelism(),
        );
    });
}

/// `dW[co][ci][tap] = Σ over (p, q) reading through `tap` of (Σ_n dy·xᵀ)[(co, p)][(ci, q)]`.
pub(crate) fn backward_weight(
    g: &ConvGeometry,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) {
    let (ki, ko) = (
        g.in_channels * g.in_pixels(),
        g.out_channels * g.in_pixels(),
    );
    // The sum over images, row-major `[(co, p)][(ci, q)]`: a filter's rows are contiguous.
    with_scratch(ko * ki, |sum| {
        let a = View::transposed(grad_output, ko);
        let b = View::rows(input, ki);
        matmul_into(ko, ki, g.batch, a, b, sum, (ki, 1), false, parallelism());
        fold(g, sum, grad_weight);
    });
}

/// Adds each `(co, p)`, `(ci, q)` value of the summed outer products to the tap it went through.
fn fold(g: &ConvGeometry, sum: &[f32], grad_weight: &mut [f32]) {
    let (ci_n, p_n) = (g.in_channels, g.in_pixels());
    let ki = ci_n * p_n;
    let taps = tap_table(g);
    grad_weight
        .par_chunks_mut(ci_n * 9)
        .zip(sum.par_chunks(p_n * ki))
        .for_each(|(filter, rows)| {
            filter.fill(0.0);
            for (p, row) in rows.chunks(ki).enumerate() {
                for (w, values) in filter.chunks_mut(9).zip(row.chunks(p_n)) {
                    for (q, v) in values.iter().enumerate() {
                        w[taps[p][q]] += v;
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::tap;

    #[test]
    fn taps_of_a_2x2_map() {
        // Output pixel 0 (top left) reads itself through the centre and pixel 3 (bottom
        // right) through the bottom-right tap; pixel 3 reads pixel 0 through the top-left one.
        assert_eq!(tap(0, 0, 2), 4);
        assert_eq!(tap(0, 3, 2), 8);
        assert_eq!(tap(3, 0, 2), 0);
        assert_eq!(tap(1, 2, 2), 6);
        // A 1x1 map has only the centre; a 1x2 map the middle row.
        assert_eq!(tap(0, 0, 1), 4);
        assert_eq!(tap(1, 0, 2), 3);
    }
}
