//! The ONNX ops the importer maps, one function each; `Importer::map_node` is their table.
//! An op that is one step of an exporter's multi-node pattern (GELU's Erf chain, a channel
//! shuffle, a group norm) hands over to `patterns.rs`.

use super::*;

impl Importer {
    /// ONNX `HardSigmoid`, with its slope and offset.
    pub(super) fn import_hard_sigmoid(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Node::HardSigmoid(h) = node else {
            unreachable!("the table sends only HardSigmoid here")
        };
        let f = Activation::HardSigmoid {
            alpha: h.config.alpha as f32,
            beta: h.config.beta as f32,
        };
        self.activation(node, f)
    }

    /// ONNX `LeakyRelu`, with its slope.
    pub(super) fn import_leaky_relu(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Node::LeakyRelu(l) = node else {
            unreachable!("the table sends only LeakyRelu here")
        };
        let f = Activation::LeakyRelu {
            alpha: l.config.alpha as f32,
        };
        self.activation(node, f)
    }

    /// ONNX `Div`: a step of the GELU pattern, or a division by a stored constant.
    pub(super) fn import_div(&mut self, node: &Node) -> Result<(), OnnxError> {
        if self.gelu_input(node).is_some() {
            return self.gelu_step(node);
        }
        self.constant_arithmetic(node)
    }

    /// ONNX `Add` and `Sum`: a step of the GELU pattern, an affine of a stored constant, or the
    /// sum of computed values.
    pub(super) fn import_add(&mut self, node: &Node) -> Result<(), OnnxError> {
        if matches!(node, Node::Add(_)) && self.gelu_input(node).is_some() {
            return self.gelu_step(node);
        }
        if matches!(node, Node::Add(_)) && node.inputs().iter().any(|a| a.is_constant()) {
            return self.import_add_constant(node);
        }
        self.import_add_of_values(node)
    }

    /// ONNX `Transpose`: of a stored matrix (folded for the MatMul that reads it), between
    /// channels-first and channels-last maps, or a step of a channel shuffle.
    pub(super) fn import_transpose(&mut self, node: &Node) -> Result<(), OnnxError> {
        if node.inputs().first().is_some_and(|a| a.value().is_some()) {
            return self.import_transposed_matrix(node);
        }
        self.import_transpose_of_map(node)
    }

    /// ONNX `MatMul` by a stored matrix (or one the graph transposes): a linear layer, or a 1×1
    /// conv on a channels-last map.
    pub(super) fn import_mat_mul(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let stored = node
            .inputs()
            .get(1)
            .is_some_and(|a| a.value().is_some() || self.folded.contains_key(&a.name));
        if !stored {
            return Err(unsupported(
                node,
                "a MatMul of two computed values is not supported (only by a stored matrix)".into(),
            ));
        }
        let x = self.data(
            node,
            0,
            &[
                Vector, Pooled, Nhwc, NhwcRows, Tokens, TokensTnc, TokenRows, Windows,
            ],
        )?;
        let b = &node.inputs()[1];
        let (wname, w) = match self.folded.get(&b.name) {
            Some(f) => f.clone(),
            None => constant(node, 1, "weight")?,
        };
        let w = w.t().to_owned();
        if matches!(x.layout, Nhwc | NhwcRows | Windows) {
            return self.pointwise_conv(node, x, w, None, &wname);
        }
        self.linear(node, x, w, None, &wname, 1.0, 1.0)
    }

