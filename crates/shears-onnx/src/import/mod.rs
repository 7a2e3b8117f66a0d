//! ONNX import: a CNN exported from PyTorch or elsewhere becomes a graph of the IR with its
//! weights. `onnx-ir` parses the file, infers static shapes and folds constant chains; this
//! module walks the remaining nodes, [`Importer::map_node`] sends each to its op's function
//! (`ops.rs`, one per ONNX op), multi-node patterns are folded in `patterns.rs`, and an op
//! without a function stops the import with an error naming the node. Nothing is half-imported:
//! the model is returned only once every node mapped and it checks.

mod fold;
mod ops;
mod patterns;
mod tokens;
mod windows;

use shears_core::ops::{BatchNorm, Conv2d, Linear};

use patterns::{
    GeluStep, GroupNormStep, computes_a_shape, fold_affines, fuse_silu, reader_kinds,
    strip_avgpool_ceil_mode,
};

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
spatial axes, Identity, Dropout; and vision transformers: a patch conv's Reshape to [N, C, H*W] \
and Transpose to tokens, a stored class token Expand-ed and Concat-ed in front, a stored position \
table added, LayerNormalization and MatMul (+ Add) on tokens, multi-head attention (Reshape to \
[N, T, 3, heads, head_dim], Transpose [2, 0, 3, 1, 4], q/k/v by Split or Gather, Softmax(q kᵀ · \
scale) v, Transpose and Reshape back), Gather of the class token and ReduceMean over tokens";

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
    // An empty protobuf parses as an empty model; say what it is instead of "0 inputs".
    if bytes.is_empty() {
        return Err(OnnxError::Parse(
            "the file is empty (0 bytes): not an ONNX model".into(),
        ));
    }
    let (bytes, avgpool_ceil) = strip_avgpool_ceil_mode(bytes)?;
    let bytes = fold::fold_integer_constants(&bytes)?;
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
    let on_data = data_dependent(&onnx.inputs, &onnx.nodes);
    for node in &onnx.nodes {
        if !node.outputs().iter().any(|o| on_data.contains(&o.name)) {
            for o in node.outputs() {
                im.constant_nodes.insert(o.name.clone(), node.clone());
            }
        }
        match im.node(node) {
            Ok(()) => {}
            // A constant the exporter computes with ops the importer does not evaluate (Swin's
            // shift mask): nothing reads it yet; a node that does names this error.
            Err(e) if !node.outputs().iter().any(|o| on_data.contains(&o.name)) => {
                for o in node.outputs() {
                    im.unevaluated.insert(o.name.clone(), e.to_string());
                }
            }
            Err(e) => return Err(e),
        }
    }
    let [out] = onnx.outputs.as_slice() else {
        return Err(OnnxError::Model(format!(
            "the graph has {} outputs; shears imports networks with one output (the logits)",
            onnx.outputs.len()
        )));
    };
    let output = im.value(&out.name, "the graph output")?;
    if let Some(what) = im.unfinished(&out.name) {
        return Err(OnnxError::Model(format!(
            "the graph output `{}` is {what}",
            out.name
        )));
    }
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

