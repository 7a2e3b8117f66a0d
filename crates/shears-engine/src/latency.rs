//! Latency and throughput measurement: warm-up, repeats, median and p90, with the batch size and
//! thread count written next to every number.

use crate::error::{EngineError, Result};
use crate::executor::{Executor, Mode};
use crate::optim::Optimizer;
use crate::train::cross_entropy;
use serde::Serialize;
use std::time::Instant;

/// How to measure.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSettings {
    pub batch: usize,
    pub threads: usize,
    pub warmup: usize,
    pub repeats: usize,
}

/// One measurement: per-batch wall-clock times in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub mode: String,
    pub batch: usize,
    pub threads: usize,
    pub warmup: usize,
    pub repeats: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    /// Images per second at the median batch time.
    pub images_per_s: f64,
}

fn summarise(mode: &str, s: &BenchSettings, mut times: Vec<f64>) -> Latency {
    times.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let median = pick(0.5);
    Latency {
        mode: mode.into(),
        batch: s.batch,
        threads: s.threads,
        warmup: s.warmup,
        repeats: s.repeats,
        median_ms: median,
        p90_ms: pick(0.9),
        mean_ms: times.iter().sum::<f64>() / times.len() as f64,
        min_ms: times[0],
        images_per_s: s.batch as f64 / (median / 1000.0),
    }
}

fn check(s: &BenchSettings) -> Result<()> {
    if s.batch == 0 || s.repeats == 0 || s.threads == 0 {
        return Err(EngineError::invalid(
            "bench",
            "batch, repeats and threads must be at least 1",
        ));
    }
    Ok(())
}

/// Runs `f` with `threads` threads for the kernels: on the calling thread when it is one of a
/// pool of that many (the CLI's, see `device::set_threads_here`: as `shears train` runs),
/// else inside a pool of its own.
///
/// Why it matters: from outside a pool every kernel's parallel loop is handed over and waited
/// for; inside a pool of its own the step's tensors are allocated by a pool thread, from one of
/// glibc's per-thread arenas, which (unless `memory::keep_freed_memory` ran) hand a heap back
/// to the system as soon as it is empty, so every step faulted its activations in again
/// (small-cnn, batch 128, one thread: 14,600 page faults and about 15 % of each step).
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    if rayon::current_thread_index().is_some() && rayon::current_num_threads() == threads {
        return Ok(f());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| EngineError::invalid("threads", e.to_string()))?;
    Ok(pool.install(f))
}

fn synthetic_input(exec: &Executor, batch: usize) -> Result<crate::executor::Value> {
    let per: usize = exec.graph().input.shape.iter().product();
    // A fixed pseudo-random pattern: the values do not change the work done, only avoid zeros.
    let data: Vec<f32> = (0..batch * per)
        .map(|i| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    exec.input_value(data, batch)
}

/// Inference latency of one forward pass over a batch of synthetic inputs.
pub fn inference_latency(exec: &mut Executor, s: &BenchSettings) -> Result<Latency> {
    check(s)?;
    crate::memory::check_batch_fits(exec.graph(), s.batch, false)?;
    let x = synthetic_input(exec, s.batch)?;
    let times = on_threads(s.threads, || {
        let mut run = || {
            let t = Instant::now();
            let y = exec.forward(x.clone(), Mode::Eval);
            // Reading the output forces the computation to finish before the clock stops.
            let _ = crate::executor::to_vec(y.sum());
            t.elapsed().as_secs_f64() * 1000.0
        };
        for _ in 0..s.warmup {
            run();
        }
        (0..s.repeats).map(|_| run()).collect::<Vec<_>>()
    })?;
    Ok(summarise("inference", s, times))
}

/// Training-step latency: forward, cross-entropy, backward and an SGD update.
pub fn training_latency(
    exec: &mut Executor,
    opt: &mut Optimizer,
    s: &BenchSettings,
) -> Result<Latency> {
    check(s)?;
    if !exec.device().is_autodiff() {
        return Err(EngineError::invalid(
            "device",
            "training benchmark needs an autodiff device",
        ));
    }
    crate::memory::check_batch_fits(exec.graph(), s.batch, true)?;
    let x = synthetic_input(exec, s.batch)?;
    let classes = shears_core::infer_shapes(exec.graph())?.get(&exec.graph().output)[0];
    let labels: Vec<i64> = (0..s.batch).map(|i| (i % classes) as i64).collect();
    let times = on_threads(s.threads, || {
        let mut run = || {
            let t = Instant::now();
            let logits = exec.forward(x.clone(), Mode::Train);
            let loss = cross_entropy(logits, &labels);
            let grads = loss.backward();
            for i in 0..exec.params.len() {
                if let Some(g) = exec.params[i].grad(&grads) {
                    let v = exec.params[i].clone().inner();
                    let new = opt.update(i, v, g, 1e-3);
                    exec.replace_param(i, new);
                }
            }
            opt.finish_step();
            let _ = crate::executor::to_vec(exec.params[0].clone().inner().sum());
            t.elapsed().as_secs_f64() * 1000.0
        };
        for _ in 0..s.warmup {
            run();
        }
        (0..s.repeats).map(|_| run()).collect::<Vec<_>>()
    })?;
    Ok(summarise("training", s, times))
}
