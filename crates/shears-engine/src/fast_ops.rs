//! The kernels of `shears-kernels` as Burn ops with hand-written backward passes, through Burn's
//! backend-extension hook: convolution and training-mode BatchNorm (with the following ReLU
//! fused in) on flex devices, plain and autodiff. Other devices keep Burn's own ops; call
//! [`enabled_on`] first.
//!
//! Why: flex runs the convolution gradients as generic transposed convolutions and BatchNorm as
//! about ten composed ops (see `burn-notes.md`); these were most of a training step.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Device, Tensor, TensorData};
use shears_kernels::{
    AdamStep, BnShape, ConvGeometry, DenseShape, Epilogue, PoolGeometry, SgdStep, adam_step,
    add_relu_forward, batch_norm_backward, batch_norm_forward, conv2d_backward_bias,
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, dense_backward_bias,
    dense_backward_input, dense_backward_weight, dense_forward, max_pool2d_backward,
    max_pool2d_forward, max_pool2d_forward_train, relu_backward, relu_forward, relu6_backward,
    relu6_forward, sgd_step, uninit_output,
};
use std::borrow::Cow;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

static OFF_BY_DEFAULT: AtomicBool = AtomicBool::new(false);

thread_local! {
    static OVERRIDE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Which convolution and BatchNorm implementation flex devices use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// This module's kernels (the default).
    Ours,
    /// Burn's own ops, for before/after comparisons.
    Burn,
}

impl std::str::FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Kernels, String> {
        match s {
            "ours" => Ok(Kernels::Ours),
            "burn" => Ok(Kernels::Burn),
            other => Err(format!(
                "unknown kernels `{other}` (expected `ours` or `burn`)"
            )),
        }
    }
}

/// Chooses the kernels for the whole process (every thread without its own override):
/// `shears bench --kernels burn` measures Burn's path.
pub fn set_default(kernels: Kernels) {
    OFF_BY_DEFAULT.store(kernels == Kernels::Burn, Ordering::Relaxed);
}

/// Turns the kernels off (Burn's ops) or back on for forward passes started on this thread,
/// overriding the process default: equivalence tests compare the two paths side by side
/// without seeing each other's choice.
pub fn set_enabled(on: bool) {
    OVERRIDE.with(|o| o.set(Some(on)));
}

/// Whether the executor should use these kernels for tensors on `device`: a flex device, plain
/// or autodiff, with the kernels not switched off.
pub fn enabled_on(device: &Device) -> bool {
    let on = OVERRIDE
        .with(|o| o.get())
        .unwrap_or_else(|| !OFF_BY_DEFAULT.load(Ordering::Relaxed));
    on && device.clone().inner() == Device::flex()
}

/// The rectifiers the kernels run: ReLU, and ReLU6 (no gradient at either bound, as PyTorch's
/// `hardtanh`; Burn's clamp passes it there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rectifier {
    Relu,
    Relu6,
}

impl Rectifier {
    fn forward(self, x: &[f32], y: &mut [f32]) {
        match self {
            Rectifier::Relu => relu_forward(x, y),
            Rectifier::Relu6 => relu6_forward(x, y),
        }
    }
    /// The gradient behind the rectifier given its output `y`.
    fn backward(self, dy: &[f32], y: &[f32], dx: &mut [f32]) {
        match self {
            Rectifier::Relu => relu_backward(dy, y, dx),
            Rectifier::Relu6 => relu6_backward(dy, y, dx),
        }
    }
}

