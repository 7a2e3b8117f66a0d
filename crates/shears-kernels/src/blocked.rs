//! Dense same-padded 3x3 convolutions in a channel-blocked layout, NCHW16c or NCHW8c by the
//! CPU's vector width (AVX-512 or AVX2, chosen at run time): one register holds one pixel's
//! sixteen (eight) channels side by side. The input is copied once per call into that layout
//! with its one-pixel border of zeros; each output row of up to eight (six) pixels for up to
//! three (two) blocks of filters is then summed in 24 (12) registers, no im2col matrix and no
//! GEMM packing: each weight vector is used for a whole row, each broadcast input value for
//! every block. One task takes four images, so that the weights of one input block for one
//! group of filters (27 KiB with sixteen lanes, in L1) are read from memory once for all of
//! them.
//!
//! The input gradient is the same kernel on the output gradient, with the weights transposed
//! and flipped. The weight gradient keeps three taps by a few input channels of up to two
//! filter blocks in 24 (12) registers and walks every pixel of every image once for them.
//!
//! The layout is converted at each call's edges; keeping it from one layer to the next (and
//! BatchNorm, ReLU and pooling in it) is the step after this one.

use crate::geometry::ConvGeometry;
use crate::parallel::{SharedMut, uninit_output, with_scratch, zeroed};
use rayon::prelude::*;

/// Images one task sums together (fewer when the batch is small for the threads).
const IMAGES_PER_ITEM: usize = 4;

/// Batches from which the blocked kernels are taken: the work is split over images.
const MIN_BATCH: usize = 16;

static OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends the layers this path would take to the paths they had before it, so that a benchmark
/// (`examples/blocked_speed.rs`) or a test can compare both in one process. All paths are
/// exact, so flipping it while others run is harmless.
#[doc(hidden)]
pub fn use_blocked_layout(on: bool) {
    OFF.store(!on, std::sync::atomic::Ordering::Relaxed);
}

/// The vector width a blocked call runs at: the channels of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// AVX-512: NCHW16c, rows of eight pixels by three filter blocks.
    Sixteen,
    /// AVX2 with FMA: NCHW8c, rows of six pixels by two filter blocks (sixteen registers).
    Eight,
}

impl Width {
    /// Channels per block: one register of `f32`.
    pub fn lanes(self) -> usize {
        match self {
            Width::Sixteen => 16,
            Width::Eight => 8,
        }
    }
    /// Output pixels of one row summed at once.
    fn row(self) -> usize {
        match self {
            Width::Sixteen => 8,
            Width::Eight => 6,
        }
    }
    /// Filter blocks summed together (with `row` pixels each, one register apiece).
    fn filter_blocks(self) -> usize {
        match self {
            Width::Sixteen => 3,
            Width::Eight => 2,
        }
    }
    /// Whether this CPU runs this width.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Width::Sixteen => std::arch::is_x86_feature_detected!("avx512f"),
                Width::Eight => {
                    std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }
}

/// The widest width this CPU runs (eight lanes while the kernels are held to AVX2 with
/// `use_avx2_only`), or none.
pub fn width() -> Option<Width> {
    if Width::Sixteen.runs_here() && !crate::direct::avx2_only() {
        Some(Width::Sixteen)
    } else if Width::Eight.runs_here() {
        Some(Width::Eight)
    } else {
        None
    }
}

/// Whether `g`'s three passes take this path: a dense same-padded 3x3 layer on a map 8 to 32
/// pixels wide, from a batch of 16, with at least two blocks of channels on both sides with
/// AVX-512 (32+ channels) and two or more of eight with AVX2 (16+).
///
/// Measured against the paths the same layers take otherwise (`examples/blocked_speed.rs`,
/// GFLOP/s at batch 64, one / two threads, forward, input and weight gradient; BENCHMARKS.md):
/// small-cnn's 32x28x28 139/138/90 -> 138/135/131 and 272/273/184 -> 299/297/229, its 32 -> 64
/// at 14x14 +16-24 % on one thread; VGG-11's 256 -> 256 at 8x8 forward 153 -> 166 and 298 ->
/// 346. What was slower: sixteen lanes on 16- and 24-channel layers (ResNet-20's first stage
/// 119 -> 97 forward; a third of each register idle with 24), and maps wider than 32 were not
/// measured. With AVX2 everywhere (gemm built without its AVX-512 micro-kernels) eight lanes
/// were faster on every layer measured, 16-channel ones included, but for VGG-11's 128- and
/// 256-channel 8x8 layers' forward pass and input gradient on one thread (6-10 % slower).
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    let Some(width) = width() else {
        return false;
    };
    let least = 2 * width.lanes();
    g.is_dense_same_3x3()
        && (8..=32).contains(&g.in_w)
        && g.in_channels >= least
        && g.out_channels >= least
        && g.batch >= MIN_BATCH
        && !OFF.load(std::sync::atomic::Ordering::Relaxed)
}

/// The sizes of the blocked copies for one geometry.
#[derive(Clone, Copy, Debug)]
struct Blocks {
    lanes: usize,
    h: usize,
    w: usize,
    /// Padded row width and height of the input copy.
    hp: usize,
    wp: usize,
    in_blocks: usize,
    out_blocks: usize,
}

