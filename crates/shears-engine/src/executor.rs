//! One interpreter for any graph: parameters are flat Burn tensors keyed by the graph's names, the
//! forward walks the nodes in order. Weight masks (weight ⊙ mask) and per-channel gates
//! (activation ⊙ gate) are applied inside the forward, so dense, masked and gated networks share
//! this code.
//!
//! Why not a `#[derive(Module)]` struct: the graph is only known at run time, and owning the
//! parameter list directly keeps the optimiser state, checkpoints and gradient edits (masks, L1
//! penalties) simple tensors we can save as safetensors and edit by name.

use crate::error::{EngineError, Result};
use crate::fast_ops;
use crate::hooks::{DynamicGates, ExtraParams, PassParams};
use crate::ops;
use burn::tensor::module::{batch_norm, batch_norm_train, conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData, activation};
use ndarray::{ArrayD, IxDyn};
use shears_core::graph::{Graph, Op, ParamKind};
use shears_core::ops::{
    Activation, ChannelShuffle, ChannelSlice, GlobalPool, Pad2d, Pool2d, Resize,
};
use shears_core::ops::{Attention, BatchNorm, Conv2d, Dropout, Linear, TokenPoolMode};
use shears_core::ops::{SpatialSlice, WindowAttention};
use shears_core::shape::infer_shapes;
use shears_core::weights::{Masks, Weights, check_masks, check_weights};
use std::collections::HashMap;

/// Whether a forward pass trains (batch statistics, dropout, running-stat updates) or evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A value flowing through the graph: a feature map `[N,C,H,W]`, a feature matrix `[N,F]` or a
/// token sequence `[N,T,C]` (channels last).
#[derive(Clone, Debug)]
pub enum Value {
    Map(Tensor<4>),
    Flat(Tensor<2>),
    Tokens(Tensor<3>),
}

