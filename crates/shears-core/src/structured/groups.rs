//! Channel dependency groups: the tensor slices and value channels that must keep the same indices.
//!
//! This is Torch-Pruning's dependency graph made explicit from the IR. Every value with a channel
//! axis (per-sample axis 0: the channels of a `[C,H,W]` map, the features of a `[F]` vector) is
//! cut into *units*, and a union-find ties units that must be kept or removed together:
//!
//! - a plain conv (`groups = 1`) or a linear layer starts a fresh channel space (its filters);
//! - BatchNorm, ReLU, Dropout, pooling and global average pooling pass channels through;
//! - a depthwise conv (`groups = in = out`) ties output channel c to input channel c;
//! - Add ties all its inputs and its output, unit by unit (residual branches, identity shortcuts,
//!   recursively up to the producers, or to the graph input); Mul does the same, so a
//!   squeeze-excitation's excitation filters join the group of the channels they scale;
//! - Concat maps input k's unit c to output unit `offset_k + c`;
//! - Flatten keeps the units of its input and makes each cover `H*W` consecutive features, so a
//!   linear layer after it loses `H*W` input features per pruned channel.
//!
//! The classes of tied units are then gathered into groups: classes whose units sit in the same
//! values at the same relative positions form one group whose channel `j` is the `j`-th class.
//! Every unit of every value belongs to exactly one group, so groups also describe what stays.
//!
//! The per-op part of these rules is each op's [`ChannelFlow`] and [`ChannelAxis`](crate::ops::ChannelAxis) list, written
//! in its file under [`crate::ops`]; this module only runs the union-find over the whole graph.
//!
//! A group is not prunable when it carries the graph input, reaches the network output (logits),
//! touches a grouped (non-depthwise) conv, or meets an op whose layouts cannot be reconciled
//! (an Add or Concat mixing flattened and unflattened features); `reason` names the node(s).

use crate::error::Result;
use crate::graph::{Graph, Op, ParamKind};
use crate::ops::{ChannelFlow, ChannelShuffle, ChannelSide, FilterGroups};
use crate::shape::{channels, infer_shapes};
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// What a member slice is to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberRole {
    /// Output filters of a conv or linear layer (weight axis 0), depthwise convs included.
    Filter,
    /// Bias of a conv or linear layer whose filters are in the group.
    Bias,
    /// A BatchNorm tensor (scale, shift, running mean or variance); `kind` says which.
    BatchNorm,
    /// Input channels of a plain conv (weight axis 1) or input features of a linear layer.
    InputChannels,
    /// A per-channel scale or shift other than BatchNorm's (LayerNorm, a layer scale).
    Affine,
    /// The channels of a learned token or position table of a transformer.
    Embedding,
}

/// One parameter-tensor slice of a group: group channel `j` is the index range
/// `offset + j * step .. offset + j * step + stride_per_channel` along `axis` (`step` equals
/// `stride_per_channel` except behind a channel shuffle, whose group channels interleave).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Node that owns the tensor.
    pub node: String,
    /// Tensor name, `{node}.weight` and so on.
    pub tensor: String,
    pub kind: ParamKind,
    pub role: MemberRole,
    pub axis: usize,
    pub offset: usize,
    /// Consecutive indices per group channel: `H*W` for a linear layer's input after a flatten.
    pub stride_per_channel: usize,
    /// Distance between the first indices of consecutive group channels.
    pub step: usize,
}

impl Member {
    /// Indices along `axis` that group channel `channel` owns in this tensor.
    pub fn indices(&self, channel: usize) -> Range<usize> {
        let start = self.offset + channel * self.step;
        start..start + self.stride_per_channel
    }
}

/// A slice of one value's channel axis that belongs to a group, laid out like [`Member`]:
/// group channel `j` covers per-sample indices `offset + j * step ..` (+ `stride_per_channel`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueSlice {
    /// A node name or the graph input's name.
    pub value: String,
    pub offset: usize,
    pub stride_per_channel: usize,
    pub step: usize,
}

impl ValueSlice {
    /// Indices of the value's axis 0 that group channel `channel` covers.
    pub fn indices(&self, channel: usize) -> Range<usize> {
        let start = self.offset + channel * self.step;
        start..start + self.stride_per_channel
    }
}

