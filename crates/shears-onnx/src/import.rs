//! ONNX import: a CNN exported from PyTorch or elsewhere becomes a graph of the IR with its
//! weights. `onnx-ir` parses the file, infers static shapes and folds the constant chains a
//! PyTorch export leaves around a flatten (Shape → Gather → Unsqueeze → Concat → Reshape); this
//! module maps each remaining node to an op of the IR, or stops with an error naming the node.
//! Nothing is half-imported: the model is returned only once every node mapped and it checks.

use shears_core::ops::{BatchNorm, Conv2d, Linear};
use crate::OnnxError;
use ndarray::{ArrayD, IxDyn};
use onnx_ir::node::padding::{AutoPad, PaddingConfig2d};
use onnx_ir::{Argument, Message, ModelProto, Node, OnnxGraphBuilder, TensorDataExt};
use shears_core::artifact::Model;
use shears_core::graph::{Graph, Input, Node as IrNode, Op};
use shears_core::ops::{
    Activation, ChannelAffine, ChannelShuffle, ChannelSlice, GlobalPool, GroupNorm, LayerNorm,
    Pad2d, Pool2d, Resize, ResizeMode,
};
use shears_core::weights::{Masks, Weights};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The ONNX operators the importer maps, for error messages.
pub const SUPPORTED_OPS: &str = "Conv, BatchNormalization, Relu, Clip, Sigmoid, HardSigmoid, \
HardSwish, LeakyRelu, Tanh, Gelu (also as Div -> Erf -> Add -> Mul -> Mul), SiLU (as x * Sigmoid(x)), \
MaxPool, AveragePool (both with ceil_mode), GlobalAveragePool, ReduceMean over the spatial axes, \
Flatten, Reshape (as flatten), Gemm, MatMul (+ Add), Add, Sum, Mul (of two computed values, a \
[N,C,1,1] one broadcast), Concat, Slice and Split (channel axis), channel shuffle (Reshape -> \
Transpose -> Reshape), LayerNormalization over channels and MatMul on channels (a channels-last \
map between Transposes, as ConvNeXt), Mul/Add/Sub/Div by a per-channel or scalar constant, \
group norm (Reshape -> InstanceNormalization -> Reshape), Resize (integer upsampling, nearest or \
bilinear), Pad (zeros; a Conv's asymmetric pads become one), ReduceMax and GlobalMaxPool over the \
spatial axes, Identity, Dropout";

/// Reads an ONNX file into a model (graph, weights, no masks), named after the file.
pub fn import_onnx(path: &Path) -> Result<Model, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "onnx".into());
    import_onnx_bytes(&bytes, &name).map_err(|e| e.in_file(path))
}

/// Imports an ONNX model from its bytes; `name` becomes the graph's name.
pub fn import_onnx_bytes(bytes: &[u8], name: &str) -> Result<Model, OnnxError> {
    let (bytes, avgpool_ceil) = strip_avgpool_ceil_mode(bytes)?;
    let bytes = bytes.as_slice();
    // onnx-ir asserts on some malformed inputs instead of returning an error: a corrupt file
    // must still give an error, never a panic.
    let parsed = std::panic::catch_unwind(|| OnnxGraphBuilder::new().parse_bytes(bytes));
    let onnx = match parsed {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return Err(OnnxError::Parse(e.to_string())),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the parser stopped".into());
            return Err(OnnxError::Parse(msg));
        }
    };

    // onnx-ir renames every node and value (`conv2d3`, `constant12_out1`); the file's own names
    // (PyTorch's module paths) come back from the raw protobuf: weights by their content, nodes
    // by their rank among the nodes of their type.
    let proto = ModelProto::parse_from_bytes(bytes).map_err(|e| OnnxError::Parse(e.to_string()))?;
    let mut im = Importer {
        original: OriginalNames::new(&proto),
        readers: reader_kinds(&onnx.nodes),
        avgpool_ceil,
        ..Importer::default()
    };
    let input = im.input(&onnx.inputs)?;
    im.shapes.insert(input.name.clone(), input.shape.clone());
    for node in &onnx.nodes {
        im.node(node)?;
    }
    let [out] = onnx.outputs.as_slice() else {
        return Err(OnnxError::Model(format!(
            "the graph has {} outputs; shears imports networks with one output (the logits)",
            onnx.outputs.len()
        )));
    };
    let output = im.value(&out.name, "the graph output")?;
    if let Some((value, stage)) = im.pending.iter().find(|(v, _)| **v == out.name) {
        return Err(OnnxError::Model(format!(
            "the graph output `{value}` is a partial GELU pattern (after its {stage:?} step)"
        )));
    }
    fuse_silu(&mut im.nodes, &output.name);
    fold_affines(&mut im.nodes, &mut im.weights, &output.name);
    if output.name == input.name {
        return Err(OnnxError::Model("the graph output is its input".into()));
    }
    let model = Model {
        graph: Graph {
            name: name.to_string(),
            input,
            nodes: im.nodes,
            output: output.name,
        },
        weights: im.weights,
        masks: Masks::new(),
    };
    model.graph.validate()?;
    model.check()?;
    Ok(model)
}

/// What an ONNX value is in the IR: the IR value it maps to and the layout it has there.
#[derive(Debug, Clone)]
struct Value {
    name: String,
    layout: Layout,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// `[N, C, H, W]` in ONNX, `[C, H, W]` in the IR.
    Map,
    /// `[N, F]` in both (up to the batch axis).
    Vector,
    /// `[N, C, 1, 1]` in ONNX (a global average pool's output), `[C]` in the IR: only a flatten
    /// may read it, and that flatten is then a no-op.
    Pooled,
    /// `[N, H, W, C]` in ONNX (a map transposed channels-last, as ConvNeXt's blocks are), the
    /// same `[C, H, W]` value in the IR: per-channel ops on it (LayerNorm over the last axis, a
    /// Linear on channels, activations, constants) map to the IR's channel ops on the map.
    Nhwc,
}

/// The names an ONNX file gave its weights and nodes.
#[derive(Default)]
struct OriginalNames {
    /// Initializer name by the bytes of its data; `None` where two initializers share the bytes.
    weights: HashMap<Vec<u8>, Option<String>>,
    /// Node names by op type, in file order.
    nodes: HashMap<String, Vec<String>>,
}

impl OriginalNames {
    fn new(proto: &ModelProto) -> Self {
        let mut names = OriginalNames::default();
        let Some(graph) = proto.graph.as_ref() else {
            return names;
        };
        for t in &graph.initializer {
            if t.raw_data.is_empty() {
                continue;
            }
            names
                .weights
                .entry(t.raw_data.to_vec())
                .and_modify(|n| *n = None)
                .or_insert_with(|| Some(t.name.clone()));
        }
        for n in &graph.node {
            names
                .nodes
                .entry(n.op_type.clone())
                .or_default()
                .push(n.name.clone());
        }
        names
    }

    /// The rank of `node` among the file's nodes of its type (onnx-ir names the k-th `relu{k}`).
    fn rank(node: &Node) -> Option<usize> {
        let ty = node.node_type().to_string();
        node.name()
            .strip_prefix(ty.to_lowercase().as_str())
            .and_then(|k| k.parse::<usize>().ok())
            .and_then(|k| k.checked_sub(1))
    }

    /// The file's name of the node onnx-ir calls `node` (`softmax2` is the file's second Softmax).
    fn node(&self, node: &Node) -> String {
        let renamed = node.name();
        let ty = node.node_type().to_string();
        let op_type = ty
            .trim_end_matches("1d")
            .trim_end_matches("2d")
            .trim_end_matches("3d");
        let rank: Option<usize> = renamed
            .strip_prefix(ty.to_lowercase().as_str())
            .and_then(|k| k.parse().ok());
        rank.and_then(|k| self.nodes.get(op_type)?.get(k.checked_sub(1)?))
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| renamed.to_string())
    }

    /// The file's name of a stored tensor with these values, when it is unambiguous.
    fn weight(&self, values: &[f32]) -> Option<String> {
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.weights.get(&bytes).cloned().flatten()
    }
}