    /// Asymmetric pads (TensorFlow's "same" on even inputs): an explicit Pad first.
    pub(super) fn import_conv2d(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::Conv2d(c) = node else {
            unreachable!("the table sends only Conv2d here")
        };
        let x = self.data(node, 0, &[Map])?;
        let cfg = &c.config;
        if !matches!(cfg.auto_pad, AutoPad::NotSet | AutoPad::Valid) {
            return Err(unsupported(
                node,
                format!(
                    "auto_pad {:?} is not supported; export with explicit pads",
                    cfg.auto_pad
                ),
            ));
        }
        let (x, padding) = match cfg.padding {
            PaddingConfig2d::Explicit(top, left, bottom, right)
                if top != bottom || left != right =>
            {
                let pad = Op::Pad(Pad2d {
                    pads: [top, left, bottom, right],
                });
                let base = format!("{}_pad", clean_name(&self.original.node(node)));
                let name = self.push_internal(node, &base, pad, vec![x.name])?;
                (Value { name, layout: Map }, [0, 0])
            }
            _ => (x, symmetric(node, &cfg.padding)?),
        };
        let (wname, w) = constant(node, 1, "weight")?;
        let bias = optional_constant(node, 2, "bias")?;
        let &[out_channels, in_per_group, kh, kw] = w.shape() else {
            return Err(unsupported(
                node,
                format!(
                    "its weight has shape {:?}, not [out, in/groups, kh, kw]",
                    w.shape()
                ),
            ));
        };
        if [kh, kw] != cfg.kernel_size {
            return Err(unsupported(
                node,
                format!(
                    "its kernel_shape {:?} disagrees with its weight {:?}",
                    cfg.kernel_size,
                    w.shape()
                ),
            ));
        }
        let op = Op::Conv2d(Conv2d {
            in_channels: in_per_group * cfg.groups,
            out_channels,
            kernel: cfg.kernel_size,
            stride: cfg.stride,
            padding,
            dilation: cfg.dilation,
            groups: cfg.groups,
            bias: bias.is_some(),
        });
        let mut params = vec![("weight", w)];
        params.extend(bias.map(|(_, b)| ("bias", b)));
        self.push(node, op, vec![x.name], params, Map, Some(&wname))
    }

    /// ONNX's momentum weighs the running statistic; the IR's (PyTorch's) the batch's.
    pub(super) fn import_batch_normalization(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::BatchNormalization(b) = node else {
            unreachable!("the table sends only BatchNormalization here")
        };
        let x = self.data(node, 0, &[Map, Vector])?;
        let (eps, momentum) = match &b.config {
            onnx_ir::node::batch_norm::BatchNormConfig::Static(c) => (c.epsilon, c.momentum),
            onnx_ir::node::batch_norm::BatchNormConfig::Runtime(_) => {
                return Err(unsupported(
                    node,
                    "its scale, bias, mean or variance is computed at run time, not stored".into(),
                ));
            }
        };
        let (wname, scale) = constant(node, 1, "scale")?;
        let (_, shift) = constant(node, 2, "bias")?;
        let (_, mean) = constant(node, 3, "mean")?;
        let (_, var) = constant(node, 4, "var")?;
        let channels = scale.len();
        let op = Op::BatchNorm(BatchNorm {
            channels,
            eps: f32_decimal(eps),
            momentum: f32_decimal(1.0 - momentum),
        });
        let params = vec![
            ("weight", scale),
            ("bias", shift),
            ("running_mean", mean),
            ("running_var", var),
        ];
        self.push(node, op, vec![x.name], params, x.layout, Some(&wname))
    }

    /// ONNX `Relu`.
    pub(super) fn import_relu(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let x = self.data(node, 0, &[Map, Vector, Nhwc, NhwcRows, Tokens])?;
        self.push(node, Op::Relu, vec![x.name], vec![], x.layout, None)
    }

    /// ONNX `Gelu`.
    pub(super) fn import_gelu(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Node::Gelu(g) = node else {
            unreachable!("the table sends only Gelu here")
        };
        if g.config.approximate != onnx_ir::node::gelu::GeluApproximate::Exact {
            return Err(unsupported(
                node,
                "the tanh approximation of GELU is not supported (only the exact one)".into(),
            ));
        }
        self.activation(node, Activation::Gelu)
    }

