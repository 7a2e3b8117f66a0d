//! Swin's patterns of an ONNX file (torchvision's `shifted_window_attention` and
//! `PatchMerging`, on channels-last maps), folded into the IR's map ops:
//!
//! - the cyclic shift: `Concat(Slice(x, s..H), Slice(x, 0..s))` along rows or columns maps to
//!   nothing; the ONNX value is remembered as the IR map rolled by `s` ([`Layout::Rolled`]),
//!   and the roll back cancels it;
//! - the window partition: `Reshape [N, H/w, w, W/w, w, C]`, `Transpose [0,1,3,2,4,5]`,
//!   `Reshape [N*windows, w*w, C]` maps to nothing either ([`Layout::Windows`]); the linear
//!   layers on windows are 1×1 convolutions of the map, since they act on each position alone;
//! - the attention of [`super::tokens`] on windows, whose scores get the relative position bias
//!   (a stored `[heads, N, N]` constant, or the `Gather` of a stored table's rows the exporter
//!   computes) and, when shifted, the mask, becomes one [`Op::WindowAttention`];
//! - the window reverse (the partition's steps backwards) and the crop after padding: a
//!   [`Op::SpatialSlice`], as are patch merging's strided slices.

use super::{Importer, Layout, Value, unsupported};
use super::{input_name as input, output_name as output};
use crate::OnnxError;
use ndarray::{ArrayD, IxDyn};
use onnx_ir::Node;
use onnx_ir::TensorDataExt;
use shears_core::graph::Op;
use shears_core::ops::{SpatialSlice, WindowAttention};

/// Where an ONNX value of Swin's attention stands relative to the IR map it is bound to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Geo {
    /// How far the ONNX value is rolled up and left from the IR map.
    pub shift: [usize; 2],
    /// The window side once the map is cut into windows (0 before).
    pub window: usize,
}

/// One part of a roll: a Slice of the rows (axis 0) or columns (axis 1) of a map, `start..end`,
/// not yet mapped (a roll's parts map to nothing; anything else makes it a crop).
#[derive(Debug, Clone)]
pub(super) struct RollPart {
    x: Value,
    geo: Geo,
    axis: usize,
    start: usize,
    end: usize,
}

/// The window geometry, position table and mask an attention on windows has gathered.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct WindowHeads {
    pub geo: Geo,
    /// `[(2w-1)², heads]`, once the scores got their position bias.
    pub table: Option<ArrayD<f32>>,
    /// Whether the scores got the shift mask.
    pub masked: bool,
}

impl Importer {
    /// Maps `node` when it is a step of a Swin pattern; `None` when it is not one.
    pub(super) fn window_pattern(&mut self, node: &Node) -> Option<Result<(), OnnxError>> {
        let layout = |k: usize| self.values.get(&input(node, k)).map(|v| v.layout);
        match node {
            Node::Slice(sl) => {
                let spatial = matches!(layout(0)?, Layout::Nhwc | Layout::Rolled | Layout::Map);
                if !spatial {
                    return None;
                }
                let cfg = sl.config.clone();
                self.spatial_slice(node, &cfg)
            }
            Node::Concat(c) => {
                if !(0..node.inputs().len()).any(|k| self.roll_parts.contains_key(&input(node, k)))
                {
                    return None;
                }
                Some(self.roll(node, c.config.axis as i64))
            }
            Node::Reshape(r) => {
                let l = layout(0)?;
                if !matches!(
                    l,
                    Layout::Nhwc
                        | Layout::NhwcRows
                        | Layout::Rolled
                        | Layout::Tiles
                        | Layout::TilesT
                        | Layout::WindowGrid
                        | Layout::MergePhases
                        | Layout::Windows
                ) {
                    return None;
                }
                let target = self.reshape_target(node, &r.config)?;
                self.window_reshape(node, l, &target)
            }
            Node::Transpose(t) => {
                let l = layout(0)?;
                let perm = t.config.perm.as_slice();
                let next = match (l, perm) {
                    (Layout::Tiles, [0, 1, 3, 2, 4, 5]) => Layout::TilesT,
                    // timm's patch merging: 2x2 tiles with their column phase first.
                    (Layout::Tiles, [0, 1, 3, 4, 2, 5])
                        if self.windows.get(&input(node, 0)).map(|g| g.window) == Some(2) =>
                    {
                        Layout::MergePhases
                    }
                    (Layout::TilesT, [0, 1, 3, 2, 4, 5]) => Layout::Tiles,
                    (
                        Layout::Tiles
                        | Layout::TilesT
                        | Layout::WindowGrid
                        | Layout::Windows
                        | Layout::Rolled,
                        _,
                    ) => {
                        return Some(Err(unsupported(
                            node,
                            format!("Transpose {perm:?} of a map cut into windows"),
                        )));
                    }
                    _ => return None,
                };
                Some(self.rebind(node, next, None))
            }
            _ => None,
        }
    }