impl Blocks {
    fn of(width: Width, channels_in: usize, channels_out: usize, h: usize, w: usize) -> Blocks {
        let lanes = width.lanes();
        Blocks {
            lanes,
            h,
            w,
            hp: h + 2,
            wp: w + 2,
            in_blocks: channels_in.div_ceil(lanes),
            out_blocks: channels_out.div_ceil(lanes),
        }
    }
    fn padded_image(&self) -> usize {
        self.in_blocks * self.hp * self.wp * self.lanes
    }
    fn out_image(&self) -> usize {
        self.out_blocks * self.h * self.w * self.lanes
    }
    /// Floats of one filter-by-input tile: `[kh][kw][lanes in][lanes out]`.
    fn tile(&self) -> usize {
        9 * self.lanes * self.lanes
    }
    /// Floats of the weight copy: `[out block][in block][3][3][lanes in][lanes out]`.
    fn weights(&self) -> usize {
        self.out_blocks * self.in_blocks * self.tile()
    }
}

/// NCHW planes of `pixels` values into blocks of `b.lanes` channels per pixel: pixel `p` of
/// block `cb` to `dst[cb·block_len + at(p)..][..lanes]`, zeros past `channels`.
fn into_blocks(
    x: &[f32],
    channels: usize,
    b: Blocks,
    block_len: usize,
    at: impl Fn(usize) -> usize,
    dst: &mut [f32],
) {
    let pixels = b.h * b.w;
    // SAFETY: `check()` made sure the CPU runs the width `b` was made for; both functions
    // assert that their indices stay inside the buffers.
    unsafe {
        if b.lanes == 16 {
            avx512::into_blocks(x, channels, pixels, block_len, at, dst)
        } else {
            avx2::into_blocks(x, channels, pixels, block_len, at, dst)
        }
    }
}

/// One image, NCHW, into `[in block][h + 2][w + 2][lanes]` with zeros on the border and in the
/// channels past `channels`.
fn pad_image(x: &[f32], channels: usize, b: Blocks, dst: &mut [f32]) {
    let l = b.lanes;
    let plane = b.hp * b.wp * l;
    // The border alone is zeroed: everything inside it is written below (a quarter to a third
    // of an 8x8 map's padded plane is border).
    let row = b.wp * l;
    for block in dst[..b.in_blocks * plane].chunks_mut(plane) {
        block[..row].fill(0.0);
        block[plane - row..].fill(0.0);
        for r in 1..=b.h {
            block[r * row..][..l].fill(0.0);
            block[(r + 1) * row - l..][..l].fill(0.0);
        }
    }
    let at = |p: usize| ((p / b.w + 1) * b.wp + p % b.w + 1) * l;
    into_blocks(x, channels, b, plane, at, dst);
}

/// One image, NCHW, into `[block][h][w][lanes]`, zeros in the channels past `channels`.
fn block_image(x: &[f32], channels: usize, b: Blocks, dst: &mut [f32]) {
    let plane = b.h * b.w * b.lanes;
    into_blocks(x, channels, b, plane, |p| p * b.lanes, dst);
}

/// One image's blocked output `[out block][h][w][lanes]` back into NCHW (the first
/// `channels`).
fn unblock_image(src: &[f32], channels: usize, b: Blocks, y: &mut [f32]) {
    let pixels = b.h * b.w;
    // SAFETY: as in `into_blocks`.
    unsafe {
        if b.lanes == 16 {
            avx512::out_of_blocks(src, channels, pixels, y)
        } else {
            avx2::out_of_blocks(src, channels, pixels, y)
        }
    }
}