    /// ONNX `Clip`.
    pub(super) fn import_clip(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::Clip(c) = node else {
            unreachable!("the table sends only Clip here")
        };
        use onnx_ir::node::clip::ClipInput;
        let x = self.data(node, 0, &[Map, Vector])?;
        let min = match &c.config.min {
            Some(ClipInput::Static(v)) => Some(*v),
            None => None,
            Some(ClipInput::Runtime(_)) => {
                return Err(unsupported(node, "its min is computed at run time".into()));
            }
        };
        let max = match &c.config.max {
            Some(ClipInput::Static(v)) => Some(*v),
            None => None,
            Some(ClipInput::Runtime(_)) => {
                return Err(unsupported(node, "its max is computed at run time".into()));
            }
        };
        let op = match (min, max) {
            (Some(lo), None) if lo == 0.0 => Op::Relu,
            (Some(lo), Some(hi)) if lo == 0.0 && hi.is_infinite() => Op::Relu,
            (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => Op::Relu6,
            (lo, hi) => Op::Activation(Activation::Clip {
                min: lo.map_or(f32::NEG_INFINITY, |v| v as f32),
                max: hi.map_or(f32::INFINITY, |v| v as f32),
            }),
        };
        self.push(node, op, vec![x.name], vec![], x.layout, None)
    }

    /// ONNX `MaxPool2d`.
    pub(super) fn import_max_pool2d(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::MaxPool2d(p) = node else {
            unreachable!("the table sends only MaxPool2d here")
        };
        let x = self.data(node, 0, &[Map])?;
        let c = &p.config;
        pool_checks(node, c.dilation, &c.auto_pad)?;
        let op = Op::MaxPool(Pool2d {
            kernel: c.kernel_size,
            stride: c.strides,
            padding: symmetric(node, &c.padding)?,
            ceil_mode: c.ceil_mode,
            count_include_pad: true,
        });
        self.push(node, op, vec![x.name], vec![], Map, None)
    }

    /// ONNX `AveragePool2d`.
    pub(super) fn import_average_pool2d(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::AveragePool2d(p) = node else {
            unreachable!("the table sends only AveragePool2d here")
        };
        let x = self.data(node, 0, &[Map])?;
        let c = &p.config;
        pool_checks(node, c.dilation, &c.auto_pad)?;
        let op = Op::AvgPool(Pool2d {
            kernel: c.kernel_size,
            stride: c.strides,
            padding: symmetric(node, &c.padding)?,
            ceil_mode: c.ceil_mode
                || OriginalNames::rank(node)
                    .is_some_and(|k| self.avgpool_ceil.get(k).copied().unwrap_or(false)),
            count_include_pad: c.count_include_pad,
        });
        self.push(node, op, vec![x.name], vec![], Map, None)
    }

    /// ONNX `ReduceMean`.
    pub(super) fn import_spatial_reduce(&mut self, node: &Node) -> Result<(), OnnxError> {
        use onnx_ir::node::reduce::ReduceAxes;
        let (r, max) = match node {
            Node::ReduceMax(r) => (&r.config, true),
            Node::ReduceMean(r) => (&r.config, false),
            _ => unreachable!("matched above"),
        };
        let mut axes = match &r.axes {
            ReduceAxes::Static(a) => a.clone(),
            ReduceAxes::Runtime(_) => {
                return Err(unsupported(
                    node,
                    "its axes are computed at run time".into(),
                ));
            }
        };
        axes.sort_unstable();
        let tokens = node
            .inputs()
            .first()
            .and_then(|a| self.values.get(&a.name))
            .is_some_and(|v| v.layout == Layout::Tokens);
        if tokens && !max && axes == [1] && !r.keepdims {
            return self.token_pool(node, shears_core::ops::TokenPoolMode::Mean);
        }
        let nhwc = node
            .inputs()
            .first()
            .and_then(|a| self.values.get(&a.name))
            .is_some_and(|v| v.layout == Layout::Nhwc);
        // timm's channels-last heads pool `x.mean((1, 2))`.
        if nhwc && axes == [1, 2] && !r.keepdims {
            let x = self.data(node, 0, &[Layout::Nhwc])?;
            let op = if max {
                Op::GlobalMaxPool(GlobalPool { keep_dims: false })
            } else {
                Op::GlobalAvgPool(GlobalPool { keep_dims: false })
            };
            return self.push(node, op, vec![x.name], vec![], Layout::Vector, None);
        }
        if axes != [2, 3] {
            return Err(unsupported(
                node,
                format!(
                    "{} over axes {axes:?} is not supported: only over the spatial \
                     axes [2, 3] of a feature map (a global pool)",
                    node.node_type()
                ),
            ));
        }
        self.global_pool(node, r.keepdims, max)
    }

    /// ONNX `Pad`.
    pub(super) fn import_pad(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::Pad(pd) = node else {
            unreachable!("the table sends only Pad here")
        };
        use onnx_ir::node::pad::{ConstantValueInput, PadInput, PadMode};
        let x = self.data(node, 0, &[Map, Nhwc, Rolled])?;
        let cfg = &pd.config;
        let zero = matches!(cfg.constant_value, ConstantValueInput::Static(v) if v == 0.0);
        // Pads known before run time, or computed from shapes by the exporter (timm's
        // TensorFlow-style "same" padding): ONNX order, all begins then all ends.
        let pairs: Option<Vec<(usize, usize)>> = match &cfg.pads {
            PadInput::Static(p) => Some(p.clone()),
            PadInput::Runtime { input, axes: None } => node
                .inputs()
                .get(input.input_index)
                .and_then(|a| self.symbolic(a))
                .filter(|v| v.len() == 8)
                .and_then(|v| {
                    let v: Option<Vec<usize>> = v
                        .into_iter()
                        .map(|d| d.and_then(|d| usize::try_from(d).ok()))
                        .collect();
                    v.map(|v| (0..4).map(|k| (v[k], v[k + 4])).collect())
                }),
            PadInput::Runtime { .. } => None,
        };
        let pads = match (x.layout, pairs.as_deref()) {
            (Map, Some([(0, 0), (0, 0), h, w])) | (Nhwc | Rolled, Some([(0, 0), h, w, (0, 0)])) => {
                Some([h.0, w.0, h.1, w.1])
            }
            _ => None,
        };
        match (cfg.mode == PadMode::Constant && zero, pads) {
            // Swin pads to even sizes and whole windows with pads computed at run time, zero
            // where the map already fits.
            (true, Some([0, 0, 0, 0])) => {
                self.keep_geo(node);
                self.bind(node, x)
            }
            // timm rolls before it pads; the IR's window attention pads first, as torchvision
            // does, which is another function once the padding is not empty.
            (_, _) if x.layout == Rolled => Err(unsupported(
                node,
                "padding a rolled map (timm's Swin on a map that is not whole windows) is not \
                 supported; export at a size whose stages are whole windows"
                    .into(),
            )),
            (true, Some(pads)) => self.push(
                node,
                Op::Pad(Pad2d { pads }),
                vec![x.name],
                vec![],
                x.layout,
                None,
            ),
            _ => Err(unsupported(
                node,
                format!(
                    "only zero padding of the spatial axes, known before run time, is \
                     supported (mode {:?}, pads {:?})",
                    cfg.mode, cfg.pads
                ),
            )),
        }
    }

    /// ONNX `Flatten`.
    pub(super) fn import_flatten(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Node::Flatten(f) = node else {
            unreachable!("the table sends only Flatten here")
        };
        if f.config.axis != 1 {
            return Err(unsupported(
                node,
                format!(
                    "Flatten on axis {} is not supported: only axis 1 (keep the batch axis)",
                    f.config.axis
                ),
            ));
        }
        self.flatten(node)
    }

    /// The last step of a channel shuffle: the swapped blocks merged back into C.
    /// The last step of a group norm: the normalised blocks back to [N, C, H, W].
    /// The first step of a group norm: [N, C, H, W] as [N, G, C/G * H * W].
    /// The first step of a channel shuffle: [N, C, H, W] as [N, g, C/g, H, W].
    /// A reshape to [N, -1] (or [N, C*H*W]) is a flatten; anything else is not.
    /// With a dynamic batch axis the target shape is computed at run time (a folded
    /// Shape chain), and the output's rank 2 is what says "flatten".
    pub(super) fn import_reshape(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::Reshape(r) = node else {
            unreachable!("the table sends only Reshape here")
        };
        let input = input_name(node, 0);
        let target = self.reshape_target(node, &r.config);
        if let Some((x, groups, true)) = self.shuffles.get(&input).cloned() {
            let c = self.channels(&x) as i64;
            let back = target
                .as_ref()
                .is_some_and(|t| t.len() == 4 && matches!(t[1], Some(d) if d == c || d == -1));
            if !back {
                return Err(unsupported(
                    node,
                    format!(
                        "a reshape of swapped channel blocks to {target:?} is not a channel shuffle"
                    ),
                ));
            }
            let op = Op::ChannelShuffle(ChannelShuffle { groups });
            return self.push(node, op, vec![x.name], vec![], Map, None);
        }
        if let Some(GroupNormStep::Normalised {
            x,
            groups,
            eps,
            scale,
            shift,
        }) = self.group_norms.get(&input).cloned()
        {
            let c = self.channels(&x);
            let back = target
                .as_ref()
                .is_some_and(|t| t.len() == 4 && matches!(t[1], Some(d) if d == c as i64));
            if !back {
                return Err(unsupported(
                    node,
                    format!(
                        "a reshape of instance-normalised groups to {target:?} is not a group norm"
                    ),
                ));
            }
            let per = c / groups;
            let repeat = |v: &[f32]| -> ArrayD<f32> {
                ArrayD::from_shape_fn(IxDyn(&[c]), |i| v[i[0] / per])
            };
            let op = Op::GroupNorm(GroupNorm {
                channels: c,
                groups,
                eps,
            });
            let params = vec![("weight", repeat(&scale)), ("bias", repeat(&shift))];
            return self.push(node, op, vec![x.name], params, Map, None);
        }
        let x = self.data(node, 0, &[Map, Vector, Pooled])?;
        if x.layout == Map
            && let Some(t) = target.as_ref().filter(|t| t.len() == 3)
        {
            let c = self.channels(&x) as i64;
            let rest_ok = matches!(t[2], Some(-1)) || t[2].is_some();
            if let Some(g) = t[1].filter(|&g| g > 0 && c % g == 0 && rest_ok) {
                let out = output_name(node, 0);
                self.group_norms.insert(
                    out,
                    GroupNormStep::Grouped {
                        x,
                        groups: g as usize,
                    },
                );
                return Ok(());
            }
        }
        if x.layout == Map
            && let Some(t) = target.as_ref().filter(|t| t.len() == 5)
        {
            let s = self.shapes[&x.name].clone();
            let (c, h, w) = (s[0] as i64, s[1] as i64, s[2] as i64);
            let groups = match (t[1], t[2]) {
                (Some(g), Some(per)) if g > 0 && (per == -1 || g * per == c) => g,
                (Some(g), None) if g > 0 => g,
                _ => 0,
            };
            let spatial =
                [t[3], t[4]] == [Some(h), Some(w)] || [t[3], t[4]].iter().any(|d| *d == Some(-1));
            if groups > 0 && c % groups == 0 && spatial {
                let out = output_name(node, 0);
                self.shuffles.insert(out, (x, groups as usize, false));
                return Ok(());
            }
        }
        let out_rank = node.outputs().first().map(|o| o.ty.rank());
        let features: i64 = self.shapes[&x.name].iter().product::<usize>() as i64;
        let is_flatten = match (&r.config.shape, out_rank) {
            (onnx_ir::node::reshape::ReshapeInput::Runtime(_), Some(2)) => true,
            // `x.view(x.size(0), C * H * W)` traced at a fixed batch writes that batch as a
            // literal: the feature count says it is a flatten all the same.
            (onnx_ir::node::reshape::ReshapeInput::Static(s), _) => {
                s.len() == 2 && (s[1] == -1 || s[0] == -1 || s[0] == 0 || s[1] == features)
            }
            _ => false,
        };
        if !is_flatten {
            return Err(unsupported(
                node,
                format!(
                    "only a reshape to [batch, features] (a flatten) or a channel shuffle's \
                     [N, g, C/g, H, W] is supported; its input is {} and its target {target:?}",
                    layout_text(x.layout)
                ),
            ));
        }
        self.flatten(node)
    }

    /// A stored matrix transposed in the graph (PyTorch's Linear on a channels-last
    /// map exports MatMul(x, Transpose(W))): folded here, read by that MatMul.
    pub(super) fn import_transposed_matrix(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Node::Transpose(t) = node else {
            unreachable!("the table sends only Transpose here")
        };
        let (wname, w) = constant(node, 0, "matrix")?;
        if w.ndim() != 2 || t.config.perm != [1, 0] {
            return Err(unsupported(
                node,
                "only a stored matrix's transpose is supported".into(),
            ));
        }
        let out = output_name(node, 0);
        self.folded.insert(out, (wname, w.t().to_owned()));
        Ok(())
    }

    /// ONNX `Transpose`.
    pub(super) fn import_transpose_of_map(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::Transpose(t) = node else {
            unreachable!("the table sends only Transpose here")
        };
        let input = input_name(node, 0);
        let to = match t.config.perm.as_slice() {
            [0, 2, 3, 1] => Some((Map, Nhwc)),
            [0, 3, 1, 2] => Some((Nhwc, Map)),
            _ => None,
        };
        if let Some((from, to)) = to
            && self.values.get(&input).is_some_and(|v| v.layout == from)
        {
            let x = self.data(node, 0, &[from])?;
            return self.bind(
                node,
                Value {
                    name: x.name,
                    layout: to,
                },
            );
        }
        match self.shuffles.get(&input).cloned() {
            Some((x, groups, false)) if t.config.perm == [0, 2, 1, 3, 4] => {
                let out = output_name(node, 0);
                self.shuffles.insert(out, (x, groups, true));
                Ok(())
            }
            _ => Err(unsupported(
                node,
                format!(
                    "Transpose {:?} is supported only between channels-first and \
                     channels-last maps (perm [0, 2, 3, 1] and [0, 3, 1, 2]) and as a \
                     channel shuffle's swap of its blocks (perm [0, 2, 1, 3, 4] after a \
                     reshape to [N, g, C/g, H, W])",
                    t.config.perm
                ),
            )),
        }
    }

    /// ONNX `Slice`.
    pub(super) fn import_slice(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Node::Slice(sl) = node else {
            unreachable!("the table sends only Slice here")
        };
        let cfg = sl.config.clone();
        self.slice(node, &cfg)
    }

    /// ONNX `Split`.
    pub(super) fn import_split(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Node::Split(sp) = node else {
            unreachable!("the table sends only Split here")
        };
        let cfg = sp.config.clone();
        self.split(node, &cfg)
    }

    /// ONNX `Linear`.
    pub(super) fn import_linear(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::Linear(l) = node else {
            unreachable!("the table sends only Linear here")
        };
        let x = self.data(
            node,
            0,
            &[
                Vector, Pooled, Nhwc, NhwcRows, Tokens, TokensTnc, TokenRows, Windows,
            ],
        )?;
        let (wname, w) = constant(node, 1, "weight")?;
        let bias = optional_constant(node, 2, "bias")?;
        let w = if l.config.transpose_weight {
            w
        } else {
            w.t().to_owned()
        };
        if matches!(x.layout, Nhwc | NhwcRows | Windows) {
            return self.pointwise_conv(node, x, w, bias.map(|b| b.1), &wname);
        }
        self.linear(node, x, w, bias.map(|b| b.1), &wname, 1.0, 1.0)
    }

    /// ONNX `LayerNormalization`.
    pub(super) fn import_layer_normalization(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::LayerNormalization(ln) = node else {
            unreachable!("the table sends only LayerNormalization here")
        };
        let x = self.data(node, 0, &[Nhwc, NhwcRows, Vector, Tokens])?;
        if !matches!(ln.config.axis, -1)
            && !(x.layout == Tokens && ln.config.axis == 2)
            && !(x.layout == Vector && ln.config.axis == 1)
            && !(x.layout == Nhwc && ln.config.axis == 3)
            && !(x.layout == NhwcRows && ln.config.axis == 2)
        {
            return Err(unsupported(
                node,
                format!(
                    "LayerNormalization from axis {} is not supported: only over the \
                     channels (the last axis of a channels-last map or of a vector)",
                    ln.config.axis
                ),
            ));
        }
        let (wname, scale) = constant(node, 1, "scale")?;
        let shift = optional_constant(node, 2, "bias")?
            .map(|b| b.1)
            .unwrap_or_else(|| ArrayD::zeros(scale.raw_dim()));
        let channels = scale.len();
        let flat = |a: ArrayD<f32>| a.into_shape_with_order(IxDyn(&[channels]));
        let (scale, shift) = match (flat(scale), flat(shift)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                return Err(unsupported(
                    node,
                    "its scale and bias are not per-channel vectors".into(),
                ));
            }
        };
        let op = Op::LayerNorm(LayerNorm {
            channels,
            eps: f32_decimal(ln.config.epsilon),
        });
        let layout = x.layout;
        self.push(
            node,
            op,
            vec![x.name],
            vec![("weight", scale), ("bias", shift)],
            layout,
            Some(&wname),
        )
    }