impl Value {
    fn map(self, node: &str) -> Tensor<4> {
        match self {
            Value::Map(t) => t,
            // Shape inference rules this out; reaching it is a bug in the plan, not user input.
            Value::Flat(_) | Value::Tokens(_) => {
                unreachable!("node `{node}` expected a feature map")
            }
        }
    }
    fn tokens(self, node: &str) -> Tensor<3> {
        match self {
            Value::Tokens(t) => t,
            Value::Map(_) | Value::Flat(_) => {
                unreachable!("node `{node}` expected a token sequence")
            }
        }
    }
    fn dims(&self) -> Vec<usize> {
        match self {
            Value::Map(t) => t.dims().to_vec(),
            Value::Flat(t) => t.dims().to_vec(),
            Value::Tokens(t) => t.dims().to_vec(),
        }
    }
    /// Applies the same elementwise function whatever the layout.
    fn map_any(
        self,
        f4: impl FnOnce(Tensor<4>) -> Tensor<4>,
        f2: impl FnOnce(Tensor<2>) -> Tensor<2>,
        f3: impl FnOnce(Tensor<3>) -> Tensor<3>,
    ) -> Value {
        match self {
            Value::Map(t) => Value::Map(f4(t)),
            Value::Flat(t) => Value::Flat(f2(t)),
            Value::Tokens(t) => Value::Tokens(f3(t)),
        }
    }
    fn mul_sample_channels(self, gate: Tensor<2>) -> Value {
        let [n, c] = gate.dims();
        match self {
            Value::Map(t) => Value::Map(t * gate.reshape([n, c, 1, 1])),
            Value::Flat(t) => Value::Flat(t * gate),
            Value::Tokens(t) => Value::Tokens(t * gate.reshape([n, 1, c])),
        }
    }
    fn mul_channels(self, gate: Tensor<1>) -> Value {
        let c = gate.dims()[0];
        match self {
            Value::Map(t) => Value::Map(t * gate.reshape([1, c, 1, 1])),
            Value::Flat(t) => Value::Flat(t * gate.reshape([1, c])),
            Value::Tokens(t) => Value::Tokens(t * gate.reshape([1, 1, c])),
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Conv {
        w: usize,
        b: Option<usize>,
        shape: [usize; 4],
        opts: ConvOptions<2>,
    },
    Linear {
        w: usize,
        b: Option<usize>,
        in_features: usize,
        out_features: usize,
    },
    Bn {
        gamma: usize,
        beta: usize,
        mean: usize,
        var: usize,
        eps: f64,
        momentum: f64,
    },
    Relu,
    Relu6,
    Activation(Activation),
    MaxPool(Pool2d),
    AvgPool(Pool2d),
    GlobalAvgPool(GlobalPool),
    GlobalMaxPool(GlobalPool),
    Pad(Pad2d),
    Flatten,
    Add,
    Mul,
    Concat,
    Slice(ChannelSlice),
    Shuffle(ChannelShuffle),
    Affine {
        scale: usize,
        shift: usize,
    },
    LayerNorm {
        weight: usize,
        bias: usize,
        eps: f64,
    },
    GroupNorm {
        weight: usize,
        bias: usize,
        groups: usize,
        eps: f64,
    },
    Resize(Resize),
    Dropout {
        p: f64,
    },
    Tokenize,
    ClassToken {
        token: usize,
    },
    PositionEmbedding {
        table: usize,
    },
    Attention(Attention),
    TokenPool(TokenPoolMode),
    SpatialSlice(SpatialSlice),
    WindowAttention {
        attn: WindowAttention,
        table: usize,
        /// The table row of every token pair of a window, and the shift mask `[windows, 1, N,
        /// N]`, made on the device once rather than at every forward.
        index: Tensor<1, Int>,
        mask: Option<Tensor<4>>,
    },
}

/// Applies a map op to a value, a vector `[N,F]` as the map `[N,F,1,1]`.
fn on_map(v: Value, f: impl FnOnce(Tensor<4>) -> Tensor<4>) -> Value {
    match v {
        Value::Map(t) => Value::Map(f(t)),
        Value::Flat(t) => {
            let [n, c] = t.dims();
            Value::Flat(f(t.reshape([n, c, 1, 1])).reshape([n, c]))
        }
        // Shape inference keeps the map-only ops off tokens.
        Value::Tokens(_) => unreachable!("a map op on a token sequence"),
    }
}

/// One trainable parameter: its graph name, role and engine-layout shape.
#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub name: String,
    pub kind: ParamKind,
    /// Shape in the graph (PyTorch) layout.
    pub shape: Vec<usize>,
    /// Linear weights are held transposed (`[in, out]`, Burn's layout) inside the engine.
    pub transposed: bool,
}

impl ParamInfo {
    /// Engine-layout values of this parameter (or of its mask or optimiser state) as a
    /// graph-layout array: linear weights are un-transposed.
    pub fn to_graph_layout(&self, values: Vec<f32>) -> ArrayD<f32> {
        // The values come from this parameter's own tensors, so the element count always fits.
        if self.transposed {
            let (o, i) = (self.shape[0], self.shape[1]);
            ArrayD::from_shape_vec(IxDyn(&[i, o]), values)
                .expect("engine tensor matches its parameter shape")
                .reversed_axes()
                .as_standard_layout()
                .into_owned()
        } else {
            ArrayD::from_shape_vec(IxDyn(&self.shape), values)
                .expect("engine tensor matches its parameter shape")
        }
    }
}

/// A graph ready to run on a device, with its parameters, buffers, masks and gates.
pub struct Executor {
    graph: Graph,
    steps: Vec<Step>,
    /// Slot of each node input: 0 is the graph input, node i writes slot i + 1.
    inputs: Vec<Vec<usize>>,
    /// Index of the last node reading each slot: there the value is moved, not cloned, so the
    /// backend may reuse its buffer and memory is freed as early as possible.
    last_use: Vec<usize>,
    output_slot: usize,
    device: Device,
    pub params: Vec<Tensor<1>>,
    pub infos: Vec<ParamInfo>,
    /// Running statistics of BatchNorm layers (not trained by gradients), graph names in `buffer_names`.
    buffers: Vec<Tensor<1>>,
    buffer_names: Vec<String>,
    masks: Vec<Option<Tensor<1>>>,
    gates: Vec<Option<Tensor<1>>>,
    param_index: HashMap<String, usize>,
    /// Conv step → the BatchNorm step that alone reads its output: folded together at inference.
    fold_into: Vec<Option<usize>>,
    /// BatchNorm step → the ReLU step that alone reads its output: fused into one kernel.
    relu_after: Vec<Option<usize>>,
    /// BatchNorm step → the residual sum that alone reads it (and the ReLU after that sum):
    /// at inference the folded conv adds the residual and applies the ReLU in its epilogue.
    residual_after: Vec<Option<ResidualFusion>>,
    /// Sum step (two summands) → the ReLU step that alone reads it: one kernel, forward and
    /// backward, where the sum is not already fused into a conv.
    relu_after_add: Vec<Option<usize>>,
    /// Folded conv weights and biases for inference; dropped whenever a parameter changes.
    folded: Option<Vec<Option<(Tensor<4>, Tensor<1>)>>>,
    /// Replaces every BatchNorm's running-statistics momentum while set (precise statistics).
    bn_momentum: Option<f64>,
}

/// A residual sum `add(bn, other)` (and the ReLU after it) that the conv in front of `bn` can
/// compute in its epilogue.
#[derive(Debug, Clone, Copy)]
struct ResidualFusion {
    /// The Add step.
    add: usize,
    /// Which of the Add's inputs is the BatchNorm.
    position: usize,
    /// The slot of the other summand.
    other: usize,
    /// The ReLU step that alone reads the sum, if any.
    relu: Option<usize>,
}

/// A training BatchNorm's output and batch statistics, from either implementation.
struct BnResult<const D: usize> {
    output: Tensor<D>,
    mean: Tensor<1>,
    variance: Tensor<1>,
}

/// The kernels' description of a convolution on input `x`, or `None` when they cannot run it
/// (asymmetric padding, which graphs from ONNX may have): Burn's op runs it then.
/// The kernel's geometry of a max pooling of `x`, when its shape rule gives one.
fn pool_geometry(
    x: &Tensor<4>,
    a: &shears_core::ops::Pool2d,
) -> Option<shears_kernels::PoolGeometry> {
    let [batch, channels, in_h, in_w] = x.dims();
    Some(shears_kernels::PoolGeometry {
        batch,
        channels,
        in_h,
        in_w,
        out_h: a.out_len(0, in_h)?,
        out_w: a.out_len(1, in_w)?,
        kernel: a.kernel,
        stride: a.stride,
        padding: a.padding,
    })
}

fn conv_out_dims(g: &shears_kernels::ConvGeometry) -> [usize; 4] {
    [g.batch, g.out_channels, g.out_h(), g.out_w()]
}

fn tensor_from(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// Copies a tensor's values to the host.
pub fn to_vec(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensor data")
}

fn transpose2(a: &ArrayD<f32>) -> Vec<f32> {
    let v = a
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .expect("rank-2 linear weight");
    v.t().iter().copied().collect()
}

impl Executor {
    /// Builds the executor; checks the graph, weights and masks agree. Parameters require
    /// gradients when `device` is an autodiff device.
    pub fn new(
        graph: &Graph,
        weights: &Weights,
        masks: &Masks,
        device: &Device,
    ) -> Result<Executor> {
        let shapes = infer_shapes(graph)?;
        check_weights(graph, weights)?;
        check_masks(weights, masks)?;
        let mut params = Vec::new();
        let mut infos: Vec<ParamInfo> = Vec::new();
        let mut buffers = Vec::new();
        let mut buffer_names = Vec::new();
        let mut param_index = HashMap::new();
        let mut steps = Vec::new();
        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        slot_of.insert(graph.input.name.as_str(), 0);
        let mut inputs = Vec::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            inputs.push(
                node.inputs
                    .iter()
                    .map(|v| slot_of[v.as_str()])
                    .collect::<Vec<_>>(),
            );
            slot_of.insert(node.name.as_str(), i + 1);
            let mut add_param = |suffix: &str, kind: ParamKind, transposed: bool| -> usize {
                let name = format!("{}.{suffix}", node.name);
                let w = &weights[&name];
                let values = if transposed {
                    transpose2(w)
                } else {
                    w.iter().copied().collect()
                };
                params.push(tensor_from(values, device));
                infos.push(ParamInfo {
                    name: name.clone(),
                    kind,
                    shape: w.shape().to_vec(),
                    transposed,
                });
                param_index.insert(name, params.len() - 1);
                params.len() - 1
            };
            let step = match node.op {
                Op::Conv2d(Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    groups,
                    bias,
                }) => {
                    let w = add_param("weight", ParamKind::Weight, false);
                    let b = bias.then(|| add_param("bias", ParamKind::Bias, false));
                    Step::Conv {
                        w,
                        b,
                        shape: [out_channels, in_channels / groups, kernel[0], kernel[1]],
                        opts: ConvOptions::new(stride, padding, dilation, groups),
                    }
                }
                Op::Linear(Linear {
                    in_features,
                    out_features,
                    bias,
                }) => {
                    let w = add_param("weight", ParamKind::Weight, true);
                    let b = bias.then(|| add_param("bias", ParamKind::Bias, false));
                    Step::Linear {
                        w,
                        b,
                        in_features,
                        out_features,
                    }
                }
                Op::BatchNorm(BatchNorm { eps, momentum, .. }) => {
                    let gamma = add_param("weight", ParamKind::BnScale, false);
                    let beta = add_param("bias", ParamKind::BnShift, false);
                    let mut buf = |suffix: &str| {
                        let name = format!("{}.{suffix}", node.name);
                        buffers.push(tensor_from(
                            weights[&name].iter().copied().collect(),
                            device,
                        ));
                        buffer_names.push(name);
                        buffers.len() - 1
                    };
                    let mean = buf("running_mean");
                    let var = buf("running_var");
                    Step::Bn {
                        gamma,
                        beta,
                        mean,
                        var,
                        eps,
                        momentum,
                    }
                }
                Op::Relu => Step::Relu,
                Op::Relu6 => Step::Relu6,
                Op::Activation(f) => Step::Activation(f),
                Op::MaxPool(a) => Step::MaxPool(a),
                Op::AvgPool(a) => Step::AvgPool(a),
                Op::GlobalAvgPool(g) => Step::GlobalAvgPool(g),
                Op::GlobalMaxPool(g) => Step::GlobalMaxPool(g),
                Op::Pad(p) => Step::Pad(p),
                Op::Flatten => Step::Flatten,
                Op::Add => Step::Add,
                Op::Mul => Step::Mul,
                Op::Slice(sl) => Step::Slice(sl),
                Op::Affine(_) => Step::Affine {
                    scale: add_param("scale", ParamKind::Scale, false),
                    shift: add_param("shift", ParamKind::Shift, false),
                },
                Op::GroupNorm(gn) => Step::GroupNorm {
                    weight: add_param("weight", ParamKind::Scale, false),
                    bias: add_param("bias", ParamKind::Shift, false),
                    groups: gn.groups,
                    eps: gn.eps,
                },
                Op::Resize(r) => Step::Resize(r),
                Op::LayerNorm(ln) => Step::LayerNorm {
                    weight: add_param("weight", ParamKind::Scale, false),
                    bias: add_param("bias", ParamKind::Shift, false),
                    eps: ln.eps,
                },
                Op::ChannelShuffle(sh) => Step::Shuffle(sh),
                Op::Concat => Step::Concat,
                Op::Dropout(Dropout { p }) => Step::Dropout { p },
                Op::Tokenize => Step::Tokenize,
                Op::ClassToken(_) => Step::ClassToken {
                    token: add_param("token", ParamKind::Embedding, false),
                },
                Op::PositionEmbedding(_) => Step::PositionEmbedding {
                    table: add_param("table", ParamKind::Embedding, false),
                },
                Op::Attention(a) => Step::Attention(a),
                Op::TokenPool(p) => Step::TokenPool(p.mode),
                Op::SpatialSlice(sl) => Step::SpatialSlice(sl),
                Op::WindowAttention(a) => {
                    let s = shapes.get(&node.inputs[0]);
                    let (index, mask) = ops::window::constants(&a, [s[1], s[2]], device);
                    Step::WindowAttention {
                        attn: a,
                        table: add_param("bias_table", ParamKind::Embedding, false),
                        index,
                        mask,
                    }
                }
            };
            steps.push(step);
        }
        let output_slot = slot_of[graph.output.as_str()];
        // Last use of every slot, so intermediate values are dropped as soon as possible.
        let mut last_use = vec![0usize; graph.nodes.len() + 1];
        for (i, ins) in inputs.iter().enumerate() {
            for &s in ins {
                last_use[s] = i;
            }
        }
        last_use[output_slot] = usize::MAX;
        // How many nodes read each slot: fusions need a value that only one node reads.
        let mut readers = vec![0usize; graph.nodes.len() + 1];
        for ins in &inputs {
            for &s in ins {
                readers[s] += 1;
            }
        }
        let mut fold_into = vec![None; steps.len()];
        for (j, step) in steps.iter().enumerate() {
            if let Step::Bn { .. } = step {
                let src = inputs[j][0];
                if src > 0
                    && matches!(steps[src - 1], Step::Conv { .. })
                    && readers[src] == 1
                    && src != output_slot
                {
                    if let Op::BatchNorm(BatchNorm { .. }) = graph.nodes[j].op {
                        if graph.nodes[j].inputs.len() == 1 {
                            fold_into[src - 1] = Some(j);
                        }
                    }
                }
            }
        }
        // A ReLU whose only input is a BatchNorm or a convolution with a bias that nothing else
        // reads.
        let mut relu_after = vec![None; steps.len()];
        for (k, step) in steps.iter().enumerate() {
            let src = inputs[k][0];
            if matches!(step, Step::Relu)
                && src > 0
                && matches!(
                    steps[src - 1],
                    Step::Bn { .. } | Step::Conv { b: Some(_), .. }
                )
                && readers[src] == 1
                && src != output_slot
            {
                relu_after[src - 1] = Some(k);
            }
        }
        let mut residual_after = vec![None; steps.len()];
        for (k, step) in steps.iter().enumerate() {
            if !matches!(step, Step::Add) || inputs[k].len() != 2 || inputs[k][0] == inputs[k][1] {
                continue;
            }
            for position in 0..2 {
                let src = inputs[k][position];
                let other = inputs[k][1 - position];
                if src == 0
                    || !matches!(steps[src - 1], Step::Bn { .. })
                    || readers[src] != 1
                    || src == output_slot
                {
                    continue;
                }
                let sum = k + 1;
                let relu = (0..steps.len()).find(|&r| {
                    matches!(steps[r], Step::Relu)
                        && inputs[r] == [sum]
                        && readers[sum] == 1
                        && sum != output_slot
                });
                residual_after[src - 1] = Some(ResidualFusion {
                    add: k,
                    position,
                    other,
                    relu,
                });
                break;
            }
        }
        let relu_after_add: Vec<Option<usize>> = (0..steps.len())
            .map(|k| {
                let sum = k + 1;
                let pair = matches!(steps[k], Step::Add)
                    && inputs[k].len() == 2
                    && readers[sum] == 1
                    && sum != output_slot;
                (0..steps.len())
                    .find(|&r| pair && matches!(steps[r], Step::Relu) && inputs[r] == [sum])
            })
            .collect();
        let mut exec = Executor {
            graph: graph.clone(),
            steps,
            inputs,
            last_use,
            output_slot,
            device: device.clone(),
            params,
            masks: vec![None; infos.len()],
            infos,
            buffers,
            buffer_names,
            gates: vec![None; graph.nodes.len()],
            param_index,
            fold_into,
            relu_after,
            residual_after,
            relu_after_add,
            folded: None,
            bn_momentum: None,
        };
        exec.set_masks(masks)?;
        if device.is_autodiff() {
            exec.params = exec.params.drain(..).map(|p| p.require_grad()).collect();
        }
        Ok(exec)
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Index of a parameter by graph name.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.param_index.get(name).copied()
    }