#[backend_extension(Flex, Autodiff)]
pub trait FastOps: Backend {
    /// Convolution without bias: input `[N, C, H, W]`, weight `[O, C/groups, kh, kw]`.
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self>;
    /// Differentiable convolution with its bias and, if `relu`, the ReLU after it, in one
    /// pass (the epilogue of the forward kernel): `relu?(conv(x, w) + bias)`.
    fn fast_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
        relu: bool,
    ) -> FloatTensor<Self>;
    /// Differentiable ReLU or ReLU6 of a tensor of any shape, in parallel.
    fn fast_rectify(x: FloatTensor<Self>, f: Rectifier) -> FloatTensor<Self>;
    /// Differentiable fully connected layer `x·W + bias`: `x` `[rows, inputs]`, `W`
    /// `[inputs, outputs]`.
    fn fast_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// Inference convolution with the epilogue fused: `relu?(conv(x, w) + bias)`. Not
    /// differentiable (evaluation passes run on plain tensors).
    fn fast_conv2d_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
        relu: bool,
    ) -> FloatTensor<Self>;
    /// [`FastOps::fast_conv2d_fused`] with a residual added before the ReLU (the macro takes no
    /// optional tensors, hence two ops).
    fn fast_conv2d_fused_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        geometry: ConvGeometry,
        relu: bool,
    ) -> FloatTensor<Self>;
    /// Inference max pooling (no argmax kept; not differentiable).
    fn fast_max_pool2d(x: FloatTensor<Self>, geometry: PoolGeometry) -> FloatTensor<Self>;
    /// Differentiable max pooling: the argmax of each window is kept for the backward pass.
    fn fast_max_pool2d_train(x: FloatTensor<Self>, geometry: PoolGeometry) -> FloatTensor<Self>;
    /// `relu(a + b)` of two tensors of the same shape (a residual sum and its ReLU),
    /// differentiable.
    fn fast_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// One SGD step over a parameter, its gradient and its momentum buffer (zeros on the first
    /// step, unused without momentum): the new parameter and buffer. Not differentiable.
    fn fast_sgd_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        buffer: FloatTensor<Self>,
        step: SgdStep,
        first: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// One Adam step: the new parameter and first and second moments. Not differentiable.
    fn fast_adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamStep,
        first: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// Training-mode BatchNorm of a `[batch, channels, spatial]` tensor, ReLU fused if `relu`. Returns
    /// the output and the batch mean and biased variance (not differentiable).
    fn fast_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shape: BnShape,
        eps: f32,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The values of a flex tensor as one contiguous slice (a copy only for a strided view).
fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("a contiguous f32 tensor")
                .to_vec(),
        ),
    }
}

/// BatchNorm runs on `[batch, channels, spatial]` tensors; the wrappers reshape to and from it.
fn bn_dims(shape: BnShape) -> Vec<usize> {
    vec![shape.batch, shape.channels, shape.spatial]
}

/// A flex tensor's dimensions.
fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().iter().copied().collect()
}

fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn conv_forward(x: &FlexTensor, w: &FlexTensor, g: &ConvGeometry, e: Epilogue) -> FlexTensor {
    // Every output value is written by the kernel: no zero-fill.
    let mut y = uninit_output(g.output_len());
    conv2d_forward(g, &values(x), &values(w), e, &mut y);
    flex(y, vec![g.batch, g.out_channels, g.out_h(), g.out_w()])
}

fn bn_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    shape: BnShape,
    eps: f32,
    relu: bool,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let mut y = uninit_output(shape.batch * shape.channels * shape.spatial);
    let mut mean = vec![0.0f32; shape.channels];
    let mut var = vec![0.0f32; shape.channels];
    batch_norm_forward(
        shape,
        &values(x),
        &values(gamma),
        &values(beta),
        eps,
        relu,
        &mut y,
        &mut mean,
        &mut var,
    );
    let c = shape.channels;
    (
        flex(y, bn_dims(shape)),
        flex(mean, vec![c]),
        flex(var, vec![c]),
    )
}

fn fused(
    x: &FlexTensor,
    w: &FlexTensor,
    bias: &FlexTensor,
    residual: Option<&FlexTensor>,
    g: &ConvGeometry,
    relu: bool,
) -> FlexTensor {
    let bias = values(bias);
    let residual = residual.map(values);
    let e = Epilogue {
        bias: Some(&bias),
        residual: residual.as_deref(),
        relu,
    };
    conv_forward(x, w, g, e)
}

/// Training max pooling: the output and each output's argmax in its input plane.
fn max_pool_train(x: &FlexTensor, g: &PoolGeometry) -> (FlexTensor, Arc<Vec<u32>>) {
    let len = g.batch * g.channels * g.out_h * g.out_w;
    // Every output value and index is written by the kernel.
    let mut y = uninit_output(len);
    let mut argmax = vec![0u32; len];
    max_pool2d_forward_train(g, &values(x), &mut y, &mut argmax);
    (
        flex(y, vec![g.batch, g.channels, g.out_h, g.out_w]),
        Arc::new(argmax),
    )
}