/// Weights `[out][in][3][3]` (read through `at(o, i, kh, kw)`) into
/// `[out block][in block][kh][kw][lanes in][lanes out]`, zeros past the real channels.
fn block_weights(
    outs: usize,
    ins: usize,
    b: Blocks,
    at: impl Fn(usize, usize, usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    let l = b.lanes;
    let mut w = vec![0f32; b.weights()];
    // One filter block per task: 2.4 M weights (a 512-channel layer) copied on one thread
    // would hold the other back.
    let per_block = b.in_blocks * b.tile();
    w.par_chunks_mut(per_block)
        .enumerate()
        .for_each(|(ob, dst)| {
            for o in ob * l..((ob + 1) * l).min(outs) {
                let ol = o % l;
                for i in 0..ins {
                    let (ib, il) = (i / l, i % l);
                    for k in 0..9 {
                        dst[((ib * 9 + k) * l + il) * l + ol] = at(o, i, k / 3, k % 3);
                    }
                }
            }
        });
    w
}

/// Panics unless `g` is a dense same-padded 3x3 layer, the CPU runs `width` and the buffers
/// have the geometry's sizes (input, weight, output in that order).
fn check(width: Width, g: &ConvGeometry, input: usize, weight: usize, output: usize) {
    g.validate();
    assert!(
        g.is_dense_same_3x3(),
        "blocked: only dense 3x3 convolutions at stride 1 with padding 1, got {g:?}"
    );
    assert!(
        width.runs_here(),
        "blocked: the CPU has no {} (for {width:?} lanes)",
        if width == Width::Sixteen {
            "AVX-512F"
        } else {
            "AVX2 with FMA"
        }
    );
    assert_eq!(
        input,
        g.input_len(),
        "blocked: the input has {input} values"
    );
    assert_eq!(
        weight,
        g.weight_len(),
        "blocked: the weight has {weight} values"
    );
    assert_eq!(
        output,
        g.output_len(),
        "blocked: the output has {output} values"
    );
}

/// The width calls without one run at; panics where the CPU has neither.
fn this_width() -> Width {
    width().expect("blocked: the CPU has neither AVX-512F nor AVX2 with FMA")
}

/// `y = conv(x, w)` for a dense 3x3, stride-1, padding-1 convolution (no bias): NCHW in and out.
pub fn forward(g: &ConvGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    forward_at(this_width(), g, x, w, y)
}

/// [`forward`] at a given width (benchmarks and tests compare the two).
#[doc(hidden)]
pub fn forward_at(width: Width, g: &ConvGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    check(width, g, x.len(), w.len(), y.len());
    let (ci, co) = (g.in_channels, g.out_channels);
    let b = Blocks::of(width, ci, co, g.in_h, g.in_w);
    let wb = block_weights(co, ci, b, |o, i, kh, kw| {
        w[((o * ci + i) * 3 + kh) * 3 + kw]
    });
    run(width, g.batch, ci, co, b, x, &wb, y);
}

/// `dx = conv_transposed(dy, w)`: the same kernel on `dy` with the weights transposed and
/// flipped.
pub fn backward_input(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    backward_input_at(this_width(), g, dy, w, dx)
}

/// [`backward_input`] at a given width.
#[doc(hidden)]
pub fn backward_input_at(width: Width, g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    check(width, g, dx.len(), w.len(), dy.len());
    let (ci, co) = (g.in_channels, g.out_channels);
    let b = Blocks::of(width, co, ci, g.in_h, g.in_w);
    let wb = block_weights(ci, co, b, |i, o, kh, kw| {
        w[((o * ci + i) * 3 + (2 - kh)) * 3 + (2 - kw)]
    });
    run(width, g.batch, co, ci, b, dy, &wb, dx);
}

/// The convolution of every image: `channels_in` NCHW channels in `x`, `channels_out` out.
#[allow(clippy::too_many_arguments)]
fn run(
    width: Width,
    batch: usize,
    channels_in: usize,
    channels_out: usize,
    b: Blocks,
    x: &[f32],
    wb: &[f32],
    y: &mut [f32],
) {
    let (in_image, out_image) = (channels_in * b.h * b.w, channels_out * b.h * b.w);
    let groups = filter_groups(b.out_blocks, width.filter_blocks());
    let out = SharedMut(y.as_mut_ptr());
    // Several images per item: each slice of weights (one input block for one group of
    // filters) is then read from memory once for all of them.
    let per_item = IMAGES_PER_ITEM.min(batch.div_ceil(crate::parallel::threads()).max(1));
    let items = batch.div_ceil(per_item);
    let (pi, oi) = (b.padded_image(), b.out_image());
    (0..items).into_par_iter().for_each(|item| {
        let first_image = item * per_item;
        let images = per_item.min(batch - first_image);
        with_scratch(images * (pi + oi), |scratch| {
            let (padded, blocked) = scratch.split_at_mut(images * pi);
            for k in 0..images {
                let n = first_image + k;
                let xn = &x[n * in_image..(n + 1) * in_image];
                pad_image(xn, channels_in, b, &mut padded[k * pi..(k + 1) * pi]);
            }
            for &(first, count) in &groups {
                // One input block at a time: its weights for this group (27 KiB with sixteen
                // lanes) stay in L1 while every row of every image is summed.
                for ib in 0..b.in_blocks {
                    for k in 0..images {
                        let (xk, yk) = (
                            &padded[k * pi..(k + 1) * pi],
                            &mut blocked[k * oi..(k + 1) * oi],
                        );
                        image_pass(width, b, xk, wb, first, count, ib, yk);
                    }
                }
            }
            for k in 0..images {
                let n = first_image + k;
                // SAFETY: the item writes only its own images.
                let y = unsafe { out.slice(n * out_image, out_image) };
                unblock_image(&blocked[k * oi..(k + 1) * oi], channels_out, b, y);
            }
        });
    });
}

/// Filter blocks taken together: groups of `most` (a register row each), then a smaller one
/// for what is left.
fn filter_groups(out_blocks: usize, most: usize) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let mut first = 0;
    while first < out_blocks {
        let count = (out_blocks - first).min(most);
        groups.push((first, count));
        first += count;
    }
    groups
}

/// Every output row of one image for filter blocks `first..first + count`, over input block
/// `ib` (added to what the blocks before it left in `y`).
#[allow(clippy::too_many_arguments)]
fn image_pass(
    width: Width,
    b: Blocks,
    padded: &[f32],
    wb: &[f32],
    first: usize,
    count: usize,
    ib: usize,
    y: &mut [f32],
) {
    let row = width.row();
    for r in 0..b.h {
        let mut c0 = 0;
        while c0 < b.w {
            let cols = (b.w - c0).min(row);
            // SAFETY: `check()` made sure the CPU runs `width`; every index below is inside
            // the buffers (rows and columns within the padded image, blocks within the counts).
            unsafe {
                if width == Width::Sixteen {
                    row_avx512(b, padded, wb, first, count, ib, r, c0, cols, y);
                } else {
                    row_avx2(b, padded, wb, first, count, ib, r, c0, cols, y);
                }
            }
            c0 += cols;
        }
    }
}

