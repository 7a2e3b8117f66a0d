//! Measured latency of a dense model against its compacted version: the wall-clock side of
//! every structured report, next to the MACs ratio.

use crate::error::{Context, Result};
use crate::invalid;
use crate::steps::progress::Progress;
use serde::{Deserialize, Serialize};
use shears_core::artifact::Model;
use shears_engine::Executor;
use shears_engine::device::device_by_name;
use shears_engine::latency::{BenchSettings, inference_latency};

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
    /// Seconds one batch size and thread count may take (both models, all rounds, in shears'
    /// engine; onnxruntime adds its own, usually less). A model whose single pass is too slow
    /// for the settings gets fewer rounds, repeats and warm-up runs (at least 1, 3 and 1), and a
    /// batch size larger than 1 that cannot fit even those is skipped; the report says which.
    /// 0: no budget, the settings as given.
    #[serde(skip_serializing_if = "is_default_budget")]
    pub budget_s: f64,
}

/// Seconds per batch size and thread count by default: a small network measures as set; an
/// ImageNet ResNet-50 at batch 64 (seconds a pass) is skipped instead of taking minutes.
pub const DEFAULT_BUDGET_S: f64 = 30.0;

fn is_default_budget(v: &f64) -> bool {
    *v == DEFAULT_BUDGET_S
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
            budget_s: DEFAULT_BUDGET_S,
        }
    }
}

impl LatencySettings {
    /// Checks the counts; errors name both spellings (flag and `[latency]` key).
    pub fn validate(&self) -> Result<()> {
        if !(self.budget_s >= 0.0 && self.budget_s.is_finite()) {
            invalid!(
                "the latency budget must be a number of seconds >= 0 (0: none), got {} (--latency-budget, [latency] budget_s)",
                self.budget_s
            );
        }
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
    /// Timed runs per round and rounds of this row: the settings', or fewer where the budget
    /// asked for them.
    pub repeats: usize,
    pub rounds: usize,
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
    /// The same two models exported to ONNX and run in onnxruntime (same batch, threads,
    /// warm-up, repeats and rounds); `None` where onnxruntime is not available (the report's
    /// `onnxruntime` note says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime: Option<RuntimeRow>,
}

/// Dense and compacted latency in another runtime.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeRow {
    pub dense_median_ms: f64,
    pub dense_p90_ms: f64,
    pub compacted_median_ms: f64,
    pub compacted_p90_ms: f64,
    /// dense / compacted: below 1, the compacted model is slower in this runtime.
    pub latency_ratio: f64,
}

/// The latency rows and what became of the onnxruntime column.
#[derive(Debug, Clone)]
pub struct Measured {
    pub rows: Vec<LatencyRow>,
    /// `measured with <library>`, or why onnxruntime was not measured.
    pub onnxruntime: String,
    /// What the time budget changed: shortened or skipped measurements, with the pass time.
    pub notes: Vec<String>,
}

/// How one batch size and thread count is measured within the budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plan {
    /// Warm-up, repeats and rounds to run.
    Run {
        warmup: usize,
        repeats: usize,
        rounds: usize,
    },
    /// Too slow even at the minimum: not measured.
    Skip,
}

/// The measurement that fits `budget_s` seconds when one pass of the slower model takes
/// `pass_s`: the settings when they fit, else fewer rounds, then fewer repeats (at least 3),
/// then less warm-up (at least 1); a batch size above 1 that still does not fit is skipped
/// (batch 1, the latency a deployment sees first, is always measured).
pub fn plan(l: &LatencySettings, batch: usize, pass_s: f64) -> Plan {
    let cost = |warmup: usize, repeats: usize, rounds: usize| {
        2.0 * pass_s * (rounds * (warmup + repeats)) as f64
    };
    let (mut warmup, mut repeats, mut rounds) = (l.warmup, l.repeats, l.rounds);
    if l.budget_s == 0.0 || cost(warmup, repeats, rounds) <= l.budget_s {
        return Plan::Run {
            warmup,
            repeats,
            rounds,
        };
    }
    while rounds > 1 && cost(warmup, repeats, rounds) > l.budget_s {
        rounds -= 1;
    }
    while repeats > 3.min(l.repeats) && cost(warmup, repeats, rounds) > l.budget_s {
        repeats -= 1;
    }
    while warmup > 1.min(l.warmup) && cost(warmup, repeats, rounds) > l.budget_s {
        warmup -= 1;
    }
    if cost(warmup, repeats, rounds) > l.budget_s && batch > 1 {
        return Plan::Skip;
    }
    Plan::Run {
        warmup,
        repeats,
        rounds,
    }
}