fn max_pool(x: &FlexTensor, g: &PoolGeometry) -> FlexTensor {
    // Every output value is written by the kernel.
    let mut y = uninit_output(g.batch * g.channels * g.out_h * g.out_w);
    max_pool2d_forward(g, &values(x), &mut y);
    flex(y, vec![g.batch, g.channels, g.out_h, g.out_w])
}

/// The shape of a linear layer from its input `[rows, inputs]` and weight `[inputs, outputs]`.
fn dense_shape(x: &FlexTensor, w: &FlexTensor) -> DenseShape {
    let (xd, wd) = (dims(x), dims(w));
    assert!(
        xd.len() == 2 && wd.len() == 2 && xd[1] == wd[0],
        "linear: input {xd:?} against weight {wd:?}"
    );
    DenseShape {
        rows: xd[0],
        inputs: xd[1],
        outputs: wd[1],
    }
}

fn linear_flex(x: &FlexTensor, w: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    let s = dense_shape(x, w);
    // Every value is written (the bias first, then the product added).
    let mut y = uninit_output(s.rows * s.outputs);
    dense_forward(s, &values(x), &values(w), Some(&values(b)), &mut y);
    flex(y, vec![s.rows, s.outputs])
}

fn rectify_flex(x: &FlexTensor, f: Rectifier) -> FlexTensor {
    let x_vals = values(x);
    // Every value is written by the kernel.
    let mut y = uninit_output(x_vals.len());
    f.forward(&x_vals, &mut y);
    flex(y, dims(x))
}

fn add_relu_flex(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    let (a_vals, b_vals) = (values(a), values(b));
    // Every value is written by the kernel.
    let mut y = uninit_output(a_vals.len());
    add_relu_forward(&a_vals, &b_vals, &mut y);
    flex(y, dims(a))
}

/// The SGD kernel on flex tensors: the parameter is copied once if shared (the executor still
/// holds it), the buffer updated in place when the optimiser owns it alone.
fn sgd(
    mut param: FlexTensor,
    grad: &FlexTensor,
    mut buffer: FlexTensor,
    step: SgdStep,
    first: bool,
) -> (FlexTensor, FlexTensor) {
    let g = values(grad);
    let mut empty = [];
    let b: &mut [f32] = if step.momentum > 0.0 {
        buffer.storage_mut::<f32>()
    } else {
        &mut empty
    };
    sgd_step(step, param.storage_mut::<f32>(), &g, b, first);
    (param, buffer)
}

fn adam(
    mut param: FlexTensor,
    grad: &FlexTensor,
    mut m: FlexTensor,
    mut v: FlexTensor,
    step: AdamStep,
    first: bool,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let g = values(grad);
    adam_step(
        step,
        param.storage_mut::<f32>(),
        &g,
        m.storage_mut::<f32>(),
        v.storage_mut::<f32>(),
        first,
    );
    (param, m, v)
}

impl FastOps for Flex {
    fn fast_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
        relu: bool,
    ) -> FloatTensor<Self> {
        fused(&x, &weight, &bias, None, &geometry, relu)
    }

    fn fast_rectify(x: FloatTensor<Self>, f: Rectifier) -> FloatTensor<Self> {
        rectify_flex(&x, f)
    }

    fn fast_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        linear_flex(&x, &weight, &bias)
    }

    fn fast_add_relu(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        add_relu_flex(&a, &b)
    }

    fn fast_sgd_step(
        param: FlexTensor,
        grad: FlexTensor,
        buffer: FlexTensor,
        step: SgdStep,
        first: bool,
    ) -> (FlexTensor, FlexTensor) {
        sgd(param, &grad, buffer, step, first)
    }

    fn fast_adam_step(
        param: FlexTensor,
        grad: FlexTensor,
        m: FlexTensor,
        v: FlexTensor,
        step: AdamStep,
        first: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        adam(param, &grad, m, v, step, first)
    }

    fn fast_max_pool2d(x: FlexTensor, geometry: PoolGeometry) -> FlexTensor {
        max_pool(&x, &geometry)
    }

    fn fast_max_pool2d_train(x: FlexTensor, geometry: PoolGeometry) -> FlexTensor {
        max_pool_train(&x, &geometry).0
    }

    fn fast_conv2d(x: FlexTensor, weight: FlexTensor, geometry: ConvGeometry) -> FlexTensor {
        conv_forward(&x, &weight, &geometry, Epilogue::default())
    }

    fn fast_conv2d_fused(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        geometry: ConvGeometry,
        relu: bool,
    ) -> FlexTensor {
        fused(&x, &weight, &bias, None, &geometry, relu)
    }

    fn fast_conv2d_fused_residual(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        residual: FlexTensor,
        geometry: ConvGeometry,
        relu: bool,
    ) -> FlexTensor {
        fused(&x, &weight, &bias, Some(&residual), &geometry, relu)
    }

    fn fast_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        shape: BnShape,
        eps: f32,
        relu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        bn_forward(&x, &gamma, &beta, shape, eps, relu)
    }
}

