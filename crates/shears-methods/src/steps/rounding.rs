//! Runtime-aware structured cuts: the channel multiple that runs fastest where the model will
//! run (`round_to = "auto"`), and a latency target (`latency_reduction`) measured there.
//!
//! A runtime's convolution kernels pack channels in blocks (onnxruntime's MLAS in 8s and 16s on
//! AVX-512), so a layer of 27 channels can cost more than one of 32, and a network pruned to the
//! odd counts of a MACs target can run slower than the dense one (Torch-Pruning's "pruned but not
//! faster"). Rounding every group's kept count up to a multiple fixes that, but which multiple
//! pays depends on the runtime and the machine, so `auto` measures: the cut is made once per
//! candidate multiple ([`AUTO_MULTIPLES`]), each to the same target, and each compacted network
//! is timed at batch 1 on one thread in the target runtime, alternating with the others over a
//! few rounds; the fastest wins. Two guards keep the choice about shapes: a larger multiple must
//! be more than [`TIE`] faster than a smaller one (the smaller one follows the scores more
//! closely), and a multiple whose cut removes more than [`OVERSHOOT`] beyond the target is passed
//! over (it would win for removing more). Whole networks are timed rather than single layer
//! shapes because fusion, memory traffic and the layers between convolutions count in what the
//! user sees, and a network of this size times in milliseconds.

use crate::error::{MethodError, Result};
use crate::invalid;
use crate::steps::Runtime;
use serde::{Deserialize, Serialize};
use shears_core::artifact::Model;
use shears_core::structured::ChannelSelection;
use shears_engine::Executor;
use shears_engine::device::device_by_name;
use shears_engine::latency::{BenchSettings, inference_latency};

/// The multiples `round_to = "auto"` tries.
pub const AUTO_MULTIPLES: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// Most a rounded cut may remove beyond its target (in the target's own measure: a share of
/// MACs, params or channels) and still be tried by `auto`: a cut that removed much more would
/// time faster for that alone.
pub const OVERSHOOT: f64 = 0.05;

/// A larger multiple is chosen only when it is faster than a smaller one by more than this share
/// (measurement noise is a few percent).
pub const TIE: f64 = 0.03;

/// How kept channel counts are rounded: up to a fixed multiple, or to the multiple measured
/// fastest in the target runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoundTo {
    #[default]
    Auto,
    Multiple(usize),
}

impl std::str::FromStr for RoundTo {
    type Err = MethodError;
    fn from_str(s: &str) -> Result<RoundTo> {
        if s == "auto" {
            return Ok(RoundTo::Auto);
        }
        match s.parse::<usize>() {
            Ok(m) if m >= 1 => Ok(RoundTo::Multiple(m)),
            _ => invalid!("round_to must be `auto` or a whole number >= 1, got `{s}`"),
        }
    }
}

impl std::fmt::Display for RoundTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoundTo::Auto => f.write_str("auto"),
            RoundTo::Multiple(m) => write!(f, "{m}"),
        }
    }
}

impl Serialize for RoundTo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            RoundTo::Auto => s.serialize_str("auto"),
            RoundTo::Multiple(m) => s.serialize_u64(*m as u64),
        }
    }
}

impl<'de> Deserialize<'de> for RoundTo {
    /// `"auto"` or a whole number >= 1 (TOML `round_to = 8`, `round_to = "auto"`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<RoundTo, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The runtime a latency decision is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetRuntime {
    /// The model exported to ONNX and run in onnxruntime (the usual deployment).
    Onnxruntime,
    /// shears' own engine.
    Shears,
}

impl std::str::FromStr for TargetRuntime {
    type Err = MethodError;
    fn from_str(s: &str) -> Result<TargetRuntime> {
        match s {
            "onnxruntime" | "ort" => Ok(TargetRuntime::Onnxruntime),
            "shears" => Ok(TargetRuntime::Shears),
            _ => invalid!("unknown latency runtime `{s}` (use onnxruntime or shears)"),
        }
    }
}

impl<'de> Deserialize<'de> for TargetRuntime {
    fn deserialize<D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<TargetRuntime, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl TargetRuntime {
    pub fn name(self) -> &'static str {
        match self {
            TargetRuntime::Onnxruntime => "onnxruntime",
            TargetRuntime::Shears => "shears",
        }
    }
}