/// A duration as people read it: `0.41 ms`, `7.30 s`.
fn duration(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}

/// The round with the lowest median.
fn best<T>(a: Option<T>, b: T, median_ms: fn(&T) -> f64) -> Option<T> {
    match a {
        Some(a) if median_ms(&a) <= median_ms(&b) => Some(a),
        _ => Some(b),
    }
}

/// Measures inference latency of both models, alternating them round by round so drifting
/// machine load affects both alike; each reports its best round's median (and that round's p90).
/// Where onnxruntime is available, the same in onnxruntime.
pub fn measure_latency(
    dense: &Model,
    small: &Model,
    device_name: &str,
    l: &LatencySettings,
    macs_ratio: f64,
    progress: &dyn Progress,
) -> Result<Measured> {
    l.validate()?;
    // Each measurement is a stage the caller sees, and a point where it may stop the run.
    let stage = |name: String| -> Result<()> {
        if progress.cancelled() {
            return Err(crate::MethodError::Cancelled);
        }
        progress.stage(&name);
        Ok(())
    };
    let mut ort = OrtPair::new(dense, small);
    let device = device_by_name(device_name)?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &threads in &l.threads {
        for &batch in &l.batches {
            let mut de = Executor::new(&dense.graph, &dense.weights, &dense.masks, &device)?;
            let mut ce = Executor::new(&small.graph, &small.weights, &small.masks, &device)?;
            // One untimed pass of the dense model (the slower one) sizes the measurement.
            stage(format!(
                "latency: batch {batch}, {threads} threads: a first pass"
            ))?;
            let probe = BenchSettings {
                batch,
                threads,
                warmup: 0,
                repeats: 1,
            };
            let pass_s = inference_latency(&mut de, &probe)?.median_ms / 1e3;
            let (warmup, repeats, rounds) = match plan(l, batch, pass_s) {
                Plan::Skip => {
                    notes.push(format!(
                        "batch {batch}, {threads} threads not measured: one pass takes {}, over the {} s budget even at 1 warm-up, 3 repeats, 1 round ([latency] budget_s, --latency-budget; 0 for none)",
                        duration(pass_s),
                        l.budget_s
                    ));
                    continue;
                }
                Plan::Run {
                    warmup,
                    repeats,
                    rounds,
                } => (warmup, repeats, rounds),
            };
            if (warmup, repeats, rounds) != (l.warmup, l.repeats, l.rounds) {
                notes.push(format!(
                    "batch {batch}, {threads} threads: one pass takes {}, so {warmup} warm-up, {repeats} repeats, {rounds} rounds fit the {} s budget",
                    duration(pass_s),
                    l.budget_s
                ));
            }
            let s = BenchSettings {
                batch,
                threads,
                warmup,
                repeats,
            };
            let (mut bd, mut bc) = (None, None);
            for round in 0..rounds {
                stage(format!(
                    "latency: batch {batch}, {threads} threads, round {}/{rounds}: dense and compacted",
                    round + 1
                ))?;
                bd = best(bd, inference_latency(&mut de, &s)?, |l| l.median_ms);
                bc = best(bc, inference_latency(&mut ce, &s)?, |l| l.median_ms);
            }
            let (d, c) = (
                bd.context("no latency round ran")?,
                bc.context("no latency round ran")?,
            );
            let latency_ratio = d.median_ms / c.median_ms;
            stage(format!(
                "latency: batch {batch}, {threads} threads in onnxruntime"
            ))?;
            let sized = LatencySettings {
                warmup,
                repeats,
                rounds,
                ..l.clone()
            };
            let onnxruntime = ort.measure(&dense.graph.input.shape, batch, threads, &sized);
            rows.push(LatencyRow {
                batch,
                threads,
                repeats,
                rounds,
                dense_median_ms: d.median_ms,
                dense_p90_ms: d.p90_ms,
                compacted_median_ms: c.median_ms,
                compacted_p90_ms: c.p90_ms,
                latency_ratio,
                macs_ratio,
                ratio_of_ratios: latency_ratio / macs_ratio,
                onnxruntime,
            });
        }
    }
    Ok(Measured {
        rows,
        onnxruntime: ort.note,
        notes,
    })
}

/// The dense and compacted models as onnxruntime sees them, and what became of measuring them:
/// onnxruntime missing, or failing on a model, leaves its column empty with the reason.
struct OrtPair {
    models: Option<(Vec<u8>, Vec<u8>)>,
    note: String,
}