/// Channels that must be pruned together, with every tensor slice and value slice they index.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelGroup {
    /// Index of the group in the list [`channel_groups`] returns (stable for a given graph).
    pub id: usize,
    pub channels: usize,
    /// Conv and linear nodes whose output filters are in the group (depthwise convs included).
    pub producers: Vec<String>,
    /// Parameter slices to cut: filters, biases, BatchNorm tensors, consumers' input slices.
    pub members: Vec<Member>,
    /// Value channels the group covers; gating these to zero is what compaction reproduces.
    pub values: Vec<ValueSlice>,
    pub prunable: bool,
    /// Why the group is not prunable, naming the node(s); `None` when prunable.
    pub reason: Option<String>,
}

impl ChannelGroup {
    /// Members of one role.
    pub fn members_with(&self, role: MemberRole) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.role == role)
    }
}

impl fmt::Display for ChannelGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.prunable { "prunable" } else { "fixed" };
        let bns: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.kind == ParamKind::BnScale)
            .map(|m| m.node.as_str())
            .collect();
        let consumers: Vec<&str> = dedup(
            self.members_with(MemberRole::InputChannels)
                .map(|m| m.node.as_str()),
        );
        write!(
            f,
            "group {:>3}  {:>5} ch  {:<8}  producers: {}  bn: {}  consumers: {}",
            self.id,
            self.channels,
            status,
            list_or_dash(
                &self
                    .producers
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            ),
            list_or_dash(&bns),
            list_or_dash(&consumers),
        )?;
        if let Some(r) = &self.reason {
            write!(f, "  ({r})")?;
        }
        Ok(())
    }
}

