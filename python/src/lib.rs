//! `shears._shears`: the compiled core of the `shears` Python package. It holds a model type and
//! a handful of functions over the library's one front door (`shears_methods::execute`); the
//! Python package (`python/shears/`) adds keyword arguments, progress bars and the PyTorch
//! bridge on top. Every call releases the GIL while Rust works, returns errors as the package's
//! exceptions (`shears.errors`), and never lets a Rust panic reach Python.

mod convert;
mod errors;
mod model;
mod progress;

use errors::{ShearsResult, guarded};
use model::PyModel;
use progress::PyProgress;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use shears_core::structured::{ChannelSelection, kept_tensor_indices};
use shears_methods::config::ExperimentConfig;
use shears_methods::oneshot::ModelSource;
use shears_methods::pipeline::RunRequest;
use shears_methods::{Report, Request, RunOutcome, execute};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every registered method: name, kind, description and whether `prune` takes it in one shot.
#[pyfunction]
fn methods(py: Python<'_>) -> PyResult<Py<PyList>> {
    let list = PyList::empty(py);
    for m in shears_methods::METHODS {
        let d = PyDict::new(py);
        d.set_item("name", m.name)?;
        d.set_item("kind", m.kind.name())?;
        d.set_item("description", m.description)?;
        d.set_item(
            "one_shot",
            m.one_shot.is_some() || m.kind.name() == "unstructured",
        )?;
        list.append(d)?;
    }
    Ok(list.unbind())
}

/// The zoo's model names with their one-line descriptions.
#[pyfunction]
fn zoo(py: Python<'_>) -> PyResult<Py<PyList>> {
    let list = PyList::empty(py);
    for name in shears_core::zoo::MODEL_NAMES {
        list.append((name, shears_core::zoo::describe(name).unwrap_or("")))?;
    }
    Ok(list.unbind())
}

/// The data sets `data=` names (a folder of images is given as its path).
#[pyfunction]
fn datasets() -> Vec<&'static str> {
    convert::dataset_names()
}

/// Runs a request through the front door on a thread of the kernels' pool while this thread
/// waits with the GIL released; the report as a dict.
///
/// On a pool thread, because each kernel's parallel loop then starts on the thread that issued
/// it instead of being handed over and waited for, hundreds of times per training step (the
/// CLI's main thread joins the pool for the same reason: `shears train` ResNet-56 on one
/// thread, 17.0 -> 14.2 s an epoch of 30 steps). This thread looks for Ctrl-C meanwhile:
/// Python delivers signals to its main thread only.
fn run_request(
    py: Python<'_>,
    request: Request,
    progress: Option<Py<PyAny>>,
) -> PyResult<RunOutcome> {
    let watcher = Arc::new(PyProgress::new(progress));
    let w = watcher.clone();
    // Already on a pool thread (a progress callback that starts another run): run here, as a
    // job queued from this thread would wait for it while it waits for the job.
    if rayon::current_thread_index().is_some() {
        let outcome = py.detach(move || guarded(|| Ok(execute(&request, w)?)));
        return watcher.finish(py, outcome);
    }
    let (done, mut waiting) = std::sync::mpsc::channel();
    let started = guarded(|| {
        // The pool takes the run's thread count before it starts (a pool thread cannot resize
        // it); a bad config is refused first, as the run itself would.
        if let Request::Run { config, .. } = &request {
            config.validate()?;
            if let Some(threads) = config.threads {
                shears_engine::device::set_threads(threads)?;
            }
        }
        rayon::spawn(move || {
            // The receiver is gone only if this thread's caller is, and then no one waits.
            let _ = done.send(guarded(|| Ok(execute(&request, w)?)));
        });
        Ok(())
    });
    if let Err(e) = started {
        return watcher.finish(py, Err(e));
    }
    let outcome = loop {
        let (got, rx) = py.detach(move || {
            let got = waiting.recv_timeout(std::time::Duration::from_millis(50));
            (got, waiting)
        });
        waiting = rx;
        match got {
            Ok(outcome) => break outcome,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => watcher.check_signals(py),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(errors::Failure {
                    kind: errors::Kind::Other,
                    message: "internal error in shears (please report it): the run's thread \
                              ended without a result"
                        .into(),
                });
            }
        }
    };
    watcher.finish(py, outcome)
}

/// A one-shot prune (`shears.prune`): the pruned model and its report.
#[pyfunction]
#[pyo3(signature = (model, method, options, progress=None))]
fn prune(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    method: String,
    options: &Bound<'_, PyDict>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(PyModel, Py<PyAny>)> {
    let source = model_source(model)?;
    let req = convert::prune_request(source, method, options)?;
    let outcome = run_request(py, Request::Prune(req), progress)?;
    let report = done(outcome)?;
    let pruned = guarded(|| {
        let dir = match &report {
            Report::Structured(r) => PathBuf::from(&r.run_dir),
            Report::OneShot(r) => PathBuf::from(&r.run_dir),
            _ => PathBuf::from("."),
        };
        Ok(shears_core::artifact::load_model(&dir)?)
    })?;
    let name = model_name(model)?;
    Ok((
        PyModel::new(name, pruned, true),
        convert::to_py(py, &report)?,
    ))
}

