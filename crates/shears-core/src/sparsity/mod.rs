//! Unstructured sparsity: exact effective sparsity, layer quotas, data-free scores, mask selection
//! and pruning to a direct or effective target (Vysogorets & Kempe, "Connectivity Matters").
//!
//! Pipeline: scores (here, or gradient-based ones from the engine, same [`Scores`] type) →
//! selection (global, or per layer with quotas) → masks; [`prune_to_target`] wraps the selection in
//! the effective-target search, and [`sparsity_report`] measures any mask both ways.
//! Sparsity is always measured over the prunable tensors (conv and linear weights).

pub mod effective;
pub mod quotas;
pub mod scores;
pub mod select;
pub mod target;

pub use effective::{LayerSparsity, SparsityReport, effective_masks, sparsity_report};
pub use quotas::{LayerInfo, Quota, layer_infos, layer_sparsities};
pub use scores::{IterativeOrder, Scores, lamp_scores, magnitude_scores, random_scores};
pub use select::{SelectOptions, select_global, select_per_layer};
pub use target::{Allocation, PruneOutcome, PruneSpec, TargetKind, prune_to_target};

use crate::error::{CoreError, Result};
use crate::graph::Graph;
use crate::weights::Masks;
use std::borrow::Cow;
use std::collections::HashSet;

/// Row-major keep-flags of every prunable layer (`None` = no mask, i.e. dense), after checking
/// that every mask names a parameter of the graph and prunable masks have the tensor's shape.
pub(crate) fn flat_keeps<'a>(
    graph: &Graph,
    layers: &[LayerInfo],
    masks: &'a Masks,
) -> Result<Vec<Option<Cow<'a, [bool]>>>> {
    let params: HashSet<String> = graph.param_specs().into_iter().map(|s| s.name).collect();
    if let Some(name) = masks.keys().find(|n| !params.contains(*n)) {
        return Err(CoreError::tensor(
            name,
            "mask for a tensor the graph does not have",
        ));
    }
    layer_keeps(layers, masks)
}

/// Like [`flat_keeps`] without the name check: masks of other tensors are ignored.
pub(crate) fn layer_keeps<'a>(
    layers: &[LayerInfo],
    masks: &'a Masks,
) -> Result<Vec<Option<Cow<'a, [bool]>>>> {
    layers
        .iter()
        .map(|l| match masks.get(&l.name) {
            None => Ok(None),
            Some(m) if m.shape() != l.shape.as_slice() => Err(CoreError::tensor(
                &l.name,
                format!("mask shape {:?} != tensor shape {:?}", m.shape(), l.shape),
            )),
            Some(m) => Ok(Some(match m.as_slice() {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(m.iter().copied().collect()),
            })),
        })
        .collect()
}

/// Checks a fraction (a sparsity, a reduction, a ratio) lies in `[0, 1)`, or `[0, 1]` when
/// `inclusive_one`; the one range check of shears, so every such error reads the same.
pub fn check_fraction(what: &str, value: f64, inclusive_one: bool) -> Result<()> {
    let ok = value.is_finite() && value >= 0.0 && (value < 1.0 || (inclusive_one && value == 1.0));
    if ok {
        Ok(())
    } else {
        Err(CoreError::OutOfRange {
            what: what.to_string(),
            value,
            range: if inclusive_one { "[0, 1]" } else { "[0, 1)" },
        })
    }
}