/// Times models at batch 1 on one thread in one runtime.
pub struct Timer {
    pub runtime: TargetRuntime,
    device: String,
    /// Why onnxruntime was not used when none was named and it is missing.
    pub note: Option<String>,
}

/// One model ready to time: a session or an executor, built once and run every round.
enum Ready {
    Ort(Box<shears_ort::Bench>),
    Engine(Box<Executor>),
}

impl Timer {
    /// A timer in `requested`, or onnxruntime when it is available and shears' engine (with a
    /// note saying why) when not. Naming onnxruntime when it is missing is an error.
    pub fn new(requested: Option<TargetRuntime>, device: &str) -> Result<Timer> {
        let runtime = requested.unwrap_or(TargetRuntime::Onnxruntime);
        let mut note = None;
        let runtime = match (runtime, shears_ort::runtime()) {
            (TargetRuntime::Onnxruntime, Ok(_)) => TargetRuntime::Onnxruntime,
            (TargetRuntime::Onnxruntime, Err(e)) if requested.is_some() => {
                invalid!("latency runtime onnxruntime: {e}")
            }
            (TargetRuntime::Onnxruntime, Err(e)) => {
                note = Some(format!("measured in shears' engine: {e}"));
                TargetRuntime::Shears
            }
            (TargetRuntime::Shears, _) => TargetRuntime::Shears,
        };
        Ok(Timer {
            runtime,
            device: device.to_string(),
            note,
        })
    }

    fn ready(&self, model: &Model) -> Result<Ready> {
        let shape = &model.graph.input.shape;
        Ok(match self.runtime {
            TargetRuntime::Onnxruntime => {
                let bytes = shears_onnx::to_onnx_bytes(model)
                    .map_err(|e| MethodError::Invalid(format!("ONNX export for timing: {e}")))?;
                let bench = shears_ort::Bench::new(&bytes, shape, 1, 1)
                    .map_err(|e| MethodError::Invalid(format!("latency runtime: {e}")))?;
                Ready::Ort(Box::new(bench))
            }
            TargetRuntime::Shears => {
                let device = device_by_name(&self.device)?;
                Ready::Engine(Box::new(Executor::new(
                    &model.graph,
                    &model.weights,
                    &model.masks,
                    &device,
                )?))
            }
        })
    }

    /// Median milliseconds of `repeats` timed runs after `warmup`.
    fn run(&self, ready: &mut Ready, warmup: usize, repeats: usize) -> Result<f64> {
        Ok(match ready {
            Ready::Ort(b) => {
                b.time(warmup, repeats)
                    .map_err(|e| MethodError::Invalid(format!("latency runtime: {e}")))?
                    .median_ms
            }
            Ready::Engine(e) => {
                let s = BenchSettings {
                    batch: 1,
                    threads: 1,
                    warmup,
                    repeats,
                };
                inference_latency(e, &s)?.median_ms
            }
        })
    }

    /// The best-of-rounds median of every model, the models alternating round by round so that
    /// machine load drifts over all alike. Repeats scale with the first model's pass time so a
    /// large network times in seconds, not minutes.
    pub fn time_all(&self, models: &[&Model], rt: &Runtime) -> Result<Vec<f64>> {
        let mut ready = models
            .iter()
            .map(|m| self.ready(m))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = ready.first_mut() else {
            return Ok(Vec::new());
        };
        let pass_ms = self.run(first, 1, 1)?;
        // About a quarter second per model and round, within 5..=40 repeats; 3 rounds, 2 when a
        // pass takes over 20 ms.
        let repeats = ((250.0 / pass_ms.max(1e-3)) as usize).clamp(5, 40);
        let rounds = if pass_ms > 20.0 { 2 } else { 3 };
        let mut best = vec![f64::INFINITY; ready.len()];
        for _ in 0..rounds {
            rt.check_cancelled()?;
            for (b, r) in best.iter_mut().zip(ready.iter_mut()) {
                *b = b.min(self.run(r, 2, repeats)?);
            }
        }
        Ok(best)
    }
}