fn dedup<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for s in it {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

fn list_or_dash(items: &[&str]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// A table of groups for `shears inspect --groups`: one line per group and a totals line.
pub fn groups_table(groups: &[ChannelGroup]) -> String {
    let mut out = String::new();
    for g in groups {
        out.push_str(&g.to_string());
        out.push('\n');
    }
    let prunable: Vec<&ChannelGroup> = groups.iter().filter(|g| g.prunable).collect();
    out.push_str(&format!(
        "{} groups, {} prunable with {} channels, {} fixed\n",
        groups.len(),
        prunable.len(),
        prunable.iter().map(|g| g.channels).sum::<usize>(),
        groups.len() - prunable.len()
    ));
    out
}

/// Union-find over channel units with path halving and union by size.
struct UnionFind {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl UnionFind {
    fn new() -> Self {
        UnionFind {
            parent: Vec::new(),
            size: Vec::new(),
        }
    }
    fn grow(&mut self, n: usize) -> usize {
        let first = self.parent.len();
        self.parent.extend(first..first + n);
        self.size.resize(first + n, 1);
        first
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
    }
}

/// Per-value unit layout while the graph is walked. Value 0 is the graph input, value i+1 node i.
struct Layout {
    base: Vec<usize>,
    units: Vec<usize>,
    /// Per-sample indices per unit along axis 0.
    unit_len: Vec<usize>,
    pins: Vec<Vec<String>>,
    uf: UnionFind,
}

impl Layout {
    fn push(&mut self, units: usize, unit_len: usize) -> usize {
        self.base.push(self.uf.grow(units));
        self.units.push(units);
        self.unit_len.push(unit_len);
        self.pins.push(Vec::new());
        self.base.len() - 1
    }
    /// Ties unit `c` of `a` to unit `offset + c` of `b` for every unit of `a`.
    fn tie(&mut self, a: usize, b: usize, offset: usize) {
        for c in 0..self.units[a] {
            let (x, y) = (self.base[a] + c, self.base[b] + offset + c);
            self.uf.union(x, y);
        }
    }
    /// Ties unit `i` of `a` to unit `j` of `b`.
    fn tie_units(&mut self, a: usize, i: usize, b: usize, j: usize) {
        let (x, y) = (self.base[a] + i, self.base[b] + j);
        self.uf.union(x, y);
    }
    fn pin(&mut self, v: usize, reason: String) {
        if !self.pins[v].contains(&reason) {
            self.pins[v].push(reason);
        }
    }
}

/// True for a conv with `groups = in = out > 1`, whose channels compaction keeps tied.
pub fn is_depthwise(op: &Op) -> bool {
    matches!(
        op.channel_flow(),
        ChannelFlow::Filters {
            groups: FilterGroups::Depthwise,
            ..
        }
    )
}

/// Derives the channel dependency groups of `graph` (validated and shape-checked first).
/// Groups are ordered by the first value they touch (topological order), then by offset.
pub fn channel_groups(graph: &Graph) -> Result<Vec<ChannelGroup>> {
    let shapes = infer_shapes(graph)?;
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(graph.nodes.len() + 1);
    index.insert(graph.input.name.as_str(), 0);
    let mut lay = Layout {
        base: Vec::new(),
        units: Vec::new(),
        unit_len: Vec::new(),
        pins: Vec::new(),
        uf: UnionFind::new(),
    };
    lay.push(channels(&graph.input.shape), 1);
    lay.pin(
        0,
        format!(
            "carries the channels of the graph input `{}`",
            graph.input.name
        ),
    );

    for node in &graph.nodes {
        let ins: Vec<usize> = node.inputs.iter().map(|n| index[n.as_str()]).collect();
        let out_shape = shapes.get(&node.name);
        let x = ins[0];
        let flow = node.op.channel_flow();
        let v = match flow {
            ChannelFlow::Filters { groups, .. } => match groups {
                FilterGroups::Dense => lay.push(channels(out_shape), 1),
                FilterGroups::Depthwise => {
                    let v = lay.push(lay.units[x], lay.unit_len[x]);
                    lay.tie(v, x, 0);
                    v
                }
                FilterGroups::Grouped(groups) => {
                    let v = lay.push(channels(out_shape), 1);
                    let why = format!(
                        "grouped conv `{}` (groups={groups}) can only lose whole groups",
                        node.name
                    );
                    lay.pin(x, why.clone());
                    lay.pin(v, why);
                    v
                }
            },
            ChannelFlow::GroupMix { groups } => {
                let v = lay.push(lay.units[x], lay.unit_len[x]);
                lay.tie(v, x, 0);
                // Every block keeps the same positions, so the norm keeps its group count.
                let per = lay.units[x] / groups.max(1);
                for b in 0..per {
                    for a in 1..groups {
                        lay.tie_units(x, b, x, a * per + b);
                    }
                }
                v
            }
            ChannelFlow::PassThrough
            | ChannelFlow::MixChannels
            | ChannelFlow::Resample(_)
            | ChannelFlow::Pad(_)
            | ChannelFlow::Crop(_)
            | ChannelFlow::PoolWindow(_)
            | ChannelFlow::PoolGlobal
            | ChannelFlow::PrependToken
            | ChannelFlow::FirstToken => {
                let v = lay.push(lay.units[x], lay.unit_len[x]);
                lay.tie(v, x, 0);
                v
            }
            ChannelFlow::Slice { start } => {
                let len = lay.unit_len[x];
                let (c_out, end) = (out_shape[0], start + out_shape[0]);
                if start % len != 0 || end % len != 0 {
                    // A slice through the middle of a flattened channel cannot keep it whole.
                    let v = lay.push(c_out, 1);
                    let why = format!("slice `{}` cuts flattened channels apart", node.name);
                    lay.pin(x, why.clone());
                    lay.pin(v, why);
                    v
                } else {
                    let v = lay.push(c_out / len, len);
                    lay.tie(v, x, start / len);
                    v
                }
            }
            ChannelFlow::Shuffle { groups } => {
                let c = out_shape[0];
                let v = lay.push(c, 1);
                if lay.unit_len[x] != 1 {
                    let why = format!("channel shuffle `{}` of flattened channels", node.name);
                    lay.pin(x, why.clone());
                    lay.pin(v, why);
                } else {
                    let shuffle = ChannelShuffle { groups };
                    let per = c / groups;
                    for j in 0..c {
                        lay.tie_units(v, j, x, shuffle.source(j, c));
                    }
                    // Every block keeps the same positions, or the shuffle would not stay one.
                    for b in 0..per {
                        for a in 1..groups {
                            lay.tie_units(x, b, x, a * per + b);
                        }
                    }
                }
                v
            }
            ChannelFlow::Heads { heads, head_dim } => {
                // Output channel j is value channel j and reads query and key channel j: the
                // four are tied, and so are all channels of one head, which goes whole.
                let width = heads * head_dim;
                let v = lay.push(width, 1);
                if lay.unit_len[x] != 1 {
                    let why = format!("attention `{}` on flattened channels", node.name);
                    lay.pin(x, why.clone());
                    lay.pin(v, why);
                } else {
                    for j in 0..width {
                        lay.tie_units(v, j, x, j);
                        lay.tie_units(v, j, x, width + j);
                        lay.tie_units(v, j, x, 2 * width + j);
                        lay.tie_units(v, j - j % head_dim, v, j);
                    }
                }
                v
            }
            ChannelFlow::Flatten if crate::shape::is_tokens(shapes.get(&node.inputs[0])) => {
                // Token-major features: a channel's features are not consecutive.
                let v = lay.push(out_shape[0], 1);
                let why = format!("flatten `{}` interleaves the channels of tokens", node.name);
                lay.pin(x, why.clone());
                lay.pin(v, why);
                v
            }
            ChannelFlow::Flatten => {
                let in_shape = shapes.get(&node.inputs[0]);
                let spatial: usize = in_shape[1..].iter().product();
                let v = lay.push(lay.units[x], lay.unit_len[x] * spatial.max(1));
                lay.tie(v, x, 0);
                v
            }
            ChannelFlow::Elementwise | ChannelFlow::Concat => {
                let same_layout = ins.iter().all(|&i| lay.unit_len[i] == lay.unit_len[x]);
                if !same_layout {
                    // Units of different sizes cannot be tied one to one: keep everything whole.
                    let v = lay.push(channels(out_shape), 1);
                    let why = format!(
                        "{} `{}` mixes flattened and unflattened channels",
                        node.op.kind_name(),
                        node.name
                    );
                    for &i in &ins {
                        lay.pin(i, why.clone());
                    }
                    lay.pin(v, why);
                    v
                } else if flow == ChannelFlow::Elementwise {
                    let v = lay.push(lay.units[x], lay.unit_len[x]);
                    for &i in &ins {
                        lay.tie(i, v, 0);
                    }
                    v
                } else {
                    let total = ins.iter().map(|&i| lay.units[i]).sum();
                    let v = lay.push(total, lay.unit_len[x]);
                    let mut offset = 0;
                    for &i in &ins {
                        lay.tie(i, v, offset);
                        offset += lay.units[i];
                    }
                    v
                }
            }
        };
        index.insert(node.name.as_str(), v);
    }
    let out = index[graph.output.as_str()];
    lay.pin(
        out,
        format!(
            "reaches the network output `{}` (logits are never pruned)",
            graph.output
        ),
    );
    Ok(assemble(graph, &mut lay))
}

/// Gathers union-find classes into groups and lists their members.
fn assemble(graph: &Graph, lay: &mut Layout) -> Vec<ChannelGroup> {
    let nvalues = lay.base.len();
    // Classes in order of their first unit; elements arrive sorted by (value, unit).
    let mut class_of_root: HashMap<usize, usize> = HashMap::new();
    let mut classes: Vec<Vec<(usize, usize)>> = Vec::new();
    for v in 0..nvalues {
        for u in 0..lay.units[v] {
            let root = lay.uf.find(lay.base[v] + u);
            let k = *class_of_root.entry(root).or_insert_with(|| {
                classes.push(Vec::new());
                classes.len() - 1
            });
            classes[k].push((v, u));
        }
    }
    // Parallel classes form one group: the same values with the same pattern of units around
    // each value's first unit, each value's first unit advancing by a fixed step from class to
    // class (1 for ordinary channels; a channel shuffle's output advances by its group count).
    type Signature = Vec<(usize, usize)>;
    struct Class {
        /// First unit of each value, in signature order (values ascending).
        firsts: Vec<usize>,
    }
    let mut by_sig: HashMap<Signature, Vec<Class>> = HashMap::new();
    let mut sig_order: Vec<Signature> = Vec::new();
    for elems in &classes {
        let mut sig: Signature = Vec::with_capacity(elems.len());
        let mut firsts = Vec::new();
        let mut current: Option<(usize, usize)> = None;
        for &(v, u) in elems {
            let first = match current {
                Some((cv, f)) if cv == v => f,
                _ => {
                    firsts.push(u);
                    current = Some((v, u));
                    u
                }
            };
            sig.push((v, u - first));
        }
        by_sig
            .entry(sig)
            .or_insert_with_key(|s| {
                sig_order.push(s.clone());
                Vec::new()
            })
            .push(Class { firsts });
    }
    // Runs: (first value, first unit, signature index, first class's firsts, steps, channels).
    let mut runs: Vec<(usize, usize, usize, Vec<usize>, Vec<usize>, usize)> = Vec::new();
    for (si, sig) in sig_order.iter().enumerate() {
        let list = by_sig
            .get_mut(sig)
            .expect("every signature has its classes");
        list.sort_by_key(|c| c.firsts[0]);
        let mut start = 0;
        while start < list.len() {
            let mut end = start + 1;
            let mut steps: Vec<usize> = Vec::new();
            if end < list.len() {
                let d: Option<Vec<usize>> = list[start]
                    .firsts
                    .iter()
                    .zip(&list[end].firsts)
                    .map(|(a, b)| b.checked_sub(*a).filter(|&d| d > 0))
                    .collect();
                if let Some(d) = d {
                    steps = d;
                    end += 1;
                    while end < list.len()
                        && list[end - 1]
                            .firsts
                            .iter()
                            .zip(&list[end].firsts)
                            .zip(&steps)
                            .all(|((a, b), s)| b.checked_sub(*a) == Some(*s))
                    {
                        end += 1;
                    }
                }
            }
            if steps.is_empty() {
                steps = vec![1; list[start].firsts.len()];
            }
            let firsts = list[start].firsts.clone();
            runs.push((sig[0].0, firsts[0], si, firsts, steps, end - start));
            start = end;
        }
    }
    runs.sort_unstable();

    let name_of = |v: usize| -> &str {
        if v == 0 {
            graph.input.name.as_str()
        } else {
            graph.nodes[v - 1].name.as_str()
        }
    };
    let consumers = graph.consumers();
    let mut groups = Vec::with_capacity(runs.len());
    for (id, (_, _, si, firsts, steps, channels)) in runs.iter().enumerate() {
        let (sig, channels) = (&sig_order[*si], *channels);
        let mut values = Vec::with_capacity(sig.len());
        let mut members = Vec::new();
        let mut producers: Vec<String> = Vec::new();
        let mut reasons: Vec<String> = Vec::new();
        let mut k = 0;
        for (i, &(v, delta)) in sig.iter().enumerate() {
            if i > 0 && sig[i - 1].0 != v {
                k += 1;
            }
            let unit_len = lay.unit_len[v];
            let offset = (firsts[k] + delta) * unit_len;
            let step = steps[k] * unit_len;
            let value = name_of(v);
            values.push(ValueSlice {
                value: value.to_string(),
                offset,
                stride_per_channel: unit_len,
                step,
            });
            for r in &lay.pins[v] {
                if !reasons.contains(r) {
                    reasons.push(r.clone());
                }
            }
            if v > 0 {
                let node = &graph.nodes[v - 1];
                own_members(node, offset, unit_len, step, &mut members, &mut producers);
            }
            for &ci in consumers.get(value).map(|c| c.as_slice()).unwrap_or(&[]) {
                let c = &graph.nodes[ci];
                for a in c.op.channel_axes(&c.name) {
                    if a.side == ChannelSide::Input {
                        members.push(Member {
                            node: c.name.clone(),
                            tensor: a.spec.name,
                            kind: a.spec.kind,
                            role: MemberRole::InputChannels,
                            axis: a.axis,
                            offset,
                            stride_per_channel: unit_len,
                            step,
                        });
                    }
                }
            }
        }
        if reasons.is_empty() && producers.is_empty() {
            reasons.push("no conv or linear layer produces these channels".into());
        }
        groups.push(ChannelGroup {
            id,
            channels,
            producers,
            members,
            values,
            prunable: reasons.is_empty(),
            reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        });
    }
    groups
}

/// Members owned by the node that produces a value slice: the parameter axes its op says follow
/// its output channels (filters and bias, or BatchNorm tensors). A node with filters among them
/// is a producer of the group.
fn own_members(
    node: &crate::graph::Node,
    offset: usize,
    unit_len: usize,
    step: usize,
    members: &mut Vec<Member>,
    producers: &mut Vec<String>,
) {
    for a in node.op.channel_axes(&node.name) {
        // A per-head axis: group channel `j` is head `(offset + j*step) / head_dim`. A head group
        // lists each value once per channel of a head (offsets `h*head_dim + d`); the axis goes
        // with the first of them only.
        let (offset, unit_len, step) = match a.side {
            ChannelSide::Output => (offset, unit_len, step),
            ChannelSide::OutputHeads { head_dim } => {
                if unit_len != 1 || offset % head_dim != 0 || step % head_dim != 0 {
                    continue;
                }
                (offset / head_dim, 1, step / head_dim)
            }
            ChannelSide::Input => continue,
        };
        let role = match a.spec.kind {
            ParamKind::Weight => MemberRole::Filter,
            ParamKind::Bias => MemberRole::Bias,
            ParamKind::BnScale
            | ParamKind::BnShift
            | ParamKind::RunningMean
            | ParamKind::RunningVar => MemberRole::BatchNorm,
            ParamKind::Scale | ParamKind::Shift => MemberRole::Affine,
            ParamKind::Embedding => MemberRole::Embedding,
        };
        if role == MemberRole::Filter && !producers.contains(&node.name) {
            producers.push(node.name.clone());
        }
        members.push(Member {
            node: node.name.clone(),
            tensor: a.spec.name,
            kind: a.spec.kind,
            role,
            axis: a.axis,
            offset,
            stride_per_channel: unit_len,
            step,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;

    fn find<'a>(groups: &'a [ChannelGroup], producer: &str) -> &'a ChannelGroup {
        groups
            .iter()
            .find(|g| g.producers.iter().any(|p| p == producer))
            .unwrap_or_else(|| panic!("no group with producer {producer}"))
    }

    fn member<'a>(g: &'a ChannelGroup, tensor: &str, axis: usize) -> Vec<&'a Member> {
        g.members
            .iter()
            .filter(|m| m.tensor == tensor && m.axis == axis)
            .collect()
    }

    #[test]
    fn plain_chain_groups() {
        let mut b = GraphBuilder::new("t", &[3, 8, 8]);
        let x = b.input();
        let c1 = b.conv_bn_relu("c1", &x, 8, 3, 1, 1);
        let m = b.maxpool("mp", &c1, 2, 2, 0);
        let c2 = b.conv_bn_relu("c2", &m, 16, 3, 1, 1);
        let p = b.global_avg_pool("gap", &c2);
        let fc = b.linear("fc", &p, 10, true);
        let g = b.finish(&fc);
        let groups = channel_groups(&g).unwrap();
        assert_eq!(groups.len(), 4);
        // input, c1, c2, fc in topological order.
        assert_eq!(groups[0].channels, 3);
        assert!(!groups[0].prunable);
        assert!(
            groups[0]
                .reason
                .as_ref()
                .unwrap()
                .contains("graph input `input`")
        );
        let g1 = &groups[1];
        assert_eq!((g1.channels, g1.prunable), (8, true));
        assert_eq!(g1.producers, vec!["c1"]);
        let tensors: Vec<(&str, usize, MemberRole)> = g1
            .members
            .iter()
            .map(|m| (m.tensor.as_str(), m.axis, m.role))
            .collect();
        assert_eq!(
            tensors,
            vec![
                ("c1.weight", 0, MemberRole::Filter),
                ("c1_bn.weight", 0, MemberRole::BatchNorm),
                ("c1_bn.bias", 0, MemberRole::BatchNorm),
                ("c1_bn.running_mean", 0, MemberRole::BatchNorm),
                ("c1_bn.running_var", 0, MemberRole::BatchNorm),
                ("c2.weight", 1, MemberRole::InputChannels),
            ]
        );
        let vals: Vec<&str> = g1.values.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(vals, vec!["c1", "c1_bn", "c1_relu", "mp"]);
        let g2 = &groups[2];
        assert_eq!(g2.channels, 16);
        assert_eq!(member(g2, "fc.weight", 1)[0].stride_per_channel, 1);
        let g3 = &groups[3];
        assert_eq!((g3.channels, g3.prunable), (10, false));
        assert!(g3.reason.as_ref().unwrap().contains("network output `fc`"));
        assert_eq!(member(g3, "fc.bias", 0).len(), 1);
    }

    #[test]
    fn flatten_gives_linear_hw_features_per_channel() {
        let mut b = GraphBuilder::new("t", &[1, 6, 6]);
        let x = b.input();
        let c = b.conv2d_bias("c", &x, 4, 3, 1, 0);
        let f = b.flatten("f", &c);
        let h = b.linear("h", &f, 5, true);
        let n = b.batchnorm("hbn", &h);
        let o = b.linear("o", &n, 2, true);
        let g = b.finish(&o);
        let groups = channel_groups(&g).unwrap();
        let gc = find(&groups, "c");
        let m = member(gc, "h.weight", 1)[0];
        assert_eq!((m.offset, m.stride_per_channel), (0, 16));
        assert_eq!(m.indices(2), 32..48);
        let f = gc.values.iter().find(|v| v.value == "f").unwrap();
        assert_eq!(f.stride_per_channel, 16);
        let gh = find(&groups, "h");
        assert!(gh.prunable);
        assert_eq!(member(gh, "hbn.weight", 0).len(), 1);
        assert_eq!(member(gh, "o.weight", 1)[0].stride_per_channel, 1);
    }

    fn resnet_like(identity_from_input: bool) -> Graph {
        let mut b = GraphBuilder::new("t", &[4, 8, 8]);
        let x = b.input();
        let stem = if identity_from_input {
            x.clone()
        } else {
            b.conv_bn_relu("stem", &x, 4, 3, 1, 1)
        };
        let a = b.conv_bn_relu("b1a", &stem, 6, 3, 1, 1);
        let c = b.conv2d("b1b", &a, 4, 3, 1, 1);
        let c = b.batchnorm("b1b_bn", &c);
        let s = b.add("b1_add", &[&c, &stem]);
        let r = b.relu("b1_relu", &s);
        // projection block
        let a2 = b.conv_bn_relu("b2a", &r, 8, 3, 2, 1);
        let c2 = b.conv2d("b2b", &a2, 8, 3, 1, 1);
        let c2 = b.batchnorm("b2b_bn", &c2);
        let p = b.conv2d("b2p", &r, 8, 1, 2, 0);
        let p = b.batchnorm("b2p_bn", &p);
        let s2 = b.add("b2_add", &[&c2, &p]);
        let r2 = b.relu("b2_relu", &s2);
        let gp = b.global_avg_pool("gap", &r2);
        let fc = b.linear("fc", &gp, 3, true);
        b.finish(&fc)
    }

    #[test]
    fn residual_add_ties_all_branches() {
        let g = resnet_like(false);
        let groups = channel_groups(&g).unwrap();
        let stage1 = find(&groups, "stem");
        assert!(stage1.prunable);
        let mut prods = stage1.producers.clone();
        prods.sort();
        assert_eq!(prods, vec!["b1b", "stem"]);
        // consumers of the shared space: b1a (reads stem relu), b2a and b2p (read b1_relu).
        let mut cons: Vec<&str> = stage1
            .members_with(MemberRole::InputChannels)
            .map(|m| m.node.as_str())
            .collect();
        cons.sort();
        assert_eq!(cons, vec!["b1a", "b2a", "b2p"]);
        let stage2 = find(&groups, "b2p");
        let mut prods = stage2.producers.clone();
        prods.sort();
        assert_eq!(prods, vec!["b2b", "b2p"]);
        assert!(member(stage2, "fc.weight", 1).len() == 1);
        assert!(find(&groups, "b1a").prunable);
        assert_eq!(find(&groups, "b1a").producers, vec!["b1a"]);
    }

    #[test]
    fn identity_chain_to_the_input_is_fixed() {
        let g = resnet_like(true);
        let groups = channel_groups(&g).unwrap();
        let tied = find(&groups, "b1b");
        assert!(!tied.prunable);
        assert!(
            tied.reason.as_ref().unwrap().contains("graph input"),
            "{tied}"
        );
        assert!(tied.values.iter().any(|v| v.value == "input"));
        assert!(find(&groups, "b2p").prunable);
    }

    #[test]
    fn concat_offsets_and_split_producers() {
        let mut b = GraphBuilder::new("t", &[3, 6, 6]);
        let x = b.input();
        let a = b.conv_bn_relu("a", &x, 4, 3, 1, 1);
        let c = b.conv_bn_relu("c", &x, 6, 1, 1, 0);
        let cat = b.concat("cat", &[&a, &c]);
        let y = b.conv2d("y", &x, 10, 1, 1, 0);
        let s = b.add("s", &[&cat, &y]);
        let z = b.conv2d("z", &s, 5, 3, 1, 1);
        let gp = b.global_avg_pool("gap", &z);
        let fc = b.linear("fc", &gp, 2, false);
        let g = b.finish(&fc);
        let groups = channel_groups(&g).unwrap();
        let ga = find(&groups, "a");
        let gc = find(&groups, "c");
        assert_ne!(ga.id, gc.id);
        assert_eq!((ga.channels, gc.channels), (4, 6));
        // y's filters are split: 0..4 follow `a`, 4..10 follow `c`.
        assert_eq!(member(ga, "y.weight", 0)[0].offset, 0);
        assert_eq!(member(gc, "y.weight", 0)[0].offset, 4);
        assert_eq!(member(ga, "z.weight", 1)[0].offset, 0);
        assert_eq!(member(gc, "z.weight", 1)[0].offset, 4);
        let cat_c = gc.values.iter().find(|v| v.value == "cat").unwrap();
        assert_eq!(cat_c.indices(1), 5..6);
        assert!(ga.prunable && gc.prunable);
    }

    #[test]
    fn depthwise_continues_the_group_and_grouped_conv_is_fixed() {
        let mut b = GraphBuilder::new("t", &[3, 8, 8]);
        let x = b.input();
        let e = b.conv_bn_relu("expand", &x, 12, 1, 1, 0);
        let d = b.depthwise("dw", &e, 3, 1, 1);
        let d = b.batchnorm("dw_bn", &d);
        let p = b.conv2d("proj", &d, 8, 1, 1, 0);
        let q = b.conv2d_full("grp", &p, 8, [3, 3], [1, 1], [1, 1], [1, 1], 2, false);
        let gp = b.global_avg_pool("gap", &q);
        let fc = b.linear("fc", &gp, 2, false);
        let g = b.finish(&fc);
        let groups = channel_groups(&g).unwrap();
        let ge = find(&groups, "expand");
        assert_eq!(ge.producers, vec!["expand", "dw"]);
        assert_eq!(member(ge, "dw.weight", 0).len(), 1);
        assert_eq!(member(ge, "proj.weight", 1).len(), 1);
        assert!(ge.prunable);
        let gproj = find(&groups, "proj");
        assert!(!gproj.prunable);
        assert!(
            gproj
                .reason
                .as_ref()
                .unwrap()
                .contains("grouped conv `grp` (groups=2)")
        );
        assert!(member(gproj, "grp.weight", 1).is_empty());
        let ggrp = find(&groups, "grp");
        assert!(!ggrp.prunable);
    }

    #[test]
    fn add_of_flattened_and_linear_features_is_fixed_not_a_panic() {
        let mut b = GraphBuilder::new("t", &[2, 2, 2]);
        let x = b.input();
        let c = b.conv2d("c", &x, 2, 1, 1, 0);
        let f = b.flatten("f", &c);
        let l = b.linear("l", &f, 8, false);
        let s = b.add("s", &[&f, &l]);
        let o = b.linear("o", &s, 2, false);
        let g = b.finish(&o);
        let groups = channel_groups(&g).unwrap();
        let gc = find(&groups, "c");
        assert!(!gc.prunable);
        assert!(
            gc.reason.as_ref().unwrap().contains("add `s` mixes"),
            "{gc}"
        );
        assert!(!find(&groups, "l").prunable);
    }

    #[test]
    fn every_unit_of_every_value_is_in_exactly_one_group() {
        let g = resnet_like(false);
        let groups = channel_groups(&g).unwrap();
        let shapes = infer_shapes(&g).unwrap();
        let mut count: HashMap<String, Vec<usize>> = HashMap::new();
        for gr in &groups {
            for vs in &gr.values {
                let len = crate::shape::channels(shapes.get(&vs.value));
                let c = count.entry(vs.value.clone()).or_insert(vec![0; len]);
                for j in 0..gr.channels {
                    for i in vs.indices(j) {
                        c[i] += 1;
                    }
                }
            }
        }
        assert_eq!(count.len(), g.nodes.len() + 1);
        assert!(count.values().all(|c| c.iter().all(|&n| n == 1)));
    }

    #[test]
    fn table_lists_groups_and_totals() {
        let g = resnet_like(false);
        let groups = channel_groups(&g).unwrap();
        let t = groups_table(&groups);
        assert!(t.contains("producers: stem, b1b"), "{t}");
        assert!(t.contains("fixed"), "{t}");
        let n = groups.iter().filter(|g| g.prunable).count();
        assert!(
            t.contains(&format!("{} groups, {n} prunable", groups.len())),
            "{t}"
        );
    }
}