/// One row run of `cols` pixels (1 to 8) for `count` filter blocks (1 to 3), sixteen lanes.
#[allow(clippy::too_many_arguments)]
unsafe fn row_avx512(
    b: Blocks,
    padded: &[f32],
    wb: &[f32],
    first: usize,
    count: usize,
    ib: usize,
    r: usize,
    c0: usize,
    cols: usize,
    y: &mut [f32],
) {
    macro_rules! go {
        ($ob:literal, $p:literal) => {
            unsafe { avx512::row::<$ob, $p>(b, padded, wb, first, ib, r, c0, y) }
        };
    }
    macro_rules! by_cols {
        ($ob:literal) => {
            match cols {
                8 => go!($ob, 8),
                7 => go!($ob, 7),
                6 => go!($ob, 6),
                5 => go!($ob, 5),
                4 => go!($ob, 4),
                3 => go!($ob, 3),
                2 => go!($ob, 2),
                _ => go!($ob, 1),
            }
        };
    }
    match count {
        3 => by_cols!(3),
        2 => by_cols!(2),
        _ => by_cols!(1),
    }
}

/// One row run of `cols` pixels (1 to 6) for `count` filter blocks (1 or 2), eight lanes.
#[allow(clippy::too_many_arguments)]
unsafe fn row_avx2(
    b: Blocks,
    padded: &[f32],
    wb: &[f32],
    first: usize,
    count: usize,
    ib: usize,
    r: usize,
    c0: usize,
    cols: usize,
    y: &mut [f32],
) {
    macro_rules! go {
        ($ob:literal, $p:literal) => {
            unsafe { avx2::row::<$ob, $p>(b, padded, wb, first, ib, r, c0, y) }
        };
    }
    macro_rules! by_cols {
        ($ob:literal) => {
            match cols {
                6 => go!($ob, 6),
                5 => go!($ob, 5),
                4 => go!($ob, 4),
                3 => go!($ob, 3),
                2 => go!($ob, 2),
                _ => go!($ob, 1),
            }
        };
    }
    match count {
        2 => by_cols!(2),
        _ => by_cols!(1),
    }
}

/// `dw = Σ over images and pixels of dy ⊗ x` for a dense 3x3, stride-1, padding-1 convolution:
/// both copied into the blocked layout once, then one item per (filter block, input block).
pub fn backward_weight(g: &ConvGeometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    backward_weight_at(this_width(), g, x, dy, dw)
}

/// [`backward_weight`] at a given width.
#[doc(hidden)]
pub fn backward_weight_at(width: Width, g: &ConvGeometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    check(width, g, x.len(), dw.len(), dy.len());
    let (ci, co) = (g.in_channels, g.out_channels);
    let b = Blocks::of(width, ci, co, g.in_h, g.in_w);
    let l = b.lanes;
    let (in_image, out_image) = (ci * b.h * b.w, co * b.h * b.w);
    // Both copies are written in full (the padded one's border included).
    let mut xs = uninit_output(g.batch * b.padded_image());
    xs.par_chunks_mut(b.padded_image())
        .enumerate()
        .for_each(|(n, dst)| pad_image(&x[n * in_image..(n + 1) * in_image], ci, b, dst));
    let mut dys = uninit_output(g.batch * b.out_image());
    dys.par_chunks_mut(b.out_image())
        .enumerate()
        .for_each(|(n, dst)| block_image(&dy[n * out_image..(n + 1) * out_image], co, b, dst));
    let tile = b.tile();
    let mut tiles = zeroed(b.out_blocks * b.in_blocks * tile);
    // Two filter blocks per item where there are two: each broadcast input value then feeds
    // two FMAs.
    let pairs = b.out_blocks.div_ceil(2);
    let shared = SharedMut(tiles.as_mut_ptr());
    (0..pairs * b.in_blocks).into_par_iter().for_each(|item| {
        let (ib, ob) = (item / pairs, 2 * (item % pairs));
        // SAFETY: the item writes only the tiles of (ob, ib) and (ob + 1, ib).
        let tile_of = |o: usize| unsafe { shared.slice((o * b.in_blocks + ib) * tile, tile) };
        let x_plane = b.hp * b.wp * l;
        let dy_plane = b.h * b.w * l;
        // Bands of rows small enough that their inputs and output gradients stay in L1 while
        // all passes (tap row, lane part) run over them.
        let band = (64 / b.w).max(1);
        for n in 0..g.batch {
            let xn = &xs[(n * b.in_blocks + ib) * x_plane..][..x_plane];
            let dy_of = |o: usize| &dys[(n * b.out_blocks + o) * dy_plane..][..dy_plane];
            for r0 in (0..b.h).step_by(band) {
                let rows = r0..(r0 + band).min(b.h);
                for kh in 0..3 {
                    // SAFETY: `check()` made sure the CPU runs `width`; the planes have the
                    // sizes of `b`.
                    unsafe {
                        if ob + 1 < b.out_blocks {
                            let dys = [dy_of(ob), dy_of(ob + 1)];
                            let (t0, t1) = (tile_of(ob), tile_of(ob + 1));
                            weight_pair(width, b, xn, dys, kh, rows.clone(), [&mut *t0, &mut *t1]);
                        } else {
                            let t0 = tile_of(ob);
                            weight_one(width, b, xn, dy_of(ob), kh, rows.clone(), t0);
                        }
                    }
                }
            }
        }
    });
    // `[ob][ib][kh][kw][lanes in][lanes out]` back to `[out][in][3][3]`.
    dw.par_chunks_mut(ci * 9)
        .enumerate()
        .for_each(|(o, filter)| {
            for i in 0..ci {
                let t = &tiles[((o / l) * b.in_blocks + i / l) * tile..][..tile];
                for k in 0..9 {
                    filter[i * 9 + k] = t[(k * l + i % l) * l + o % l];
                }
            }
        });
}