    /// ONNX `InstanceNormalization`.
    pub(super) fn import_instance_normalization(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Node::InstanceNormalization(inorm) = node else {
            unreachable!("the table sends only InstanceNormalization here")
        };
        let input = input_name(node, 0);
        let Some(GroupNormStep::Grouped { x, groups }) = self.group_norms.get(&input).cloned()
        else {
            return Err(unsupported(
                node,
                "InstanceNormalization is supported only as the middle of a group norm \
                 (after a reshape of a map to [N, groups, -1])"
                    .into(),
            ));
        };
        let (_, scale) = constant(node, 1, "scale")?;
        let (_, shift) = constant(node, 2, "bias")?;
        if scale.len() != groups || shift.len() != groups {
            return Err(unsupported(
                node,
                format!("its scale and bias are not {groups} per-group values"),
            ));
        }
        let out = output_name(node, 0);
        self.group_norms.insert(
            out,
            GroupNormStep::Normalised {
                x,
                groups,
                eps: f32_decimal(inorm.config.epsilon),
                scale: scale.iter().copied().collect(),
                shift: shift.iter().copied().collect(),
            },
        );
        Ok(())
    }

    /// onnx-ir gives the spatial scales alone; the file has [1, 1, s_h, s_w].
    pub(super) fn import_resize(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::Resize(r) = node else {
            unreachable!("the table sends only Resize here")
        };
        use onnx_ir::node::resize::{
            CoordinateTransformMode as Ct, NearestMode, ResizeMode as Rm, ResizeScales, ResizeSizes,
        };
        let x = self.data(node, 0, &[Map])?;
        let s = self.shapes[&x.name].clone();
        let cfg = &r.config;
        let floats = |k: usize| {
            node.inputs()
                .get(k)
                .and_then(|a| a.value()?.to_f32_vec().ok())
        };
        let factors: Option<Vec<f64>> = match (&cfg.scales, &cfg.sizes) {
            (Some(ResizeScales::Static(v)), _) => Some(v.iter().map(|&f| f as f64).collect()),
            (Some(ResizeScales::Runtime(rt)), _) => {
                floats(rt.input_index).map(|v| v.into_iter().map(|f| f as f64).collect())
            }
            (_, Some(ResizeSizes::Static(v))) if v.len() == 4 => Some(vec![
                1.0,
                1.0,
                v[2] as f64 / s[1] as f64,
                v[3] as f64 / s[2] as f64,
            ]),
            (_, Some(ResizeSizes::Runtime(rt))) => node
                .inputs()
                .get(rt.input_index)
                .and_then(|a| self.symbolic(a))
                .filter(|v| v.len() == 4)
                .and_then(|v| {
                    Some(vec![
                        1.0,
                        1.0,
                        v[2]? as f64 / s[1] as f64,
                        v[3]? as f64 / s[2] as f64,
                    ])
                }),
            _ => None,
        };
        let spatial = match factors.as_deref() {
            Some([1.0, 1.0, h, w]) | Some([h, w]) => Some([*h, *w]),
            _ => None,
        };
        let scale = match spatial {
            Some([h, w]) if h.fract() == 0.0 && w.fract() == 0.0 && h >= 1.0 && w >= 1.0 => {
                [h as usize, w as usize]
            }
            _ => {
                return Err(unsupported(
                    node,
                    format!(
                        "only an upsampling of the spatial axes by integer factors known before \
                         run time is supported, not scales {factors:?}"
                    ),
                ));
            }
        };
        let mode = match (
            &cfg.mode,
            &cfg.coordinate_transformation_mode,
            &cfg.nearest_mode,
        ) {
            (Rm::Nearest, Ct::Asymmetric, NearestMode::Floor) => ResizeMode::Nearest,
            (Rm::Linear, Ct::HalfPixel | Ct::PytorchHalfPixel, _) => ResizeMode::Bilinear,
            (m, ct, nm) => {
                return Err(unsupported(
                    node,
                    format!(
                        "Resize {m:?} with {ct:?} coordinates ({nm:?}) is not supported: only \
                         nearest (asymmetric, floor) and linear (half_pixel), as PyTorch exports \
                         nearest and bilinear upsampling without align_corners"
                    ),
                ));
            }
        };
        self.push(
            node,
            Op::Resize(Resize { scale, mode }),
            vec![x.name],
            vec![],
            Map,
            None,
        )
    }