/// The ONNX values that depend on the network input's data (not only on its shape): what a
/// node whose import fails must produce for the failure to matter.
fn data_dependent(inputs: &[Argument], nodes: &[Node]) -> HashSet<String> {
    let mut live: HashSet<String> = inputs
        .iter()
        .filter(|a| !a.is_constant())
        .map(|a| a.name.clone())
        .collect();
    for node in nodes {
        if matches!(node, Node::Shape(_)) {
            continue;
        }
        if node.inputs().iter().any(|a| live.contains(&a.name)) {
            live.extend(node.outputs().iter().map(|o| o.name.clone()));
        }
    }
    live
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
    /// `[N, T, C]` in ONNX, the token sequence `[T, C]` in the IR.
    Tokens,
    /// `[T, N, C]` in ONNX (the batch second, as `nn.MultiheadAttention` transposes it), the
    /// same `[T, C]` tokens in the IR.
    TokensTnc,
    /// `[T*N, C]` in ONNX (tokens of every sample as rows, before `out_proj`), the same `[T, C]`
    /// tokens in the IR.
    TokenRows,
    /// `[N, C, H*W]` in ONNX (a patch embedding's map flattened before its transpose to
    /// tokens), the same `[C, H, W]` map in the IR: only that transpose may read it.
    MapRows,
    /// `[N, H, W, C]` in ONNX, the IR map rolled up and left (Swin's cyclic shift; by how
    /// much in [`Importer::windows`]).
    Rolled,
    /// `[N, H/w, w, W/w, w, C]` in ONNX: the (possibly rolled) map cut into windows of `w`.
    Tiles,
    /// `[N, H/w, W/w, w, w, C]` in ONNX: the windows' axes moved together.
    TilesT,
    /// `[N, H*W, C]` in ONNX: a channels-last map's positions as rows (timm's Swin blocks run
    /// their MLP so); the same `[C, H, W]` map in the IR.
    NhwcRows,
    /// `[N, H/2, W/2, 2, 2, C]` in ONNX: timm's patch merging before its flatten, the column
    /// phase before the row phase.
    MergePhases,
    /// `[N*windows, w, w, C]` in ONNX (timm's `window_partition`'s result).
    WindowGrid,
    /// `[N*windows, w*w, C]` in ONNX: the tokens of every window as rows; the same `[C, H, W]`
    /// map in the IR, where the linear layers on windows are 1×1 convolutions.
    Windows,
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
    shape_values: HashMap<String, Vec<Option<f64>>>,
    /// `[rows, columns]` of the shape values that are matrices (row-major in `shape_values`).
    shape_dims: HashMap<String, [usize; 2]>,
    /// The steps of a channel shuffle seen so far: the value reshaped into `groups` blocks,
    /// then (`true`) its two block axes swapped.
    shuffles: HashMap<String, (Value, usize, bool)>,
    /// The steps of a group norm seen so far, by the value each produced.
    group_norms: HashMap<String, GroupNormStep>,
    /// Stored matrices the graph transposes, by the transposed value's name (with the name of
    /// the stored tensor).
    folded: HashMap<String, (String, ArrayD<f32>)>,
    /// The steps of attention patterns seen so far, by the value each produced.
    attention: HashMap<String, tokens::AttnStep>,
    /// Stored class tokens expanded over the batch, by the expanded value's name.
    class_tokens: HashMap<String, ArrayD<f32>>,
    values: HashMap<String, Value>,
    /// Values computed from constants and shapes alone by nodes the importer could not map,
    /// with why; harmless until a node of the network reads one.
    unevaluated: HashMap<String, String>,
    /// The node behind every value computed without the network input's data (what a pattern
    /// traces back to stored tensors: Swin's gathered position bias).
    constant_nodes: HashMap<String, Node>,
    /// Swin's window geometry of values in the window layouts, by ONNX name.
    windows: HashMap<String, windows::Geo>,
    /// Slices of map rows or columns a Concat may put back together as a roll, by ONNX name.
    roll_parts: HashMap<String, windows::RollPart>,
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
        self.values
            .get(onnx_name)
            .cloned()
            .ok_or_else(|| match self.unevaluated.get(onnx_name) {
                Some(why) => OnnxError::Model(format!(
                    "{what} reads `{onnx_name}`, a constant shears could not compute: {why}"
                )),
                None => OnnxError::Model(format!(
                    "{what} reads `{onnx_name}`, which no supported node produces"
                )),
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
        self.add_node(node, name.clone(), op, inputs)?;
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
        self.add_node(node, name.clone(), op, inputs)?;
        Ok(name)
    }

    /// Appends an IR node with its shape inferred (an error names the ONNX `node`).
    fn add_node(
        &mut self,
        node: &Node,
        name: String,
        op: Op,
        inputs: Vec<String>,
    ) -> Result<(), OnnxError> {
        let ir = IrNode { name, op, inputs };
        let ins: Vec<&Vec<usize>> = ir.inputs.iter().map(|v| &self.shapes[v]).collect();
        let shape = shears_core::shape::node_shape(&ir, &ins)
            .map_err(|e| unsupported(node, e.to_string()))?;
        self.shapes.insert(ir.name.clone(), shape);
        self.nodes.push(ir);
        Ok(())
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
        self.shapes
            .get(&v.name)
            .map(|s| shears_core::shape::channels(s))
            .unwrap_or(0)
    }

    /// `Slice` of channels (axis 1, step 1) of a map or vector.
    fn slice(
        &mut self,
        node: &Node,
        cfg: &onnx_ir::node::slice::SliceConfig,
    ) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::Map, Layout::Vector])?;
        let c = self.channels(&x) as i64;
        let need =
            |what: &str| unsupported(node, format!("its {what} are not known before run time"));
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
        let ([start], [end], [1], [1]) = (
            starts.as_slice(),
            ends.as_slice(),
            axes.as_slice(),
            steps.as_slice(),
        ) else {
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
    fn split(
        &mut self,
        node: &Node,
        cfg: &onnx_ir::node::split::SplitConfig,
    ) -> Result<(), OnnxError> {
        use onnx_ir::node::split::SplitSizesInput;
        let x = self.data(node, 0, &[Layout::Map, Layout::Vector])?;
        if cfg.axis != 1 {
            return Err(unsupported(
                node,
                format!(
                    "Split on axis {} is not supported: only the channel axis 1",
                    cfg.axis
                ),
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
                .and_then(|v| {
                    v.into_iter()
                        .map(|d| d.and_then(|d| usize::try_from(d).ok()))
                        .collect()
                })
                .ok_or_else(|| {
                    unsupported(node, "its split sizes are not known before run time".into())
                })?,
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
            let op = Op::Slice(ChannelSlice {
                start,
                end: start + size,
            });
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
            return Err(unsupported(
                node,
                format!("its weight has shape {:?}, not a matrix", w.shape()),
            ));
        };
        // A transposed view (a MatMul's stored `[in, out]` matrix) is not row-major yet.
        let w = w
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&[out_channels, in_channels, 1, 1]))
            .map_err(|e| unsupported(node, e.to_string()))?;
        let bias = match bias {
            None => None,
            Some(b) if b.len() == out_channels => Some(
                b.into_shape_with_order(IxDyn(&[out_channels]))
                    .map_err(|e| unsupported(node, e.to_string()))?,
            ),
            Some(b) => {
                return Err(unsupported(
                    node,
                    format!("its bias has shape {:?}", b.shape()),
                ));
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
        self.keep_geo(node);
        self.push(node, op, vec![x.name], params, x.layout, Some(wname))
    }

    /// A per-position op on Swin's windows keeps its input's window geometry.
    pub(super) fn keep_geo(&mut self, node: &Node) {
        let geo = node
            .inputs()
            .iter()
            .find_map(|a| self.windows.get(&a.name).copied());
        if let (Some(geo), Some(out)) = (geo, node.outputs().first()) {
            self.windows.insert(out.name.clone(), geo);
        }
    }

    /// `Mul`, `Add`, `Sub` or `Div` of a computed value and a stored per-channel or scalar
    /// constant: a per-channel affine of the IR.
    fn constant_arithmetic(&mut self, node: &Node) -> Result<(), OnnxError> {
        let ins = node.inputs();
        let Some(k) = (0..ins.len().min(2)).find(|&k| ins[k].value().is_some()) else {
            return Err(unsupported(
                node,
                "it has no stored constant operand".into(),
            ));
        };
        let x = self.data(
            node,
            1 - k,
            &[
                Layout::Map,
                Layout::Vector,
                Layout::Nhwc,
                Layout::NhwcRows,
                Layout::Windows,
            ],
        )?;
        self.keep_geo(node);
        let (_, c) = constant(node, k, "constant")?;
        let channels = self.channels(&x);
        // The constant must broadcast per channel: along axis 1 of NCHW, the last axis of NHWC.
        let per_channel: Option<Vec<f32>> = {
            let dims: Vec<usize> = c.shape().iter().copied().filter(|&d| d != 1).collect();
            let values: Vec<f32> = c.iter().copied().collect();
            let aligned = match x.layout {
                Layout::Nhwc | Layout::NhwcRows | Layout::Vector | Layout::Windows => {
                    c.shape().last().is_none_or(|&d| d == channels || d == 1)
                }
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
            return Err(unsupported(
                node,
                "its constant gives a non-finite scale or shift".into(),
            ));
        }
        let map = x.layout != Layout::Vector;
        let shape: Vec<usize> = if map {
            vec![channels, 1, 1]
        } else {
            vec![channels]
        };
        let arr =
            |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&shape), v).expect("one value per channel");
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

    /// The table of the ops the importer maps: each ONNX op to its function in `ops.rs`.
    fn map_node(&mut self, node: &Node) -> Result<(), OnnxError> {
        if computes_a_shape(node, |v| self.shape_values.contains_key(v)) {
            self.eval_shape_node(node);
            // Shape → Gather → Unsqueeze → Concat before a Reshape: what a PyTorch `view(n, -1)`
            // leaves when the batch axis is dynamic. The Reshape is judged by its output shape,
            // so the chain itself maps to nothing.
            return Ok(());
        }
        if let Some(done) = self.window_pattern(node) {
            return done;
        }
        if let Some(done) = self.token_pattern(node) {
            return done;
        }
        match node {
            Node::Conv2d(_) => self.import_conv2d(node),
            Node::BatchNormalization(_) => self.import_batch_normalization(node),
            Node::Relu(_) => self.import_relu(node),
            Node::Sigmoid(_) => self.activation(node, Activation::Sigmoid),
            Node::HardSigmoid(_) => self.import_hard_sigmoid(node),
            Node::HardSwish(_) => self.activation(node, Activation::HardSwish),
            Node::LeakyRelu(_) => self.import_leaky_relu(node),
            Node::Tanh(_) => self.activation(node, Activation::Tanh),
            Node::Gelu(_) => self.import_gelu(node),
            Node::Erf(_) => self.gelu_step(node),
            Node::Div(_) => self.import_div(node),
            Node::Clip(_) => self.import_clip(node),
            Node::MaxPool2d(_) => self.import_max_pool2d(node),
            Node::AveragePool2d(_) => self.import_average_pool2d(node),
            Node::GlobalAveragePool(_) => self.global_pool(node, true, false),
            Node::ReduceMean(_) | Node::ReduceMax(_) => self.import_spatial_reduce(node),
            Node::GlobalMaxPool(_) => self.global_pool(node, true, true),
            Node::Pad(_) => self.import_pad(node),
            Node::Flatten(_) => self.import_flatten(node),
            Node::Reshape(_) => self.import_reshape(node),
            Node::Transpose(_) => self.import_transpose(node),
            Node::Slice(_) => self.import_slice(node),
            Node::Split(_) => self.import_split(node),
            Node::Linear(_) => self.import_linear(node),
            Node::MatMul(_) => self.import_mat_mul(node),
            Node::LayerNormalization(_) => self.import_layer_normalization(node),
            Node::Sub(_) => self.constant_arithmetic(node),
            Node::InstanceNormalization(_) => self.import_instance_normalization(node),
            Node::Resize(_) => self.import_resize(node),
            Node::Gemm(_) => self.import_gemm(node),
            Node::Mul(_) => self.mul(node),
            Node::Add(_) | Node::Sum(_) => self.import_add(node),
            Node::Concat(_) => self.import_concat(node),
            // Initializers and folded constants: their consumers read them through `value()`.
            Node::Constant(_) => Ok(()),
            Node::Identity(_) | Node::Dropout(_) => self.import_identity(node),
            _ => Err(OnnxError::Unsupported {
                node: node.name().to_string(),
                op: node.node_type().to_string(),
                detail: format!("this op is not supported; shears imports {SUPPORTED_OPS}"),
            }),
        }
    }

    /// A pointwise activation of one map or vector.
    fn activation(&mut self, node: &Node, f: Activation) -> Result<(), OnnxError> {
        let x = self.data(
            node,
            0,
            &[
                Layout::Map,
                Layout::Vector,
                Layout::Nhwc,
                Layout::NhwcRows,
                Layout::Tokens,
            ],
        )?;
        let layout = x.layout;
        self.push(node, Op::Activation(f), vec![x.name], vec![], layout, None)
    }

    /// A global average pool (`GlobalAveragePool`, or `ReduceMean` over H and W with `keep`).
    /// A kept `[N,C,1,1]` result that only flattens read is the IR's `[C]` vector (the flatten
    /// is then a no-op); one that a conv or a product reads stays a `[C,1,1]` map.
    fn global_pool(&mut self, node: &Node, keep: bool, max: bool) -> Result<(), OnnxError> {
        let x = self.data(node, 0, &[Layout::Map])?;
        let out = output_name(node, 0);
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
            Layout::Nhwc
            | Layout::NhwcRows
            | Layout::Tokens
            | Layout::TokensTnc
            | Layout::TokenRows
            | Layout::MapRows
            | Layout::Rolled
            | Layout::Tiles
            | Layout::TilesT
            | Layout::WindowGrid
            | Layout::MergePhases
            | Layout::Windows => {
                unreachable!("data() admitted only the layouts listed")
            }
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
        let layout = match x.layout {
            Layout::Tokens | Layout::TokensTnc | Layout::TokenRows => x.layout,
            _ => Layout::Vector,
        };
        self.push(node, op, vec![x.name], params, layout, Some(wname))
    }
}

/// The name of `node`'s input `k` (empty when it has none).
fn input_name(node: &Node, k: usize) -> String {
    node.inputs()
        .get(k)
        .map(|a| a.name.clone())
        .unwrap_or_default()
}

/// The name of `node`'s output `k` (empty when it has none).
fn output_name(node: &Node, k: usize) -> String {
    node.outputs()
        .get(k)
        .map(|o| o.name.clone())
        .unwrap_or_default()
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
        Layout::NhwcRows => "a channels-last map's positions as rows [N, H*W, C]",
        Layout::Tokens => "a [N, T, C] token sequence",
        Layout::TokensTnc => "a [T, N, C] token sequence (batch second)",
        Layout::TokenRows => "[T*N, C] rows of tokens",
        Layout::MapRows => "a [N, C, H*W] flattened map (read only by a transpose to tokens)",
        Layout::Rolled => "a channels-last map rolled by Swin's cyclic shift",
        Layout::Tiles | Layout::TilesT | Layout::WindowGrid | Layout::MergePhases => {
            "a channels-last map cut into Swin's windows"
        }
        Layout::Windows => "the [N*windows, w*w, C] tokens of Swin's windows",
    }
}