/// Backward of [`FastOps::fast_conv2d`]: input and weight gradients, each only when tracked.
#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    type State = (FlexTensor, FlexTensor, ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, w, g) = ops.state;
        let dy = values(&dy);
        if let Some(node) = node_x {
            let mut dx = uninit_output(g.input_len());
            conv2d_backward_input(&g, &dy, &values(&w), &mut dx);
            let shape = vec![g.batch, g.in_channels, g.in_h, g.in_w];
            grads.register::<Flex>(node.id, flex(dx, shape));
        }
        if let Some(node) = node_w {
            let mut dw = uninit_output(g.weight_len());
            conv2d_backward_weight(&g, &values(&x), &dy, &mut dw);
            let shape = vec![g.out_channels, g.in_per_group(), g.kernel[0], g.kernel[1]];
            grads.register::<Flex>(node.id, flex(dw, shape));
        }
    }
}

/// Backward of [`FastOps::fast_conv2d_bias`]: the output gradient masked by the ReLU (when
/// fused), then the input, weight and bias gradients, each only when tracked.
#[derive(Debug)]
struct ConvBiasBackward;

/// Input, weight, the output when a ReLU was fused (its sign is the mask), the geometry.
type ConvBiasState = (FlexTensor, FlexTensor, Option<FlexTensor>, ConvGeometry);

impl Backward<Flex, 3> for ConvBiasBackward {
    type State = ConvBiasState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, w, y, g) = ops.state;
        let dy_vals = values(&dy);
        let masked = y.map(|y| {
            // Every value is written by the kernel.
            let mut masked = uninit_output(dy_vals.len());
            relu_backward(&dy_vals, &values(&y), &mut masked);
            masked
        });
        let dy: &[f32] = masked.as_deref().unwrap_or(&dy_vals);
        if let Some(node) = node_b {
            let mut db = uninit_output(g.out_channels);
            conv2d_backward_bias(&g, dy, &mut db);
            grads.register::<Flex>(node.id, flex(db, vec![g.out_channels]));
        }
        if let Some(node) = node_x {
            let mut dx = uninit_output(g.input_len());
            conv2d_backward_input(&g, dy, &values(&w), &mut dx);
            let shape = vec![g.batch, g.in_channels, g.in_h, g.in_w];
            grads.register::<Flex>(node.id, flex(dx, shape));
        }
        if let Some(node) = node_w {
            let mut dw = uninit_output(g.weight_len());
            conv2d_backward_weight(&g, &values(&x), dy, &mut dw);
            let shape = vec![g.out_channels, g.in_per_group(), g.kernel[0], g.kernel[1]];
            grads.register::<Flex>(node.id, flex(dw, shape));
        }
    }
}

/// Backward of [`FastOps::fast_linear`]: input, weight and bias gradients, each only when
/// tracked.
#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    /// Input and weight.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, w) = ops.state;
        let s = dense_shape(&x, &w);
        let dy = values(&dy);
        if let Some(node) = node_x {
            let mut dx = uninit_output(s.rows * s.inputs);
            dense_backward_input(s, &dy, &values(&w), &mut dx);
            grads.register::<Flex>(node.id, flex(dx, vec![s.rows, s.inputs]));
        }
        if let Some(node) = node_w {
            let mut dw = uninit_output(s.inputs * s.outputs);
            dense_backward_weight(s, &values(&x), &dy, &mut dw);
            grads.register::<Flex>(node.id, flex(dw, vec![s.inputs, s.outputs]));
        }
        if let Some(node) = node_b {
            let mut db = uninit_output(s.outputs);
            dense_backward_bias(s, &dy, &mut db);
            grads.register::<Flex>(node.id, flex(db, vec![s.outputs]));
        }
    }
}

