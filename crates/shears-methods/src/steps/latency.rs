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
/// Where onnxruntime is available, the same in onnxruntime.
pub fn measure_latency(
    dense: &Model,
    small: &Model,
    device_name: &str,
    l: &LatencySettings,
    macs_ratio: f64,
) -> Result<Measured> {
    l.validate()?;
    let mut ort = OrtPair::new(dense, small);
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
            let onnxruntime = ort.measure(&dense.graph.input.shape, batch, threads, l);
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
                onnxruntime,
            });
        }
    }
    Ok(Measured {
        rows,
        onnxruntime: ort.note,
    })
}

/// The dense and compacted models as onnxruntime sees them, and what became of measuring them:
/// onnxruntime missing, or failing on a model, leaves its column empty with the reason.
struct OrtPair {
    models: Option<(Vec<u8>, Vec<u8>)>,
    note: String,
}

impl OrtPair {
    fn new(dense: &Model, small: &Model) -> OrtPair {
        let runtime = match shears_ort::runtime() {
            Ok(r) => r,
            Err(e) => {
                return OrtPair {
                    models: None,
                    note: e.to_string(),
                };
            }
        };
        let export = |m: &Model| shears_onnx::to_onnx_bytes(m).map_err(|e| e.to_string());
        match (export(dense), export(small)) {
            (Ok(d), Ok(c)) => OrtPair {
                models: Some((d, c)),
                note: format!("measured with {}", runtime.library.display()),
            },
            (Err(e), _) | (_, Err(e)) => OrtPair {
                models: None,
                note: format!("not measured: the ONNX export failed: {e}"),
            },
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
                bd = Some(bd.map_or(td, |b| if b.median_ms <= td.median_ms { b } else { td }));
                bc = Some(bc.map_or(tc, |b| if b.median_ms <= tc.median_ms { b } else { tc }));
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
