//! Channel masks as files: which channels of each BatchNorm a method prunes, written by a run
//! (`mask.json`) and read back (by a later run, or written by hand), validated against the graph.
//!
//! ```json
//! { "format": "shears-channel-mask", "model": "resnet-20",
//!   "prune": { "stem_bn": [false, true, ...], "s1b1_bn2": [...] } }
//! ```
//! `prune` maps BatchNorm node names to one flag per channel of that BatchNorm's channel group,
//! `true` for a channel to prune. BatchNorms of one residual group are merged by vote
//! ([`shears_core::structured::merge_bn_marks`]), so a hand-written file need not agree across a
//! group; a run always writes a group-consistent mask.

use crate::error::{MethodError, Result};
use crate::invalid;
use serde::{Deserialize, Serialize};
use shears_core::artifact::write_atomic;
use shears_core::graph::{Graph, ParamKind};
use shears_core::structured::{
    BnMarks, ChannelGroup, ChannelSelection, GroupScores, merge_bn_marks, selection_bn_marks,
};
use std::path::Path;

/// The `format` value of a mask file.
pub const MASK_FORMAT: &str = "shears-channel-mask";

/// A channel mask file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskFile {
    pub format: String,
    /// The graph's name, checked on load.
    pub model: String,
    /// BatchNorm node -> prune flag per channel of its group.
    pub prune: BnMarks,
}

/// Writes the mask of `selection` (group-consistent) to `path`.
pub fn write_mask(
    path: &Path,
    graph: &Graph,
    groups: &[ChannelGroup],
    selection: &ChannelSelection,
) -> Result<()> {
    let file = MaskFile {
        format: MASK_FORMAT.into(),
        model: graph.name.clone(),
        prune: selection_bn_marks(groups, selection)?,
    };
    let json = serde_json::to_string_pretty(&file)
        .map_err(|e| MethodError::Invalid(format!("cannot serialise the mask: {e}")))?;
    write_atomic(path, json.as_bytes())?;
    Ok(())
}

/// Reads a mask file and turns it into a channel selection of `graph`. A file of another model,
/// an unknown or unprunable BatchNorm, a wrong length, or a mask that removes every channel of a
/// group is an error naming it.
pub fn read_mask(path: &Path, graph: &Graph, groups: &[ChannelGroup]) -> Result<ChannelSelection> {
    let text = std::fs::read_to_string(path).map_err(|e| MethodError::io("read mask", path, e))?;
    let file: MaskFile = serde_json::from_str(&text).map_err(|e| {
        MethodError::Invalid(format!(
            "{} is not a channel mask file: {e}",
            path.display()
        ))
    })?;
    let what = path.display();
    if file.format != MASK_FORMAT {
        invalid!(
            "{what}: format is `{}`, expected `{MASK_FORMAT}`",
            file.format
        );
    }
    if file.model != graph.name {
        invalid!(
            "{what} is a mask of model `{}`, not of `{}`",
            file.model,
            graph.name
        );
    }
    for (bn, q) in &file.prune {
        let Some(g) = groups.iter().find(|g| {
            g.members
                .iter()
                .any(|m| m.kind == ParamKind::BnScale && &m.node == bn)
        }) else {
            invalid!(
                "{what}: `{bn}` is not a BatchNorm of model `{}`",
                graph.name
            );
        };
        if !g.prunable {
            invalid!(
                "{what}: the channels of `{bn}` cannot be pruned ({})",
                g.reason.as_deref().unwrap_or("unprunable group")
            );
        }
        if q.len() != g.channels {
            invalid!(
                "{what}: `{bn}` has {} channels, the mask gives {}",
                g.channels,
                q.len()
            );
        }
        if q.iter().all(|&p| p) {
            invalid!(
                "{what}: the mask of `{bn}` removes every one of its {} channels",
                q.len()
            );
        }
    }
    Ok(merge_bn_marks(groups, &file.prune, &GroupScores::new())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shears_core::structured::channel_groups;
    use shears_core::zoo;

    #[test]
    fn masks_round_trip_and_bad_files_are_named() {
        let graph = zoo::build("resnet-20", &[3, 8, 8], 10).unwrap();
        let groups = channel_groups(&graph).unwrap();
        let mut sel = ChannelSelection::default();
        for g in groups.iter().filter(|g| g.prunable).take(3) {
            sel.kept.insert(g.id, (0..g.channels / 2).collect());
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("mask.json");
        write_mask(&path, &graph, &groups, &sel).unwrap();
        assert_eq!(read_mask(&path, &graph, &groups).unwrap(), sel);

        let good: MaskFile =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let bad = |edit: &dyn Fn(&mut MaskFile)| {
            let mut f = good.clone();
            edit(&mut f);
            std::fs::write(&path, serde_json::to_string(&f).unwrap()).unwrap();
            read_mask(&path, &graph, &groups).unwrap_err().to_string()
        };
        let e = bad(&|f| f.model = "vgg-11".into());
        assert!(e.contains("`vgg-11`") && e.contains("resnet-20"), "{e}");
        let e = bad(&|f| {
            f.prune.insert("nope".into(), vec![false; 16]);
        });
        assert!(e.contains("`nope` is not a BatchNorm"), "{e}");
        let first = good.prune.keys().next().unwrap().clone();
        let e = bad(&|f| {
            f.prune.get_mut(&first).unwrap().push(false);
        });
        assert!(
            e.contains(&format!("`{first}` has")) && e.contains("the mask gives"),
            "{e}"
        );
        let e = bad(&|f| {
            f.prune.get_mut(&first).unwrap().fill(true);
        });
        assert!(e.contains("removes every one"), "{e}");
        std::fs::write(&path, "{ not json").unwrap();
        let e = read_mask(&path, &graph, &groups).unwrap_err().to_string();
        assert!(e.contains("not a channel mask file"), "{e}");
    }
}