/// Backward of [`FastOps::fast_rectify`]: the output gradient where the output lies inside
/// the rectifier's open range.
#[derive(Debug)]
struct RectifierBackward;

impl Backward<Flex, 1> for RectifierBackward {
    /// The output (where it lies is the mask) and the rectifier.
    type State = (FlexTensor, Rectifier);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (y, f) = ops.state;
        if let Some(node) = node_x {
            let dy_vals = values(&dy);
            // Every value is written by the kernel.
            let mut dx = uninit_output(dy_vals.len());
            f.backward(&dy_vals, &values(&y), &mut dx);
            grads.register::<Flex>(node.id, flex(dx, dims(&y)));
        }
    }
}

/// Backward of [`FastOps::fast_add_relu`]: the output gradient behind the ReLU, for both
/// summands.
#[derive(Debug)]
struct AddReluBackward;

impl Backward<Flex, 2> for AddReluBackward {
    /// The output (its sign is the ReLU's mask).
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_a, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let y = ops.state;
        let dy_vals = values(&dy);
        // Every value is written by the kernel.
        let mut dx = uninit_output(dy_vals.len());
        relu_backward(&dy_vals, &values(&y), &mut dx);
        let dx = flex(dx, dims(&y));
        match (node_a, node_b) {
            (Some(a), Some(b)) => {
                grads.register::<Flex>(a.id, dx.clone());
                grads.register::<Flex>(b.id, dx);
            }
            (Some(a), None) => grads.register::<Flex>(a.id, dx),
            (None, Some(b)) => grads.register::<Flex>(b.id, dx),
            (None, None) => {}
        }
    }
}

/// Backward of [`FastOps::fast_max_pool2d_train`]: each output gradient to its argmax.
#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    type State = (Arc<Vec<u32>>, PoolGeometry);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (argmax, g) = ops.state;
        if let Some(node) = node_x {
            // Every value is written by the kernel (each task zeroes its planes, in cache, before
            // adding the gradients in).
            let mut dx = uninit_output(g.batch * g.channels * g.in_h * g.in_w);
            max_pool2d_backward(&g, &values(&dy), &argmax, &mut dx);
            let shape = vec![g.batch, g.channels, g.in_h, g.in_w];
            grads.register::<Flex>(node.id, flex(dx, shape));
        }
    }
}

/// Backward of [`FastOps::fast_batch_norm_train`]: input, γ and β gradients.
#[derive(Debug)]
struct BnBackward;

/// What the BatchNorm backward needs: input, γ, β, batch mean and variance, and the layout.
type BnState = (
    FlexTensor,
    FlexTensor,
    FlexTensor,
    FlexTensor,
    FlexTensor,
    BnShape,
    f32,
    bool,
);

impl Backward<Flex, 3> for BnBackward {
    type State = BnState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, gamma, beta, mean, var, shape, eps, relu) = ops.state;
        let len = shape.batch * shape.channels * shape.spatial;
        let mut dx = node_x.as_ref().map(|_| uninit_output(len));
        let mut dgamma = vec![0.0f32; shape.channels];
        let mut dbeta = vec![0.0f32; shape.channels];
        batch_norm_backward(
            shape,
            &values(&dy),
            &values(&x),
            &values(&gamma),
            &values(&beta),
            &values(&mean),
            &values(&var),
            eps,
            relu,
            dx.as_deref_mut(),
            &mut dgamma,
            &mut dbeta,
        );
        let c = shape.channels;
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, flex(dx, bn_dims(shape)));
        }
        if let Some(node) = node_g {
            grads.register::<Flex>(node.id, flex(dgamma, vec![c]));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, flex(dbeta, vec![c]));
        }
    }
}