    /// ONNX `Gemm`.
    pub(super) fn import_gemm(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::Gemm(g) = node else {
            unreachable!("the table sends only Gemm here")
        };
        let x = self.data(node, 0, &[Vector, Pooled, TokenRows])?;
        let c = &g.config;
        if c.trans_a != 0 {
            return Err(unsupported(
                node,
                "Gemm with transA = 1 is not supported".into(),
            ));
        }
        let (wname, w) = constant(node, 1, "B")?;
        let bias = optional_constant(node, 2, "C")?;
        let w = if c.trans_b != 0 { w } else { w.t().to_owned() };
        self.linear(node, x, w, bias.map(|b| b.1), &wname, c.alpha, c.beta)
    }

    /// ONNX `Add`.
    pub(super) fn import_add_constant(&mut self, node: &Node) -> Result<(), OnnxError> {
        self.constant_arithmetic(node)
    }

    /// ONNX `Add`.
    pub(super) fn import_add_of_values(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let n = node.inputs().len();
        if node.inputs().iter().any(|a| a.is_constant()) {
            return Err(unsupported(
                node,
                "a Sum with a constant is not supported".into(),
            ));
        }
        let xs: Vec<Value> = (0..n)
            .map(|k| self.data(node, k, &[Map, Vector, Nhwc, NhwcRows, Tokens]))
            .collect::<Result<_, _>>()?;
        if n < 2 {
            return self.bind(node, xs[0].clone());
        }
        let layout = xs[0].layout;
        self.push(
            node,
            Op::Add,
            xs.into_iter().map(|v| v.name).collect(),
            vec![],
            layout,
            None,
        )
    }