#[derive(Default)]
struct Importer {
    original: OriginalNames,
    /// The op types that read each ONNX value (decides whether a global pool stays a map).
    readers: HashMap<String, Vec<String>>,
    /// Values that are a step of the GELU pattern exporters write for opsets before 20,
    /// with the step reached and the value the GELU is of.
    pending: HashMap<String, (GeluStep, Value)>,
    /// Whether each AveragePool of the file (in file order) has `ceil_mode = 1`.
    avgpool_ceil: Vec<bool>,
    /// Per-sample shape of every IR value made so far.
    shapes: HashMap<String, Vec<usize>>,
    /// Integer values of shape computations (`None` where unknown before run time: the batch).
    shape_values: HashMap<String, Vec<Option<i64>>>,
    /// The steps of a channel shuffle seen so far: the value reshaped into `groups` blocks,
    /// then (`true`) its two block axes swapped.
    shuffles: HashMap<String, (Value, usize, bool)>,
    /// The steps of a group norm seen so far, by the value each produced.
    group_norms: HashMap<String, GroupNormStep>,
    /// Stored matrices the graph transposes, by the transposed value's name (with the name of
    /// the stored tensor).
    folded: HashMap<String, (String, ArrayD<f32>)>,
    values: HashMap<String, Value>,
    nodes: Vec<IrNode>,
    weights: Weights,
    names: HashSet<String>,
}

impl Importer {
    /// The one non-constant graph input, with a static per-sample shape.
    fn input(&mut self, inputs: &[Argument]) -> Result<Input, OnnxError> {
        let live: Vec<&Argument> = inputs.iter().filter(|a| !a.is_constant()).collect();
        let [arg] = live.as_slice() else {
            return Err(OnnxError::Model(format!(
                "the graph has {} inputs; shears imports networks with one input",
                live.len()
            )));
        };
        let dims = arg.ty.static_shape().cloned().unwrap_or_default();
        let rank = arg.ty.rank();
        if !(rank == 4 || rank == 2) {
            return Err(OnnxError::Model(format!(
                "input `{}` has rank {rank}; shears imports [N, C, H, W] images or [N, F] vectors",
                arg.name
            )));
        }
        let per_sample: Option<Vec<usize>> = if dims.len() == rank {
            dims[1..].iter().copied().collect()
        } else {
            None
        };
        let Some(shape) = per_sample else {
            return Err(OnnxError::Model(format!(
                "input `{}` has dynamic sizes {}: shears needs static channel and spatial sizes \
                 (only the batch axis may be dynamic); export with a fixed input size",
                arg.name,
                show_dims(&dims, rank)
            )));
        };
        let name = self.fresh("input");
        self.values.insert(
            arg.name.clone(),
            Value {
                name: name.clone(),
                layout: if rank == 4 {
                    Layout::Map
                } else {
                    Layout::Vector
                },
            },
        );
        Ok(Input { name, shape })
    }

    fn value(&self, onnx_name: &str, what: &str) -> Result<Value, OnnxError> {
        self.values.get(onnx_name).cloned().ok_or_else(|| {
            OnnxError::Model(format!(
                "{what} reads `{onnx_name}`, which no supported node produces"
            ))
        })
    }

