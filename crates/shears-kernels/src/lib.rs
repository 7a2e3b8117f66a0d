//! CPU kernels for the operations that dominate CNN training and inference here: 2-D
//! convolution (forward, input gradient, weight gradient, bias gradient) and training-mode
//! BatchNorm (forward and backward, optionally fused with the ReLU that follows), max pooling
//! (inference, and training with its argmax and backward pass), and the optimiser steps (SGD and
//! Adam, one pass over each parameter).
//!
//! Everything works on plain `&[f32]` slices in NCHW order, so the kernels know nothing about
//! Burn; `shears-engine` wires them into Burn's autodiff through the backend-extension hook.
//!
//! Why our own: Burn's flex backend runs the convolution backward passes as generic transposed
//! convolutions and BatchNorm as about ten composed tensor ops with layout copies; the profile
//! showed im2col tiles that are zero-filled on every call, NCHW<->NHWC copies and fresh output
//! allocations. Here an im2col matrix lives in a per-thread scratch buffer that is reused,
//! outputs that are fully written are not zero-filled (callers take them from
//! [`uninit_output`]; buffers a kernel adds into come from [`zeroed`], which all threads zero
//! together), work is split over images (one GEMM
//! per image and group, no nested parallelism) and, for a single image, inside the GEMM.
//!
//! Which path a convolution takes:
//! - depthwise (one filter per channel): direct loops (`depthwise/`; stride-1 "same" layers
//!   on AVX-512 read each plane in place through per-tap lane masks, `depthwise/flat.rs`);
//! - forward of a 3x3, padding-1 convolution at stride 1 or 2, for one image or, image by image,
//!   for a batch when the weights fit one core's L2; and dynamic inference's gated ones (chosen
//!   filters and input channels, weights read in place): a direct kernel on the image flattened
//!   into one padded row (`selected.rs`);
//! - forward of such a convolution at stride 1 on a batch with larger weights and rows of 16+
//!   pixels: a direct kernel with the accumulators in SIMD registers, no im2col (`direct.rs`);
//! - a 3x3 padding-1 convolution at stride 1 on a map of at most 2x2 pixels, for a batch: one
//!   dense layer over the map, without the taps that only read padding (`small_map.rs`; on two
//!   threads a 2x2 layer with 256+ channels runs its forward pass through im2col + GEMM and its
//!   input gradient per tap);
//! - the same on a 3x3 or 4x4 map: one GEMM per tap over the pixels it reads inside the map
//!   (`tapwise.rs`);
//! - such a convolution with 32+ channels on both sides (16+ with AVX2) on a map 8 to 32
//!   pixels wide, for a batch: direct kernels in a channel-blocked layout, NCHW16c with AVX-512 or NCHW8c with
//!   AVX2 (chosen at run time), for the forward pass, the input gradient and the weight
//!   gradient (`blocked.rs`; the layout is converted at each call for now);
//! - an unpadded stride-1 layer with up to 16 input channels and 16 filters (LeNet-5's 5x5
//!   layers), with AVX-512: a direct forward pass with up to eight filters in registers at a
//!   time (`few_filters.rs`) and the weight gradient by kernel rows (`direct_grad.rs`);
//! - the weight gradient of a 1x1 layer on a map of 256+ pixels with at most 8192 (filter,
//!   input channel) pairs, widening (or on 1024+ pixels, narrowing): running sums of a tile of
//!   filters × input channels in vector registers along the pixels, both planes read in place
//!   (`pointwise_grad.rs`);
//! - everything else: im2col + GEMM, with several images per GEMM when a map is small
//!   (`conv.rs`, `im2col.rs`).
//!
//! The binaries declare [`LineAligned`] as their global allocator: it starts buffers of 4 KiB
//! and more on a cache line, so the kernels' 64-byte loads do not straddle two.

#[macro_use]
mod simd;
mod aligned;
mod batchnorm;
/// Called directly by `examples/blocked_speed.rs`, which compares it with the other paths.
pub mod blocked;
mod conv;
mod dense;
mod depthwise;
mod direct;
mod direct_grad;
mod elementwise;
mod few_filters;
mod geometry;
mod im2col;
mod matmul;
mod optimizer;
mod parallel;
mod pointwise_grad;
mod pool;
mod selected;
mod small_map;
mod tapwise;
mod vector;

pub use aligned::LineAligned;
pub use batchnorm::{BnShape, batch_norm_backward, batch_norm_forward, batch_norm_infer};
pub use blocked::use_blocked_layout;
pub use conv::{
    conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight, conv2d_forward,
};
pub use dense::{
    DenseShape, dense_backward_bias, dense_backward_input, dense_backward_weight, dense_forward,
};
pub use direct::use_avx2_only;
pub use elementwise::{
    add_relu_forward, relu_backward, relu_forward, relu6_backward, relu6_forward,
};
pub use geometry::{ConvGeometry, Epilogue};
pub use optimizer::{AdamStep, SgdStep, adam_step, sgd_step};
pub use parallel::{uninit_output, zeroed};
pub use pointwise_grad::use_pointwise_grad;
pub use pool::{PoolGeometry, max_pool2d_backward, max_pool2d_forward, max_pool2d_forward_train};
pub use selected::{Selection, conv3x3_selected, selected_stride};
pub use vector::{add_scaled_rows, dot, plane_means, sum};