    /// The ONNX dims of a value of a window layout (the batch unknown).
    pub(super) fn window_dims(&self, value: &str) -> Option<Vec<Option<f64>>> {
        let v = self.values.get(value)?;
        let geo = self.windows.get(value).copied().unwrap_or_default();
        let s = self.shapes.get(&v.name)?;
        let (c, h, w, k) = (s[0], s[1], s[2], geo.window.max(1));
        let dims = match v.layout {
            Layout::Rolled => vec![h, w, c],
            Layout::Tiles => vec![h / k, k, w / k, k, c],
            Layout::TilesT => vec![h / k, w / k, k, k, c],
            Layout::Windows => vec![k * k, c],
            Layout::WindowGrid => vec![k, k, c],
            Layout::MergePhases => vec![h / 2, w / 2, 2, 2, c],
            _ => return None,
        };
        Some(
            std::iter::once(None)
                .chain(dims.into_iter().map(|d| Some(d as f64)))
                .collect(),
        )
    }

    /// Binds `node`'s output to its input's IR value in `layout`, with `geo` (else the input's).
    fn rebind(&mut self, node: &Node, layout: Layout, geo: Option<Geo>) -> Result<(), OnnxError> {
        let x = self
            .values
            .get(&input(node, 0))
            .cloned()
            .expect("the caller read the input's layout");
        let geo = geo.unwrap_or_else(|| {
            self.windows
                .get(&input(node, 0))
                .copied()
                .unwrap_or_default()
        });
        self.windows.insert(output(node, 0), geo);
        self.bind(
            node,
            Value {
                name: x.name,
                layout,
            },
        )
    }