    /// A unique IR name from a candidate.
    fn fresh(&mut self, candidate: &str) -> String {
        // `.` separates a node's name from its parameter's suffix; PyTorch paths use `_` here.
        let candidate = candidate.replace('.', "_");
        let base = if candidate.is_empty() {
            "node"
        } else {
            candidate.as_str()
        };
        let mut name = base.to_string();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Adds an IR node for ONNX node `node`, named after its weight (PyTorch's module path, e.g.
    /// `layer1.0.conv1` → `layer1_0_conv1`) when it has one, else after the ONNX node name.
    fn push(
        &mut self,
        node: &Node,
        op: Op,
        inputs: Vec<String>,
        params: Vec<(&str, ArrayD<f32>)>,
        layout: Layout,
        weight_name: Option<&str>,
    ) -> Result<(), OnnxError> {
        self.push_at(node, 0, op, inputs, params, layout, weight_name)
    }

    /// [`Importer::push`] for output `out` of a node with several (a Split's).
    #[allow(clippy::too_many_arguments)]
    fn push_at(
        &mut self,
        node: &Node,
        out: usize,
        op: Op,
        inputs: Vec<String>,
        params: Vec<(&str, ArrayD<f32>)>,
        layout: Layout,
        weight_name: Option<&str>,
    ) -> Result<(), OnnxError> {
        // The weight's own name in the file, found by its values (onnx-ir renamed it).
        let from_weight = weight_name.and_then(|_| {
            let first = params.first()?.1.iter().copied().collect::<Vec<f32>>();
            self.original.weight(&first)
        });
        let candidate = from_weight
            .as_deref()
            .and_then(|w| w.strip_suffix(".weight"))
            .map(str::to_string)
            .unwrap_or_else(|| clean_name(&self.original.node(node)));
        let name = self.fresh(&candidate);
        let specs = op.param_specs(&name);
        for ((suffix, array), spec) in params.into_iter().zip(&specs) {
            debug_assert!(spec.name.ends_with(suffix));
            if array.shape() != spec.shape.as_slice() {
                return Err(unsupported(
                    node,
                    format!(
                        "its `{suffix}` has shape {:?} where {:?} was expected",
                        array.shape(),
                        spec.shape
                    ),
                ));
            }
            self.weights.insert(spec.name.clone(), array);
        }
        let ir = IrNode {
            name: name.clone(),
            op,
            inputs,
        };
        let ins: Vec<&Vec<usize>> = ir.inputs.iter().map(|v| &self.shapes[v]).collect();
        let shape = shears_core::shape::node_shape(&ir, &ins)
            .map_err(|e| unsupported(node, e.to_string()))?;
        self.shapes.insert(name.clone(), shape);
        self.nodes.push(ir);
        self.bind_at(node, out, Value { name, layout })
    }

    /// Adds an IR node that no ONNX output names (a Pad split off a convolution), named from
    /// `base`; returns its IR name.
    fn push_internal(
        &mut self,
        node: &Node,
        base: &str,
        op: Op,
        inputs: Vec<String>,
    ) -> Result<String, OnnxError> {
        let name = self.fresh(base);
        let ir = IrNode {
            name: name.clone(),
            op,
            inputs,
        };
        let ins: Vec<&Vec<usize>> = ir.inputs.iter().map(|v| &self.shapes[v]).collect();
        let shape = shears_core::shape::node_shape(&ir, &ins)
            .map_err(|e| unsupported(node, e.to_string()))?;
        self.shapes.insert(name.clone(), shape);
        self.nodes.push(ir);
        Ok(name)
    }

    /// The node's (first) output is the IR value `v`.
    fn bind(&mut self, node: &Node, v: Value) -> Result<(), OnnxError> {
        self.bind_at(node, 0, v)
    }

    /// The node's output `k` is the IR value `v`.
    fn bind_at(&mut self, node: &Node, k: usize, v: Value) -> Result<(), OnnxError> {
        let out = node
            .outputs()
            .get(k)
            .ok_or_else(|| unsupported(node, format!("it has no output {k}")))?;
        self.values.insert(out.name.clone(), v);
        Ok(())
    }

    /// The per-sample channels of an imported value.
    fn channels(&self, v: &Value) -> usize {
        self.shapes.get(&v.name).and_then(|s| s.first().copied()).unwrap_or(0)
    }

    /// Records the value a shape-computing node produces, where it is known: `Shape` of an
    /// imported value (the batch unknown), and Gather, Unsqueeze, Squeeze, Cast, Concat and
    /// integer arithmetic over those and constants. Reshapes and slices read these to find
    /// their static targets when the exporter computed them at run time.
    fn eval_shape_node(&mut self, node: &Node) {
        let ins = node.inputs();
        let sym = |k: usize| ins.get(k).and_then(|a| self.symbolic(a));
        let result: Option<Vec<Option<i64>>> = match node {
            Node::Shape(_) => ins.first().and_then(|a| {
                let v = self.values.get(&a.name)?;
                let s = self.shapes.get(&v.name)?;
                let mut dims = vec![None];
                match v.layout {
                    Layout::Pooled => dims.extend([Some(s[0] as i64), Some(1), Some(1)]),
                    Layout::Map | Layout::Vector => dims.extend(s.iter().map(|&d| Some(d as i64))),
                    Layout::Nhwc => dims.extend([s[1], s[2], s[0]].iter().map(|&d| Some(d as i64))),
                }
                Some(dims)
            }),
            Node::Gather(_) => {
                let (data, idx) = (sym(0), sym(1));
                match (data, idx.as_deref()) {
                    (Some(d), Some([Some(i)])) => {
                        let i = if *i < 0 { *i + d.len() as i64 } else { *i };
                        usize::try_from(i).ok().and_then(|i| d.get(i).copied()).map(|x| vec![x])
                    }
                    _ => None,
                }
            }
            Node::Unsqueeze(_) | Node::Squeeze(_) | Node::Cast(_) => sym(0),
            Node::Concat(_) => (0..ins.len())
                .map(sym)
                .collect::<Option<Vec<_>>>()
                .map(|parts| parts.concat()),
            Node::Div(_) | Node::Mul(_) | Node::Add(_) | Node::Sub(_) => {
                match (sym(0), sym(1)) {
                    (Some(a), Some(b)) if a.len() == b.len() || b.len() == 1 || a.len() == 1 => {
                        let n = a.len().max(b.len());
                        let at = |v: &Vec<Option<i64>>, i: usize| v[if v.len() == 1 { 0 } else { i }];
                        Some(
                            (0..n)
                                .map(|i| {
                                    let (x, y) = (at(&a, i)?, at(&b, i)?);
                                    match node {
                                        Node::Div(_) => (y != 0).then(|| x.div_euclid(y)),
                                        Node::Mul(_) => Some(x * y),
                                        Node::Add(_) => Some(x + y),
                                        _ => Some(x - y),
                                    }
                                })
                                .collect(),
                        )
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let (Some(v), Some(out)) = (result, node.outputs().first()) {
            self.shape_values.insert(out.name.clone(), v);
        }
    }

    /// An integer input's value: a stored constant, or a shape value recorded before.
    fn symbolic(&self, a: &Argument) -> Option<Vec<Option<i64>>> {
        if let Some(d) = a.value() {
            return d.to_i64_vec().ok().map(|v| v.into_iter().map(Some).collect());
        }
        self.shape_values.get(&a.name).cloned()
    }

    /// A Slice or Split bound: stored, or computed from shapes by the exporter.
    fn ints(&self, node: &Node, input: &onnx_ir::node::slice::SliceInput) -> Option<Vec<i64>> {
        match input {
            onnx_ir::node::slice::SliceInput::Static(v) => Some(v.clone()),
            onnx_ir::node::slice::SliceInput::Runtime(r) => self
                .symbolic(node.inputs().get(r.input_index)?)?
                .into_iter()
                .collect(),
        }
    }

    /// `Slice` of channels (axis 1, step 1) of a map or vector.
    fn slice(&mut self, node: &Node, cfg: &onnx_ir::node::slice::SliceConfig) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::Map, Layout::Vector])?;
        let c = self.channels(&x) as i64;
        let need = |what: &str| unsupported(node, format!("its {what} are not known before run time"));
        let starts = self.ints(node, &cfg.starts).ok_or_else(|| need("starts"))?;
        let ends = self.ints(node, &cfg.ends).ok_or_else(|| need("ends"))?;
        let axes = match &cfg.axes {
            Some(a) => self.ints(node, a).ok_or_else(|| need("axes"))?,
            None => (0..starts.len() as i64).collect(),
        };
        let steps = match &cfg.steps {
            Some(a) => self.ints(node, a).ok_or_else(|| need("steps"))?,
            None => vec![1; starts.len()],
        };
        let ([start], [end], [1], [1]) = (starts.as_slice(), ends.as_slice(), axes.as_slice(), steps.as_slice()) else {
            return Err(unsupported(
                node,
                format!(
                    "only a slice of channels (axis 1, step 1) is supported, not axes {axes:?} steps {steps:?}"
                ),
            ));
        };
        let clamp = |v: i64| (if v < 0 { v + c } else { v }).clamp(0, c) as usize;
        let (start, end) = (clamp(*start), clamp(*end));
        if start == 0 && end == c as usize {
            return self.bind(node, x);
        }
        let layout = x.layout;
        let op = Op::Slice(ChannelSlice { start, end });
        self.push(node, op, vec![x.name], vec![], layout, None)
    }

    /// `Split` along channels: one IR slice per output.
    fn split(&mut self, node: &Node, cfg: &onnx_ir::node::split::SplitConfig) -> Result<(), OnnxError> {
        use onnx_ir::node::split::SplitSizesInput;
        let x = self.data(node, 0, &[Layout::Map, Layout::Vector])?;
        if cfg.axis != 1 {
            return Err(unsupported(
                node,
                format!("Split on axis {} is not supported: only the channel axis 1", cfg.axis),
            ));
        }
        let c = self.channels(&x);
        let outputs = node.outputs().len();
        let sizes: Vec<usize> = match (&cfg.split_sizes, cfg.split_size) {
            (Some(SplitSizesInput::Static(v)), _) => v.clone(),
            (Some(SplitSizesInput::Runtime(r)), _) => node
                .inputs()
                .get(r.input_index)
                .and_then(|a| self.symbolic(a))
                .and_then(|v| v.into_iter().map(|d| d.and_then(|d| usize::try_from(d).ok())).collect())
                .ok_or_else(|| unsupported(node, "its split sizes are not known before run time".into()))?,
            (None, Some(size)) => {
                let mut v = vec![size; c / size.max(1)];
                if c % size.max(1) != 0 {
                    v.push(c % size);
                }
                v
            }
            (None, None) => vec![c / outputs.max(1); outputs],
        };
        if sizes.iter().sum::<usize>() != c || sizes.len() != outputs || sizes.contains(&0) {
            return Err(unsupported(
                node,
                format!("its sizes {sizes:?} do not split {c} channels into {outputs} outputs"),
            ));
        }
        let mut start = 0;
        for (k, size) in sizes.into_iter().enumerate() {
            let op = Op::Slice(ChannelSlice { start, end: start + size });
            self.push_at(node, k, op, vec![x.name.clone()], vec![], x.layout, None)?;
            start += size;
        }
        Ok(())
    }

    /// A Linear on the channels of a channels-last map (ConvNeXt's MLP): a 1×1 conv of the IR.
    fn pointwise_conv(
        &mut self,
        node: &Node,
        x: Value,
        w: ArrayD<f32>,
        bias: Option<ArrayD<f32>>,
        wname: &str,
    ) -> Result<(), OnnxError> {
        let &[out_channels, in_channels] = w.shape() else {
            return Err(unsupported(node, format!("its weight has shape {:?}, not a matrix", w.shape())));
        };
        let w = w
            .into_shape_with_order(IxDyn(&[out_channels, in_channels, 1, 1]))
            .map_err(|e| unsupported(node, e.to_string()))?;
        let bias = match bias {
            None => None,
            Some(b) if b.len() == out_channels => Some(
                b.into_shape_with_order(IxDyn(&[out_channels]))
                    .map_err(|e| unsupported(node, e.to_string()))?,
            ),
            Some(b) => {
                return Err(unsupported(node, format!("its bias has shape {:?}", b.shape())));
            }
        };
        let op = Op::Conv2d(Conv2d {
            in_channels,
            out_channels,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            bias: bias.is_some(),
        });
        let mut params = vec![("weight", w)];
        params.extend(bias.map(|b| ("bias", b)));
        self.push(node, op, vec![x.name], params, Layout::Nhwc, Some(wname))
    }

    /// `Mul`, `Add`, `Sub` or `Div` of a computed value and a stored per-channel or scalar
    /// constant: a per-channel affine of the IR.
    fn constant_arithmetic(&mut self, node: &Node) -> Result<(), OnnxError> {
        let ins = node.inputs();
        let Some(k) = (0..ins.len().min(2)).find(|&k| ins[k].value().is_some()) else {
            return Err(unsupported(node, "it has no stored constant operand".into()));
        };
        let x = self.data(node, 1 - k, &[Layout::Map, Layout::Vector, Layout::Nhwc])?;
        let (_, c) = constant(node, k, "constant")?;
        let channels = self.channels(&x);
        // The constant must broadcast per channel: along axis 1 of NCHW, the last axis of NHWC.
        let per_channel: Option<Vec<f32>> = {
            let dims: Vec<usize> = c.shape().iter().copied().filter(|&d| d != 1).collect();
            let values: Vec<f32> = c.iter().copied().collect();
            let aligned = match x.layout {
                Layout::Nhwc | Layout::Vector => c.shape().last().is_none_or(|&d| d == channels || d == 1),
                _ => {
                    let s = c.shape();
                    let rank = s.len();
                    // [C,1,1] or [1,C,1,1]: the channel axis is third from the end.
                    rank < 3 || s[rank - 3] == channels || s[rank - 3] == 1
                }
            };
            match (dims.as_slice(), aligned) {
                ([], _) => Some(vec![values[0]; channels]),
                ([d], true) if *d == channels => Some(values),
                _ => None,
            }
        };
        let Some(v) = per_channel else {
            return Err(unsupported(
                node,
                format!(
                    "its constant of shape {:?} is not a scalar or one value per channel of {}",
                    c.shape(),
                    layout_text(x.layout)
                ),
            ));
        };
        let (scale, shift): (Vec<f32>, Vec<f32>) = match (node, k) {
            (Node::Mul(_), _) => (v, vec![0.0; channels]),
            (Node::Add(_), _) => (vec![1.0; channels], v),
            (Node::Sub(_), 1) => (vec![1.0; channels], v.iter().map(|a| -a).collect()),
            (Node::Sub(_), _) => (vec![-1.0; channels], v),
            (Node::Div(_), 1) => (v.iter().map(|a| 1.0 / a).collect(), vec![0.0; channels]),
            _ => {
                return Err(unsupported(
                    node,
                    "dividing a constant by a computed value is not supported".into(),
                ));
            }
        };
        if scale.iter().chain(&shift).any(|a| !a.is_finite()) {
            return Err(unsupported(node, "its constant gives a non-finite scale or shift".into()));
        }
        let map = x.layout != Layout::Vector;
        let shape: Vec<usize> = if map { vec![channels, 1, 1] } else { vec![channels] };
        let arr = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&shape), v).expect("one value per channel");
        let op = Op::Affine(ChannelAffine { channels, map });
        let layout = x.layout;
        self.push(
            node,
            op,
            vec![x.name],
            vec![("scale", arr(scale)), ("shift", arr(shift))],
            layout,
            None,
        )
    }

    /// The static target of a Reshape, from its stored shape or the shape values recorded.
    fn reshape_target(&self, node: &Node, r: &onnx_ir::node::reshape::ReshapeConfig) -> Option<Vec<Option<i64>>> {
        match &r.shape {
            onnx_ir::node::reshape::ReshapeInput::Static(s) => Some(s.iter().map(|&d| Some(d)).collect()),
            onnx_ir::node::reshape::ReshapeInput::Runtime(rt) => {
                self.symbolic(node.inputs().get(rt.input_index)?)
            }
        }
    }


    /// The data input `k` of `node`, which must be an imported value of `layout`.
    fn data(&self, node: &Node, k: usize, layouts: &[Layout]) -> Result<Value, OnnxError> {
        let arg = node
            .inputs()
            .get(k)
            .ok_or_else(|| unsupported(node, format!("it has no input {k}")))?;
        if arg.is_constant() {
            return Err(unsupported(
                node,
                format!(
                    "its input `{}` is a constant; shears needs it computed from the network input",
                    arg.name
                ),
            ));
        }
        let what = format!("node `{}` ({})", self.original.node(node), node.node_type());
        let v = self.value(&arg.name, &what)?;
        if !layouts.contains(&v.layout) {
            return Err(unsupported(
                node,
                format!("its input `{}` is {}", arg.name, layout_text(v.layout)),
            ));
        }
        Ok(v)
    }

    /// Maps one ONNX node; errors name the node as the file does.
    fn node(&mut self, node: &Node) -> Result<(), OnnxError> {
        self.map_node(node).map_err(|e| match e {
            OnnxError::Unsupported { op, detail, .. } => OnnxError::Unsupported {
                node: self.original.node(node),
                op,
                detail,
            },
            e => e,
        })
    }

    fn map_node(&mut self, node: &Node) -> Result<(), OnnxError> {
        use Layout::*;
        if computes_a_shape(node) {
            self.eval_shape_node(node);
            // Shape → Gather → Unsqueeze → Concat before a Reshape: what a PyTorch `view(n, -1)`
            // leaves when the batch axis is dynamic. The Reshape is judged by its output shape,
            // so the chain itself maps to nothing.
            return Ok(());
        }
        match node {
            Node::Conv2d(c) => {
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
                // Asymmetric pads (TensorFlow's "same" on even inputs): an explicit Pad first.
                let (x, padding) = match cfg.padding {
                    PaddingConfig2d::Explicit(top, left, bottom, right)
                        if top != bottom || left != right =>
                    {
                        let pad = Op::Pad(Pad2d { pads: [top, left, bottom, right] });
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
            Node::BatchNormalization(b) => {
                let x = self.data(node, 0, &[Map, Vector])?;
                let (eps, momentum) = match &b.config {
                    onnx_ir::node::batch_norm::BatchNormConfig::Static(c) => {
                        (c.epsilon, c.momentum)
                    }
                    onnx_ir::node::batch_norm::BatchNormConfig::Runtime(_) => {
                        return Err(unsupported(
                            node,
                            "its scale, bias, mean or variance is computed at run time, not stored"
                                .into(),
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
                    // ONNX's momentum weighs the running statistic; the IR's (PyTorch's) the batch's.
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
            Node::Relu(_) => {
                let x = self.data(node, 0, &[Map, Vector, Nhwc])?;
                self.push(node, Op::Relu, vec![x.name], vec![], x.layout, None)
            }
            Node::Sigmoid(_) => self.activation(node, Activation::Sigmoid),
            Node::HardSigmoid(h) => self.activation(
                node,
                Activation::HardSigmoid {
                    alpha: h.config.alpha as f32,
                    beta: h.config.beta as f32,
                },
            ),
            Node::HardSwish(_) => self.activation(node, Activation::HardSwish),
            Node::LeakyRelu(l) => self.activation(
                node,
                Activation::LeakyRelu {
                    alpha: l.config.alpha as f32,
                },
            ),
            Node::Tanh(_) => self.activation(node, Activation::Tanh),
            Node::Gelu(g) => {
                if g.config.approximate != onnx_ir::node::gelu::GeluApproximate::Exact {
                    return Err(unsupported(
                        node,
                        "the tanh approximation of GELU is not supported (only the exact one)"
                            .into(),
                    ));
                }
                self.activation(node, Activation::Gelu)
            }
            Node::Erf(_) => self.gelu_step(node),
            Node::Div(_) if self.gelu_input(node).is_some() => self.gelu_step(node),
            Node::Div(_) => self.constant_arithmetic(node),
            Node::Clip(c) => {
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
            Node::MaxPool2d(p) => {
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
            Node::AveragePool2d(p) => {
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
            Node::GlobalAveragePool(_) => self.global_pool(node, true, false),
            Node::ReduceMean(_) | Node::ReduceMax(_) => {
                use onnx_ir::node::reduce::ReduceAxes;
                let (r, max) = match node {
                    Node::ReduceMax(r) => (&r.config, true),
                    Node::ReduceMean(r) => (&r.config, false),
                    _ => unreachable!("matched above"),
                };
                let mut axes = match &r.axes {
                    ReduceAxes::Static(a) => a.clone(),
                    ReduceAxes::Runtime(_) => {
                        return Err(unsupported(node, "its axes are computed at run time".into()));
                    }
                };
                axes.sort_unstable();
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
            Node::GlobalMaxPool(_) => self.global_pool(node, true, true),
            Node::Pad(pd) => {
                use onnx_ir::node::pad::{ConstantValueInput, PadInput, PadMode};
                let x = self.data(node, 0, &[Map])?;
                let cfg = &pd.config;
                let zero = matches!(cfg.constant_value, ConstantValueInput::Static(v) if v == 0.0);
                let pads = match &cfg.pads {
                    PadInput::Static(p) if p.len() == 4 && p[0] == (0, 0) && p[1] == (0, 0) => {
                        Some([p[2].0, p[3].0, p[2].1, p[3].1])
                    }
                    _ => None,
                };
                match (cfg.mode == PadMode::Constant && zero, pads) {
                    (true, Some(pads)) => {
                        self.push(node, Op::Pad(Pad2d { pads }), vec![x.name], vec![], Map, None)
                    }
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
            Node::Flatten(f) => {
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
            Node::Reshape(r) => {
                let input = node.inputs().first().map(|a| a.name.clone()).unwrap_or_default();
                let target = self.reshape_target(node, &r.config);
                // The last step of a channel shuffle: the swapped blocks merged back into C.
                if let Some((x, groups, true)) = self.shuffles.get(&input).cloned() {
                    let c = self.channels(&x) as i64;
                    let back = target.as_ref().is_some_and(|t| {
                        t.len() == 4 && matches!(t[1], Some(d) if d == c || d == -1)
                    });
                    if !back {
                        return Err(unsupported(
                            node,
                            format!("a reshape of swapped channel blocks to {target:?} is not a channel shuffle"),
                        ));
                    }
                    let op = Op::ChannelShuffle(ChannelShuffle { groups });
                    return self.push(node, op, vec![x.name], vec![], Map, None);
                }
                // The last step of a group norm: the normalised blocks back to [N, C, H, W].
                if let Some(GroupNormStep::Normalised { x, groups, eps, scale, shift }) =
                    self.group_norms.get(&input).cloned()
                {
                    let c = self.channels(&x);
                    let back = target
                        .as_ref()
                        .is_some_and(|t| t.len() == 4 && matches!(t[1], Some(d) if d == c as i64));
                    if !back {
                        return Err(unsupported(
                            node,
                            format!("a reshape of instance-normalised groups to {target:?} is not a group norm"),
                        ));
                    }
                    let per = c / groups;
                    let repeat = |v: &[f32]| -> ArrayD<f32> {
                        ArrayD::from_shape_fn(IxDyn(&[c]), |i| v[i[0] / per])
                    };
                    let op = Op::GroupNorm(GroupNorm { channels: c, groups, eps });
                    let params = vec![("weight", repeat(&scale)), ("bias", repeat(&shift))];
                    return self.push(node, op, vec![x.name], params, Map, None);
                }
                let x = self.data(node, 0, &[Map, Vector, Pooled])?;
                // The first step of a group norm: [N, C, H, W] as [N, G, C/G * H * W].
                if x.layout == Map
                    && let Some(t) = target.as_ref().filter(|t| t.len() == 3)
                {
                    let c = self.channels(&x) as i64;
                    let rest_ok = matches!(t[2], Some(-1)) || t[2].is_some();
                    if let Some(g) = t[1].filter(|&g| g > 0 && c % g == 0 && rest_ok) {
                        let out = node.outputs().first().map(|o| o.name.clone()).unwrap_or_default();
                        self.group_norms.insert(out, GroupNormStep::Grouped { x, groups: g as usize });
                        return Ok(());
                    }
                }
                // The first step of a channel shuffle: [N, C, H, W] as [N, g, C/g, H, W].
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
                    let spatial = [t[3], t[4]] == [Some(h), Some(w)]
                        || [t[3], t[4]].iter().any(|d| *d == Some(-1));
                    if groups > 0 && c % groups == 0 && spatial {
                        let out = node.outputs().first().map(|o| o.name.clone()).unwrap_or_default();
                        self.shuffles.insert(out, (x, groups as usize, false));
                        return Ok(());
                    }
                }
                // A reshape to [N, -1] (or [N, C*H*W]) is a flatten; anything else is not.
                // With a dynamic batch axis the target shape is computed at run time (a folded
                // Shape chain), and the output's rank 2 is what says "flatten".
                let out_rank = node.outputs().first().map(|o| o.ty.rank());
                let is_flatten = match (&r.config.shape, out_rank) {
                    (onnx_ir::node::reshape::ReshapeInput::Runtime(_), Some(2)) => true,
                    (onnx_ir::node::reshape::ReshapeInput::Static(s), _) => {
                        s.len() == 2 && (s[1] == -1 || s[0] == -1 || s[0] == 0)
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
            Node::Transpose(t) if node.inputs().first().is_some_and(|a| a.value().is_some()) => {
                // A stored matrix transposed in the graph (PyTorch's Linear on a channels-last
                // map exports MatMul(x, Transpose(W))): folded here, read by that MatMul.
                let (wname, w) = constant(node, 0, "matrix")?;
                if w.ndim() != 2 || t.config.perm != [1, 0] {
                    return Err(unsupported(node, "only a stored matrix's transpose is supported".into()));
                }
                let out = node.outputs().first().map(|o| o.name.clone()).unwrap_or_default();
                self.folded.insert(out, (wname, w.t().to_owned()));
                Ok(())
            }
            Node::Transpose(t) => {
                let input = node.inputs().first().map(|a| a.name.clone()).unwrap_or_default();
                let to = match t.config.perm.as_slice() {
                    [0, 2, 3, 1] => Some((Map, Nhwc)),
                    [0, 3, 1, 2] => Some((Nhwc, Map)),
                    _ => None,
                };
                if let Some((from, to)) = to
                    && self.values.get(&input).is_some_and(|v| v.layout == from)
                {
                    let x = self.data(node, 0, &[from])?;
                    return self.bind(node, Value { name: x.name, layout: to });
                }
                match self.shuffles.get(&input).cloned() {
                    Some((x, groups, false)) if t.config.perm == [0, 2, 1, 3, 4] => {
                        let out = node.outputs().first().map(|o| o.name.clone()).unwrap_or_default();
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
            Node::Slice(sl) => {
                let cfg = sl.config.clone();
                self.slice(node, &cfg)
            }
            Node::Split(sp) => {
                let cfg = sp.config.clone();
                self.split(node, &cfg)
            }
            Node::Linear(l) => {
                let x = self.data(node, 0, &[Vector, Pooled, Nhwc])?;
                let (wname, w) = constant(node, 1, "weight")?;
                let bias = optional_constant(node, 2, "bias")?;
                let w = if l.config.transpose_weight {
                    w
                } else {
                    w.t().to_owned()
                };
                if x.layout == Nhwc {
                    return self.pointwise_conv(node, x, w, bias.map(|b| b.1), &wname);
                }
                self.linear(node, x, w, bias.map(|b| b.1), &wname, 1.0, 1.0)
            }
            Node::MatMul(_)
                if node
                    .inputs()
                    .get(1)
                    .is_some_and(|a| a.value().is_some() || self.folded.contains_key(&a.name)) =>
            {
                let x = self.data(node, 0, &[Vector, Pooled, Nhwc])?;
                let b = &node.inputs()[1];
                let (wname, w) = match self.folded.get(&b.name) {
                    Some(f) => f.clone(),
                    None => constant(node, 1, "weight")?,
                };
                let w = w.t().to_owned();
                if x.layout == Nhwc {
                    return self.pointwise_conv(node, x, w, None, &wname);
                }
                self.linear(node, x, w, None, &wname, 1.0, 1.0)
            }
            Node::LayerNormalization(ln) => {
                let x = self.data(node, 0, &[Nhwc, Vector])?;
                if !matches!(ln.config.axis, -1) && !(x.layout == Vector && ln.config.axis == 1)
                    && !(x.layout == Nhwc && ln.config.axis == 3)
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
                    _ => return Err(unsupported(node, "its scale and bias are not per-channel vectors".into())),
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
            Node::Sub(_) => self.constant_arithmetic(node),
            Node::InstanceNormalization(inorm) => {
                let input = node.inputs().first().map(|a| a.name.clone()).unwrap_or_default();
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
                    return Err(unsupported(node, format!("its scale and bias are not {groups} per-group values")));
                }
                let out = node.outputs().first().map(|o| o.name.clone()).unwrap_or_default();
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
            Node::Resize(r) => {
                use onnx_ir::node::resize::{CoordinateTransformMode as Ct, NearestMode, ResizeMode as Rm, ResizeScales, ResizeSizes};
                let x = self.data(node, 0, &[Map])?;
                let s = self.shapes[&x.name].clone();
                let cfg = &r.config;
                let floats = |k: usize| node.inputs().get(k).and_then(|a| a.value()?.to_f32_vec().ok());
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
                        .and_then(|v| Some(vec![1.0, 1.0, v[2]? as f64 / s[1] as f64, v[3]? as f64 / s[2] as f64])),
                    _ => None,
                };
                // onnx-ir gives the spatial scales alone; the file has [1, 1, s_h, s_w].
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
                let mode = match (&cfg.mode, &cfg.coordinate_transformation_mode, &cfg.nearest_mode) {
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
                self.push(node, Op::Resize(Resize { scale, mode }), vec![x.name], vec![], Map, None)
            }
            Node::Gemm(g) => {
                let x = self.data(node, 0, &[Vector, Pooled])?;
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
            Node::Mul(_) => self.mul(node),
            Node::Add(_) if self.gelu_input(node).is_some() => self.gelu_step(node),
            Node::Add(_) if node.inputs().iter().any(|a| a.is_constant()) => {
                self.constant_arithmetic(node)
            }
            Node::Add(_) | Node::Sum(_) => {
                let n = node.inputs().len();
                if node.inputs().iter().any(|a| a.is_constant()) {
                    return Err(unsupported(node, "a Sum with a constant is not supported".into()));
                }
                let xs: Vec<Value> = (0..n)
                    .map(|k| self.data(node, k, &[Map, Vector, Nhwc]))
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
            Node::Concat(c) => {
                let xs: Vec<Value> = (0..node.inputs().len())
                    .map(|k| self.data(node, k, &[Map, Vector]))
                    .collect::<Result<_, _>>()?;
                if c.config.axis != 1 {
                    return Err(unsupported(
                        node,
                        format!(
                            "Concat on axis {} is not supported: only the channel axis 1",
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
            // Initializers and folded constants: their consumers read them through `value()`.
            Node::Constant(_) => Ok(()),
            // Identity at inference: the value passes through.
            Node::Identity(_) | Node::Dropout(_) => {
                let x = self.data(node, 0, &[Map, Vector, Pooled])?;
                self.bind(node, x)
            }
            _ => Err(OnnxError::Unsupported {
                node: node.name().to_string(),
                op: node.node_type().to_string(),
                detail: format!("this op is not supported; shears imports {SUPPORTED_OPS}"),
            }),
        }
    }

    /// A pointwise activation of one map or vector.
    fn activation(&mut self, node: &Node, f: Activation) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::Map, Layout::Vector, Layout::Nhwc])?;
        let layout = x.layout;
        self.push(node, Op::Activation(f), vec![x.name], vec![], layout, None)
    }

    /// A global average pool (`GlobalAveragePool`, or `ReduceMean` over H and W with `keep`).
    /// A kept `[N,C,1,1]` result that only flattens read is the IR's `[C]` vector (the flatten
    /// is then a no-op); one that a conv or a product reads stays a `[C,1,1]` map.
    fn global_pool(&mut self, node: &Node, keep: bool, max: bool) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::Map])?;
        let out = node.outputs().first().map(|o| o.name.clone()).unwrap_or_default();
        let only_flattened = self.readers.get(&out).is_none_or(|kinds| {
            kinds
                .iter()
                .all(|k| matches!(k.as_str(), "Flatten" | "Reshape" | "Identity" | "Dropout"))
        });
        let (keep_dims, layout) = match (keep, only_flattened) {
            (false, _) => (false, Layout::Vector),
            (true, true) => (false, Layout::Pooled),
            (true, false) => (true, Layout::Map),
        };
        let op = if max {
            Op::GlobalMaxPool(GlobalPool { keep_dims })
        } else {
            Op::GlobalAvgPool(GlobalPool { keep_dims })
        };
        self.push(node, op, vec![x.name], vec![], layout, None)
    }

    /// `Mul` of two computed values (a `[N,C,1,1]` one broadcast over a map), or a step of
    /// the GELU pattern.
    fn mul(&mut self, node: &Node) -> Result<(), OnnxError> {
        if self.gelu_input(node).is_some() {
            return self.gelu_step(node);
        }
        if node.inputs().iter().any(|a| a.is_constant()) {
            return self.constant_arithmetic(node);
        }
        let a = self.data(node, 0, &[Layout::Map, Layout::Vector])?;
        let b = self.data(node, 1, &[Layout::Map, Layout::Vector])?;
        let layout = if a.layout == Layout::Map || b.layout == Layout::Map {
            Layout::Map
        } else {
            Layout::Vector
        };
        self.push(node, Op::Mul, vec![a.name, b.name], vec![], layout, None)
    }

    /// The pending GELU step that `node` continues, if it does: its inputs are a pending value
    /// (or, for the first step, any value) and the constant the next step needs.
    fn gelu_input(&self, node: &Node) -> Option<(GeluStep, Value)> {
        let ins = node.inputs();
        let scalar = |k: usize| -> Option<f32> {
            let a = ins.get(k)?;
            let v = a.value()?.to_f32_vec().ok()?;
            (v.len() == 1).then(|| v[0])
        };
        let pending = |k: usize| ins.get(k).and_then(|a| self.pending.get(&a.name)).cloned();
        let near = |v: Option<f32>, want: f32| v.is_some_and(|v| (v - want).abs() < 1e-4);
        match node {
            Node::Div(_) if near(scalar(1), std::f32::consts::SQRT_2) => {
                let x = self.values.get(&ins.first()?.name)?.clone();
                Some((GeluStep::Div, x))
            }
            Node::Erf(_) => pending(0).filter(|(s, _)| *s == GeluStep::Div),
            Node::Add(_) => (0..2).find_map(|k| {
                pending(k).filter(|(s, _)| *s == GeluStep::Erf && near(scalar(1 - k), 1.0))
            }),
            Node::Mul(_) => (0..2).find_map(|k| {
                let (step, x) = pending(k)?;
                let other = ins.get(1 - k)?;
                match step {
                    GeluStep::AddOne if self.values.get(&other.name)?.name == x.name => {
                        Some((step, x))
                    }
                    GeluStep::MulX if near(scalar(1 - k), 0.5) => Some((step, x)),
                    _ => None,
                }
            }),
            _ => None,
        }
    }

    /// Advances the GELU pattern by `node`; its last step emits the GELU activation.
    fn gelu_step(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Some((step, x)) = self.gelu_input(node) else {
            return Err(unsupported(
                node,
                "only as a step of the GELU pattern x * 0.5 * (1 + Erf(x / sqrt 2)) is this op \
                 supported"
                    .into(),
            ));
        };
        let out = node
            .outputs()
            .first()
            .ok_or_else(|| unsupported(node, "it has no output".into()))?
            .name
            .clone();
        let next = match (node, step) {
            (Node::Div(_), _) => GeluStep::Div,
            (Node::Erf(_), _) => GeluStep::Erf,
            (Node::Add(_), _) => GeluStep::AddOne,
            (Node::Mul(_), GeluStep::AddOne) => GeluStep::MulX,
            (Node::Mul(_), _) => {
                let layout = x.layout;
                return self.push(
                    node,
                    Op::Activation(Activation::Gelu),
                    vec![x.name],
                    vec![],
                    layout,
                    None,
                );
            }
            _ => unreachable!("gelu_input matched only these"),
        };
        self.pending.insert(out, (next, x));
        Ok(())
    }

    /// Flatten to `[N, features]`: a no-op after a global pool or on a vector.
    fn flatten(&mut self, node: &Node) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::Map, Layout::Vector, Layout::Pooled])?;
        match x.layout {
            Layout::Map => self.push(
                node,
                Op::Flatten,
                vec![x.name],
                vec![],
                Layout::Vector,
                None,
            ),
            Layout::Vector | Layout::Pooled => self.bind(
                node,
                Value {
                    name: x.name,
                    layout: Layout::Vector,
                },
            ),
            Layout::Nhwc => unreachable!("data() admitted only the layouts listed"),
        }
    }

    /// A fully connected layer `alpha * x W^T + beta * b`, W as `[out, in]`.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        node: &Node,
        x: Value,
        w: ArrayD<f32>,
        bias: Option<ArrayD<f32>>,
        wname: &str,
        alpha: f32,
        beta: f32,
    ) -> Result<(), OnnxError> {
        let &[out_features, in_features] = w.shape() else {
            return Err(unsupported(
                node,
                format!("its weight has shape {:?}, not a matrix", w.shape()),
            ));
        };
        let w = w.mapv(|v| v * alpha);
        let bias = match bias {
            None => None,
            Some(b) if b.len() == out_features => Some(
                b.mapv(|v| v * beta)
                    .into_shape_with_order(IxDyn(&[out_features]))
                    .expect("length checked"),
            ),
            Some(b) => {
                return Err(unsupported(
                    node,
                    format!(
                        "its bias has shape {:?}; only a per-output bias of {out_features} is supported",
                        b.shape()
                    ),
                ));
            }
        };
        let op = Op::Linear(Linear {
            in_features,
            out_features,
            bias: bias.is_some(),
        });
        let mut params = vec![("weight", w)];
        params.extend(bias.map(|b| ("bias", b)));
        // The weight initializer of a MatMul export is often a bare number (`onnx::MatMul_123`).
        self.push(node, op, vec![x.name], params, Layout::Vector, Some(wname))
    }
}

/// onnx-ir 0.22 refuses `ceil_mode` on AveragePool before opset 19, though ONNX has it since
/// opset 10 (PyTorch exports it at 17). The attribute is taken out of the bytes onnx-ir reads and
/// returned per AveragePool, in file order, for the importer to put back.
fn strip_avgpool_ceil_mode(bytes: &[u8]) -> Result<(Vec<u8>, Vec<bool>), OnnxError> {
    let mut proto =
        ModelProto::parse_from_bytes(bytes).map_err(|e| OnnxError::Parse(e.to_string()))?;
    let mut flags = Vec::new();
    if let Some(graph) = proto.graph.as_mut() {
        for n in graph.node.iter_mut().filter(|n| n.op_type == "AveragePool") {
            let before = n.attribute.len();
            n.attribute.retain(|a| !(a.name == "ceil_mode" && a.i != 0));
            flags.push(n.attribute.len() != before);
        }
    }
    if !flags.contains(&true) {
        return Ok((bytes.to_vec(), flags));
    }
    let out = proto
        .write_to_bytes()
        .map_err(|e| OnnxError::Parse(e.to_string()))?;
    Ok((out, flags))
}

/// How far a group norm's export (Reshape → InstanceNormalization → Reshape) has come.
#[derive(Debug, Clone)]
enum GroupNormStep {
    /// The map `x` reshaped into `groups` blocks.
    Grouped { x: Value, groups: usize },
    /// The blocks normalised, with the instance norm's per-group scale and shift.
    Normalised {
        x: Value,
        groups: usize,
        eps: f64,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
}

/// The step of the GELU pattern (`x / √2 → Erf → + 1 → · x → · 0.5`) a value has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GeluStep {
    Div,
    Erf,
    AddOne,
    MulX,
}

/// For every ONNX value, the op types of the nodes that read it.
fn reader_kinds(nodes: &[Node]) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for n in nodes {
        for a in n.inputs() {
            map.entry(a.name.clone())
                .or_default()
                .push(n.node_type().to_string());
        }
    }
    map
}

/// Rewrites `x * Sigmoid(x)` (SiLU as PyTorch exports it before opset 20) into one SiLU node,
/// where the sigmoid has no other reader. The product keeps its name, so its readers are intact.
fn fuse_silu(nodes: &mut Vec<IrNode>, output: &str) {
    let readers = |nodes: &[IrNode], v: &str| {
        nodes
            .iter()
            .filter(|n| n.inputs.iter().any(|i| i == v))
            .count()
    };
    let mut i = 0;
    while i < nodes.len() {
        let fused = if nodes[i].op == Op::Mul {
            let (a, b) = (nodes[i].inputs[0].clone(), nodes[i].inputs[1].clone());
            [(a.clone(), b.clone()), (b, a)].into_iter().find_map(|(x, s)| {
                let j = nodes.iter().position(|n| n.name == s)?;
                let is_sigmoid_of_x = nodes[j].op == Op::Activation(Activation::Sigmoid)
                    && nodes[j].inputs == [x.clone()];
                (is_sigmoid_of_x && s != output && readers(nodes, &s) == 1).then_some((j, x))
            })
        } else {
            None
        };
        match fused {
            Some((j, x)) => {
                nodes[i].op = Op::Activation(Activation::Silu);
                nodes[i].inputs = vec![x];
                nodes.remove(j);
                i = 0;
            }
            None => i += 1,
        }
    }
}

/// Folds a per-channel affine into the op before it when that op's value has no other reader:
/// an affine after an affine (what `Mul` then `Add` by constants import as), and the scale and
/// shift PyTorch's group-norm export applies after its instance norm, into the norm's own
/// tensors. The later node keeps its name (its readers are intact) and takes the earlier one's
/// op and inputs.
fn fold_affines(nodes: &mut Vec<IrNode>, weights: &mut Weights, output: &str) {
    let mut i = 0;
    while i < nodes.len() {
        let folded = (|| {
            if !matches!(nodes[i].op, Op::Affine(_)) {
                return None;
            }
            let prev = nodes[i].inputs[0].clone();
            let j = nodes.iter().position(|n| n.name == prev)?;
            let readers = nodes.iter().filter(|n| n.inputs.contains(&prev)).count();
            if readers != 1 || prev == output {
                return None;
            }
            let (a, b) = match nodes[j].op {
                Op::Affine(_) => ("scale", "shift"),
                Op::GroupNorm(_) | Op::LayerNorm(_) => ("weight", "bias"),
                _ => return None,
            };
            let here = nodes[i].name.clone();
            let s = weights.get(&format!("{here}.scale"))?.clone();
            let t = weights.get(&format!("{here}.shift"))?.clone();
            let w = weights.remove(&format!("{prev}.{a}"))?;
            let c = weights.remove(&format!("{prev}.{b}"))?;
            let flat = |x: &ArrayD<f32>| x.iter().copied().collect::<Vec<f32>>();
            let (s, t, wv, cv) = (flat(&s), flat(&t), flat(&w), flat(&c));
            let new_w: Vec<f32> = wv.iter().zip(&s).map(|(w, s)| w * s).collect();
            let new_c: Vec<f32> = cv.iter().zip(&s).zip(&t).map(|((c, s), t)| c * s + t).collect();
            weights.remove(&format!("{here}.scale"));
            weights.remove(&format!("{here}.shift"));
            weights.insert(
                format!("{here}.{a}"),
                ArrayD::from_shape_vec(w.raw_dim(), new_w).ok()?,
            );
            weights.insert(
                format!("{here}.{b}"),
                ArrayD::from_shape_vec(c.raw_dim(), new_c).ok()?,
            );
            Some(j)
        })();
        match folded {
            Some(j) => {
                let prev = nodes.remove(j);
                let at = if j < i { i - 1 } else { i };
                nodes[at].op = prev.op;
                nodes[at].inputs = prev.inputs;
                i = 0;
            }
            None => i += 1,
        }
    }
}

/// Whether `node` only computes shapes or indices (integer tensors, shape values, scalars), as
/// the ops of a flatten's shape chain do.
fn computes_a_shape(node: &Node) -> bool {
    let shape_op = matches!(
        node,
        Node::Shape(_)
            | Node::Gather(_)
            | Node::Unsqueeze(_)
            | Node::Concat(_)
            | Node::Squeeze(_)
            | Node::Slice(_)
            | Node::Cast(_)
            | Node::Div(_)
            | Node::Mul(_)
            | Node::Add(_)
            | Node::Sub(_)
    );
    shape_op
        && !node.outputs().is_empty()
        && node
            .outputs()
            .iter()
            .all(|o| o.ty.is_shape() || o.ty.is_scalar() || !o.ty.elem_type().is_float())
}

/// A hyperparameter stored as f32 in the file, back as the decimal it was written from
/// (`1e-5`, not `9.99999974e-6`): 6 significant digits, below f32 precision.
fn f32_decimal(x: f64) -> f64 {
    format!("{x:.5e}").parse().unwrap_or(x)
}

fn unsupported(node: &Node, detail: String) -> OnnxError {
    OnnxError::Unsupported {
        node: node.name().to_string(),
        op: node.node_type().to_string(),
        detail,
    }
}

/// Input `k` of `node` as a stored tensor (its name and values).
fn constant(node: &Node, k: usize, what: &str) -> Result<(String, ArrayD<f32>), OnnxError> {
    optional_constant(node, k, what)?
        .ok_or_else(|| unsupported(node, format!("its {what} (input {k}) is missing")))
}

fn optional_constant(
    node: &Node,
    k: usize,
    what: &str,
) -> Result<Option<(String, ArrayD<f32>)>, OnnxError> {
    let Some(arg) = node.inputs().get(k) else {
        return Ok(None);
    };
    if arg.is_optional() {
        return Ok(None);
    }
    let Some(data) = arg.value() else {
        return Err(unsupported(
            node,
            format!(
                "its {what} `{}` is computed at run time; shears needs stored weights",
                arg.name
            ),
        ));
    };
    let values = data.to_f32_vec().map_err(|e| {
        unsupported(
            node,
            format!("its {what} `{}` is not numeric: {e:?}", arg.name),
        )
    })?;
    let shape = data.shape().to_vec();
    let array = ArrayD::from_shape_vec(IxDyn(&shape), values)
        .map_err(|e| unsupported(node, format!("its {what} `{}`: {e}", arg.name)))?;
    Ok(Some((arg.name.clone(), array)))
}

/// `[h, w]` padding from ONNX pads, which must be the same on both sides of each axis.
fn symmetric(node: &Node, p: &PaddingConfig2d) -> Result<[usize; 2], OnnxError> {
    match *p {
        PaddingConfig2d::Valid => Ok([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Ok([top, left])
        }
        PaddingConfig2d::Explicit(top, left, bottom, right) => Err(unsupported(
            node,
            format!(
                "asymmetric pads (top {top}, left {left}, bottom {bottom}, right {right}) are not supported"
            ),
        )),
    }
}

fn pool_checks(node: &Node, dilation: [usize; 2], auto_pad: &AutoPad) -> Result<(), OnnxError> {
    if dilation != [1, 1] {
        return Err(unsupported(
            node,
            format!("pooling with dilation {dilation:?} is not supported"),
        ));
    }
    if !matches!(auto_pad, AutoPad::NotSet | AutoPad::Valid) {
        return Err(unsupported(
            node,
            format!("auto_pad {auto_pad:?} is not supported; export with explicit pads"),
        ));
    }
    Ok(())
}

/// An IR node name from a PyTorch-style ONNX node name: `/layer1/conv1/Conv` → `layer1.conv1`
/// (a module's own op takes the module's path), `/layer1/Relu_1` → `layer1.relu_1`; the dots
/// become `_` in [`Importer::fresh`].
fn clean_name(onnx: &str) -> String {
    let parts: Vec<&str> = onnx.split('/').filter(|s| !s.is_empty()).collect();
    let name = match parts.as_slice() {
        [] => String::new(),
        [one] => one.to_lowercase(),
        [scope @ .., last] => {
            let module_op = ["Conv", "Gemm", "MatMul", "BatchNormalization"]
                .iter()
                .any(|op| last.starts_with(op));
            // Our own export names a multi-node op's inner nodes `{node}/{OpType}`.
            let repeated = scope
                .last()
                .is_some_and(|s| s.ends_with(&last.to_lowercase()));
            if module_op || repeated {
                scope.join(".")
            } else {
                format!("{}.{}", scope.join("."), last.to_lowercase())
            }
        }
    };
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn show_dims(dims: &[Option<usize>], rank: usize) -> String {
    if dims.is_empty() {
        return format!("(rank {rank}, no static sizes)");
    }
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn layout_text(l: Layout) -> &'static str {
    match l {
        Layout::Map => "a [N, C, H, W] feature map",
        Layout::Vector => "a [N, F] vector",
        Layout::Pooled => "a globally pooled [N, C, 1, 1] map",
        Layout::Nhwc => "a channels-last [N, H, W, C] map",
    }
}