/// Tap row `kh` of two filter blocks' weight gradients over `rows` of one image: every input
/// lane, a few lanes per pass (three taps by `L` lanes by two blocks in registers).
unsafe fn weight_pair(
    width: Width,
    b: Blocks,
    x: &[f32],
    dys: [&[f32]; 2],
    kh: usize,
    rows: std::ops::Range<usize>,
    tiles: [&mut [f32]; 2],
) {
    let [t0, t1] = tiles;
    unsafe {
        if width == Width::Sixteen {
            for part in 0..4 {
                avx512::weight_taps::<2, 4>(
                    b,
                    x,
                    dys,
                    kh,
                    part,
                    rows.clone(),
                    [&mut *t0, &mut *t1],
                );
            }
        } else {
            for part in 0..4 {
                avx2::weight_taps::<2, 2>(b, x, dys, kh, part, rows.clone(), [&mut *t0, &mut *t1]);
            }
        }
    }
}

/// [`weight_pair`] for a last, single filter block.
unsafe fn weight_one(
    width: Width,
    b: Blocks,
    x: &[f32],
    dy: &[f32],
    kh: usize,
    rows: std::ops::Range<usize>,
    tile: &mut [f32],
) {
    unsafe {
        if width == Width::Sixteen {
            for part in 0..2 {
                avx512::weight_taps::<1, 8>(b, x, [dy], kh, part, rows.clone(), [&mut *tile]);
            }
        } else {
            for part in 0..2 {
                avx2::weight_taps::<1, 4>(b, x, [dy], kh, part, rows.clone(), [&mut *tile]);
            }
        }
    }
}

/// Elsewhere no width runs and nothing calls these.
#[cfg(not(target_arch = "x86_64"))]
macro_rules! unreachable_kernels {
    ($name:ident) => {
        mod $name {
            use super::Blocks;

            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn row<const OB: usize, const P: usize>(
                _: Blocks,
                _: &[f32],
                _: &[f32],
                _: usize,
                _: usize,
                _: usize,
                _: usize,
                _: &mut [f32],
            ) {
                unreachable!("blocked: vector kernels on a CPU without them")
            }

            pub(super) unsafe fn weight_taps<const OB: usize, const L: usize>(
                _: Blocks,
                _: &[f32],
                _: [&[f32]; OB],
                _: usize,
                _: usize,
                _: std::ops::Range<usize>,
                _: [&mut [f32]; OB],
            ) {
                unreachable!("blocked: vector kernels on a CPU without them")
            }

            pub(super) unsafe fn into_blocks(
                _: &[f32],
                _: usize,
                _: usize,
                _: usize,
                _: impl Fn(usize) -> usize,
                _: &mut [f32],
            ) {
                unreachable!("blocked: vector kernels on a CPU without them")
            }

            pub(super) unsafe fn out_of_blocks(_: &[f32], _: usize, _: usize, _: &mut [f32]) {
                unreachable!("blocked: vector kernels on a CPU without them")
            }
        }
    };
}
#[cfg(not(target_arch = "x86_64"))]
unreachable_kernels!(avx512);
#[cfg(not(target_arch = "x86_64"))]
unreachable_kernels!(avx2);