/// One multiple `auto` tried.
#[derive(Debug, Clone, Serialize)]
pub struct TriedMultiple {
    pub multiple: usize,
    /// Batch-1 median of the compacted network; `None` where the cut failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_ms: Option<f64>,
    /// Why this multiple was not timed (a target out of reach once counts are rounded, or a
    /// cut that overshoots it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `round_to = "auto"` measured and chose.
#[derive(Debug, Clone, Serialize)]
pub struct RoundingChoice {
    /// The runtime the candidates were timed in.
    pub runtime: &'static str,
    /// Why that is not onnxruntime, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The dense network, timed alongside.
    pub dense_ms: f64,
    pub tried: Vec<TriedMultiple>,
    pub chosen: usize,
}

/// The multiple to keep given each tried multiple's time: the fastest, unless a smaller multiple
/// is within [`TIE`] of it.
pub fn fastest_multiple(times: &[(usize, f64)]) -> Option<usize> {
    let best = times.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
    times
        .iter()
        .filter(|t| t.1 <= best * (1.0 + TIE))
        .map(|t| t.0)
        .min()
}

/// The compacted network of a selection (the structured step's compaction, passed in so this
/// module stays below it).
pub type Compact<'a> = &'a dyn Fn(&ChannelSelection) -> Result<Model>;

/// Cuts `dense` with every multiple of [`AUTO_MULTIPLES`] (`cut(m)`), times the compacted
/// networks and returns the selection of the fastest with what was measured. Multiples whose cut
/// fails are reported and skipped; when every cut fails, the first error is returned.
pub fn choose_multiple(
    dense: &Model,
    timer: &Timer,
    rt: &Runtime,
    compact: Compact<'_>,
    cut: &mut dyn FnMut(usize) -> Result<ChannelSelection>,
) -> Result<(ChannelSelection, RoundingChoice)> {
    rt.stage(&format!(
        "round_to auto: timing multiples {:?} in {}",
        AUTO_MULTIPLES,
        timer.runtime.name()
    ))?;
    let mut tried = Vec::new();
    let mut cuts: Vec<(usize, ChannelSelection)> = Vec::new();
    let mut first_error = None;
    for m in AUTO_MULTIPLES {
        match cut(m) {
            Ok(sel) => cuts.push((m, sel)),
            Err(e) => {
                tried.push(TriedMultiple {
                    multiple: m,
                    median_ms: None,
                    error: Some(e.to_string()),
                });
                first_error.get_or_insert(e);
            }
        }
    }
    if cuts.is_empty() {
        return Err(first_error.expect("every multiple was tried"));
    }
    // Multiples that give the same channels (a small group cannot tell 16 from 32) are timed once.
    let mut distinct: Vec<usize> = Vec::new();
    let owner: Vec<usize> = cuts
        .iter()
        .map(
            |(_, sel)| match distinct.iter().position(|&d| cuts[d].1 == *sel) {
                Some(p) => p,
                None => {
                    distinct.push(cuts.iter().position(|c| c.1 == *sel).expect("present"));
                    distinct.len() - 1
                }
            },
        )
        .collect();
    let models = distinct
        .iter()
        .map(|&d| compact(&cuts[d].1))
        .collect::<Result<Vec<_>>>()?;
    let mut all: Vec<&Model> = vec![dense];
    all.extend(models.iter());
    let times = timer.time_all(&all, rt)?;
    let per_cut: Vec<(usize, f64)> = cuts
        .iter()
        .zip(&owner)
        .map(|((m, _), &o)| (*m, times[1 + o]))
        .collect();
    let chosen = fastest_multiple(&per_cut).expect("at least one cut");
    tried.extend(per_cut.iter().map(|&(m, ms)| TriedMultiple {
        multiple: m,
        median_ms: Some(ms),
        error: None,
    }));
    tried.sort_by_key(|t| t.multiple);
    let selection = cuts
        .into_iter()
        .find(|c| c.0 == chosen)
        .expect("chosen among the cuts")
        .1;
    Ok((
        selection,
        RoundingChoice {
            runtime: timer.runtime.name(),
            note: timer.note.clone(),
            dense_ms: times[0],
            tried,
            chosen,
        },
    ))
}

/// What a latency target's search measured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySearch {
    pub runtime: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The asked reduction of batch-1 latency.
    pub target: f64,
    pub dense_ms: f64,
    /// The chosen cut's time when the search measured it.
    pub compacted_ms: f64,
    /// 1 - compacted / dense, as measured during the search.
    pub reduction: f64,
    /// Compacted networks timed by the search.
    pub evaluations: usize,
}