    /// The current parameters, untracked: what an evaluation pass uses.
    pub fn plain_params(&self) -> Vec<Tensor<1>> {
        self.params.iter().map(|p| p.clone().inner()).collect()
    }

    /// `values` (this executor's parameters, e.g. [`Executor::plain_params`]) by graph name,
    /// as a gated forward pass hands them to [`DynamicGates::begin_pass`].
    pub fn pass_params<'a>(&'a self, values: &'a [Tensor<1>]) -> PassParams<'a> {
        PassParams {
            values,
            infos: &self.infos,
            index: &self.param_index,
        }
    }

    /// Replaces the weight masks (tensors without a mask are dense); zeroes masked weights.
    pub fn set_masks(&mut self, masks: &Masks) -> Result<()> {
        self.masks = vec![None; self.infos.len()];
        for (name, m) in masks {
            let i = self.param_index(name).ok_or_else(|| {
                EngineError::invalid("mask", format!("`{name}` is not a parameter of the model"))
            })?;
            let info = &self.infos[i];
            if m.shape() != info.shape.as_slice() {
                return Err(EngineError::invalid(
                    "mask",
                    format!(
                        "`{name}` has shape {:?}, the parameter is {:?}",
                        m.shape(),
                        info.shape
                    ),
                ));
            }
            let f = m.mapv(|b| if b { 1.0f32 } else { 0.0 });
            let values = if info.transposed {
                transpose2(&f)
            } else {
                f.iter().copied().collect()
            };
            self.masks[i] = Some(tensor_from(values, &self.device.clone()).inner());
        }
        self.apply_masks();
        Ok(())
    }

