//! Wall-clock time of a trained FTWT network's dynamic inference against the same network run
//! dense, on the run's own test images (the masks, and so the work skipped, depend on them).
//!
//! Batch 1: each of the first `repeats` test images alone, median over images. Batch B > 1:
//! the first B test images, median over `repeats` runs; the dynamic engine runs a batch sample
//! by sample (every sample has its own masks). Dense is the run's baseline network (`dense/`)
//! in the engine's inference plan (BN folded, residual sums fused). "Ungated" is the dynamic
//! engine with every filter on, which separates the engine's own overhead from the skipped work.

use super::FtwtOptions;
use super::inference::dynamic_net;
use super::layers::gated_layers;
use crate::config::ExperimentConfig;
use crate::error::{MethodError, Result};
use crate::invalid;
use serde::Serialize;
use shears_core::artifact::{is_model_dir, load_model};
use shears_core::cost::{Convention, cost};
use shears_core::weights::weights_from_safetensors;
use shears_data::{Loader, LoaderConfig};
use shears_engine::dynamic::DynamicStats;
use shears_engine::executor::to_vec;
use shears_engine::{Executor, Mode};
use std::path::Path;
use std::time::Instant;

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct DynamicLatency {
    pub batch: usize,
    pub threads: usize,
    pub dense_ms: f64,
    pub dynamic_ms: f64,
    /// 1 − dynamic / dense.
    pub time_reduction: f64,
    /// The dynamic engine with every filter on (no heads): its own overhead against the dense
    /// plan, apart from the work the heads skip.
    pub ungated_ms: f64,
    /// 1 − dynamic / ungated: the time the skipped work saved within the dynamic engine.
    pub skip_time_reduction: f64,
    /// The dense baseline exported to ONNX and run in onnxruntime at the same batch and
    /// threads (`None` where onnxruntime is not available): the real baseline a deployment
    /// compares with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime_dense_ms: Option<f64>,
    /// 1 − dynamic / onnxruntime's dense: above 0, dynamic inference beats it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_reduction_vs_onnxruntime: Option<f64>,
}

/// What `shears bench --dynamic` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DynamicBench {
    pub run_dir: String,
    pub model: String,
    pub samples: usize,
    /// Conv+linear MACs per sample of the dense network, and of what the dynamic engine ran
    /// on the measured images (gathered convolutions; linear layers in full).
    pub dense_macs: u64,
    pub dynamic_macs: f64,
    pub macs_reduction: f64,
    /// The baseline's and the dynamic network's accuracy on the measured images.
    pub accuracy_dense_on_measured: f64,
    pub accuracy_dynamic_on_measured: f64,
    pub warmup: usize,
    pub repeats: usize,
    pub results: Vec<DynamicLatency>,
    /// `measured with <libonnxruntime>`, or why the onnxruntime column is empty.
    pub onnxruntime: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn argmax_correct(logits: &[f32], classes: usize, labels: &[i64]) -> usize {
    labels
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            let row = &logits[i * classes..(i + 1) * classes];
            let best = (0..classes).fold(0, |b, k| if row[k] > row[b] { k } else { b });
            best as i64 == **l
        })
        .count()
}