/// The channels a structured method keeps, for the PyTorch bridge: the compacted model, the
/// kept indices of every dense tensor that loses some (`{tensor: {axis: [index, ...]}}`), and
/// the report. Nothing is evaluated, fine-tuned or timed.
#[pyfunction]
#[pyo3(signature = (model, method, progress=None, **options))]
fn plan(
    py: Python<'_>,
    model: &Bound<'_, PyModel>,
    method: String,
    progress: Option<Py<PyAny>>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<(PyModel, Py<PyAny>, Py<PyAny>)> {
    let empty = PyDict::new(py);
    let options = options.unwrap_or(&empty);
    let (name, dense, saved) = {
        let m = model.borrow();
        (m.name.clone(), m.inner.clone(), m.saved)
    };
    let mut req = convert::prune_request(
        ModelSource::Loaded {
            name: name.clone(),
            model: dense.clone(),
            saved,
        },
        method,
        options,
    )?;
    req.evaluate = false;
    req.latency.enabled = false;
    req.finetune.epochs = 0;
    // The plan's run directory is scratch unless the caller named one: a temporary directory,
    // removed when this call returns (the compacted model is read from it first).
    let scratch = if options.contains("out")? || options.contains("runs_dir")? {
        None
    } else {
        let dir = guarded(|| Ok(tempfile::tempdir()?))?;
        req.out = Some(dir.path().join("run"));
        Some(dir)
    };
    let outcome = run_request(py, Request::Prune(req), progress)?;
    let report = done(outcome)?;
    let Report::Structured(r) = &report else {
        return Err(errors::invalid(
            "the PyTorch bridge cuts channels: give a structured method (l1-filter, l2-filter, \
             bn-scale, random-filter, taylor, slimming)",
        )
        .into());
    };
    let (compacted, kept) = guarded(|| {
        let compacted = shears_core::artifact::load_model(Path::new(&r.pruned_dir))?;
        // The selection the report names, sliced as compaction slices it.
        let selection = ChannelSelection {
            kept: r
                .sizes
                .pruned_groups
                .iter()
                .map(|g| (g.id, g.kept_channels.clone()))
                .collect(),
        };
        Ok((compacted, kept_tensor_indices(&dense.graph, &selection)?))
    })?;
    drop(scratch);
    let kept_py = PyDict::new(py);
    for (tensor, axes) in kept {
        let d = PyDict::new(py);
        for (axis, idx) in axes {
            d.set_item(axis, idx)?;
        }
        kept_py.set_item(tensor, d)?;
    }
    Ok((
        PyModel::new(name, compacted, true),
        kept_py.into_any().unbind(),
        convert::to_py(py, &report)?,
    ))
}

/// A method's whole pipeline from a config (`shears.run`): the config as JSON text (from a
/// dict) or a TOML file's path. A finished run is not re-run: its saved report comes back.
#[pyfunction]
#[pyo3(signature = (config, runs_dir, out=None, resume=false, force=false, progress=None, is_path=false))]
#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    config: String,
    runs_dir: PathBuf,
    out: Option<PathBuf>,
    resume: bool,
    force: bool,
    progress: Option<Py<PyAny>>,
    is_path: bool,
) -> PyResult<Py<PyAny>> {
    let cfg = guarded(|| {
        Ok(if is_path {
            ExperimentConfig::from_file(Path::new(&config))?
        } else {
            serde_json::from_str::<ExperimentConfig>(&config)
                .map_err(|e| shears_methods::MethodError::Invalid(format!("invalid config: {e}")))?
        })
    })?;
    let request = Request::Run {
        config: cfg,
        run: RunRequest {
            out,
            runs_dir,
            resume,
            force,
            command: "run",
        },
    };
    match run_request(py, request, progress)? {
        RunOutcome::Done(report) => convert::to_py(py, &report),
        RunOutcome::Finished { result, .. } => convert::json_to_py(py, &result),
    }
}