impl<C: CheckpointStrategy> FastOps for Autodiff<Flex, C> {
    fn fast_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
        relu: bool,
    ) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (w, w_node) = weight.into_parts();
        let (b, b_node) = bias.into_parts();
        let y = fused(&x, &w, &b, None, &geometry, relu);
        match ConvBiasBackward
            .prepare::<C>([x_node, w_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let mask = relu.then(|| y.clone());
                prep.finish((x, w, mask, geometry), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fast_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (w, w_node) = weight.into_parts();
        let (b, b_node) = bias.into_parts();
        let y = linear_flex(&x, &w, &b);
        match LinearBackward
            .prepare::<C>([x_node, w_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, w), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fast_rectify(x: FloatTensor<Self>, f: Rectifier) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let y = rectify_flex(&x, f);
        match RectifierBackward
            .prepare::<C>([x_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((y.clone(), f), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fast_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let (a, a_node) = a.into_parts();
        let (b, b_node) = b.into_parts();
        let y = add_relu_flex(&a, &b);
        match AddReluBackward
            .prepare::<C>([a_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fast_sgd_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        buffer: FloatTensor<Self>,
        step: SgdStep,
        first: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (p, b) = sgd(
            param.into_primitive(),
            &grad.into_primitive(),
            buffer.into_primitive(),
            step,
            first,
        );
        (
            <Self as AutodiffBackend>::from_inner(p),
            <Self as AutodiffBackend>::from_inner(b),
        )
    }

    fn fast_adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamStep,
        first: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (p, m, v) = adam(
            param.into_primitive(),
            &grad.into_primitive(),
            m.into_primitive(),
            v.into_primitive(),
            step,
            first,
        );
        (
            <Self as AutodiffBackend>::from_inner(p),
            <Self as AutodiffBackend>::from_inner(m),
            <Self as AutodiffBackend>::from_inner(v),
        )
    }

    fn fast_max_pool2d(x: FloatTensor<Self>, geometry: PoolGeometry) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(max_pool(&x.into_primitive(), &geometry))
    }

    fn fast_max_pool2d_train(x: FloatTensor<Self>, geometry: PoolGeometry) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (y, argmax) = max_pool_train(&x, &geometry);
        match MaxPoolBackward
            .prepare::<C>([x_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((argmax, geometry), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (w, w_node) = weight.into_parts();
        match ConvBackward
            .prepare::<C>([x_node, w_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = conv_forward(&x, &w, &geometry, Epilogue::default());
                prep.finish((x, w, geometry), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(conv_forward(&x, &w, &geometry, Epilogue::default()))
            }
        }
    }

    fn fast_conv2d_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
        relu: bool,
    ) -> FloatTensor<Self> {
        let (x, w, b) = (
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        <Self as AutodiffBackend>::from_inner(fused(&x, &w, &b, None, &geometry, relu))
    }

    fn fast_conv2d_fused_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        geometry: ConvGeometry,
        relu: bool,
    ) -> FloatTensor<Self> {
        let (x, w, b) = (
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        let r = residual.into_primitive();
        <Self as AutodiffBackend>::from_inner(fused(&x, &w, &b, Some(&r), &geometry, relu))
    }

    fn fast_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shape: BnShape,
        eps: f32,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (x, x_node) = x.into_parts();
        let (g, g_node) = gamma.into_parts();
        let (b, b_node) = beta.into_parts();
        let (y, mean, var) = bn_forward(&x, &g, &b, shape, eps, relu);
        let stats = (
            <Self as AutodiffBackend>::from_inner(mean.clone()),
            <Self as AutodiffBackend>::from_inner(var.clone()),
        );
        let y = match BnBackward
            .prepare::<C>([x_node, g_node, b_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, g, b, mean, var, shape, eps, relu), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, stats.0, stats.1)
    }
}

/// `relu(a + b)` through the kernels, differentiable on autodiff devices.
pub fn add_relu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_add_relu(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// One fused SGD step (see [`FastOps::fast_sgd_step`]): the new parameter and buffer.
pub fn sgd_update(
    param: Tensor<1>,
    grad: Tensor<1>,
    buffer: Tensor<1>,
    step: SgdStep,
    first: bool,
) -> (Tensor<1>, Tensor<1>) {
    let (p, b) = <Dispatch as FastOps>::fast_sgd_step(
        param.into_dispatch(),
        grad.into_dispatch(),
        buffer.into_dispatch(),
        step,
        first,
    );
    (Tensor::from_dispatch(p), Tensor::from_dispatch(b))
}

/// One fused Adam step: the new parameter and first and second moments.
pub fn adam_update(
    param: Tensor<1>,
    grad: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    step: AdamStep,
    first: bool,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let (p, m, v) = <Dispatch as FastOps>::fast_adam_step(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        step,
        first,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// Differentiable convolution through the kernels (no bias; add it with Burn's ops).
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, geometry: ConvGeometry) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        geometry,
    ))
}

/// Differentiable `relu?(conv(x, weight) + bias)` through the kernels, in one pass.
pub fn conv2d_bias(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    geometry: ConvGeometry,
    relu: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_conv2d_bias(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        geometry,
        relu,
    ))
}

/// Differentiable `x·weight + bias` through the kernels (`weight` `[inputs, outputs]`).
pub fn linear(x: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// Differentiable ReLU through the kernel (parallel; Burn's runs on one thread).
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_rectify(
        x.into_dispatch(),
        Rectifier::Relu,
    ))
}

/// Differentiable ReLU6 through the kernel (parallel; Burn's clamp is two single-threaded ops).
pub fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_rectify(
        x.into_dispatch(),
        Rectifier::Relu6,
    ))
}

/// Differentiable max pooling through the kernels (training passes).
pub fn max_pool2d_train(x: Tensor<4>, geometry: PoolGeometry) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_max_pool2d_train(
        x.into_dispatch(),
        geometry,
    ))
}

