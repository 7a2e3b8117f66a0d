//! PAAM in the training step: the scores as engine gates, the score penalty as a loss term,
//! and the budget cut as an epoch-start hook.
//!
//! Every gated forward pass computes each group's scores once from the filter weights
//! ([`DynamicGates::begin_pass`]) and multiplies every gate point of the group by them, times
//! the group's keep mask (0 for the filters the budget cut). The penalty λ · mean(score) over
//! all scored filters reads the same scores, so one backward pass trains the network and the
//! scorers together. The keep masks live in the scorers' buffers, so a checkpoint holds them
//! and a resumed phase gates exactly as the interrupted one did.

use super::activation::Activation;
use super::budget::{Budget, Schedule, cut};
use super::layout::{Layout, ScoredGroup};
use super::scorer::Scorer;
use serde::{Deserialize, Serialize};
use shears_core::artifact::write_atomic;
use shears_core::cost::{Convention, cost};
use shears_core::graph::Graph;
use shears_core::structured::{ChannelGroup, ChannelSelection, GroupScores, compact_graph};
use shears_engine::burn::tensor::Tensor;
use shears_engine::executor::to_vec;
use shears_engine::{
    DynamicGates, EngineError, EpochStart, Executor, ExtraParams, LossTerm, PassParams, StepInfo,
    Value,
};
use std::cell::RefCell;
use std::path::PathBuf;

/// Name of group `group`'s keep mask among the scorers' buffers.
pub fn keep_name(group: &ScoredGroup) -> String {
    format!("paam.g{}.keep", group.id)
}

/// One budget step, as `budget.jsonl` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetRow {
    /// 1-based epoch the cut applies to.
    pub epoch: usize,
    /// The share of the budget cut for this epoch.
    pub target: f64,
    /// What the cut achieves on the compacted graph (params or MACs, as the budget).
    pub achieved: f64,
    pub kept_filters: usize,
    pub scored_filters: usize,
    /// Mean score of the kept and of the cut filters when the cut was made.
    pub mean_score_kept: f64,
    pub mean_score_cut: Option<f64>,
}

/// A group's scores of the current pass: the activation of the logits (what the penalty
/// reads) and the gate (the same times the keep mask).
#[derive(Clone)]
struct PassScores {
    soft: Tensor<1>,
    gate: Tensor<1>,
}

/// PAAM's gates, penalty and budget for one network.
pub struct PaamGates {
    pub layout: Layout,
    pub scorer: Scorer,
    pub activation: Activation,
    pub lambda: f64,
    pub schedule: Schedule,
    pub round_to: usize,
    graph: Graph,
    groups: Vec<ChannelGroup>,
    /// `budget.jsonl`, one row per budget step; `None` records nothing.
    history: Option<PathBuf>,
    pass: RefCell<Vec<Option<PassScores>>>,
}

