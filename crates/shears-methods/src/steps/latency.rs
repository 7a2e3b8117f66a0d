//! Measured latency of a dense model against its compacted version: the wall-clock side of
//! every structured report, next to the MACs ratio.

use crate::error::{Context, Result};
use crate::invalid;
use serde::{Deserialize, Serialize};
use shears_core::artifact::Model;
use shears_engine::Executor;
use shears_engine::device::device_by_name;
use shears_engine::latency::{BenchSettings, Latency, inference_latency};

/// How latency is measured: batch sizes and thread counts, warm-up, repeats, rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencySettings {
    /// `false` measures nothing (quick runs, tests).
    pub enabled: bool,
    pub batches: Vec<usize>,
    pub threads: Vec<usize>,
    pub warmup: usize,
    pub repeats: usize,
    /// Dense and compacted alternate this many rounds; each reports its best round.
    pub rounds: usize,
}

impl Default for LatencySettings {
    fn default() -> Self {
        LatencySettings {
            enabled: true,
            batches: vec![1, 64],
            threads: vec![1, 2],
            warmup: 3,
            repeats: 10,
            rounds: 2,
        }
    }
}

impl LatencySettings {
    /// Checks the counts; errors name both spellings (flag and `[latency]` key).
    pub fn validate(&self) -> Result<()> {
        if self.rounds == 0 || self.repeats == 0 {
            invalid!(
                "latency rounds and repeats must be at least 1 (--latency-rounds/--latency-repeats, [latency] rounds/repeats)"
            );
        }
        if self.enabled
            && (self.batches.is_empty()
                || self.threads.is_empty()
                || self.batches.contains(&0)
                || self.threads.contains(&0))
        {
            invalid!(
                "latency batches and threads must be non-empty lists of counts >= 1 (--latency-batches/--latency-threads, [latency] batches/threads)"
            );
        }
        Ok(())
    }
}

/// Dense and compacted latency at one batch size and thread count.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    pub batch: usize,
    pub threads: usize,
    pub dense_median_ms: f64,
    pub dense_p90_ms: f64,
    pub compacted_median_ms: f64,
    pub compacted_p90_ms: f64,
    /// Wall-clock ratio dense / compacted (median batch times).
    pub latency_ratio: f64,
    /// MACs ratio dense / compacted.
    pub macs_ratio: f64,
    /// latency_ratio / macs_ratio: 1 means the MACs saving turned fully into time.
    pub ratio_of_ratios: f64,
}

/// The round with the lowest median.
fn best(a: Option<Latency>, b: Latency) -> Option<Latency> {
    match a {
        Some(a) if a.median_ms <= b.median_ms => Some(a),
        _ => Some(b),
    }
}

/// Measures inference latency of both models, alternating them round by round so drifting
/// machine load affects both alike; each reports its best round's median (and that round's p90).
pub fn measure_latency(
    dense: &Model,
    small: &Model,
    device_name: &str,
    l: &LatencySettings,
    macs_ratio: f64,
) -> Result<Vec<LatencyRow>> {
    l.validate()?;
    let device = device_by_name(device_name)?;
    let mut rows = Vec::new();
    for &threads in &l.threads {
        for &batch in &l.batches {
            let s = BenchSettings {
                batch,
                threads,
                warmup: l.warmup,
                repeats: l.repeats,
            };
            let mut de = Executor::new(&dense.graph, &dense.weights, &dense.masks, &device)?;
            let mut ce = Executor::new(&small.graph, &small.weights, &small.masks, &device)?;
            let (mut bd, mut bc) = (None, None);
            for _ in 0..l.rounds {
                bd = best(bd, inference_latency(&mut de, &s)?);
                bc = best(bc, inference_latency(&mut ce, &s)?);
            }
            let (d, c) = (
                bd.context("no latency round ran")?,
                bc.context("no latency round ran")?,
            );
            let latency_ratio = d.median_ms / c.median_ms;
            rows.push(LatencyRow {
                batch,
                threads,
                dense_median_ms: d.median_ms,
                dense_p90_ms: d.p90_ms,
                compacted_median_ms: c.median_ms,
                compacted_p90_ms: c.p90_ms,
                latency_ratio,
                macs_ratio,
                ratio_of_ratios: latency_ratio / macs_ratio,
            });
        }
    }
    Ok(rows)
}