    /// ONNX `Concat`.
    pub(super) fn import_concat(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let Node::Concat(c) = node else {
            unreachable!("the table sends only Concat here")
        };
        let xs: Vec<Value> = (0..node.inputs().len())
            .map(|k| self.data(node, k, &[Map, Vector, Nhwc]))
            .collect::<Result<_, _>>()?;
        let nhwc = xs.iter().all(|x| x.layout == Nhwc);
        if xs.iter().any(|x| x.layout == Nhwc) && !nhwc {
            return Err(unsupported(
                node,
                "a Concat of channels-last and channels-first values".into(),
            ));
        }
        // The channel axis: 1 of NCHW, the last of NHWC (Swin's patch merging).
        let channel_axis = if nhwc {
            c.config.axis == 3
        } else {
            c.config.axis == 1
        };
        if !channel_axis {
            return Err(unsupported(
                node,
                format!(
                    "Concat on axis {} is not supported: only the channel axis (1, or the last \
                     of a channels-last map)",
                    c.config.axis
                ),
            ));
        }
        if xs.len() < 2 {
            return self.bind(node, xs[0].clone());
        }
        let layout = xs[0].layout;
        self.push(
            node,
            Op::Concat,
            xs.into_iter().map(|v| v.name).collect(),
            vec![],
            layout,
            None,
        )
    }

    /// Identity at inference: the value passes through.
    pub(super) fn import_identity(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        let x = self.data(node, 0, &[Map, Vector, Pooled, Tokens])?;
        self.bind(node, x)
    }
}