impl PaamGates {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        graph: &Graph,
        layout: Layout,
        scorer: Scorer,
        activation: Activation,
        lambda: f64,
        schedule: Schedule,
        round_to: usize,
        history: Option<PathBuf>,
    ) -> crate::Result<PaamGates> {
        let n = layout.groups.len();
        Ok(PaamGates {
            groups: shears_core::structured::channel_groups(graph)?,
            graph: graph.clone(),
            layout,
            scorer,
            activation,
            lambda,
            schedule,
            round_to,
            history,
            pass: RefCell::new(vec![None; n]),
        })
    }

    /// Group `k`'s scores and gate from the pass's parameters.
    fn scores(&self, k: usize, params: &PassParams<'_>, extra: &ExtraParams) -> Option<PassScores> {
        let group = &self.layout.groups[k];
        let z = self.scorer.logits(group, params, extra)?;
        let tracked = z.is_autodiff();
        let soft = self.activation.apply(z);
        let gate = match extra.buffer(&keep_name(group)) {
            Some(keep) if tracked => soft.clone() * keep,
            Some(keep) => soft.clone() * keep.inner(),
            None => soft.clone(),
        };
        Some(PassScores { soft, gate })
    }

    /// Every group's soft scores and gates (score times keep mask) for `exec`'s current
    /// weights, on the host.
    pub fn host_scores(
        &self,
        exec: &Executor,
        extra: &ExtraParams,
    ) -> crate::Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let values = exec.plain_params();
        let params = exec.pass_params(&values);
        (0..self.layout.groups.len())
            .map(|k| {
                let s = self.scores(k, &params, extra).ok_or_else(|| {
                    crate::MethodError::Invalid(format!(
                        "the PAAM scorer of group {} is incomplete (a parameter is missing)",
                        self.layout.groups[k].id
                    ))
                })?;
                Ok((to_vec(s.soft), to_vec(s.gate)))
            })
            .collect()
    }

    /// The channels kept by the keep masks in `extra` (all of a group without one).
    pub fn selection(&self, extra: &ExtraParams) -> ChannelSelection {
        let mut sel = ChannelSelection::default();
        for g in &self.layout.groups {
            if let Some(keep) = extra.buffer(&keep_name(g)) {
                let keep = to_vec(keep);
                if keep.iter().any(|&v| v == 0.0) {
                    let kept = (0..g.channels).filter(|&j| keep[j] != 0.0).collect();
                    sel.kept.insert(g.id, kept);
                }
            }
        }
        sel
    }

    /// The reduction `sel` achieves, in the budget's measure.
    fn achieved(&self, sel: &ChannelSelection) -> crate::Result<f64> {
        let (dense, small) = (
            cost(&self.graph, Convention::ConvLinear)?,
            cost(&compact_graph(&self.graph, sel)?, Convention::ConvLinear)?,
        );
        let (d, s) = match self.schedule.budget {
            Budget::ParamsReduction(_) => (dense.params, small.params),
            Budget::MacsReduction(_) => (dense.macs, small.macs),
        };
        Ok(1.0 - s as f64 / d.max(1) as f64)
    }

    /// Cuts the epoch's share of the budget by the current scores and sets the keep masks.
    fn budget_step(
        &self,
        exec: &Executor,
        extra: &mut ExtraParams,
        epoch: usize,
    ) -> crate::Result<()> {
        let target = self.schedule.target(epoch);
        let host = self.host_scores(exec, extra)?;
        let mut scores = GroupScores::new();
        for (g, (soft, _)) in self.layout.groups.iter().zip(&host) {
            scores.insert(g.id, soft.clone());
        }
        let sel = cut(
            &self.graph,
            &self.groups,
            &scores,
            self.schedule.budget,
            target,
            self.round_to,
        )?;
        let (mut kept_sum, mut kept_n, mut cut_sum, mut cut_n) = (0f64, 0usize, 0f64, 0usize);
        for (g, (soft, _)) in self.layout.groups.iter().zip(&host) {
            let kept = sel.kept.get(&g.id);
            let keep: Vec<f32> = (0..g.channels)
                .map(|j| {
                    let on = kept.is_none_or(|k| k.binary_search(&j).is_ok());
                    if on {
                        kept_sum += soft[j] as f64;
                        kept_n += 1;
                    } else {
                        cut_sum += soft[j] as f64;
                        cut_n += 1;
                    }
                    if on { 1.0 } else { 0.0 }
                })
                .collect();
            extra.set_buffer(&keep_name(g), keep)?;
        }
        let row = BudgetRow {
            epoch: epoch + 1,
            target,
            achieved: self.achieved(&sel)?,
            kept_filters: kept_n,
            scored_filters: kept_n + cut_n,
            mean_score_kept: kept_sum / kept_n.max(1) as f64,
            mean_score_cut: (cut_n > 0).then(|| cut_sum / cut_n as f64),
        };
        tracing::info!(
            "PAAM epoch {}: cut {:.1}% of the budget's measure ({:.1}% wanted), {} of {} filters kept",
            row.epoch,
            100.0 * row.achieved,
            100.0 * row.target,
            row.kept_filters,
            row.scored_filters
        );
        if let Some(path) = &self.history {
            let mut rows: Vec<BudgetRow> = read_history(path)?
                .into_iter()
                .filter(|r| r.epoch < row.epoch)
                .collect();
            rows.push(row);
            let text: String = rows
                .iter()
                .map(|r| serde_json::to_string(r).expect("rows serialise") + "\n")
                .collect();
            write_atomic(path, text.as_bytes())?;
        }
        Ok(())
    }
}

/// The budget steps recorded in `path` (none when it does not exist).
pub fn read_history(path: &std::path::Path) -> crate::Result<Vec<BudgetRow>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::MethodError::io("read", path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| {
                crate::MethodError::Invalid(format!("{} is corrupt: {e}", path.display()))
            })
        })
        .collect()
}

impl DynamicGates for PaamGates {
    fn gated_nodes(&self) -> Vec<String> {
        self.layout
            .groups
            .iter()
            .flat_map(|g| g.producers.iter().map(|p| p.gate_at.clone()))
            .collect()
    }

    fn begin_pass(&self, params: &PassParams<'_>, extra: Option<&ExtraParams>) {
        let mut pass = self.pass.borrow_mut();
        for (k, slot) in pass.iter_mut().enumerate() {
            *slot = extra.and_then(|e| self.scores(k, params, e));
        }
    }

    fn gate(
        &self,
        node: &str,
        _input: &Value,
        _output: &Value,
        _extra: Option<&ExtraParams>,
    ) -> Option<Tensor<2>> {
        let k = self.layout.group_gating(node)?;
        let s = self.pass.borrow()[k].clone()?;
        let c = self.layout.groups[k].channels;
        Some(s.gate.reshape([1, c]))
    }
}

impl LossTerm for PaamGates {
    fn name(&self) -> &str {
        "paam-score-penalty"
    }

    /// λ times the mean score over every scored filter of the network.
    fn loss(&self, _: &Executor, _: Option<&ExtraParams>, _: StepInfo) -> Option<Tensor<1>> {
        if self.lambda == 0.0 {
            return None;
        }
        let pass = self.pass.borrow();
        let mut total: Option<Tensor<1>> = None;
        for s in pass.iter() {
            let t = s.as_ref()?.soft.clone().sum();
            total = Some(match total {
                Some(a) => a + t,
                None => t,
            });
        }
        let n = self.layout.filters().max(1) as f64;
        total.map(|t| t.mul_scalar(self.lambda / n))
    }
}

impl EpochStart for PaamGates {
    fn epoch_start(
        &self,
        exec: &Executor,
        extra: Option<&mut ExtraParams>,
        at: StepInfo,
    ) -> shears_engine::Result<()> {
        let extra = extra.ok_or_else(|| {
            EngineError::invalid(
                "PAAM",
                "the scorers' parameters are not in the training hooks",
            )
        })?;
        self.budget_step(exec, extra, at.epoch)
            .map_err(|e| EngineError::invalid("PAAM budget", e.to_string()))
    }
}