// Register tiles are indexed by filter block, pixel, tap and lane in the loops below.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod avx512 {
    use super::Blocks;
    use crate::simd::first_lanes;
    use std::arch::x86_64::*;

    const LANES: usize = 16;

    /// `P` output pixels of row `r` from column `c0`, filter blocks `first..first + OB`, input
    /// block `ib` added to what the blocks before it left in `y`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn row<const OB: usize, const P: usize>(
        b: Blocks,
        padded: &[f32],
        wb: &[f32],
        first: usize,
        ib: usize,
        r: usize,
        c0: usize,
        y: &mut [f32],
    ) {
        let plane = b.h * b.w * LANES;
        let yp = y.as_mut_ptr();
        let out_at = |o: usize, p: usize| (first + o) * plane + (r * b.w + c0 + p) * LANES;
        let mut acc = [[_mm512_setzero_ps(); P]; OB];
        if ib > 0 {
            for (o, row) in acc.iter_mut().enumerate() {
                for (p, a) in row.iter_mut().enumerate() {
                    *a = unsafe { _mm512_loadu_ps(yp.add(out_at(o, p))) };
                }
            }
        }
        let xp = padded.as_ptr();
        let wp = wb.as_ptr();
        let w_out_block = b.in_blocks * 9 * LANES * LANES;
        for kh in 0..3 {
            let x_row = unsafe { xp.add(((ib * b.hp + r + kh) * b.wp + c0) * LANES) };
            for kw in 0..3 {
                let w_tap = unsafe {
                    wp.add(((first * b.in_blocks + ib) * 9 + kh * 3 + kw) * LANES * LANES)
                };
                let x_tap = unsafe { x_row.add(kw * LANES) };
                for i in 0..LANES {
                    let mut wv = [_mm512_setzero_ps(); OB];
                    for (o, v) in wv.iter_mut().enumerate() {
                        *v = unsafe { _mm512_loadu_ps(w_tap.add(o * w_out_block + i * LANES)) };
                    }
                    for p in 0..P {
                        let xv = unsafe { _mm512_set1_ps(*x_tap.add(p * LANES + i)) };
                        for o in 0..OB {
                            acc[o][p] = _mm512_fmadd_ps(xv, wv[o], acc[o][p]);
                        }
                    }
                    // A barrier for the scheduler: without it LLVM hoists the broadcasts
                    // of later channels above these FMAs and spills accumulators.
                    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) };
                }
            }
        }
        for (o, row) in acc.iter().enumerate() {
            for (p, a) in row.iter().enumerate() {
                unsafe { _mm512_storeu_ps(yp.add(out_at(o, p)), *a) };
            }
        }
    }

    /// Adds to each `accs[o]` (`[kh][kw][16 in][16 out]`) tap row `kh`, input lanes
    /// `L·part..L·part + L`, of one image: Σ over pixels of `dys[o][pixel] · x[pixel + (kh,
    /// kw)][lane]`. `OB·3·L` accumulators; each broadcast input value feeds `OB` of them.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_taps<const OB: usize, const L: usize>(
        b: Blocks,
        x: &[f32],
        dys: [&[f32]; OB],
        kh: usize,
        part: usize,
        rows: std::ops::Range<usize>,
        accs: [&mut [f32]; OB],
    ) {
        let at = |kw: usize, l: usize| ((kh * 3 + kw) * LANES + part * L + l) * LANES;
        let mut acc = [[[_mm512_setzero_ps(); L]; 3]; OB];
        for (o, tile) in accs.iter().enumerate() {
            for (kw, row) in acc[o].iter_mut().enumerate() {
                for (l, a) in row.iter_mut().enumerate() {
                    *a = unsafe { _mm512_loadu_ps(tile.as_ptr().add(at(kw, l))) };
                }
            }
        }
        let xp = x.as_ptr();
        for r in rows {
            let x_row = unsafe { xp.add(((r + kh) * b.wp) * LANES + part * L) };
            for c in 0..b.w {
                let mut dv = [_mm512_setzero_ps(); OB];
                for (o, v) in dv.iter_mut().enumerate() {
                    *v = unsafe { _mm512_loadu_ps(dys[o].as_ptr().add((r * b.w + c) * LANES)) };
                }
                for kw in 0..3 {
                    let xs = unsafe { x_row.add((c + kw) * LANES) };
                    for l in 0..L {
                        let xv = unsafe { _mm512_set1_ps(*xs.add(l)) };
                        for o in 0..OB {
                            acc[o][kw][l] = _mm512_fmadd_ps(xv, dv[o], acc[o][kw][l]);
                        }
                    }
                }
                // As in `row`: keeps the next pixel's loads below this one's FMAs.
                unsafe { std::arch::asm!("", options(nostack, preserves_flags)) };
            }
        }
        for (o, tile) in accs.into_iter().enumerate() {
            for (kw, row) in acc[o].iter().enumerate() {
                for (l, a) in row.iter().enumerate() {
                    unsafe { _mm512_storeu_ps(tile.as_mut_ptr().add(at(kw, l)), *a) };
                }
            }
        }
    }

    /// Sixteen rows of sixteen values, transposed: `out[c][r] = rows[r][c]`.
    #[target_feature(enable = "avx512f")]
    fn transpose(r: [__m512; 16]) -> [__m512; 16] {
        // Pairs of rows interleaved, then fours: within each 128-bit lane `k`, `u[4i + j]` holds
        // column `4k + j` of rows `4i..4i + 4`. Then the lanes are gathered across the four
        // groups of rows.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            u[4 * i] = _mm512_shuffle_ps::<0x44>(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm512_shuffle_ps::<0x44>(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * i + 1], t[4 * i + 3]);
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for j in 0..4 {
            let v = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
            let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
            let w = _mm512_shuffle_f32x4::<0xDD>(u[j], u[4 + j]);
            let w2 = _mm512_shuffle_f32x4::<0xDD>(u[8 + j], u[12 + j]);
            out[j] = _mm512_shuffle_f32x4::<0x88>(v, v2);
            out[8 + j] = _mm512_shuffle_f32x4::<0xDD>(v, v2);
            out[4 + j] = _mm512_shuffle_f32x4::<0x88>(w, w2);
            out[12 + j] = _mm512_shuffle_f32x4::<0xDD>(w, w2);
        }
        out
    }

    /// NCHW planes of `pixels` values into blocks of 16 channels per pixel: pixel `p` of
    /// block `cb` goes to `dst[cb·block_len + at(p)..][..16]`, channels past `channels` as
    /// zeros. Sixteen pixels of sixteen channels at a time, transposed in registers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn into_blocks(
        x: &[f32],
        channels: usize,
        pixels: usize,
        block_len: usize,
        at: impl Fn(usize) -> usize,
        dst: &mut [f32],
    ) {
        assert!(x.len() >= channels * pixels);
        let blocks = channels.div_ceil(LANES);
        assert!(dst.len() >= blocks * block_len);
        for cb in 0..blocks {
            let lanes = (channels - cb * LANES).min(LANES);
            for p0 in (0..pixels).step_by(LANES) {
                let n = (pixels - p0).min(LANES);
                let mut rows = [_mm512_setzero_ps(); 16];
                for (l, row) in rows.iter_mut().enumerate().take(lanes) {
                    let src = unsafe { x.as_ptr().add((cb * LANES + l) * pixels + p0) };
                    *row = unsafe { _mm512_maskz_loadu_ps(first_lanes(n), src) };
                }
                let cols = transpose(rows);
                for (p, col) in cols.iter().enumerate().take(n) {
                    let d = cb * block_len + at(p0 + p);
                    assert!(d + LANES <= dst.len());
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(d), *col) };
                }
            }
        }
    }

    /// Blocks `[block][pixel][16]` back into the first `channels` NCHW planes of `pixels`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn out_of_blocks(src: &[f32], channels: usize, pixels: usize, y: &mut [f32]) {
        let blocks = channels.div_ceil(LANES);
        assert!(src.len() >= blocks * pixels * LANES && y.len() >= channels * pixels);
        for cb in 0..blocks {
            let lanes = (channels - cb * LANES).min(LANES);
            for p0 in (0..pixels).step_by(LANES) {
                let n = (pixels - p0).min(LANES);
                let mut rows = [_mm512_setzero_ps(); 16];
                for (p, row) in rows.iter_mut().enumerate().take(n) {
                    *row = unsafe {
                        _mm512_loadu_ps(src.as_ptr().add((cb * pixels + p0 + p) * LANES))
                    };
                }
                let planes = transpose(rows);
                for (l, plane) in planes.iter().enumerate().take(lanes) {
                    let d = unsafe { y.as_mut_ptr().add((cb * LANES + l) * pixels + p0) };
                    unsafe { _mm512_mask_storeu_ps(d, first_lanes(n), *plane) };
                }
            }
        }
    }
}

