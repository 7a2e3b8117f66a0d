//! Structured (channel) pruning without a framework: dependency groups, channel importance,
//! selection to a target, and physical compaction to a smaller dense graph.
//!
//! The pipeline is `channel_groups` → `importance` (or scores from the engine) → `select_*` →
//! `compact`. Compaction is output-equivalent to the dense network whose pruned channels are gated
//! to zero at every value of their group (see [`compact()`] and [`selection_gates`]).

pub mod compact;
pub mod groups;
pub mod importance;
pub mod select;

pub use compact::{compact, compact_graph, compact_masks, kept_tensor_indices, selection_gates};
pub use groups::{
    ChannelGroup, Member, MemberRole, ValueSlice, channel_groups, groups_table, is_depthwise,
};
pub use importance::{
    Criterion, GroupScores, ImportanceOptions, Normalization, Reduction, importance,
    importance_from_node_scores,
};
pub use select::{
    BnMarks, ChannelSelection, Scope, SelectOptions, StructuredTarget, achieved_reduction,
    merge_bn_marks, percentile_threshold, select_below_threshold, select_by_bn_votes,
    select_channels, select_channels_measured, selection_bn_marks,
};