    /// A Slice of a map's rows or columns: a roll's part (when a Concat alone reads it and it
    /// takes one axis by step 1), or a crop or subsample ([`Op::SpatialSlice`]).
    fn spatial_slice(
        &mut self,
        node: &Node,
        cfg: &onnx_ir::node::slice::SliceConfig,
    ) -> Option<Result<(), OnnxError>> {
        let x = self.values.get(&input(node, 0)).cloned()?;
        let s = self.shapes.get(&x.name)?.clone();
        let starts = self.ints(node, &cfg.starts)?;
        let ends = self.ints(node, &cfg.ends)?;
        let axes = match &cfg.axes {
            Some(a) => self.ints(node, a)?,
            None => (0..starts.len() as i64).collect(),
        };
        let steps = match &cfg.steps {
            Some(a) => self.ints(node, a)?,
            None => vec![1; starts.len()],
        };
        let rank = 4i64;
        // The ONNX axes of rows and columns in this layout.
        let (row_axis, col_axis) = match x.layout {
            Layout::Map => (2, 3),
            _ => (1, 2),
        };
        let mut start = [0usize, 0];
        let mut end = [s[1], s[2]];
        let mut step = [1usize, 1];
        for k in 0..axes
            .len()
            .min(starts.len())
            .min(ends.len())
            .min(steps.len())
        {
            let axis = if axes[k] < 0 { axes[k] + rank } else { axes[k] };
            let a = if axis == row_axis {
                0
            } else if axis == col_axis {
                1
            } else {
                // A channel slice: not this pattern's (only maps have one).
                return None;
            };
            let size = [s[1], s[2]][a] as i64;
            let clamp = |v: i64| (if v < 0 { v + size } else { v }).clamp(0, size) as usize;
            if steps[k] < 1 {
                return Some(Err(unsupported(
                    node,
                    format!("a slice of rows or columns by step {}", steps[k]),
                )));
            }
            (start[a], end[a], step[a]) = (clamp(starts[k]), clamp(ends[k]), steps[k] as usize);
        }
        let one_axis = (0..2)
            .filter(|&a| (start[a], end[a], step[a]) != (0, [s[1], s[2]][a], 1))
            .count();
        let only_concat = self
            .readers
            .get(&output(node, 0))
            .is_some_and(|r| r.iter().all(|t| t == "Concat"));
        if x.layout != Layout::Map && one_axis == 1 && step == [1, 1] && only_concat {
            let a = if (start[0], end[0]) != (0, s[1]) {
                0
            } else {
                1
            };
            let geo = self
                .windows
                .get(&input(node, 0))
                .copied()
                .unwrap_or_default();
            self.roll_parts.insert(
                output(node, 0),
                RollPart {
                    x,
                    geo,
                    axis: a,
                    start: start[a],
                    end: end[a],
                },
            );
            return Some(Ok(()));
        }
        if (start, end, step) == ([0, 0], [s[1], s[2]], [1, 1]) {
            // A crop of a map that needed no padding (timm crops the rolled map).
            let layout = x.layout;
            return Some(self.rebind(node, layout, None));
        }
        if x.layout == Layout::Rolled {
            return Some(Err(unsupported(
                node,
                "a slice of a rolled map other than a part of a roll".into(),
            )));
        }
        if start[0] >= end[0] || start[1] >= end[1] {
            return Some(Err(unsupported(node, "an empty slice of a map".into())));
        }
        let layout = x.layout;
        Some(self.push(
            node,
            Op::SpatialSlice(SpatialSlice { start, end, step }),
            vec![x.name],
            vec![],
            layout,
            None,
        ))
    }

    /// `Concat` of roll parts: the map rolled; any other Concat of them maps the parts as
    /// crops first.
    fn roll(&mut self, node: &Node, axis: i64) -> Result<(), OnnxError> {
        let parts: Vec<Option<RollPart>> = (0..node.inputs().len())
            .map(|k| self.roll_parts.get(&input(node, k)).cloned())
            .collect();
        if let [Some(a), Some(b)] = parts.as_slice() {
            let s = self.shapes[&a.x.name].clone();
            let size = [s[1], s[2]][a.axis];
            let onnx_axis = a.axis as i64 + 1;
            let rolled = a.x.name == b.x.name
                && a.geo == b.geo
                && a.axis == b.axis
                && (axis == onnx_axis || axis == onnx_axis - 4)
                && a.end == size
                && b.start == 0
                && b.end == a.start
                && a.start > 0;
            if rolled {
                let mut geo = a.geo;
                geo.shift[a.axis] = (geo.shift[a.axis] + a.start) % size;
                let layout = if geo.shift == [0, 0] {
                    Layout::Nhwc
                } else {
                    Layout::Rolled
                };
                self.windows.insert(output(node, 0), geo);
                return self.bind(
                    node,
                    Value {
                        name: a.x.name.clone(),
                        layout,
                    },
                );
            }
        }
        // Not a roll: the parts are crops, and the Concat an ordinary one.
        for (k, part) in parts.into_iter().enumerate() {
            let Some(p) = part else { continue };
            if p.x.layout == Layout::Rolled {
                return Err(unsupported(
                    node,
                    "a Concat of slices of a rolled map that is not the roll back".into(),
                ));
            }
            let s = self.shapes[&p.x.name].clone();
            let (mut start, mut end) = ([0, 0], [s[1], s[2]]);
            (start[p.axis], end[p.axis]) = (p.start, p.end);
            let base = format!("{}_part{k}", super::clean_name(&self.original.node(node)));
            let op = Op::SpatialSlice(SpatialSlice {
                start,
                end,
                step: [1, 1],
            });
            let name = self.push_internal(node, &base, op, vec![p.x.name.clone()])?;
            self.values.insert(
                input(node, k),
                Value {
                    name,
                    layout: p.x.layout,
                },
            );
            self.roll_parts.remove(&input(node, k));
        }
        self.import_concat(node)
    }