// The eight-lane twin of `avx512`: sixteen registers, so rows of up to six pixels by two filter
// blocks (12 accumulators, 2 weight vectors, 1 broadcast).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod avx2 {
    use super::Blocks;
    use std::arch::x86_64::*;

    const LANES: usize = 8;

    /// `P` output pixels of row `r` from column `c0`, filter blocks `first..first + OB`, input
    /// block `ib` added to what the blocks before it left in `y`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn row<const OB: usize, const P: usize>(
        b: Blocks,
        padded: &[f32],
        wb: &[f32],
        first: usize,
        ib: usize,
        r: usize,
        c0: usize,
        y: &mut [f32],
    ) {
        let plane = b.h * b.w * LANES;
        let out_at = |o: usize, p: usize| (first + o) * plane + (r * b.w + c0 + p) * LANES;
        // Every index read or written below is bounded by these (the last pixel of the last
        // block of the row; the last weight of the last tap).
        assert!(out_at(OB - 1, P - 1) + LANES <= y.len());
        assert!(((ib * b.hp + r + 2) * b.wp + c0 + P + 2) * LANES <= padded.len());
        let w_out_block = b.in_blocks * 9 * LANES * LANES;
        assert!((first + OB - 1) * w_out_block + ((ib * 9 + 9) * LANES) * LANES <= wb.len());
        let yp = y.as_mut_ptr();
        let mut acc = [[_mm256_setzero_ps(); P]; OB];
        if ib > 0 {
            for (o, row) in acc.iter_mut().enumerate() {
                for (p, a) in row.iter_mut().enumerate() {
                    *a = unsafe { _mm256_loadu_ps(yp.add(out_at(o, p))) };
                }
            }
        }
        let xp = padded.as_ptr();
        let wp = wb.as_ptr();
        for kh in 0..3 {
            let x_row = unsafe { xp.add(((ib * b.hp + r + kh) * b.wp + c0) * LANES) };
            for kw in 0..3 {
                let w_tap = unsafe {
                    wp.add(((first * b.in_blocks + ib) * 9 + kh * 3 + kw) * LANES * LANES)
                };
                let x_tap = unsafe { x_row.add(kw * LANES) };
                for i in 0..LANES {
                    let mut wv = [_mm256_setzero_ps(); OB];
                    for (o, v) in wv.iter_mut().enumerate() {
                        *v = unsafe { _mm256_loadu_ps(w_tap.add(o * w_out_block + i * LANES)) };
                    }
                    for p in 0..P {
                        let xv = unsafe { _mm256_broadcast_ss(&*x_tap.add(p * LANES + i)) };
                        for o in 0..OB {
                            acc[o][p] = _mm256_fmadd_ps(xv, wv[o], acc[o][p]);
                        }
                    }
                    // As in the sixteen-lane kernel: a scheduling barrier per input channel.
                    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) };
                }
            }
        }
        for (o, row) in acc.iter().enumerate() {
            for (p, a) in row.iter().enumerate() {
                unsafe { _mm256_storeu_ps(yp.add(out_at(o, p)), *a) };
            }
        }
    }

    /// Adds to each `accs[o]` (`[kh][kw][8 in][8 out]`) tap row `kh`, input lanes
    /// `L·part..L·part + L`, of one image: Σ over pixels of `dys[o][pixel] · x[pixel + (kh,
    /// kw)][lane]`. `OB·3·L` accumulators; each broadcast input value feeds `OB` of them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_taps<const OB: usize, const L: usize>(
        b: Blocks,
        x: &[f32],
        dys: [&[f32]; OB],
        kh: usize,
        part: usize,
        rows: std::ops::Range<usize>,
        accs: [&mut [f32]; OB],
    ) {
        let at = |kw: usize, l: usize| ((kh * 3 + kw) * LANES + part * L + l) * LANES;
        assert!(kh < 3 && rows.end + 2 <= b.hp && (part + 1) * L <= LANES);
        assert!(x.len() >= b.hp * b.wp * LANES);
        for o in 0..OB {
            assert!(dys[o].len() >= b.h * b.w * LANES && accs[o].len() >= 9 * LANES * LANES);
        }
        let mut acc = [[[_mm256_setzero_ps(); L]; 3]; OB];
        for (o, tile) in accs.iter().enumerate() {
            for (kw, row) in acc[o].iter_mut().enumerate() {
                for (l, a) in row.iter_mut().enumerate() {
                    *a = unsafe { _mm256_loadu_ps(tile.as_ptr().add(at(kw, l))) };
                }
            }
        }
        let xp = x.as_ptr();
        for r in rows {
            let x_row = unsafe { xp.add(((r + kh) * b.wp) * LANES + part * L) };
            for c in 0..b.w {
                let mut dv = [_mm256_setzero_ps(); OB];
                for (o, v) in dv.iter_mut().enumerate() {
                    *v = unsafe { _mm256_loadu_ps(dys[o].as_ptr().add((r * b.w + c) * LANES)) };
                }
                for kw in 0..3 {
                    let xs = unsafe { x_row.add((c + kw) * LANES) };
                    for l in 0..L {
                        let xv = unsafe { _mm256_broadcast_ss(&*xs.add(l)) };
                        for o in 0..OB {
                            acc[o][kw][l] = _mm256_fmadd_ps(xv, dv[o], acc[o][kw][l]);
                        }
                    }
                }
                unsafe { std::arch::asm!("", options(nostack, preserves_flags)) };
            }
        }
        for (o, tile) in accs.into_iter().enumerate() {
            for (kw, row) in acc[o].iter().enumerate() {
                for (l, a) in row.iter().enumerate() {
                    unsafe { _mm256_storeu_ps(tile.as_mut_ptr().add(at(kw, l)), *a) };
                }
            }
        }
    }

    /// Eight rows of eight values, transposed: `out[c][r] = rows[r][c]`.
    #[target_feature(enable = "avx2")]
    fn transpose(r: [__m256; 8]) -> [__m256; 8] {
        // Pairs of rows interleaved, then fours: `u[j]` holds column `j` of rows 0..4 in its
        // low half and column `4 + j` in its high half, `u[4 + j]` the same of rows 4..8; the
        // halves are then put together.
        let mut t = [_mm256_setzero_ps(); 8];
        for i in 0..4 {
            t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm256_setzero_ps(); 8];
        for i in 0..2 {
            u[4 * i] = _mm256_shuffle_ps::<0x44>(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm256_shuffle_ps::<0xEE>(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm256_shuffle_ps::<0x44>(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm256_shuffle_ps::<0xEE>(t[4 * i + 1], t[4 * i + 3]);
        }
        let mut out = [_mm256_setzero_ps(); 8];
        for j in 0..4 {
            out[j] = _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j]);
            out[4 + j] = _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j]);
        }
        out
    }

    /// NCHW planes of `pixels` values into blocks of 8 channels per pixel: pixel `p` of block
    /// `cb` goes to `dst[cb·block_len + at(p)..][..8]`, channels past `channels` as zeros.
    /// Eight pixels of eight channels at a time, transposed in registers; a run shorter than
    /// eight goes through a zero-padded copy.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn into_blocks(
        x: &[f32],
        channels: usize,
        pixels: usize,
        block_len: usize,
        at: impl Fn(usize) -> usize,
        dst: &mut [f32],
    ) {
        assert!(x.len() >= channels * pixels);
        let blocks = channels.div_ceil(LANES);
        assert!(dst.len() >= blocks * block_len);
        for cb in 0..blocks {
            let lanes = (channels - cb * LANES).min(LANES);
            for p0 in (0..pixels).step_by(LANES) {
                let n = (pixels - p0).min(LANES);
                let mut rows = [_mm256_setzero_ps(); 8];
                for (l, row) in rows.iter_mut().enumerate().take(lanes) {
                    let src = &x[(cb * LANES + l) * pixels + p0..][..n];
                    *row = if n == LANES {
                        unsafe { _mm256_loadu_ps(src.as_ptr()) }
                    } else {
                        let mut part = [0f32; LANES];
                        part[..n].copy_from_slice(src);
                        unsafe { _mm256_loadu_ps(part.as_ptr()) }
                    };
                }
                let cols = transpose(rows);
                for (p, col) in cols.iter().enumerate().take(n) {
                    let d = &mut dst[cb * block_len + at(p0 + p)..][..LANES];
                    unsafe { _mm256_storeu_ps(d.as_mut_ptr(), *col) };
                }
            }
        }
    }

    /// Blocks `[block][pixel][8]` back into the first `channels` NCHW planes of `pixels`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn out_of_blocks(src: &[f32], channels: usize, pixels: usize, y: &mut [f32]) {
        let blocks = channels.div_ceil(LANES);
        assert!(src.len() >= blocks * pixels * LANES && y.len() >= channels * pixels);
        for cb in 0..blocks {
            let lanes = (channels - cb * LANES).min(LANES);
            for p0 in (0..pixels).step_by(LANES) {
                let n = (pixels - p0).min(LANES);
                let mut rows = [_mm256_setzero_ps(); 8];
                for (p, row) in rows.iter_mut().enumerate().take(n) {
                    *row = unsafe {
                        _mm256_loadu_ps(src.as_ptr().add((cb * pixels + p0 + p) * LANES))
                    };
                }
                let planes = transpose(rows);
                for (l, plane) in planes.iter().enumerate().take(lanes) {
                    let d = &mut y[(cb * LANES + l) * pixels + p0..][..n];
                    if n == LANES {
                        unsafe { _mm256_storeu_ps(d.as_mut_ptr(), *plane) };
                    } else {
                        let mut part = [0f32; LANES];
                        unsafe { _mm256_storeu_ps(part.as_mut_ptr(), *plane) };
                        d.copy_from_slice(&part[..n]);
                    }
                }
            }
        }
    }
}
