//! The attention network that scores a group's filters from their weights.
//!
//! The paper's network is not public; this is our reconstruction [UNVERIFIED], kept small:
//! per group, each producer's filters are rows X_p ∈ R^{F×D_p} (scaled by the tensor's RMS, so
//! the scorer sees relative magnitudes whatever the initialisation), embedded and summed over
//! the producers, E = Σ_p X_p A_p ∈ R^{F×d}; one head of self-attention over the F filters,
//! H = E + softmax(E W_q (E W_k)ᵀ / √d) E W_v, lets a filter's score depend on the others;
//! the logit is z = tanh(H) u + b, and the score is the activation of z.
//!
//! u and b start at 0, so every logit starts at 0 and (with the leaky exponential) every score
//! at exactly 1. The ablations swap the attention for `independent` (H = E + E W_v: each
//! filter scored from its own weights alone) or `free` (a learned logit per filter, no
//! function of the weights at all).

use super::layout::{Layout, ScoredGroup};
use serde::{Deserialize, Serialize};
use shears_engine::burn::tensor::{Tensor, activation::softmax};
use shears_engine::{ExtraParams, PassParams};

/// How a group's logits are computed, as `[method] scorer` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScorerKind {
    /// Self-attention over the group's filters (PAAM).
    Attention,
    /// The same network without the attention: each filter scored from its own weights.
    Independent,
    /// A free logit per filter.
    Free,
}

impl ScorerKind {
    pub fn name(self) -> &'static str {
        match self {
            ScorerKind::Attention => "attention",
            ScorerKind::Independent => "independent",
            ScorerKind::Free => "free",
        }
    }
}

/// Names of group `g`'s scorer parameters.
pub struct ParamNames {
    pub embed: Vec<String>,
    pub query: String,
    pub key: String,
    pub value: String,
    pub out: String,
    pub bias: String,
    pub free: String,
}

impl ParamNames {
    pub fn of(group: &ScoredGroup) -> ParamNames {
        let p = format!("paam.g{}", group.id);
        ParamNames {
            embed: group
                .producers
                .iter()
                .map(|q| format!("{p}.embed.{}", q.node))
                .collect(),
            query: format!("{p}.query"),
            key: format!("{p}.key"),
            value: format!("{p}.value"),
            out: format!("{p}.out"),
            bias: format!("{p}.bias"),
            free: format!("{p}.logits"),
        }
    }
}

/// The scorers' initial parameters for every group of `layout`: embeddings and attention maps
/// uniform with variance 1/fan-in (seeded), output weights and biases (and free logits) 0.
pub fn initial_params(
    layout: &Layout,
    kind: ScorerKind,
    dim: usize,
    seed: u64,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x9aa3);
    let mut uniform = |rows: usize, cols: usize| -> Vec<f32> {
        let bound = (3.0 / rows as f32).sqrt();
        (0..rows * cols)
            .map(|_| rng.random_range(-bound..bound))
            .collect()
    };
    let mut out = Vec::new();
    for g in &layout.groups {
        let n = ParamNames::of(g);
        if kind == ScorerKind::Free {
            out.push((n.free, vec![g.channels], vec![0.0; g.channels]));
            continue;
        }
        for (p, name) in g.producers.iter().zip(n.embed) {
            out.push((name, vec![p.fan_in, dim], uniform(p.fan_in, dim)));
        }
        let square: Vec<&String> = match kind {
            ScorerKind::Attention => vec![&n.query, &n.key, &n.value],
            _ => vec![&n.value],
        };
        for name in square {
            out.push((name.clone(), vec![dim, dim], uniform(dim, dim)));
        }
        out.push((n.out, vec![dim], vec![0.0; dim]));
        out.push((n.bias, vec![1], vec![0.0]));
    }
    out
}

/// Computes logits from the weights of one forward pass.
pub struct Scorer {
    pub kind: ScorerKind,
    pub dim: usize,
    /// Let the score's gradient reach the filter weights (default: the scorer reads them
    /// detached, so the filters train by the task loss alone).
    pub weights_grad: bool,
}

impl Scorer {
    /// An extra parameter on the pass's side: tracked on a training pass, plain otherwise.
    fn param(extra: &ExtraParams, name: &str, tracked: bool) -> Option<Tensor<1>> {
        let t = extra.get(name)?;
        Some(if tracked { t } else { t.inner() })
    }

    /// The logits `[F]` of group `group` (`None` when a parameter is missing).
    pub fn logits(
        &self,
        group: &ScoredGroup,
        params: &PassParams<'_>,
        extra: &ExtraParams,
    ) -> Option<Tensor<1>> {
        let names = ParamNames::of(group);
        let (first, _) = params.get(&group.producers[0].weight)?;
        let tracked = first.is_autodiff();
        let d = self.dim;
        let f = group.channels;
        if self.kind == ScorerKind::Free {
            return Self::param(extra, &names.free, tracked);
        }
        let mut embedding: Option<Tensor<2>> = None;
        for (p, name) in group.producers.iter().zip(&names.embed) {
            let (w, info) = params.get(&p.weight)?;
            let w = if self.weights_grad {
                w.clone()
            } else {
                w.clone().detach()
            };
            // Filters as rows: a linear weight is held transposed ([in, out]) in the engine.
            let rows = if info.transposed {
                w.reshape([p.fan_in, f]).transpose()
            } else {
                w.reshape([f, p.fan_in])
            };
            let rms = rows
                .clone()
                .powi_scalar(2)
                .mean()
                .sqrt()
                .add_scalar(1e-8)
                .reshape([1, 1]);
            let a = Self::param(extra, name, tracked)?.reshape([p.fan_in, d]);
            let e = (rows / rms).matmul(a);
            embedding = Some(match embedding {
                Some(s) => s + e,
                None => e,
            });
        }
        let e = embedding?;
        let square = |name: &str| -> Option<Tensor<2>> {
            Some(Self::param(extra, name, tracked)?.reshape([d, d]))
        };
        let h = match self.kind {
            ScorerKind::Attention => {
                let q = e.clone().matmul(square(&names.query)?);
                let k = e.clone().matmul(square(&names.key)?);
                let v = e.clone().matmul(square(&names.value)?);
                let attention = softmax(q.matmul(k.transpose()).div_scalar((d as f32).sqrt()), 1);
                e + attention.matmul(v)
            }
            _ => e.clone() + e.matmul(square(&names.value)?),
        };
        let u = Self::param(extra, &names.out, tracked)?.reshape([d, 1]);
        let b = Self::param(extra, &names.bias, tracked)?;
        Some(h.tanh().matmul(u).reshape([f]) + b)
    }
}