    /// The Reshapes of the window partition and its reverse.
    fn window_reshape(
        &mut self,
        node: &Node,
        layout: Layout,
        target: &[Option<i64>],
    ) -> Option<Result<(), OnnxError>> {
        let x = self.values.get(&input(node, 0)).cloned()?;
        let s = self.shapes.get(&x.name)?.clone();
        let (c, h, w) = (s[0] as i64, s[1] as i64, s[2] as i64);
        let geo = self
            .windows
            .get(&input(node, 0))
            .copied()
            .unwrap_or_default();
        let k = geo.window as i64;
        let is = |v: Option<i64>, want: i64| v == Some(want);
        let fail = |what: &str| {
            Some(Err(unsupported(
                node,
                format!("a reshape of {what} to {target:?}"),
            )))
        };
        match (layout, target) {
            // [N, H, W, C] → [N, H/w, w, W/w, w, C]
            (Layout::Nhwc | Layout::Rolled, [_, Some(nh), Some(k1), Some(nw), Some(k2), cc])
                if k1 == k2 && *k1 > 0 && nh * k1 == h && nw * k2 == w && is(*cc, c) =>
            {
                let geo = Geo {
                    window: *k1 as usize,
                    ..geo
                };
                Some(self.rebind(node, Layout::Tiles, Some(geo)))
            }
            // timm's blocks run the MLP on the positions as rows and reshape back.
            (Layout::Nhwc, [_, rows, cc])
                if matches!(rows, Some(r) if *r == h * w || *r == -1) && is(*cc, c) =>
            {
                Some(self.rebind(node, Layout::NhwcRows, None))
            }
            (Layout::NhwcRows, [_, Some(hh), Some(ww), cc])
                if *hh == h && *ww == w && is(*cc, c) =>
            {
                Some(self.rebind(node, Layout::Nhwc, None))
            }
            (Layout::Nhwc | Layout::NhwcRows, _) => None,
            (Layout::Rolled, _) => fail("a rolled map"),
            // [N, H/w, W/w, w, w, C] or [N*windows, w, w, C] → [N*windows, w*w, C]
            (Layout::TilesT | Layout::WindowGrid, [_, n, cc])
                if matches!(n, Some(n) if *n == k * k) && is(*cc, c) =>
            {
                Some(self.rebind(node, Layout::Windows, None))
            }
            // timm's `window_partition` stops at [N*windows, w, w, C]; its attention block
            // views the windows' tokens so again before `window_reverse`.
            (Layout::TilesT | Layout::Windows, [_, Some(k1), Some(k2), cc])
                if *k1 == k && *k2 == k && is(*cc, c) =>
            {
                Some(self.rebind(node, Layout::WindowGrid, None))
            }
            (Layout::WindowGrid, [_, Some(nh), Some(nw), Some(k1), Some(k2), cc])
                if *k1 == k && *k2 == k && nh * k == h && nw * k == w && is(*cc, c) =>
            {
                Some(self.rebind(node, Layout::TilesT, None))
            }
            // [N, H/w, w, W/w, w, C] → [N, H, W, C]
            (Layout::Tiles, [_, Some(hh), Some(ww), cc]) if *hh == h && *ww == w && is(*cc, c) => {
                let back = if geo.shift == [0, 0] {
                    Layout::Nhwc
                } else {
                    Layout::Rolled
                };
                Some(self.rebind(node, back, Some(Geo { window: 0, ..geo })))
            }
            // [N*windows, w*w, C] → [N, H/w, W/w, w, w, C]
            (Layout::Windows, [_, Some(nh), Some(nw), Some(k1), Some(k2), cc])
                if *k1 == k && *k2 == k && nh * k == h && nw * k == w && is(*cc, c) =>
            {
                Some(self.rebind(node, Layout::TilesT, None))
            }
            // Heads split off packed queries, keys and values: the attention pattern's.
            (Layout::Windows, [_, _, Some(3), _, _]) => None,
            (Layout::Tiles, _) => fail("a map cut into windows [N, H/w, w, W/w, w, C]"),
            (Layout::TilesT, _) => fail("a map cut into windows [N, H/w, W/w, w, w, C]"),
            (Layout::Windows, _) => fail("windows [N*windows, w*w, C]"),
            (Layout::WindowGrid, _) => fail("windows [N*windows, w, w, C]"),
            // [N, H/2, W/2, 2, 2, C] flattened to [N, H/2, W/2, 4C]: channel block `2*dx + dy`
            // holds the positions (2i + dy, 2j + dx), torchvision's order of the four phases.
            (Layout::MergePhases, [_, Some(hh), Some(ww), cc])
                if *hh * 2 == h && *ww * 2 == w && (is(*cc, 4 * c) || *cc == Some(-1)) =>
            {
                Some(self.merge_phases(node, x, [h as usize, w as usize]))
            }
            (Layout::MergePhases, _) => fail("patch merging's [N, H/2, W/2, 2, 2, C]"),
            _ => None,
        }
    }