/// The meter of a latency target: each candidate selection compacted and timed against the
/// dense network's time (itself timed once, first). Returns the meter and the dense time.
pub struct LatencyMeter<'a> {
    compact: Compact<'a>,
    timer: &'a Timer,
    rt: &'a Runtime,
    pub dense_ms: f64,
    pub evaluations: usize,
    /// Time of every selection measured, to report the chosen one's.
    pub measured: Vec<(ChannelSelection, f64)>,
}

impl<'a> LatencyMeter<'a> {
    pub fn new(
        dense: &Model,
        compact: Compact<'a>,
        timer: &'a Timer,
        rt: &'a Runtime,
    ) -> Result<LatencyMeter<'a>> {
        let dense_ms = timer.time_all(&[dense], rt)?[0];
        Ok(LatencyMeter {
            compact,
            timer,
            rt,
            dense_ms,
            evaluations: 0,
            measured: Vec::new(),
        })
    }

    /// The share of the dense batch-1 latency that `sel` removes.
    pub fn reduction(&mut self, sel: &ChannelSelection) -> Result<f64> {
        let ms = match self.measured.iter().find(|m| m.0 == *sel) {
            Some(m) => m.1,
            None => {
                self.rt.stage(&format!(
                    "latency target: timing cut {} in {}",
                    self.evaluations + 1,
                    self.timer.runtime.name()
                ))?;
                let small = (self.compact)(sel)?;
                let ms = self.timer.time_all(&[&small], self.rt)?[0];
                self.evaluations += 1;
                self.measured.push((sel.clone(), ms));
                ms
            }
        };
        Ok(1.0 - ms / self.dense_ms)
    }

    /// The report of the search that ended at `sel`.
    pub fn report(&self, target: f64, sel: &ChannelSelection) -> LatencySearch {
        let ms = self
            .measured
            .iter()
            .find(|m| m.0 == *sel)
            .map_or(self.dense_ms, |m| m.1);
        LatencySearch {
            runtime: self.timer.runtime.name(),
            note: self.timer.note.clone(),
            target,
            dense_ms: self.dense_ms,
            compacted_ms: ms,
            reduction: 1.0 - ms / self.dense_ms,
            evaluations: self.evaluations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_to_reads_auto_or_a_multiple() {
        assert_eq!("auto".parse::<RoundTo>().unwrap(), RoundTo::Auto);
        assert_eq!("8".parse::<RoundTo>().unwrap(), RoundTo::Multiple(8));
        for bad in ["0", "-1", "eight", "1.5", ""] {
            let e = bad.parse::<RoundTo>().unwrap_err().to_string();
            assert!(e.contains("round_to") && e.contains(bad), "{e}");
        }
        #[derive(Deserialize)]
        struct K {
            round_to: RoundTo,
        }
        let k: K = toml::from_str("round_to = 16").unwrap();
        assert_eq!(k.round_to, RoundTo::Multiple(16));
        let k: K = toml::from_str("round_to = \"auto\"").unwrap();
        assert_eq!(k.round_to, RoundTo::Auto);
        let e = toml::from_str::<K>("round_to = 0")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("round_to must be"), "{e}");
        assert_eq!(serde_json::to_string(&RoundTo::Multiple(8)).unwrap(), "8");
        assert_eq!(serde_json::to_string(&RoundTo::Auto).unwrap(), "\"auto\"");
    }

    #[test]
    fn the_fastest_multiple_wins_unless_a_smaller_one_ties() {
        // MobileNetV2's shape of the problem: odd counts slow, blocks of 8 and 16 fast.
        let t = [
            (1, 1.55),
            (2, 1.20),
            (4, 0.61),
            (8, 0.47),
            (16, 0.43),
            (32, 0.45),
        ];
        assert_eq!(fastest_multiple(&t), Some(16));
        // Within 3 % of the best, the smaller multiple (fewer channels kept) is kept.
        let t = [(1, 0.298), (8, 0.295), (16, 0.290)];
        assert_eq!(fastest_multiple(&t), Some(1));
        assert_eq!(fastest_multiple(&[]), None);
    }
}
