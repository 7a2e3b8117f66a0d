//! The multi-node patterns exporters write for one operation, folded back into one op of the
//! IR: GELU's `x / √2 → Erf → + 1 → · x → · 0.5` chain, SiLU's `x * Sigmoid(x)`, a channel
//! affine after a norm or an affine, and the shape values a PyTorch export computes at run
//! time (`Shape → Gather → ... → Concat`) that a Reshape, Slice or Split reads. The channel
//! shuffle's and the group norm's steps are tracked here too (`GroupNormStep`) and completed by
//! the Reshape that ends them (`ops.rs`).

use super::*;

impl Importer {
    /// The pending GELU step that `node` continues, if it does: its inputs are a pending value
    /// (or, for the first step, any value) and the constant the next step needs.
    pub(super) fn gelu_input(&self, node: &Node) -> Option<(GeluStep, Value)> {
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
    pub(super) fn gelu_step(&mut self, node: &Node) -> Result<(), OnnxError> {
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

    /// Records the value a shape-computing node produces, where it is known: `Shape` of an
    /// imported value (the batch unknown), and Gather, Unsqueeze, Squeeze, Cast, Concat and
    /// integer arithmetic over those and constants. Reshapes and slices read these to find
    /// their static targets when the exporter computed them at run time.
    pub(super) fn eval_shape_node(&mut self, node: &Node) {
        let ins = node.inputs();
        let num = |k: usize| ins.get(k).and_then(|a| self.numbers(a));
        let out_float = node
            .outputs()
            .first()
            .is_some_and(|o| !o.ty.is_shape() && o.ty.elem_type().is_float());
        let result: Option<Vec<Option<f64>>> = match node {
            // The length of a 1-D shape value (PyTorch's `F.pad` counts its pads this way).
            Node::Shape(_)
                if ins
                    .first()
                    .is_some_and(|a| self.shape_values.contains_key(&a.name)) =>
            {
                ins.first()
                    .and_then(|a| self.shape_values.get(&a.name))
                    .map(|v| vec![Some(v.len() as f64)])
            }
            Node::Shape(_)
                if ins
                    .first()
                    .is_some_and(|a| self.attention.contains_key(&a.name)) =>
            {
                ins.first().and_then(|a| self.step_dims(&a.name))
            }
            Node::Shape(_) => ins.first().and_then(|a| {
                let v = self.values.get(&a.name)?;
                let s = self.shapes.get(&v.name)?;
                // Layouts whose batch is not the first axis.
                match v.layout {
                    Layout::Rolled
                    | Layout::Tiles
                    | Layout::TilesT
                    | Layout::WindowGrid
                    | Layout::MergePhases
                    | Layout::Windows => {
                        return self.window_dims(&a.name);
                    }
                    Layout::TokensTnc => {
                        return Some(vec![Some(s[0] as f64), None, Some(s[1] as f64)]);
                    }
                    Layout::TokenRows => return Some(vec![None, Some(s[1] as f64)]),
                    _ => {}
                }
                let dims: Vec<usize> = match v.layout {
                    Layout::Pooled => vec![s[0], 1, 1],
                    Layout::Map | Layout::Vector => s.clone(),
                    Layout::Nhwc => vec![s[1], s[2], s[0]],
                    Layout::NhwcRows => vec![s[1] * s[2], s[0]],
                    Layout::Tokens => s.clone(),
                    Layout::MapRows => vec![s[0], s[1] * s[2]],
                    Layout::TokensTnc
                    | Layout::TokenRows
                    | Layout::Rolled
                    | Layout::Tiles
                    | Layout::TilesT
                    | Layout::WindowGrid
                    | Layout::MergePhases
                    | Layout::Windows => unreachable!("returned above"),
                };
                Some(
                    std::iter::once(None)
                        .chain(dims.into_iter().map(|d| Some(d as f64)))
                        .collect(),
                )
            }),
            Node::Gather(_) => match (num(0), num(1).as_deref()) {
                (Some(d), Some([Some(i)])) => {
                    let i = if *i < 0.0 { *i + d.len() as f64 } else { *i };
                    d.get(i as usize).copied().map(|x| vec![x])
                }
                _ => None,
            },
            Node::Unsqueeze(_) | Node::Squeeze(_) => num(0),
            // A cast to an integer type truncates, as ONNX's does.
            Node::Cast(_) if out_float => num(0),
            Node::Cast(_) => num(0).map(|v| v.into_iter().map(|x| x.map(f64::trunc)).collect()),
            Node::Ceil(_) => num(0).map(|v| v.into_iter().map(|x| x.map(f64::ceil)).collect()),
            Node::Floor(_) => num(0).map(|v| v.into_iter().map(|x| x.map(f64::floor)).collect()),
            Node::Sqrt(_) => num(0).map(|v| v.into_iter().map(|x| x.map(f64::sqrt)).collect()),
            // `shape[a:b]` of a 1-D shape value (a flatten's `[N, C, -1]` keeps `shape[0:2]`).
            Node::Slice(sl) => {
                let bound = |b: &onnx_ir::node::slice::SliceInput| match b {
                    onnx_ir::node::slice::SliceInput::Static(v) => v.first().copied(),
                    onnx_ir::node::slice::SliceInput::Runtime(r) => ins
                        .get(r.input_index)
                        .and_then(|a| self.symbolic(a))
                        .and_then(|v| v.first().copied().flatten()),
                };
                let step_one = match &sl.config.steps {
                    None => true,
                    Some(s) => bound(s) == Some(1),
                };
                let rows = ins
                    .first()
                    .and_then(|a| self.shape_dims.get(&a.name))
                    .copied();
                let reversed = match &sl.config.steps {
                    Some(s) => bound(s) == Some(-1),
                    None => false,
                };
                match (num(0), bound(&sl.config.starts), bound(&sl.config.ends)) {
                    // All rows of a matrix in reverse (`F.pad`'s pairs, last axis first).
                    (Some(d), Some(-1), Some(end))
                        if reversed && end <= -(d.len() as i64) && rows.is_some() =>
                    {
                        let [r, c] = rows.expect("checked");
                        let out = node.outputs()[0].name.clone();
                        self.shape_dims.insert(out, [r, c]);
                        Some(
                            (0..r)
                                .rev()
                                .flat_map(|i| d[i * c..(i + 1) * c].to_vec())
                                .collect(),
                        )
                    }
                    (Some(d), Some(a), Some(b)) if step_one && rows.is_none() => {
                        let len = d.len() as i64;
                        let clamp =
                            |i: i64| (if i < 0 { i + len } else { i }).clamp(0, len) as usize;
                        let (a, b) = (clamp(a), clamp(b));
                        (a <= b).then(|| d[a..b].to_vec())
                    }
                    _ => None,
                }
            }
            Node::ConstantOfShape(c) => {
                use onnx_ir::node::constant_of_shape::ConstantOfShapeShape;
                let len = match &c.config.shape {
                    ConstantOfShapeShape::Static(v) => v.first().map(|&l| l as f64),
                    ConstantOfShapeShape::Runtime(r) => ins
                        .get(r.input_index)
                        .and_then(|a| self.numbers(a))
                        .and_then(|v| v.first().copied().flatten()),
                };
                let fill = c
                    .config
                    .value
                    .as_ref()
                    .and_then(|d| d.to_f64_vec().ok())
                    .and_then(|v| v.first().copied())
                    .unwrap_or(0.0);
                len.filter(|&l| l >= 0.0)
                    .map(|l| vec![Some(fill); l as usize])
            }
            // A shape value as a matrix: `F.pad` reshapes its pad list to `[-1, 2]` pairs,
            // reverses the pairs, transposes and flattens them into ONNX's order.
            Node::Reshape(r) => {
                let target = match &r.config.shape {
                    onnx_ir::node::reshape::ReshapeInput::Static(v) => Some(v.clone()),
                    onnx_ir::node::reshape::ReshapeInput::Runtime(rt) => ins
                        .get(rt.input_index)
                        .and_then(|a| self.symbolic(a))
                        .and_then(|v| v.into_iter().collect::<Option<Vec<i64>>>()),
                };
                match (num(0), target.as_deref()) {
                    (Some(v), Some([-1])) => Some(v),
                    (Some(v), Some([-1, c])) if *c > 0 && v.len() % *c as usize == 0 => {
                        let out = node.outputs()[0].name.clone();
                        self.shape_dims
                            .insert(out, [v.len() / *c as usize, *c as usize]);
                        Some(v)
                    }
                    _ => None,
                }
            }
            Node::Transpose(t) if t.config.perm == [1, 0] => {
                match (
                    num(0),
                    ins.first().and_then(|a| self.shape_dims.get(&a.name)),
                ) {
                    (Some(v), Some(&[r, c])) => {
                        let out = node.outputs()[0].name.clone();
                        self.shape_dims.insert(out, [c, r]);
                        Some((0..r * c).map(|k| v[(k % r) * c + k / r]).collect())
                    }
                    _ => None,
                }
            }
            Node::Mod(_) => match (num(0), num(1)) {
                (Some(a), Some(b)) if b.len() == 1 => {
                    let m = b[0];
                    Some(
                        a.into_iter()
                            .map(|x| match (x, m) {
                                (Some(x), Some(m)) if m != 0.0 => Some(x.rem_euclid(m)),
                                _ => None,
                            })
                            .collect(),
                    )
                }
                _ => None,
            },
            Node::Concat(_) => (0..ins.len())
                .map(num)
                .collect::<Option<Vec<_>>>()
                .map(|parts| parts.concat()),
            // Clip by constant bounds (an absent bound is none): `max(x, 0)` in timm's padding.
            Node::Clip(_) => num(0).map(|v| {
                let bound = |k: usize| num(k).and_then(|b| b.first().copied().flatten());
                let (lo, hi) = (bound(1), bound(2));
                v.into_iter()
                    .map(|x| x.map(|x| x.max(lo.unwrap_or(f64::MIN)).min(hi.unwrap_or(f64::MAX))))
                    .collect()
            }),
            Node::Div(_)
            | Node::Mul(_)
            | Node::Add(_)
            | Node::Sub(_)
            | Node::Pow(_)
            | Node::Max(_)
            | Node::Min(_) => match (num(0), num(1)) {
                (Some(a), Some(b)) if a.len() == b.len() || b.len() == 1 || a.len() == 1 => {
                    let n = a.len().max(b.len());
                    let at = |v: &Vec<Option<f64>>, i: usize| v[if v.len() == 1 { 0 } else { i }];
                    Some(
                        (0..n)
                            .map(|i| {
                                let (x, y) = (at(&a, i)?, at(&b, i)?);
                                match node {
                                    // Integer division truncates in ONNX.
                                    Node::Div(_) if out_float => (y != 0.0).then(|| x / y),
                                    Node::Div(_) => (y != 0.0).then(|| (x / y).trunc()),
                                    Node::Mul(_) => Some(x * y),
                                    Node::Add(_) => Some(x + y),
                                    Node::Sub(_) => Some(x - y),
                                    // torchvision's attention scale `head_dim ** -0.5`.
                                    Node::Pow(_) => Some(x.powf(y)).filter(|v| v.is_finite()),
                                    Node::Max(_) => Some(x.max(y)),
                                    _ => Some(x.min(y)),
                                }
                            })
                            .collect(),
                    )
                }
                _ => None,
            },
            _ => None,
        };
        if let (Some(v), Some(out)) = (result, node.outputs().first()) {
            self.shape_values.insert(out.name.clone(), v);
        }
    }

    /// A number input's values: a stored constant, or a shape value recorded before.
    pub(super) fn numbers(&self, a: &Argument) -> Option<Vec<Option<f64>>> {
        if let Some(d) = a.value() {
            return d
                .to_f64_vec()
                .ok()
                .map(|v| v.into_iter().map(Some).collect());
        }
        self.shape_values.get(&a.name).cloned()
    }

    /// An integer input's values (`None` where unknown before run time, or not whole).
    pub(super) fn symbolic(&self, a: &Argument) -> Option<Vec<Option<i64>>> {
        let v = self.numbers(a)?;
        Some(
            v.into_iter()
                .map(|x| x.filter(|x| x.fract() == 0.0).map(|x| x as i64))
                .collect(),
        )
    }

    /// A Slice or Split bound: stored, or computed from shapes by the exporter.
    pub(super) fn ints(
        &self,
        node: &Node,
        input: &onnx_ir::node::slice::SliceInput,
    ) -> Option<Vec<i64>> {
        match input {
            onnx_ir::node::slice::SliceInput::Static(v) => Some(v.clone()),
            onnx_ir::node::slice::SliceInput::Runtime(r) => self
                .symbolic(node.inputs().get(r.input_index)?)?
                .into_iter()
                .collect(),
        }
    }

    /// The static target of a Reshape, from its stored shape or the shape values recorded.
    pub(super) fn reshape_target(
        &self,
        node: &Node,
        r: &onnx_ir::node::reshape::ReshapeConfig,
    ) -> Option<Vec<Option<i64>>> {
        match &r.shape {
            onnx_ir::node::reshape::ReshapeInput::Static(s) => {
                Some(s.iter().map(|&d| Some(d)).collect())
            }
            onnx_ir::node::reshape::ReshapeInput::Runtime(rt) => {
                self.symbolic(node.inputs().get(rt.input_index)?)
            }
        }
    }
}

/// Rewrites `x * Sigmoid(x)` (SiLU as PyTorch exports it before opset 20) into one SiLU node,
/// where the sigmoid has no other reader. The product keeps its name, so its readers are intact.
pub(super) fn fuse_silu(nodes: &mut Vec<IrNode>, output: &str) {
    let readers = reader_counts(nodes);
    let at: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    let mut dropped = vec![false; nodes.len()];
    for i in 0..nodes.len() {
        if nodes[i].op != Op::Mul {
            continue;
        }
        let (a, b) = (nodes[i].inputs[0].clone(), nodes[i].inputs[1].clone());
        let fused = [(a.clone(), b.clone()), (b, a)]
            .into_iter()
            .find_map(|(x, s)| {
                let j = *at.get(&s)?;
                let is_sigmoid_of_x = nodes[j].op == Op::Activation(Activation::Sigmoid)
                    && nodes[j].inputs == [x.clone()];
                (is_sigmoid_of_x && s != output && readers.get(&s) == Some(&1)).then_some((j, x))
            });
        if let Some((j, x)) = fused {
            nodes[i].op = Op::Activation(Activation::Silu);
            nodes[i].inputs = vec![x];
            dropped[j] = true;
        }
    }
    let mut k = 0;
    nodes.retain(|_| {
        k += 1;
        !dropped[k - 1]
    });
}

/// How many nodes read each value.
fn reader_counts(nodes: &[IrNode]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for n in nodes {
        for v in &n.inputs {
            *counts.entry(v.clone()).or_default() += 1;
        }
    }
    counts
}

/// Folds a per-channel affine into the op before it when that op's value has no other reader:
/// an affine after an affine (what `Mul` then `Add` by constants import as), and the scale and
/// shift PyTorch's group-norm export applies after its instance norm, into the norm's own
/// tensors. The later node keeps its name (its readers are intact) and takes the earlier one's
/// op and inputs.
pub(super) fn fold_affines(nodes: &mut Vec<IrNode>, weights: &mut Weights, output: &str) {
    // One pass in topological order: a node that took an earlier one's op (a norm, an affine)
    // can itself be folded into the affine after it.
    let readers = reader_counts(nodes);
    let mut at: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    let mut dropped = vec![false; nodes.len()];
    for i in 0..nodes.len() {
        if !matches!(nodes[i].op, Op::Affine(_)) {
            continue;
        }
        let prev = nodes[i].inputs[0].clone();
        let Some(&j) = at.get(&prev) else { continue };
        if readers.get(&prev) != Some(&1) || prev == output {
            continue;
        }
        let (a, b) = match nodes[j].op {
            Op::Affine(_) => ("scale", "shift"),
            Op::GroupNorm(_) | Op::LayerNorm(_) => ("weight", "bias"),
            _ => continue,
        };
        let here = nodes[i].name.clone();
        let tensor = |name: String| weights.get(&name).cloned().map(|t| (name, t));
        let (Some(s), Some(t), Some(w), Some(c)) = (
            tensor(format!("{here}.scale")),
            tensor(format!("{here}.shift")),
            tensor(format!("{prev}.{a}")),
            tensor(format!("{prev}.{b}")),
        ) else {
            continue;
        };
        // (w x̂ + c) s + t = (w s) x̂ + (c s + t), channel by channel.
        let (sv, tv) = (s.1.iter().copied(), t.1.iter().copied());
        let scaled: Vec<(f32, f32)> = sv.zip(tv).collect();
        let (mut new_w, mut new_c) = (w.1.clone(), c.1.clone());
        for (v, &(sk, _)) in new_w.iter_mut().zip(&scaled) {
            *v *= sk;
        }
        for (v, &(sk, tk)) in new_c.iter_mut().zip(&scaled) {
            *v = *v * sk + tk;
        }
        for name in [s.0, t.0, w.0, c.0] {
            weights.remove(&name);
        }
        weights.insert(format!("{here}.{a}"), new_w);
        weights.insert(format!("{here}.{b}"), new_c);
        let earlier = std::mem::take(&mut nodes[j].inputs);
        nodes[i].op = nodes[j].op.clone();
        nodes[i].inputs = earlier;
        dropped[j] = true;
        at.insert(here, i);
    }
    let mut k = 0;
    nodes.retain(|_| {
        k += 1;
        !dropped[k - 1]
    });
}

/// Whether `node` only computes shapes or indices (integer tensors, shape values, scalars), as
/// the ops of a flatten's shape chain do, or computes on such values alone (`known`: every input
/// is a stored constant or a shape value recorded before, as timm's padding arithmetic is).
pub(super) fn computes_a_shape(node: &Node, known: impl Fn(&str) -> bool) -> bool {
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
            | Node::Ceil(_)
            | Node::Floor(_)
            | Node::Sqrt(_)
            | Node::Clip(_)
            | Node::Max(_)
            | Node::Min(_)
            | Node::Reshape(_)
            | Node::ConstantOfShape(_)
            | Node::Equal(_)
            | Node::Where(_)
            | Node::Mod(_)
            | Node::Pow(_)
            | Node::Transpose(_)
    );
    let on_shapes = node
        .inputs()
        .iter()
        .filter(|a| !a.name.is_empty())
        .all(|a| a.value().is_some() || known(&a.name))
        && node.inputs().iter().any(|a| known(&a.name));
    shape_op
        && !node.outputs().is_empty()
        && (on_shapes
            || node
                .outputs()
                .iter()
                .all(|o| o.ty.is_shape() || o.ty.is_scalar() || !o.ty.elem_type().is_float()))
}

/// onnx-ir 0.22 refuses `ceil_mode` on AveragePool before opset 19, though ONNX has it since
/// opset 10 (PyTorch exports it at 17). The attribute is taken out of the bytes onnx-ir reads and
/// returned per AveragePool, in file order, for the importer to put back.
pub(super) fn strip_avgpool_ceil_mode(bytes: &[u8]) -> Result<(Vec<u8>, Vec<bool>), OnnxError> {
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

/// For every ONNX value, the op types of the nodes that read it.
pub(super) fn reader_kinds(nodes: &[Node]) -> HashMap<String, Vec<String>> {
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

/// The step of the GELU pattern (`x / √2 → Erf → + 1 → · x → · 0.5`) a value has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GeluStep {
    Div,
    Erf,
    AddOne,
    MulX,
}

/// How far a group norm's export (Reshape → InstanceNormalization → Reshape) has come.
#[derive(Debug, Clone)]
pub(super) enum GroupNormStep {
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