/// `models` exported to ONNX for onnxruntime, with the note a report carries: `measured with
/// <libonnxruntime>`, or why there is nothing to measure (no onnxruntime, or an export that
/// failed).
pub fn onnx_for_onnxruntime(models: &[&Model]) -> (Option<Vec<Vec<u8>>>, String) {
    let runtime = match shears_ort::runtime() {
        Ok(r) => r,
        Err(e) => return (None, e.to_string()),
    };
    match models
        .iter()
        .map(|m| shears_onnx::to_onnx_bytes(m))
        .collect::<std::result::Result<Vec<_>, _>>()
    {
        Ok(bytes) => (
            Some(bytes),
            format!("measured with {}", runtime.library.display()),
        ),
        Err(e) => (None, format!("not measured: the ONNX export failed: {e}")),
    }
}

impl OrtPair {
    fn new(dense: &Model, small: &Model) -> OrtPair {
        let (models, note) = onnx_for_onnxruntime(&[dense, small]);
        OrtPair {
            models: models.map(|mut m| {
                let c = m.pop().expect("two models");
                (m.pop().expect("two models"), c)
            }),
            note,
        }
    }

    /// One row, or `None` (with the reason kept) where onnxruntime cannot run the models.
    fn measure(
        &mut self,
        shape: &[usize],
        batch: usize,
        threads: usize,
        l: &LatencySettings,
    ) -> Option<RuntimeRow> {
        let (d, c) = self.models.as_ref()?;
        let run = || -> std::result::Result<RuntimeRow, shears_ort::OrtError> {
            let mut de = shears_ort::Bench::new(d, shape, batch, threads)?;
            let mut ce = shears_ort::Bench::new(c, shape, batch, threads)?;
            let (mut bd, mut bc): (Option<shears_ort::Timing>, Option<shears_ort::Timing>) =
                (None, None);
            for _ in 0..l.rounds {
                let td = de.time(l.warmup, l.repeats)?;
                let tc = ce.time(l.warmup, l.repeats)?;
                bd = best(bd, td, |t| t.median_ms);
                bc = best(bc, tc, |t| t.median_ms);
            }
            let (d, c) = (bd.expect("rounds >= 1"), bc.expect("rounds >= 1"));
            Ok(RuntimeRow {
                dense_median_ms: d.median_ms,
                dense_p90_ms: d.p90_ms,
                compacted_median_ms: c.median_ms,
                compacted_p90_ms: c.p90_ms,
                latency_ratio: d.median_ms / c.median_ms,
            })
        };
        match run() {
            Ok(row) => Some(row),
            Err(e) => {
                self.note = format!("not measured: {e}");
                self.models = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_shortens_then_skips_slow_measurements_but_never_batch_1() {
        let l = LatencySettings::default(); // 3 warm-up, 10 repeats, 2 rounds, 30 s
        let full = Plan::Run {
            warmup: 3,
            repeats: 10,
            rounds: 2,
        };
        // 2 models x 2 rounds x 13 passes of 10 ms: well within.
        assert_eq!(plan(&l, 64, 0.01), full);
        // 1 s a pass: 52 s as set; one round is 26 s.
        assert_eq!(
            plan(&l, 64, 1.0),
            Plan::Run {
                warmup: 3,
                repeats: 10,
                rounds: 1
            }
        );
        // 2 s a pass: one round of 3 + 4 passes is 28 s.
        assert_eq!(
            plan(&l, 64, 2.0),
            Plan::Run {
                warmup: 3,
                repeats: 4,
                rounds: 1
            }
        );
        // 7.3 s a pass (ResNet-50 at 224, batch 64): even 1 + 3 passes take 58 s.
        assert_eq!(plan(&l, 64, 7.3), Plan::Skip);
        assert_eq!(
            plan(&l, 1, 7.3),
            Plan::Run {
                warmup: 1,
                repeats: 3,
                rounds: 1
            }
        );
        // No budget: the settings as given.
        let none = LatencySettings {
            budget_s: 0.0,
            ..LatencySettings::default()
        };
        assert_eq!(plan(&none, 64, 7.3), full);
        // Settings below the minimum stay as they are.
        let few = LatencySettings {
            warmup: 0,
            repeats: 2,
            rounds: 1,
            ..LatencySettings::default()
        };
        assert_eq!(
            plan(&few, 1, 100.0),
            Plan::Run {
                warmup: 0,
                repeats: 2,
                rounds: 1
            }
        );
        let bad = LatencySettings {
            budget_s: f64::NAN,
            ..LatencySettings::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("budget"));
    }
}
