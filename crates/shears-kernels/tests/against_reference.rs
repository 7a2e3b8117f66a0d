//! Every kernel against a direct, obviously-correct loop nest in f64, over random geometries:
//! stride, padding, dilation, groups (depthwise included), kernels 1/3/5 and odd sizes.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shears_kernels::*;

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Serialises the tests that switch the kernels to their AVX2 code, so each runs the width it
/// asked for from start to end (the switch is process-wide; both widths are exact, so the
/// tests that do not take the lock pass whichever runs).
static WIDTH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` with the kernels' AVX2 code forced (`avx2`) or the CPU's widest.
fn with_width<R>(avx2: bool, f: impl FnOnce() -> R) -> R {
    let _lock = WIDTH.lock().unwrap_or_else(|e| e.into_inner());
    use_avx2_only(avx2);
    let r = f();
    use_avx2_only(false);
    r
}

/// Runs `f` on a pool of `threads` threads.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// A 3x3 convolution at stride 1 with padding 1 ("same" output size).
fn same_3x3(
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    groups: usize,
    h: usize,
    w: usize,
) -> ConvGeometry {
    ConvGeometry {
        batch,
        in_channels,
        in_h: h,
        in_w: w,
        out_channels,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        groups,
    }
}

/// Visits every (n, co, oh, ow, ci, ki, kj) term of the convolution with its input index.
fn each_term(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize)) {
    let (cig, cog) = (g.in_channels / g.groups, g.out_channels / g.groups);
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    for n in 0..g.batch {
        for co in 0..g.out_channels {
            let grp = co / cog;
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let out = ((n * g.out_channels + co) * oh_n + oh) * ow_n + ow;
                    for ci in 0..cig {
                        for ki in 0..g.kernel[0] {
                            for kj in 0..g.kernel[1] {
                                let ih = (oh * g.stride[0] + ki * g.dilation[0]) as isize
                                    - g.padding[0] as isize;
                                let iw = (ow * g.stride[1] + kj * g.dilation[1]) as isize
                                    - g.padding[1] as isize;
                                if ih < 0
                                    || iw < 0
                                    || ih >= g.in_h as isize
                                    || iw >= g.in_w as isize
                                {
                                    continue;
                                }
                                let c = grp * cig + ci;
                                let inp = ((n * g.in_channels + c) * g.in_h + ih as usize) * g.in_w
                                    + iw as usize;
                                let w = ((co * cig + ci) * g.kernel[0] + ki) * g.kernel[1] + kj;
                                f(out, inp, w);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn close(got: &[f32], want: &[f64], what: &str) {
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    close_within(got, want, |_| 1e-4 * scale, what);
}

/// Element-wise comparison with an error bound per element.
fn close_within(got: &[f32], want: &[f64], bound: impl Fn(usize) -> f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs();
        let bound = bound(i);
        assert!(
            err <= bound,
            "{what}[{i}]: got {g}, want {w} (bound {bound})"
        );
    }
}

/// Forward (plain and with the fused epilogue), input, weight and bias gradients of one
/// geometry against the loop nest.
fn check_convolution(g: &ConvGeometry, seed: u64) {
    let g = *g;
    let x = random(g.input_len(), seed);
    let w = random(g.weight_len(), seed + 1);
    let b = random(g.out_channels, seed + 2);
    let dy = random(g.output_len(), seed + 3);

    let mut want_y = vec![0.0f64; g.output_len()];
    let mut want_dx = vec![0.0f64; g.input_len()];
    let mut want_dw = vec![0.0f64; g.weight_len()];
    each_term(&g, |o, i, k| {
        want_y[o] += x[i] as f64 * w[k] as f64;
        want_dx[i] += dy[o] as f64 * w[k] as f64;
        want_dw[k] += dy[o] as f64 * x[i] as f64;
    });
    let pixels = g.out_pixels();
    let mut want_db = vec![0.0f64; g.out_channels];
    for (o, v) in dy.iter().enumerate() {
        want_db[(o / pixels) % g.out_channels] += *v as f64;
    }

    let mut y = vec![f32::NAN; g.output_len()];
    conv2d_forward(&g, &x, &w, Epilogue::default(), &mut y);
    close(&y, &want_y, "forward");

    let mut dx = vec![f32::NAN; g.input_len()];
    conv2d_backward_input(&g, &dy, &w, &mut dx);
    close(&dx, &want_dx, "input gradient");

    let mut dw = vec![f32::NAN; g.weight_len()];
    conv2d_backward_weight(&g, &x, &dy, &mut dw);
    close(&dw, &want_dw, "weight gradient");

    let mut db = vec![f32::NAN; g.out_channels];
    conv2d_backward_bias(&g, &dy, &mut db);
    close(&db, &want_db, "bias gradient");

    // The fused epilogue: bias, residual, ReLU.
    let res = random(g.output_len(), seed + 4);
    let want_fused: Vec<f64> = want_y
        .iter()
        .enumerate()
        .map(|(o, v)| (v + b[(o / pixels) % g.out_channels] as f64 + res[o] as f64).max(0.0))
        .collect();
    let epilogue = Epilogue {
        bias: Some(&b),
        residual: Some(&res),
        relu: true,
    };
    conv2d_forward(&g, &x, &w, epilogue, &mut y);
    close(&y, &want_fused, "forward with epilogue");
}

/// Stride 1 with "same" padding takes im2col's shifted-plane path: every kernel size, images
/// smaller than the kernel, odd sizes, groups and batches of one and several images.
#[test]
fn same_padding_convolutions_match_the_loop_nest() {
    let mut seed = 0;
    for (k, p) in [(3usize, 1usize), (5, 2), (3, 0), (1, 0)] {
        for (h, w) in [(1usize, 1usize), (2, 3), (5, 4), (7, 9)] {
            for (batch, groups) in [(1usize, 1usize), (3, 2)] {
                seed += 1;
                if h + 2 * p < k || w + 2 * p < k {
                    continue;
                }
                let g = ConvGeometry {
                    batch,
                    in_channels: 2 * groups,
                    in_h: h,
                    in_w: w,
                    out_channels: 3 * groups,
                    kernel: [k, k],
                    stride: [1, 1],
                    padding: [p, p],
                    dilation: [1, 1],
                    groups,
                };
                check_convolution(&g, seed);
            }
        }
    }
}

/// Depthwise layers: 3x3 at stride 1 and 2 (MobileNet's: the flat-plane masked kernels at
/// stride 1 with "same" padding, the phase-split input gradient and nine-dot weight gradient at
/// stride 2), 5x5 and 7x7 "same" (EfficientNet's), and 3x3 and 5x5 with other paddings (the
/// padded-copy loops): maps from 1 to 40 pixels (rows that end inside a 16-lane vector, planes
/// shorter than one, maps smaller than the kernel), one and two threads (tasks of several
/// planes), both vector widths.
#[test]
fn depthwise_layers_match_the_loop_nest() {
    let mut seed = 500;
    let layers = [
        (3usize, 1usize, 0usize),
        (3, 1, 1),
        (3, 1, 2),
        (3, 2, 0),
        (3, 2, 1),
        (3, 2, 2),
        (5, 1, 2),
        (5, 1, 1),
        (7, 1, 3),
    ];
    for (k, stride, pad) in layers {
        for (h, w) in [
            (1usize, 2usize),
            (4, 4),
            (5, 7),
            (8, 8),
            (9, 17),
            (16, 3),
            (3, 40),
        ] {
            if h + 2 * pad < k || w + 2 * pad < k {
                continue;
            }
            seed += 1;
            let g = ConvGeometry {
                batch: 3,
                in_channels: 5,
                in_h: h,
                in_w: w,
                out_channels: 5,
                kernel: [k, k],
                stride: [stride, stride],
                padding: [pad, pad],
                dilation: [1, 1],
                groups: 5,
            };
            for (threads, avx2) in [(1, false), (2, false), (1, true)] {
                with_width(avx2, || on_threads(threads, || check_convolution(&g, seed)));
            }
        }
    }
}

/// 1x1 layers on maps of 256+ pixels with more than 16 channels on a side take the pointwise
/// weight gradient (`pointwise_grad.rs`; 16 and fewer on both take `direct_grad.rs`): pixel tails of one lane (289 = 18·16 + 1 = 36·8 + 1), filters and input channels not a
/// multiple of the tile's, spans of one image (2304 pixels = 2048 + 256) and groups of images
/// (256 pixels), a narrowing layer on a large map, a batch of one split by filters over two
/// threads and a batch of five split unevenly. Both widths, one and two threads, against the
/// f64 loop nest and against im2col + GEMM.
#[test]
fn pointwise_layers_on_large_maps_match_the_loop_nest() {
    let layers = [
        // (batch, in, out, h, w)
        (3usize, 17usize, 21usize, 17usize, 17usize),
        (2, 19, 17, 40, 40),
        (2, 6, 18, 48, 48),
        (1, 16, 24, 16, 16),
        (5, 3, 20, 16, 16),
        (4, 24, 144, 16, 16),
    ];
    for (seed, &(batch, cin, cout, h, w)) in layers.iter().enumerate() {
        let g = ConvGeometry {
            batch,
            in_channels: cin,
            in_h: h,
            in_w: w,
            out_channels: cout,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        for (threads, avx2) in [(1, false), (2, false), (1, true), (2, true)] {
            with_width(avx2, || {
                on_threads(threads, || {
                    check_convolution(&g, 900 + seed as u64);
                    let x = random(g.input_len(), 950 + seed as u64);
                    let dy = random(g.output_len(), 960 + seed as u64);
                    let mut direct = vec![f32::NAN; g.weight_len()];
                    conv2d_backward_weight(&g, &x, &dy, &mut direct);
                    use_pointwise_grad(false);
                    let mut gemm = vec![f32::NAN; g.weight_len()];
                    conv2d_backward_weight(&g, &x, &dy, &mut gemm);
                    use_pointwise_grad(true);
                    let scale = gemm.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (a, b) in direct.iter().zip(&gemm) {
                        assert!((a - b).abs() <= 1e-5 * scale, "{g:?}: {a} against {b}");
                    }
                })
            });
        }
    }
}

/// Layers with many filters on small maps take their own paths: the weight gradient written in
/// its own layout (256+ filters per group), split over input channels when it outweighs the
/// output (two threads), and the forward pass's image blocks at least one per thread. Each on
/// one and on two threads.
#[test]
fn wide_layers_on_small_maps_match_the_loop_nest() {
    let layers = [
        // (batch, in, out, groups, map): channel split on two threads; own layout on one.
        (3usize, 8usize, 256usize, 1usize, 2usize),
        // Two groups of 256 filters, a 3x3 map: images split, own layout.
        (2, 4, 512, 2, 3),
        // Few filters: the transposed accumulation and its tiled transpose (17 columns).
        (5, 6, 17, 1, 4),
    ];
    for (seed, &(batch, cin, cout, groups, map)) in layers.iter().enumerate() {
        let g = same_3x3(batch, cin, cout, groups, map, map);
        for threads in [1, 2] {
            on_threads(threads, || check_convolution(&g, 100 + seed as u64));
        }
    }
}

/// Checks each same-padded 3x3 layer `(batch, in, out, h, w)` on one and on two threads, the
/// `i`-th with data seed `seed + i`.
fn check_same_3x3_layers(layers: &[(usize, usize, usize, usize, usize)], seed: u64) {
    for (i, &(batch, cin, cout, h, w)) in layers.iter().enumerate() {
        let g = same_3x3(batch, cin, cout, 1, h, w);
        for threads in [1, 2] {
            on_threads(threads, || check_convolution(&g, seed + i as u64));
        }
    }
}

/// 3x3 layers with up to 16 input channels on maps 16+ pixels wide take the direct weight
/// gradient (AVX-512): an odd number of filters (a last single one), rows that end inside a
/// 16-pixel chunk, planes whose padded length ends inside a vector, ResNet's first stage, one
/// and two threads; with the kernels held to AVX2, the same layers through im2col + GEMM.
#[test]
fn thin_layers_direct_weight_gradient_matches_the_loop_nest() {
    for (seed, &(batch, cin, cout, h, w)) in [
        (3usize, 3usize, 5usize, 7usize, 17usize),
        (2, 12, 8, 16, 33),
        (1, 16, 3, 3, 32),
        (2, 16, 16, 32, 32),
    ]
    .iter()
    .enumerate()
    {
        let g = same_3x3(batch, cin, cout, 1, h, w);
        for threads in [1, 2] {
            for avx2 in [false, true] {
                with_width(avx2, || {
                    on_threads(threads, || check_convolution(&g, 200 + seed as u64))
                });
            }
        }
    }
}

/// 3x3 layers on maps of at most 2x2 pixels at a batch of 16+ run as one dense layer over the
/// map (`small_map.rs`): 2x2, 1x2, 2x1 and 1x1 maps, odd channel counts, the epilogue, one and
/// two threads (a 2x2 layer with 512+ channels on two threads: forward through im2col + GEMM,
/// input gradient per tap); below 16 images the same layers take the other paths.
#[test]
fn small_maps_as_dense_layers_match_the_loop_nest() {
    let layers = [
        (16, 5, 7, 2, 2),
        (16, 256, 260, 2, 2),
        (16, 512, 513, 2, 2),
        (17, 3, 4, 1, 2),
        (16, 4, 3, 2, 1),
        (20, 6, 5, 1, 1),
        (15, 5, 7, 2, 2),
    ];
    check_same_3x3_layers(&layers, 300);
}

/// 3x3 layers with 128+ input channels on 3x3 and 4x4 maps at a batch of 16+ run one GEMM per
/// tap over the pixels it reads inside the map (`tapwise.rs`): square and oblong maps, odd
/// channel counts, the epilogue, one and two threads (runs of unequal length); with fewer
/// images or channels, im2col + GEMM.
#[test]
fn taps_over_the_map_match_the_loop_nest() {
    let layers = [
        (16, 128, 7, 4, 4),
        (17, 131, 4, 3, 4),
        (19, 128, 5, 3, 3),
        (16, 129, 3, 4, 3),
        (15, 128, 7, 4, 4),
        (16, 5, 7, 4, 4),
    ];
    check_same_3x3_layers(&layers, 400);
}

/// Unpadded stride-1 layers with few filters and input channels (LeNet-5's 5x5 ones) take the
/// direct forward pass with up to eight filters in registers at a time and the direct weight
/// gradient by kernel rows (AVX-512): 1 to 16 filters (a second group of one to eight), 1 to
/// 16 input channels, 1 to 7 kernel columns, oblong kernels, a last group of fewer than four filters, widened planes
/// that end inside a vector and inside a tile of vectors, one and two threads; with the
/// kernels held to AVX2, im2col + GEMM.
#[test]
fn unpadded_few_filter_layers_match_the_loop_nest() {
    let layers = [
        // (batch, in, out, h, w, kh, kw)
        (3, 3, 6, 32, 32, 5, 5),
        (2, 1, 6, 28, 28, 5, 5),
        (2, 6, 8, 14, 14, 5, 5),
        (3, 2, 5, 11, 19, 3, 7),
        (1, 16, 7, 10, 9, 2, 1),
        (2, 4, 3, 13, 15, 6, 4),
        (2, 2, 1, 9, 12, 3, 3),
        (2, 6, 16, 14, 14, 5, 5),
        (2, 16, 9, 12, 10, 3, 3),
        (1, 5, 13, 17, 9, 2, 2),
        (3, 11, 15, 8, 13, 4, 6),
    ];
    for (seed, &(batch, cin, cout, h, w, kh, kw)) in layers.iter().enumerate() {
        let g = ConvGeometry {
            batch,
            in_channels: cin,
            in_h: h,
            in_w: w,
            out_channels: cout,
            kernel: [kh, kw],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        for threads in [1, 2] {
            on_threads(threads, || check_convolution(&g, 700 + seed as u64));
        }
        with_width(true, || check_convolution(&g, 710 + seed as u64));
    }
}

/// 3x3 layers with two blocks of channels or more on maps 8 to 32 pixels wide at a batch of 16+
/// run all three passes in the channel-blocked layout (`blocked.rs`), sixteen lanes with
/// AVX-512 and eight with the kernels held to AVX2: channel counts that end inside a block (on
/// either side), a last group of fewer filter blocks, rows that end inside a run of pixels,
/// bands of rows that end inside the map, oblong maps, wide maps, an odd batch, the epilogue,
/// one and two threads; below 16 images, the other paths.
#[test]
fn blocked_layout_layers_match_the_loop_nest() {
    let layers = [
        (16, 48, 48, 8, 8),
        (16, 50, 67, 9, 11),
        (17, 130, 129, 8, 8),
        (16, 128, 144, 10, 8),
        (16, 64, 49, 5, 16),
        (15, 64, 64, 8, 8),
        (16, 32, 33, 4, 28),
        (16, 40, 32, 3, 32),
    ];
    check_same_3x3_layers(&layers, 500);
    // Eight lanes: channels that end inside a block, a last single filter block, runs of six
    // pixels that end inside rows of 8, 11, 16 and 28, an odd batch, 16 and 20 channels.
    let eight = [
        layers[1],
        layers[2],
        layers[4],
        layers[6],
        (16, 16, 20, 3, 12),
    ];
    with_width(true, || check_same_3x3_layers(&eight, 510));
}

/// Called directly, the blocked kernels name what they cannot do instead of reading out of
/// bounds.
#[test]
#[should_panic(expected = "blocked: only dense 3x3 convolutions at stride 1 with padding 1")]
fn blocked_kernels_refuse_a_strided_layer() {
    let g = ConvGeometry {
        stride: [2, 2],
        ..same_3x3(16, 64, 64, 1, 8, 8)
    };
    let (x, w) = (vec![0f32; g.input_len()], vec![0f32; g.weight_len()]);
    let mut y = vec![0f32; g.output_len()];
    shears_kernels::blocked::forward(&g, &x, &w, &mut y);
}

fn geometry() -> impl Strategy<Value = ConvGeometry> {
    (
        1usize..4,
        prop::sample::select(vec![1usize, 2, 3, 4]),
        1usize..4,
        prop::sample::select(vec![1usize, 2, 4]),
        prop::sample::select(vec![1usize, 3, 5]),
        1usize..3,
        0usize..3,
        1usize..3,
        5usize..12,
        5usize..12,
        any::<bool>(),
    )
        .prop_map(
            |(batch, groups, per_in, per_out, k, stride, pad, dil, h, w, depthwise)| {
                let (groups, in_c, out_c) = if depthwise {
                    (groups * 2, groups * 2, groups * 2)
                } else {
                    (groups, groups * per_in, groups * per_out)
                };
                ConvGeometry {
                    batch,
                    in_channels: in_c,
                    in_h: h + (k - 1) * dil,
                    in_w: w + (k - 1) * dil,
                    out_channels: out_c,
                    kernel: [k, k],
                    stride: [stride, stride],
                    padding: [pad, pad],
                    dilation: [dil, dil],
                    groups,
                }
            },
        )
}

proptest! {
    // Few cases: each layer is large (32+ channels on both sides, a batch of 16+) for the
    // reference loop nest.
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Layers the blocked kernels take (`blocked.rs`), of any shape they accept, at both
    /// vector widths: channel counts at and inside blocks of 8 and 16, maps 8 to 32 pixels
    /// wide (runs of 6 and 8 pixels that end inside a row) and 1 to 10 high (bands of rows
    /// that end inside the map).
    #[test]
    fn blocked_layout_layers_of_any_shape_match_the_loop_nest(
        batch in 16usize..19,
        cin in prop::sample::select(vec![32usize, 48, 53, 60, 64, 131]),
        cout in prop::sample::select(vec![32usize, 37, 48, 61, 64, 130]),
        h in 1usize..11,
        w in prop::sample::select(vec![8usize, 9, 11, 12, 16, 27, 32]),
        seed in 0u64..1000,
        threads in 1usize..3,
        avx2 in any::<bool>(),
    ) {
        let g = same_3x3(batch, cin, cout, 1, h, w);
        with_width(avx2, || on_threads(threads, || check_convolution(&g, seed)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn convolution_forward_and_gradients_match_the_loop_nest(
        g in geometry(), seed in 0u64..1000, avx2 in any::<bool>()
    ) {
        with_width(avx2, || check_convolution(&g, seed));
    }

    #[test]
    fn batch_norm_matches_the_formula(
        batch in 1usize..5, channels in 1usize..6, spatial in 1usize..40, relu in any::<bool>(), seed in 0u64..1000,
        avx2 in any::<bool>()
    ) {
        prop_assume!(batch * spatial > 1);
        let shape = BnShape { batch, channels, spatial };
        let len = batch * channels * spatial;
        let x: Vec<f32> = random(len, seed).iter().map(|v| v * 3.0 + 0.5).collect();
        let gamma = random(channels, seed + 1);
        let beta = random(channels, seed + 2);
        let dy = random(len, seed + 3);
        let eps = 1e-5f32;
        let m = (batch * spatial) as f64;
        let idx = |n: usize, c: usize, s: usize| (n * channels + c) * spatial + s;

        let (mut want_y, mut want_dx) = (vec![0.0f64; len], vec![0.0f64; len]);
        let (mut want_mean, mut want_var) = (vec![0.0f64; channels], vec![0.0f64; channels]);
        let (mut want_dg, mut want_db) = (vec![0.0f64; channels], vec![0.0f64; channels]);
        let mut dx_bound = vec![0.0f64; len];
        let mut near_kink = false;
        let max_x = x.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        let max_dy = dy.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        for c in 0..channels {
            let vals: Vec<(usize, f64)> = (0..batch)
                .flat_map(|n| (0..spatial).map(move |s| idx(n, c, s)))
                .map(|i| (i, x[i] as f64))
                .collect();
            let mu = vals.iter().map(|v| v.1).sum::<f64>() / m;
            let var = vals.iter().map(|v| (v.1 - mu).powi(2)).sum::<f64>() / m;
            let inv = 1.0 / (var + eps as f64).sqrt();
            want_mean[c] = mu;
            want_var[c] = var;
            let mut g = vec![0.0f64; len];
            for &(i, v) in &vals {
                let pre = gamma[c] as f64 * (v - mu) * inv + beta[c] as f64;
                // f32 may put a pre-activation this close to zero on the other side of the
                // ReLU's kink; such draws are not compared (see below).
                near_kink |= relu && pre.abs() <= 1e-5;
                want_y[i] = if relu { pre.max(0.0) } else { pre };
                g[i] = if relu && pre <= 0.0 { 0.0 } else { dy[i] as f64 };
            }
            let sum_g: f64 = vals.iter().map(|v| g[v.0]).sum();
            let sum_gx: f64 = vals.iter().map(|v| g[v.0] * (v.1 - mu) * inv).sum();
            want_db[c] = sum_g;
            want_dg[c] = sum_gx;
            for &(i, v) in &vals {
                let x_hat = (v - mu) * inv;
                want_dx[i] = gamma[c] as f64 * inv * (g[i] - sum_g / m - x_hat * sum_gx / m);
            }
            // dx is a cancellation of terms of size |γ|/σ·|dy|, and in f32 x − μ carries an
            // absolute rounding error of about ε·|x|, which reaches dx amplified by |γ|/σ²·|dy|:
            // a channel whose values nearly coincide (σ² near ε_bn) is ill-conditioned for any
            // f32 implementation, so the bound follows the conditioning.
            let terms = (gamma[c].abs() as f64) * inv * max_dy;
            let rounding = 8.0 * f32::EPSILON as f64 * max_x * inv * terms;
            for &(i, _) in &vals {
                dx_bound[i] = 1e-4 * want_dx[i].abs().max(terms).max(1.0) + rounding;
            }
        }

        prop_assume!(!near_kink);
        let _width = WIDTH.lock().unwrap_or_else(|e| e.into_inner());
        use_avx2_only(avx2);
        let mut y = vec![f32::NAN; len];
        let (mut mean, mut var) = (vec![0.0; channels], vec![0.0; channels]);
        batch_norm_forward(shape, &x, &gamma, &beta, eps, relu, &mut y, &mut mean, &mut var);
        close(&y, &want_y, "bn output");
        close(&mean, &want_mean, "bn mean");
        close(&var, &want_var, "bn variance");

        let mut dx = vec![f32::NAN; len];
        let (mut dg, mut db) = (vec![0.0; channels], vec![0.0; channels]);
        batch_norm_backward(shape, &dy, &x, &gamma, &beta, &mean, &var, eps, relu, Some(&mut dx), &mut dg, &mut db);
        close_within(&dx, &want_dx, |i| dx_bound[i], "bn input gradient");
        close(&dg, &want_dg, "bn gamma gradient");
        close(&db, &want_db, "bn beta gradient");

        let mut yi = vec![f32::NAN; len];
        batch_norm_infer(shape, &x, &gamma, &beta, &mean, &var, eps, relu, &mut yi);
        use_avx2_only(false);
        close(&yi, &want_y, "bn inference with the batch statistics");
    }
}

/// The single-image path splits the GEMM instead of the batch; both must agree.
#[test]
fn one_image_and_many_threads_agree_with_one_thread() {
    let g = ConvGeometry {
        batch: 1,
        in_channels: 16,
        in_h: 17,
        in_w: 15,
        out_channels: 32,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    let x = random(g.input_len(), 7);
    let w = random(g.weight_len(), 8);
    let run = |threads: usize| {
        on_threads(threads, || {
            let mut y = vec![0.0; g.output_len()];
            conv2d_forward(&g, &x, &w, Epilogue::default(), &mut y);
            y
        })
    };
    let (a, b) = (run(1), run(2));
    let want: Vec<f64> = a.iter().map(|v| *v as f64).collect();
    close(&b, &want, "two threads against one");
}

/// 3x3 with padding 1 takes a direct kernel: the row kernel for batches at stride 1 with rows of
/// 16 or more pixels, the flattened one for a single image at stride 1 or 2 (any width, 1x1
/// included). Row widths
/// around the 16-lane chunks, channel counts around the 8-channel blocks and every remainder
/// split (15 = 8 + 4 + 2 + 1), batch 1 and 2.
#[test]
fn direct_convolutions_match_the_loop_nest() {
    for avx2_only in [false, true] {
        with_width(avx2_only, direct_cases);
    }
}

fn direct_cases() {
    let mut seed = 100;
    for (h, w) in [
        (16usize, 16usize),
        (3, 17),
        (5, 31),
        (2, 33),
        (7, 7),
        (1, 1),
        (3, 2),
    ] {
        for (cin, cout, batch) in [
            (1usize, 1usize, 1usize),
            (3, 8, 2),
            (5, 9, 1),
            (2, 11, 2),
            (2, 14, 1),
            (3, 18, 1),
            (4, 15, 2),
            (2, 7, 1),
        ] {
            for stride in [1, 2] {
                seed += 1;
                let g = ConvGeometry {
                    batch,
                    in_channels: cin,
                    in_h: h,
                    in_w: w,
                    out_channels: cout,
                    kernel: [3, 3],
                    stride: [stride, stride],
                    padding: [1, 1],
                    dilation: [1, 1],
                    groups: 1,
                };
                check_convolution(&g, seed);
            }
        }
    }
}

/// A fused ReLU must not turn NaN into 0: a diverged network has to show NaN logits.
#[test]
fn fused_relu_keeps_nan() {
    let shape = BnShape {
        batch: 2,
        channels: 1,
        spatial: 2,
    };
    let x = [1.0, f32::NAN, 0.5, -0.5];
    let (mut y, mut m, mut v) = ([0.0; 4], [0.0], [0.0]);
    batch_norm_forward(
        shape,
        &x,
        &[1.0],
        &[0.0],
        1e-5,
        true,
        &mut y,
        &mut m,
        &mut v,
    );
    assert!(y.iter().all(|v| v.is_nan()), "{y:?}");

    let g = ConvGeometry {
        batch: 1,
        in_channels: 1,
        in_h: 1,
        in_w: 2,
        out_channels: 1,
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 1,
    };
    let mut out = [0.0; 2];
    let epilogue = Epilogue {
        bias: Some(&[-10.0]),
        residual: None,
        relu: true,
    };
    conv2d_forward(&g, &[f32::NAN, 1.0], &[1.0], epilogue, &mut out);
    assert!(out[0].is_nan() && out[1] == 0.0, "{out:?}");
}

/// A kernel wider than its map with the padding that keeps the size (ConvNeXt's 7×7 depthwise
/// conv, pad 3, on the 2×2 and 1×1 maps of a 64×64 input): taps that read only padding.
#[test]
fn kernels_wider_than_the_map_match_the_loop_nest() {
    for (h, w) in [(2, 2), (1, 1), (3, 2)] {
        for depthwise in [true, false] {
            let (groups, channels) = if depthwise { (4, 4) } else { (1, 4) };
            let g = ConvGeometry {
                batch: 2,
                in_channels: channels,
                in_h: h,
                in_w: w,
                out_channels: channels,
                kernel: [7, 7],
                stride: [1, 1],
                padding: [3, 3],
                dilation: [1, 1],
                groups,
            };
            check_convolution(&g, 5);
        }
    }
}