/// Measures the FTWT run in `dir` at each batch size and thread count.
pub fn bench_dynamic(
    dir: &Path,
    batches: &[usize],
    threads: &[usize],
    warmup: usize,
    repeats: usize,
) -> Result<DynamicBench> {
    let heads_file = dir.join("heads").join("extra.safetensors");
    let model_dir = dir.join("dynamic");
    if !heads_file.is_file() || !is_model_dir(&model_dir) {
        invalid!(
            "{} holds no trained FTWT network (needs heads/extra.safetensors and dynamic/): run `shears run` with an FTWT config to the end first",
            dir.display()
        );
    }
    if repeats == 0 || batches.is_empty() || batches.contains(&0) || threads.contains(&0) {
        invalid!("--repeats, --batch and --threads must be at least 1");
    }
    let cfg = ExperimentConfig::from_file(&dir.join("config.toml"))?;
    let Some(method) = cfg.method.as_ref().filter(|m| m.name == "ftwt") else {
        invalid!(
            "{} is not an FTWT run (its config has no [method] name = \"ftwt\")",
            dir.display()
        );
    };
    let opts: FtwtOptions = method
        .keys
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| {
            MethodError::Invalid(format!("{}: {}", dir.display(), e.message()))
        })?;
    let model = load_model(&model_dir)?;
    let layers = gated_layers(&model.graph, &opts.gated, &opts.ignore)?;
    let bytes = std::fs::read(&heads_file).map_err(|e| MethodError::io("read", &heads_file, e))?;
    let heads = weights_from_safetensors(&bytes, &heads_file)?;
    let net = dynamic_net(&model, &layers, &heads, opts.softmax, opts.keep_one)?;
    let ungated = shears_engine::dynamic::DynamicNet::new(&model.graph, &model.weights, &[])?;

    let data = crate::steps::data::load_configured(&cfg)?;
    let samples = repeats.max(*batches.iter().max().expect("checked"));
    let loader = Loader::new(
        &data.test,
        LoaderConfig::eval(samples)
            .normalized(data.normalization.clone())
            .limited(Some(samples)),
    )?;
    let batch = loader
        .epoch(0)
        .next()
        .ok_or_else(|| MethodError::Invalid("the test set is empty".into()))?;
    let n = batch.labels.len();
    let per: usize = model.graph.input.shape.iter().product();
    // The dense network to compare with: the run's baseline (what one would deploy without
    // FTWT; same architecture, so the same dense cost), else the trained weights ungated.
    let dense_dir = dir.join("dense");
    let dense = if is_model_dir(&dense_dir) {
        load_model(&dense_dir)?
    } else {
        model.clone()
    };
    let device = shears_engine::device::device_by_name("flex")?;
    let mut exec = Executor::new(&dense.graph, &dense.weights, &dense.masks, &device)?;
    let out = exec.forward(exec.input_value(batch.images.clone(), n)?, Mode::Eval);
    let classes = out.dims()[1];
    let dense_logits = to_vec(out.reshape([n * classes]));
    let mut stats = DynamicStats::default();
    let dyn_logits = net.forward(&batch.images, n, &mut stats)?;
    let dense_cost = cost(&model.graph, Convention::ConvLinear)?;
    let linear: u64 = dense_cost
        .nodes
        .iter()
        .filter(|c| c.op == "linear")
        .map(|c| c.macs)
        .sum();
    let dense_macs = dense_cost.macs;
    let dynamic_macs = stats.conv_macs / n as f64 + linear as f64;

    // The dense baseline in onnxruntime, where there is one.
    let (mut ort_model, mut onnxruntime) = match shears_ort::runtime() {
        Ok(r) => match shears_onnx::to_onnx_bytes(&dense) {
            Ok(bytes) => (
                Some(bytes),
                format!("measured with {}", r.library.display()),
            ),
            Err(e) => (None, format!("not measured: the ONNX export failed: {e}")),
        },
        Err(e) => (None, e.to_string()),
    };
    let mut results = Vec::new();
    for &t in threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| MethodError::Invalid(format!("threads: {e}")))?;
        for &b in batches {
            let (dense_ms, dynamic_ms, ungated_ms) =
                pool.install(|| -> Result<(f64, f64, f64)> {
                    let mut time_dense = |x: &[f32], k: usize| -> Result<f64> {
                        let v = exec.input_value(x.to_vec(), k)?;
                        let t0 = Instant::now();
                        let y = exec.forward(v, Mode::Eval);
                        let _ = to_vec(y.sum());
                        Ok(t0.elapsed().as_secs_f64() * 1000.0)
                    };
                    let time_engine =
                        |engine: &shears_engine::dynamic::DynamicNet, x: &[f32], k: usize| {
                            let mut s = DynamicStats::default();
                            let t0 = Instant::now();
                            let y = engine.forward(x, k, &mut s)?;
                            std::hint::black_box(y);
                            Ok::<f64, MethodError>(t0.elapsed().as_secs_f64() * 1000.0)
                        };
                    let (mut d, mut q, mut u) = (Vec::new(), Vec::new(), Vec::new());
                    // The three are interleaved per repeat, so that drift on a shared machine
                    // touches them alike.
                    let inputs: Vec<(&[f32], usize)> = if b == 1 {
                        (0..repeats.min(n))
                            .map(|i| (&batch.images[i * per..(i + 1) * per], 1))
                            .collect()
                    } else {
                        vec![(&batch.images[..b.min(n) * per], b.min(n)); repeats]
                    };
                    for &(x, k) in inputs.iter().take(warmup) {
                        time_dense(x, k)?;
                        time_engine(&net, x, k)?;
                        time_engine(&ungated, x, k)?;
                    }
                    for &(x, k) in &inputs {
                        d.push(time_dense(x, k)?);
                        q.push(time_engine(&net, x, k)?);
                        u.push(time_engine(&ungated, x, k)?);
                    }
                    Ok((median(d), median(q), median(u)))
                })?;
            let ort_dense = ort_model.as_ref().and_then(|bytes| {
                let timed = shears_ort::Bench::new(bytes, &dense.graph.input.shape, b.min(n), t)
                    .and_then(|mut bench| bench.time(warmup, repeats));
                match timed {
                    Ok(timing) => Some(timing.median_ms),
                    Err(e) => {
                        onnxruntime = format!("not measured: {e}");
                        None
                    }
                }
            });
            if ort_dense.is_none() {
                ort_model = None;
            }
            results.push(DynamicLatency {
                batch: b.min(n),
                threads: t,
                dense_ms,
                dynamic_ms,
                time_reduction: 1.0 - dynamic_ms / dense_ms,
                ungated_ms,
                skip_time_reduction: 1.0 - dynamic_ms / ungated_ms,
                onnxruntime_dense_ms: ort_dense,
                time_reduction_vs_onnxruntime: ort_dense.map(|o| 1.0 - dynamic_ms / o),
            });
        }
    }
    Ok(DynamicBench {
        run_dir: dir.display().to_string(),
        model: model.graph.name.clone(),
        samples: n,
        dense_macs,
        dynamic_macs,
        macs_reduction: 1.0 - dynamic_macs / dense_macs as f64,
        accuracy_dense_on_measured: argmax_correct(&dense_logits, classes, &batch.labels) as f64
            / n as f64,
        accuracy_dynamic_on_measured: argmax_correct(&dyn_logits, classes, &batch.labels) as f64
            / n as f64,
        warmup,
        repeats,
        results,
        onnxruntime,
    })
}