    /// Multiplies every masked parameter by its mask, so pruned weights are exactly zero.
    pub fn apply_masks(&mut self) {
        self.folded = None;
        let autodiff = self.device.is_autodiff();
        for (i, m) in self.masks.iter().enumerate() {
            if let Some(m) = m {
                let p = self.params[i].clone().inner() * m.clone();
                self.params[i] = if autodiff {
                    p.autodiff().require_grad()
                } else {
                    p
                };
            }
        }
    }

    /// The current weight masks in graph layout (parameters without a mask are left out).
    pub fn masks(&self) -> Masks {
        let mut masks = Masks::new();
        for (info, m) in self.infos.iter().zip(&self.masks) {
            if let Some(m) = m {
                masks.insert(
                    info.name.clone(),
                    info.to_graph_layout(to_vec(m.clone())).mapv(|x| x != 0.0),
                );
            }
        }
        masks
    }

    /// Mask of parameter `i`, if it has one (on the inner, non-autodiff device).
    pub fn mask(&self, i: usize) -> Option<&Tensor<1>> {
        self.masks[i].as_ref()
    }

    /// Sets a per-channel gate (values multiply the node's output channels), or removes it.
    pub fn set_gate(&mut self, node: &str, gate: Option<&[f32]>) -> Result<()> {
        let i = self
            .graph
            .node_index(node)
            .ok_or_else(|| EngineError::invalid("gate", format!("no node named `{node}`")))?;
        self.gates[i] = gate.map(|g| tensor_from(g.to_vec(), &self.device).inner());
        self.folded = None;
        Ok(())
    }

    /// Conv weights and biases with the following BatchNorm folded in (inference only):
    /// w' = w·γ/√(σ²+ε) per output channel, b' = (b − μ)·γ/√(σ²+ε) + β.
    fn folded_convs(&mut self) -> Vec<Option<(Tensor<4>, Tensor<1>)>> {
        if let Some(f) = &self.folded {
            return f.clone();
        }
        let mut out = vec![None; self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            let (Step::Conv { w, b, shape, .. }, Some(j)) = (step, self.fold_into[i]) else {
                continue;
            };
            // A gate on the conv output sits between conv and BN: folding would skip it.
            if self.gates[i].is_some() {
                continue;
            }
            let Step::Bn {
                gamma,
                beta,
                mean,
                var,
                eps,
                ..
            } = &self.steps[j]
            else {
                continue;
            };
            let g = self.params[*gamma].clone().inner();
            let scale = g / self.buffers[*var].clone().add_scalar(*eps).sqrt();
            let weight = self.params[*w].clone().inner().reshape(*shape)
                * scale.clone().reshape([shape[0], 1, 1, 1]);
            let bias = match b {
                Some(b) => self.params[*b].clone().inner(),
                None => Tensor::zeros([shape[0]], &self.device).inner(),
            };
            let bias =
                (bias - self.buffers[*mean].clone()) * scale + self.params[*beta].clone().inner();
            out[i] = Some((weight, bias));
        }
        self.folded = Some(out.clone());
        out
    }