/// Inference max pooling through the kernel (evaluation passes only: not differentiable).
pub fn max_pool2d_infer(x: Tensor<4>, geometry: PoolGeometry) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_max_pool2d(
        x.into_dispatch(),
        geometry,
    ))
}

/// Inference convolution with bias, optional residual and ReLU fused.
pub fn conv2d_fused(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    residual: Option<Tensor<4>>,
    geometry: ConvGeometry,
    relu: bool,
) -> Tensor<4> {
    let (x, w, b) = (
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    );
    Tensor::from_dispatch(match residual {
        Some(r) => <Dispatch as FastOps>::fast_conv2d_fused_residual(
            x,
            w,
            b,
            r.into_dispatch(),
            geometry,
            relu,
        ),
        None => <Dispatch as FastOps>::fast_conv2d_fused(x, w, b, geometry, relu),
    })
}

/// The result of a training-mode BatchNorm: output, batch mean, batch (biased) variance.
pub struct BnTrainOutput<const D: usize> {
    pub output: Tensor<D>,
    pub mean: Tensor<1>,
    pub variance: Tensor<1>,
}

/// Training-mode BatchNorm (ReLU fused if `relu`) of `x` seen as `[batch, channels, spatial]`.
fn batch_norm_train3(
    x: Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    relu: bool,
) -> BnTrainOutput<3> {
    let [batch, channels, spatial] = x.dims();
    let shape = BnShape {
        batch,
        channels,
        spatial,
    };
    let (y, mean, var) = <Dispatch as FastOps>::fast_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        shape,
        eps as f32,
        relu,
    );
    BnTrainOutput {
        output: Tensor::from_dispatch(y),
        mean: Tensor::from_dispatch(mean),
        variance: Tensor::from_dispatch(var),
    }
}

/// Training-mode BatchNorm (ReLU fused if `relu`) of a feature map `[N, C, H, W]`.
pub fn batch_norm_train_map(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    relu: bool,
) -> BnTrainOutput<4> {
    let [n, c, h, w] = x.dims();
    let r = batch_norm_train3(x.reshape([n, c, h * w]), gamma, beta, eps, relu);
    BnTrainOutput {
        output: r.output.reshape([n, c, h, w]),
        mean: r.mean,
        variance: r.variance,
    }
}

/// Training-mode BatchNorm (ReLU fused if `relu`) of a feature matrix `[N, F]`.
pub fn batch_norm_train_flat(
    x: Tensor<2>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    relu: bool,
) -> BnTrainOutput<2> {
    let [n, c] = x.dims();
    let r = batch_norm_train3(x.reshape([n, c, 1]), gamma, beta, eps, relu);
    BnTrainOutput {
        output: r.output.reshape([n, c]),
        mean: r.mean,
        variance: r.variance,
    }
}