/// Runs a sweep file's grid in this process, one run after another (finished runs are kept,
/// interrupted ones resume), then writes the results table. Returns `{runs: [...], table:
/// markdown, csv: path, markdown_path: path, failed: n}`.
#[pyfunction]
#[pyo3(signature = (path, runs_dir=None, progress=None))]
fn sweep(
    py: Python<'_>,
    path: PathBuf,
    runs_dir: Option<PathBuf>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    use shears_methods::sweep::{RunState, Sweep, run_state, write_tables};
    let (sweep, runs, runs_dir) = guarded(|| {
        let sweep = Sweep::from_file(&path)?;
        let runs_dir = runs_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(&sweep.name));
        std::fs::create_dir_all(&runs_dir)
            .map_err(|e| shears_methods::MethodError::io("create", &runs_dir, e))?;
        let runs_dir = runs_dir
            .canonicalize()
            .map_err(|e| shears_methods::MethodError::io("resolve", &runs_dir, e))?;
        let runs = sweep.plan(&runs_dir)?;
        sweep.write_configs(&runs, &runs_dir)?;
        Ok((sweep, runs, runs_dir))
    })?;
    let rows = PyList::empty(py);
    let mut failed = 0;
    for planned in &runs {
        let row = PyDict::new(py);
        row.set_item("run", planned.label())?;
        row.set_item("dir", planned.dir.display().to_string())?;
        if run_state(&planned.dir) == RunState::Done {
            row.set_item("state", "finished before")?;
            rows.append(row)?;
            continue;
        }
        let request = Request::Run {
            config: planned.config.clone(),
            run: RunRequest {
                out: Some(planned.dir.clone()),
                runs_dir: runs_dir.clone(),
                resume: true,
                force: false,
                command: "run",
            },
        };
        if let Some(p) = &progress {
            p.call1(py, ("stage", format!("sweep run {}", planned.label())))?;
        }
        match run_request(py, request, progress.as_ref().map(|p| p.clone_ref(py))) {
            Ok(_) => row.set_item("state", "finished")?,
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => {
                return Err(e);
            }
            Err(e) => {
                failed += 1;
                row.set_item("state", "failed")?;
                row.set_item("error", e.value(py).to_string())?;
            }
        }
        rows.append(row)?;
    }
    let (table, csv, md) = guarded(|| Ok(write_tables(&sweep, &runs, &runs_dir)?))?;
    let out = PyDict::new(py);
    out.set_item("name", &sweep.name)?;
    out.set_item("runs", rows)?;
    out.set_item("failed", failed)?;
    out.set_item("table", table.to_markdown())?;
    out.set_item("csv", csv.display().to_string())?;
    out.set_item("markdown_path", md.display().to_string())?;
    Ok(out.into_any().unbind())
}

/// Direct and effective sparsity of `model` under `masks` (`{tensor: array}`, non-zero = kept):
/// `{direct_sparsity, effective_sparsity, layers: [...]}`.
#[pyfunction]
fn sparsity(
    py: Python<'_>,
    model: &Bound<'_, PyModel>,
    masks: &Bound<'_, PyDict>,
) -> PyResult<Py<PyAny>> {
    let graph = model.borrow().inner.graph.clone();
    let weights = model.borrow().inner.weights.clone();
    let masks = convert::masks_from_py(masks, &weights)?;
    let report =
        py.detach(move || guarded(|| Ok(shears_core::sparsity::sparsity_report(&graph, &masks)?)))?;
    convert::to_py(py, &report)
}

/// The model a `prune` call names: a `Model`, or a zoo name, model directory or ONNX path.
fn model_source(model: &Bound<'_, PyAny>) -> PyResult<ModelSource> {
    if let Ok(m) = model.downcast::<PyModel>() {
        let m = m.borrow();
        return Ok(ModelSource::Loaded {
            name: m.name.clone(),
            model: m.inner.clone(),
            saved: m.saved,
        });
    }
    let name = convert::path_or_name(model)?;
    model::check_exists(&name)?;
    Ok(ModelSource::Named(name))
}

fn model_name(model: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(m) = model.downcast::<PyModel>() {
        return Ok(m.borrow().name.clone());
    }
    convert::path_or_name(model)
}

/// The report of a run that ran now.
fn done(outcome: RunOutcome) -> ShearsResult<Report> {
    match outcome {
        RunOutcome::Done(r) => Ok(r),
        RunOutcome::Finished { dir, .. } => Err(errors::invalid(&format!(
            "{} had finished before; a one-shot prune always runs anew",
            dir.display()
        ))),
    }
}

/// Large buffers on cache lines, as in the CLI (`shears_kernels::LineAligned`): the module's
/// own allocations only; Python's and numpy's stay with their allocators.
#[global_allocator]
static ALLOC: shears_engine::memory::LineAligned = shears_engine::memory::LineAligned;

#[pymodule]
fn _shears(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_function(wrap_pyfunction!(methods, m)?)?;
    m.add_function(wrap_pyfunction!(zoo, m)?)?;
    m.add_function(wrap_pyfunction!(datasets, m)?)?;
    m.add_function(wrap_pyfunction!(prune, m)?)?;
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add_function(wrap_pyfunction!(sparsity, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