    /// Runs the graph on a batch. `x` is `[N, ...input shape]`; returns logits `[N, classes]`.
    pub fn forward(&mut self, x: Value, mode: Mode) -> Tensor<2> {
        self.forward_impl(x, mode, None)
    }

    /// Checks that every node `gates` names, and every gate's source, is a node of this graph,
    /// and that each source comes no later than the node it gates.
    pub fn check_gates(&self, gates: &dyn DynamicGates) -> Result<()> {
        let model = &self.graph.name;
        for node in gates.gated_nodes() {
            let Some(i) = self.graph.node_index(&node) else {
                return Err(EngineError::invalid(
                    "dynamic gates",
                    format!("no node named `{node}` in model `{model}`"),
                ));
            };
            let source = gates.source(&node);
            match self.graph.node_index(&source) {
                Some(s) if s <= i => {}
                Some(_) => {
                    return Err(EngineError::invalid(
                        "dynamic gates",
                        format!("the gate of `{node}` reads `{source}`, which runs after it"),
                    ));
                }
                None => {
                    return Err(EngineError::invalid(
                        "dynamic gates",
                        format!(
                            "the gate of `{node}` reads `{source}`, no node of model `{model}`"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// [`Executor::forward`] with per-sample channel gates computed inside the pass: every node
    /// that `gates` names has its output multiplied by the gate `[N, C]` computed from its
    /// source's first input (and from `extra`). BatchNorm is not folded into a gated conv. The
    /// gates must have passed [`Executor::check_gates`].
    pub fn forward_gated(
        &mut self,
        x: Value,
        mode: Mode,
        gates: &dyn DynamicGates,
        extra: Option<&ExtraParams>,
    ) -> Tensor<2> {
        self.forward_impl(x, mode, Some((gates, extra)))
    }

    fn forward_impl(
        &mut self,
        x: Value,
        mode: Mode,
        dynamic: Option<(&dyn DynamicGates, Option<&ExtraParams>)>,
    ) -> Tensor<2> {
        let train = mode == Mode::Train;
        // Which nodes are gated per sample, and the node whose first input each gate reads;
        // empty (no allocation) on the plain forward pass.
        let (gated, gate_source): (Vec<bool>, Vec<Option<usize>>) = match dynamic {
            Some((g, _)) => {
                let names = g.gated_nodes();
                let nodes = &self.graph.nodes;
                let gated: Vec<bool> = nodes.iter().map(|n| names.contains(&n.name)).collect();
                let source = nodes
                    .iter()
                    .zip(&gated)
                    .map(|(n, &is)| {
                        is.then(|| {
                            self.graph
                                .node_index(&g.source(&n.name))
                                .expect("gate sources are checked by check_gates")
                        })
                    })
                    .collect();
                (gated, source)
            }
            None => (Vec::new(), Vec::new()),
        };
        // A gate that reads its own node's input.
        let reads_own_input = |k: usize| gate_source.get(k) == Some(&Some(k));
        let folded = if train || gated.contains(&true) {
            vec![None; self.steps.len()]
        } else {
            self.folded_convs()
        };
        // Evaluation runs without autodiff bookkeeping even on an autodiff device.
        let params: Vec<Tensor<1>> = if train {
            self.params.clone()
        } else {
            self.params.iter().map(|p| p.clone().inner()).collect()
        };
        let x = if train {
            x
        } else {
            match x {
                Value::Map(t) => Value::Map(t.inner()),
                Value::Flat(t) => Value::Flat(t.inner()),
                Value::Tokens(t) => Value::Tokens(t.inner()),
            }
        };
        if let Some((g, extra)) = dynamic {
            let pass = PassParams {
                values: &params,
                infos: &self.infos,
                index: &self.param_index,
            };
            g.begin_pass(&pass, extra);
        }
        let masked = |i: usize| -> Tensor<1> {
            match &self.masks[i] {
                Some(m) if train => params[i].clone() * m.clone(),
                _ => params[i].clone(),
            }
        };
        // Our kernels on flex devices; a BatchNorm fuses the ReLU after it unless a gate sits
        // between them.
        let fast = fast_ops::enabled_on(&self.device);
        let fuse_relu: Vec<bool> = (0..self.steps.len())
            .map(|j| {
                // A per-sample gate on the ReLU that reads the ReLU's input, which fusion would
                // replace by its output: such a ReLU stays separate.
                fast && self.relu_after[j].is_some_and(|k| !reads_own_input(k))
                    && self.gates[j].is_none()
                    && gated.get(j) != Some(&true)
            })
            .collect();
        let mut relu_fused = vec![false; self.steps.len()];
        // Add step → which of its inputs holds the conv that already added the other one.
        let mut add_fused: Vec<Option<usize>> = vec![None; self.steps.len()];
        // Every convolution through the kernels, depthwise included since its forward works on
        // padded planes (MobileNet-V2 3x32x32 inference, 1 thread: 3.5 against flex's 4.9 ms at
        // batch 1, 320 against 393 ms at batch 64).
        let use_kernels = |_: &shears_kernels::ConvGeometry| fast;
        let ungated = |j: usize| self.gates[j].is_none() && gated.get(j) != Some(&true);
        let mut bn_folded = vec![false; self.steps.len()];
        let mut slots: Vec<Option<Value>> = vec![None; self.steps.len() + 1];
        let mut gate_inputs: Vec<Option<Value>> = vec![None; gate_source.len()];
        // Source step -> the gated nodes that read its first input.
        let mut gates_reading: Vec<Vec<usize>> = vec![Vec::new(); gate_source.len()];
        for (k, src) in gate_source.iter().enumerate() {
            if let Some(s) = *src {
                gates_reading[s].push(k);
            }
        }
        slots[0] = Some(x);
        for (i, step) in self.steps.iter().enumerate() {
            let name = &self.graph.nodes[i].name;
            let ins = &self.inputs[i];
            let mut args: Vec<Option<Value>> = ins
                .iter()
                .enumerate()
                .map(|(k, &s)| {
                    let last_here = self.last_use[s] == i && !ins[k + 1..].contains(&s);
                    if last_here {
                        slots[s].take()
                    } else {
                        slots[s].clone()
                    }
                })
                .collect();
            // A dynamic gate reads its source's first input, so keep a handle to it.
            for &k in gates_reading.get(i).map_or(&[][..], Vec::as_slice) {
                gate_inputs[k] = args[0].clone();
            }
            let mut arg = |k: usize| {
                args[k]
                    .take()
                    .unwrap_or_else(|| panic!("value {k} of `{name}` taken before use"))
            };
            let out = match step {
                Step::Conv { opts, shape, .. } if folded[i].is_some() => {
                    let (weight, bias) = folded[i].clone().expect("checked");
                    let j = self.fold_into[i].expect("a folded conv has its BatchNorm");
                    bn_folded[j] = true;
                    let x = arg(0).map(name);
                    // The residual sum after the BN, when its other summand is already known.
                    let residual = self.residual_after[j].filter(|r| {
                        r.other <= i && ungated(j) && ungated(r.add) && slots[r.other].is_some()
                    });
                    match ops::conv::geometry(&x, shape, opts).filter(|g| use_kernels(g)) {
                        Some(geometry) => {
                            let mut relu = fuse_relu[j];
                            if relu {
                                relu_fused[self.relu_after[j].expect("checked")] = true;
                            }
                            let summand = residual.and_then(|r| match &slots[r.other] {
                                Some(Value::Map(t)) if t.dims() == conv_out_dims(&geometry) => {
                                    add_fused[r.add] = Some(r.position);
                                    // (Not when the ReLU's per-sample gate reads the sum.)
                                    if let Some(k) = r.relu.filter(|&k| gated.get(k) != Some(&true))
                                    {
                                        relu = true;
                                        relu_fused[k] = true;
                                    }
                                    Some(t.clone())
                                }
                                _ => None,
                            });
                            Value::Map(fast_ops::conv2d_fused(
                                x, weight, bias, summand, geometry, relu,
                            ))
                        }
                        None => Value::Map(conv2d(x, weight, Some(bias), opts.clone())),
                    }
                }
                Step::Bn { .. } if bn_folded[i] => arg(0),
                Step::Relu if relu_fused[i] => arg(0),
                Step::Conv { w, b, shape, opts } => {
                    let weight = masked(*w).reshape(*shape);
                    let bias = b.map(|b| params[b].clone());
                    let x = arg(0).map(name);
                    let (y, relu) =
                        ops::conv::forward(x, weight, bias, opts, &use_kernels, fuse_relu[i]);
                    if relu {
                        relu_fused[self.relu_after[i].expect("checked")] = true;
                    }
                    Value::Map(y)
                }
                Step::Linear {
                    w,
                    b,
                    in_features,
                    out_features,
                } => {
                    let weight = masked(*w).reshape([*in_features, *out_features]);
                    let bias = b.map(|b| params[b].clone());
                    match arg(0) {
                        Value::Flat(x) => Value::Flat(ops::linear::forward(x, weight, bias, fast)),
                        // Every token through the same layer: `[N*T, C]` rows.
                        Value::Tokens(x) => {
                            let [n, t, c] = x.dims();
                            let x = x.reshape([n * t, c]);
                            let y = ops::linear::forward(x, weight, bias, fast);
                            Value::Tokens(y.reshape([n, t, *out_features]))
                        }
                        Value::Map(_) => unreachable!("linear `{name}` on a feature map"),
                    }
                }
                Step::Bn {
                    gamma,
                    beta,
                    mean,
                    var,
                    eps,
                    momentum,
                } => {
                    let momentum = &self.bn_momentum.unwrap_or(*momentum);
                    let (g, bt) = (params[*gamma].clone(), params[*beta].clone());
                    let (rm, rv) = (self.buffers[*mean].clone(), self.buffers[*var].clone());
                    let x = arg(0);
                    if train {
                        let numel: usize = x.dims().iter().product();
                        let relu = fuse_relu[i];
                        if relu {
                            relu_fused[self.relu_after[i].expect("checked")] = true;
                        }
                        macro_rules! bn_train {
                            ($t:expr, $ctor:path, $fast:path) => {{
                                let r = if fast {
                                    let r = $fast($t, g, bt, *eps, relu);
                                    (r.output, r.mean, r.variance)
                                } else {
                                    let r = batch_norm_train($t, g, bt, *eps);
                                    (r.output, r.mean, r.variance)
                                };
                                let r = BnResult {
                                    output: r.0,
                                    mean: r.1,
                                    variance: r.2,
                                };
                                let n: usize = numel / r.mean.dims()[0];
                                // Running variance is the unbiased estimate, as in PyTorch.
                                let unbias = if n > 1 {
                                    n as f64 / (n as f64 - 1.0)
                                } else {
                                    1.0
                                };
                                let m = r.mean.inner();
                                let v = r.variance.inner().mul_scalar(unbias);
                                self.buffers[*mean] =
                                    rm.mul_scalar(1.0 - momentum).add(m.mul_scalar(*momentum));
                                self.buffers[*var] =
                                    rv.mul_scalar(1.0 - momentum).add(v.mul_scalar(*momentum));
                                $ctor(r.output)
                            }};
                        }
                        match x {
                            Value::Map(t) => {
                                bn_train!(t, Value::Map, fast_ops::batch_norm_train_map)
                            }
                            Value::Flat(t) => {
                                bn_train!(t, Value::Flat, fast_ops::batch_norm_train_flat)
                            }
                            // BatchNorm's shape rule refuses token sequences.
                            Value::Tokens(_) => unreachable!("batch norm `{name}` on tokens"),
                        }
                    } else {
                        match x {
                            Value::Map(t) => Value::Map(batch_norm(t, g, bt, rm, rv, *eps)),
                            Value::Flat(t) => Value::Flat(batch_norm(t, g, bt, rm, rv, *eps)),
                            Value::Tokens(_) => unreachable!("batch norm `{name}` on tokens"),
                        }
                    }
                }
                Step::Relu if fast => {
                    arg(0).map_any(fast_ops::relu, fast_ops::relu, fast_ops::relu)
                }
                Step::Relu => arg(0).map_any(activation::relu, activation::relu, activation::relu),
                Step::Relu6 if fast => {
                    arg(0).map_any(fast_ops::relu6, fast_ops::relu6, fast_ops::relu6)
                }
                Step::Relu6 => arg(0).map_any(
                    |t| t.clamp(0.0, 6.0),
                    |t| t.clamp(0.0, 6.0),
                    |t| t.clamp(0.0, 6.0),
                ),
                Step::Activation(f) => arg(0).map_any(
                    |t| ops::activation::forward(*f, t),
                    |t| ops::activation::forward(*f, t),
                    |t| ops::activation::forward(*f, t),
                ),
                Step::MaxPool(a) => {
                    let x = arg(0).map(name);
                    // On flex: evaluation without an argmax, training with one for backward.
                    Value::Map(match (fast, train, pool_geometry(&x, a)) {
                        (true, false, Some(g)) => fast_ops::max_pool2d_infer(x, g),
                        (true, true, Some(g)) => fast_ops::max_pool2d_train(x, g),
                        _ => ops::pool::max(x, a),
                    })
                }
                Step::AvgPool(a) => Value::Map(ops::pool::avg(arg(0).map(name), a)),
                Step::GlobalAvgPool(g) => {
                    let pooled = ops::pool::global_avg(arg(0).map(name));
                    if g.keep_dims {
                        Value::Map(pooled)
                    } else {
                        let [n, c, _, _] = pooled.dims();
                        Value::Flat(pooled.reshape([n, c]))
                    }
                }
                Step::GlobalMaxPool(g) => {
                    let pooled = ops::pool::global_max(arg(0).map(name));
                    if g.keep_dims {
                        Value::Map(pooled)
                    } else {
                        let [n, c, _, _] = pooled.dims();
                        Value::Flat(pooled.reshape([n, c]))
                    }
                }
                Step::Pad(p) => {
                    let [top, left, bottom, right] = p.pads;
                    Value::Map(arg(0).map(name).pad((left, right, top, bottom), 0.0))
                }
                // Burn broadcasts a [N,C,1,1] operand over [N,C,H,W] on either side.
                Step::Mul => match (arg(0), arg(1)) {
                    (Value::Map(a), Value::Map(b)) => Value::Map(a * b),
                    (Value::Flat(a), Value::Flat(b)) => Value::Flat(a * b),
                    (Value::Tokens(a), Value::Tokens(b)) => Value::Tokens(a * b),
                    _ => unreachable!("mul `{name}` of mixed ranks"),
                },
                Step::Flatten => match arg(0) {
                    Value::Map(t) => {
                        let [n, c, h, w] = t.dims();
                        Value::Flat(t.reshape([n, c * h * w]))
                    }
                    Value::Tokens(t) => {
                        let [n, k, c] = t.dims();
                        Value::Flat(t.reshape([n, k * c]))
                    }
                    flat => flat,
                },
                Step::Add if add_fused[i].is_some() => arg(add_fused[i].expect("checked")),
                // The sum and its ReLU in one kernel (not when a per-sample gate reads either).
                Step::Add
                    if fast
                        && ungated(i)
                        && self.relu_after_add[i]
                            .is_some_and(|r| ungated(r) && !reads_own_input(r)) =>
                {
                    relu_fused[self.relu_after_add[i].expect("checked")] = true;
                    // A broadcast sum keeps Burn's ops.
                    macro_rules! add_relu {
                        ($a:expr, $b:expr) => {
                            if $a.dims() == $b.dims() {
                                fast_ops::add_relu($a, $b)
                            } else {
                                activation::relu($a + $b)
                            }
                        };
                    }
                    match (arg(0), arg(1)) {
                        (Value::Map(a), Value::Map(b)) => Value::Map(add_relu!(a, b)),
                        (Value::Flat(a), Value::Flat(b)) => Value::Flat(add_relu!(a, b)),
                        (Value::Tokens(a), Value::Tokens(b)) => Value::Tokens(add_relu!(a, b)),
                        _ => unreachable!("add `{name}` of mixed ranks"),
                    }
                }
                Step::Add => {
                    let mut acc = arg(0);
                    for k in 1..self.inputs[i].len() {
                        acc = match (acc, arg(k)) {
                            (Value::Map(a), Value::Map(b)) => Value::Map(a + b),
                            (Value::Flat(a), Value::Flat(b)) => Value::Flat(a + b),
                            (Value::Tokens(a), Value::Tokens(b)) => Value::Tokens(a + b),
                            _ => unreachable!("add `{name}` of mixed ranks"),
                        };
                    }
                    acc
                }
                Step::Affine { scale, shift } => {
                    let (s, b) = (params[*scale].clone(), params[*shift].clone());
                    on_map(arg(0), |t| ops::layernorm::affine(t, s, b))
                }
                Step::LayerNorm { weight, bias, eps } => {
                    let (w, b) = (params[*weight].clone(), params[*bias].clone());
                    // The gate on this node's input, if any: its pruned channels leave the
                    // statistics, as compaction removes them.
                    let src = self.inputs[i][0];
                    let keep = (src > 0).then(|| self.gates[src - 1].clone()).flatten();
                    match arg(0) {
                        Value::Tokens(t) => {
                            Value::Tokens(ops::layernorm::layer_norm(t, 2, w, b, *eps, keep))
                        }
                        x => on_map(x, |t| ops::layernorm::layer_norm(t, 1, w, b, *eps, keep)),
                    }
                }
                Step::GroupNorm {
                    weight,
                    bias,
                    groups,
                    eps,
                } => {
                    let (w, b) = (params[*weight].clone(), params[*bias].clone());
                    let src = self.inputs[i][0];
                    let keep = (src > 0).then(|| self.gates[src - 1].clone()).flatten();
                    Value::Map(ops::layernorm::group_norm(
                        arg(0).map(name),
                        w,
                        b,
                        *groups,
                        *eps,
                        keep,
                    ))
                }
                Step::Resize(r) => Value::Map(ops::pool::resize(arg(0).map(name), r)),
                Step::Slice(sl) => match arg(0) {
                    Value::Map(t) => Value::Map(t.narrow(1, sl.start, sl.end - sl.start)),
                    Value::Flat(t) => Value::Flat(t.narrow(1, sl.start, sl.end - sl.start)),
                    Value::Tokens(t) => Value::Tokens(t.narrow(2, sl.start, sl.end - sl.start)),
                },
                Step::Shuffle(sh) => Value::Map(ops::shuffle::forward(arg(0).map(name), sh.groups)),
                Step::Concat => {
                    let parts: Vec<Value> = (0..self.inputs[i].len()).map(&mut arg).collect();
                    match parts[0] {
                        Value::Map(_) => Value::Map(Tensor::cat(
                            parts.into_iter().map(|v| v.map(name)).collect(),
                            1,
                        )),
                        Value::Tokens(_) => Value::Tokens(Tensor::cat(
                            parts.into_iter().map(|v| v.tokens(name)).collect(),
                            2,
                        )),
                        Value::Flat(_) => Value::Flat(Tensor::cat(
                            parts
                                .into_iter()
                                .map(|v| match v {
                                    Value::Flat(t) => t,
                                    Value::Map(_) | Value::Tokens(_) => {
                                        unreachable!("concat `{name}` of mixed ranks")
                                    }
                                })
                                .collect(),
                            1,
                        )),
                    }
                }
                Step::Dropout { p } => {
                    let x = arg(0);
                    if train && *p > 0.0 {
                        let keep = 1.0 - p;
                        let device = self.device.clone();
                        macro_rules! drop {
                            ($t:expr, $ctor:path, $d:expr) => {{
                                let m: Tensor<$d> = Tensor::random(
                                    $t.dims(),
                                    Distribution::Bernoulli(keep),
                                    &device.clone(),
                                )
                                .inner();
                                $ctor($t * m.div_scalar(keep))
                            }};
                        }
                        match x {
                            Value::Map(t) => drop!(t, Value::Map, 4),
                            Value::Flat(t) => drop!(t, Value::Flat, 2),
                            Value::Tokens(t) => drop!(t, Value::Tokens, 3),
                        }
                    } else {
                        x
                    }
                }
                Step::Tokenize => Value::Tokens(ops::tokens::tokenize(arg(0).map(name))),
                Step::ClassToken { token } => Value::Tokens(ops::tokens::class_token(
                    arg(0).tokens(name),
                    params[*token].clone(),
                )),
                Step::PositionEmbedding { table } => Value::Tokens(
                    ops::tokens::position_embedding(arg(0).tokens(name), params[*table].clone()),
                ),
                Step::Attention(a) => Value::Tokens(ops::tokens::attention(arg(0).tokens(name), a)),
                Step::TokenPool(mode) => Value::Flat(ops::tokens::pool(arg(0).tokens(name), *mode)),
                Step::SpatialSlice(sl) => {
                    Value::Map(ops::window::spatial_slice(arg(0).map(name), sl))
                }
                Step::WindowAttention {
                    attn,
                    table,
                    index,
                    mask,
                } => Value::Map(ops::window::window_attention(
                    arg(0).map(name),
                    params[*table].clone(),
                    index.clone(),
                    mask.clone(),
                    attn,
                )),
            };
            let out = match &self.gates[i] {
                Some(g) => out.mul_channels(g.clone()),
                None => out,
            };
            let gate_input = gate_inputs.get_mut(i).and_then(Option::take);
            let out = match (dynamic, gate_input) {
                (Some((g, extra)), Some(input)) => match g.gate(name, &input, &out, extra) {
                    Some(gate) => out.mul_sample_channels(gate),
                    None => out,
                },
                _ => out,
            };
            slots[i + 1] = Some(out);
        }
        if train {
            // Running statistics moved: folded inference weights are stale.
            self.folded = None;
        }
        match slots[self.output_slot].take().expect("output computed") {
            Value::Flat(t) => t,
            Value::Map(t) => {
                let [n, c, h, w] = t.dims();
                t.reshape([n, c * h * w])
            }
            Value::Tokens(t) => {
                let [n, k, c] = t.dims();
                t.reshape([n, k * c])
            }
        }
    }

    /// Overrides the running-statistics momentum of every BatchNorm (`None` restores each
    /// layer's own); [`crate::train::precise_bn`] uses it for exact averages.
    pub fn set_bn_momentum(&mut self, momentum: Option<f64>) {
        self.bn_momentum = momentum;
        self.folded = None;
    }

    /// The model this executor holds now: its graph, current weights and masks.
    pub fn model(&self) -> shears_core::artifact::Model {
        shears_core::artifact::Model {
            graph: self.graph.clone(),
            weights: self.weights(),
            masks: self.masks(),
        }
    }

    /// Builds the input value for a batch of `n` samples stored contiguously (NCHW or NF).
    pub fn input_value(&self, data: Vec<f32>, n: usize) -> Result<Value> {
        let shape = &self.graph.input.shape;
        let per: usize = shape.iter().product();
        if data.len() != n * per {
            return Err(EngineError::DataMismatch(format!(
                "a batch of {n} samples of shape {shape:?} needs {} values, got {}",
                n * per,
                data.len()
            )));
        }
        Ok(match shape.as_slice() {
            [c, h, w] => Value::Map(Tensor::from_data(
                TensorData::new(data, [n, *c, *h, *w]),
                &self.device,
            )),
            [f] => Value::Flat(Tensor::from_data(
                TensorData::new(data, [n, *f]),
                &self.device,
            )),
            // Flattening any other rank keeps the contract that graphs see [N, F] or [N, C, H, W].
            _ => Value::Flat(Tensor::from_data(
                TensorData::new(data, [n, per]),
                &self.device,
            )),
        })
    }

    /// Current parameters and buffers as graph-layout weights.
    pub fn weights(&self) -> Weights {
        let mut w = Weights::new();
        for (p, info) in self.params.iter().zip(&self.infos) {
            w.insert(
                info.name.clone(),
                info.to_graph_layout(to_vec(p.clone().inner())),
            );
        }
        for (b, name) in self.buffers.iter().zip(&self.buffer_names) {
            let values = to_vec(b.clone());
            let n = values.len();
            w.insert(
                name.clone(),
                ArrayD::from_shape_vec(IxDyn(&[n]), values).expect("shape"),
            );
        }
        w
    }

    /// Replaces parameter `i` with new values (held on the inner device); keeps gradient tracking.
    pub fn replace_param(&mut self, i: usize, value: Tensor<1>) {
        self.folded = None;
        self.params[i] = if self.device.is_autodiff() {
            value.autodiff().require_grad()
        } else {
            value
        };
    }
}