    /// The four 2x2 phases of a map concatenated on channels (patch merging).
    fn merge_phases(&mut self, node: &Node, x: Value, [h, w]: [usize; 2]) -> Result<(), OnnxError> {
        let base = super::clean_name(&self.original.node(node));
        let mut phases = Vec::new();
        for (k, start) in [[0, 0], [1, 0], [0, 1], [1, 1]].into_iter().enumerate() {
            let op = Op::SpatialSlice(SpatialSlice {
                start,
                end: [h, w],
                step: [2, 2],
            });
            let name =
                self.push_internal(node, &format!("{base}_x{k}"), op, vec![x.name.clone()])?;
            phases.push(name);
        }
        self.push(node, Op::Concat, phases, vec![], Layout::Nhwc, None)
    }

    /// The scores of an attention on windows plus a constant: the relative position bias
    /// (`[N*windows, H, N, N]` scores) or the shift mask (the scores viewed per window,
    /// `[N, windows, H, N, N]`).
    pub(super) fn window_bias(
        &mut self,
        node: &Node,
        other: &onnx_ir::Argument,
        mut wh: WindowHeads,
        heads: usize,
        per_window: bool,
    ) -> Result<WindowHeads, OnnxError> {
        let w = wh.geo.window;
        let n = w * w;
        if per_window {
            if other.value().is_none() && !self.unevaluated.contains_key(&other.name) {
                return Err(unsupported(
                    node,
                    "only a constant mask is added to the scores of windows".into(),
                ));
            }
            if wh.masked {
                return Err(unsupported(node, "a second mask on the same scores".into()));
            }
            wh.masked = true;
            return Ok(wh);
        }
        if wh.table.is_some() {
            return Err(unsupported(
                node,
                "a second position bias on the same scores".into(),
            ));
        }
        let shape = WindowAttention {
            heads,
            head_dim: 1,
            window: w,
            shift: [0, 0],
            scale: 1.0,
        };
        let index = shape.relative_index();
        let rows = shape.table_rows();
        let table = match other.value() {
            // Folded by the exporter: the gathered bias `[1, H, N, N]`; each table entry is
            // read back from the pairs at its offset, which must all agree.
            Some(d) => {
                let b: Vec<f32> = d
                    .to_f32_vec()
                    .map_err(|e| unsupported(node, format!("its position bias: {e}")))?;
                if b.len() != heads * n * n {
                    return Err(unsupported(
                        node,
                        format!(
                            "a constant of {} values added to attention scores of {heads} heads \
                             over windows of {n} tokens is not a [{heads}, {n}, {n}] position bias",
                            b.len()
                        ),
                    ));
                }
                let mut table = vec![f32::NAN; rows * heads];
                for h in 0..heads {
                    for (p, &r) in index.iter().enumerate() {
                        let v = b[h * n * n + p];
                        let t = &mut table[r * heads + h];
                        if t.is_nan() {
                            *t = v;
                        } else if (*t - v).abs() > 1e-6 * t.abs().max(1.0) {
                            return Err(unsupported(
                                node,
                                "the constant added to attention scores is not a relative \
                                 position bias (pairs at one offset differ)"
                                    .into(),
                            ));
                        }
                    }
                }
                ArrayD::from_shape_vec(IxDyn(&[rows, heads]), table)
                    .map_err(|e| unsupported(node, e.to_string()))?
            }
            // Computed by the exporter: `Gather(table, index)` reshaped to `[N, N, H]`,
            // transposed to `[H, N, N]` and unsqueezed.
            None => self.gathered_table(node, &other.name, &index, [rows, heads])?,
        };
        wh.table = Some(table);
        Ok(wh)
    }

    /// The stored table behind a computed position bias, with its index checked against
    /// Swin's relative index.
    fn gathered_table(
        &self,
        node: &Node,
        value: &str,
        index: &[usize],
        [rows, heads]: [usize; 2],
    ) -> Result<ArrayD<f32>, OnnxError> {
        let not = |why: &str| {
            unsupported(
                node,
                format!(
                    "the value added to attention scores is not a relative position bias: {why}"
                ),
            )
        };
        let mut v = value.to_string();
        let mut seen_transpose = false;
        loop {
            let producer = self
                .constant_nodes
                .get(&v)
                .ok_or_else(|| not(&format!("`{v}` is not computed from stored tensors")))?;
            match producer {
                Node::Unsqueeze(_) | Node::Reshape(_) | Node::Identity(_) => {
                    v = input(producer, 0);
                }
                Node::Transpose(t) if t.config.perm == [2, 0, 1] => {
                    seen_transpose = true;
                    v = input(producer, 0);
                }
                Node::Gather(g) if g.config.axis == 0 && seen_transpose => {
                    let table = producer.inputs()[0]
                        .value()
                        .and_then(|d| d.to_f32_vec().ok())
                        .ok_or_else(|| not("the gathered table is not stored"))?;
                    if table.len() != rows * heads {
                        return Err(not(&format!(
                            "the table has {} values, not {rows} offsets x {heads} heads",
                            table.len()
                        )));
                    }
                    let got = self
                        .stored_ints(&producer.inputs()[1].name, producer)
                        .ok_or_else(|| not("its index is not stored"))?;
                    let want: Vec<i64> = index.iter().map(|&i| i as i64).collect();
                    if got != want {
                        return Err(not("its index is not Swin's relative position index"));
                    }
                    return ArrayD::from_shape_vec(IxDyn(&[rows, heads]), table)
                        .map_err(|e| unsupported(node, e.to_string()));
                }
                other => {
                    return Err(not(&format!("it is made by a {} node", other.node_type())));
                }
            }
        }
    }

    /// An integer tensor that is stored, or a stored one reshaped.
    fn stored_ints(&self, value: &str, reader: &Node) -> Option<Vec<i64>> {
        let arg = reader.inputs().iter().find(|a| a.name == value)?;
        if let Some(d) = arg.value() {
            return d.to_i64_vec().ok();
        }
        let producer = self.constant_nodes.get(value)?;
        match producer {
            Node::Reshape(_) | Node::Identity(_) | Node::Cast(_) | Node::Squeeze(_) => {
                self.stored_ints(&input(producer, 0), producer)
            }
            _ => None,
        }
    }

    /// The window attention op at the end of the attention pattern on windows.
    pub(super) fn window_attention_op(
        &mut self,
        node: &Node,
        qkv: Value,
        heads: usize,
        head_dim: usize,
        scale: f64,
        wh: WindowHeads,
    ) -> Result<(), OnnxError> {
        let Some(table) = wh.table else {
            return Err(unsupported(
                node,
                "attention on windows without a relative position bias is not supported".into(),
            ));
        };
        let shifted = wh.geo.shift != [0, 0];
        if shifted != wh.masked {
            return Err(unsupported(
                node,
                format!(
                    "attention on windows rolled by {:?} {} a shift mask",
                    wh.geo.shift,
                    if wh.masked { "with" } else { "without" }
                ),
            ));
        }
        let op = Op::WindowAttention(WindowAttention {
            heads,
            head_dim,
            window: wh.geo.window,
            shift: wh.geo.shift,
            scale,
        });
        self.windows.insert(output(node, 0), wh.geo);
        self.push(
            node,
            op,
            vec![qkv.name],
            vec![("bias_table", table)],
            Layout::Windows,
            None,
        )
    }
}
