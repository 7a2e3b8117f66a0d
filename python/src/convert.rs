//! Values across the boundary: reports as plain Python dicts (through JSON), `shears.prune`'s
//! keyword arguments as the library's `PruneRequest`, masks as boolean arrays.

use crate::errors::{guarded, invalid};
use numpy::PyReadonlyArrayDyn;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde::Serialize;
use shears_core::weights::{Masks, Weights};
use shears_data::DatasetKind;
use shears_methods::config::parse_allocation;
use shears_methods::oneshot::{ModelSource, PruneRequest};
use shears_methods::steps::structured::StructuredOptions;
use std::path::PathBuf;

/// A serialisable value as the Python value `json.loads` makes of it.
pub fn to_py<T: Serialize>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| invalid(&e.to_string()))?;
    json_to_py(py, &text)
}

/// JSON text as a Python value.
pub fn json_to_py(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// A `str` or `os.PathLike` as text.
pub fn path_or_name(v: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = v.extract::<String>() {
        return Ok(s);
    }
    let os = v.py().import("os")?;
    os.call_method1("fspath", (v,))?.extract::<String>()
}

/// The keyword arguments `shears.prune` takes besides the structured options (those are
/// `StructuredOptions`' keys: `channel_ratio`, `params_reduction`, `macs_reduction`,
/// `percentile`, `importance`, `scope`, `normalize`, `round_to`, `ignore`, ...).
const PRUNE_KEYS: &[&str] = &[
    "sparsity",
    "compression",
    "quota",
    "target_kind",
    "apply_effective",
    "allow_collapse",
    "synflow_rounds",
    "temperature",
    "score_batches",
    "score_batch_size",
    "data",
    "finetune_epochs",
    "finetune_lr",
    "batch_size",
    "train_limit",
    "test_limit",
    "latency",
    "latency_batches",
    "latency_threads",
    "latency_repeats",
    "latency_warmup",
    "latency_rounds",
    "latency_budget",
    "seed",
    "device",
    "out",
    "runs_dir",
    "force",
    "save_masked",
    "input",
    "classes",
];

const STRUCTURED_TARGETS: &[&str] = &[
    "channel_ratio",
    "params_reduction",
    "macs_reduction",
    "latency_reduction",
    "percentile",
];

/// `shears.prune(model, method, **options)` as the library's request.
pub fn prune_request(
    model: ModelSource,
    method: String,
    options: &Bound<'_, PyDict>,
) -> PyResult<PruneRequest> {
    let py = options.py();
    let entry = guarded(|| Ok(shears_methods::registry::find(&method)?))?;
    let mut req = PruneRequest::new(model, method.clone());
    req.spelling = shears_methods::steps::structured::Spelling::Keyword;
    // Python callers name their data explicitly; without it nothing is evaluated.
    req.evaluate = false;
    req.latency.enabled = false;
    let structured = PyDict::new(py);
    for (k, v) in options.iter() {
        let key: String = k.extract()?;
        if v.is_none() {
            continue;
        }
        if !PRUNE_KEYS.contains(&key.as_str()) {
            if entry.kind.name() == "unstructured" {
                return Err(invalid(&if STRUCTURED_TARGETS.contains(&key.as_str()) {
                    format!(
                        "`{key}` is a target of structured methods; `{method}` is unstructured: give sparsity= or compression="
                    )
                } else {
                    format!(
                        "`{key}` is not an option of the unstructured method `{method}` (it takes {})",
                        PRUNE_KEYS.join(", ")
                    )
                })
                .into());
            }
            structured.set_item(&key, v)?;
            continue;
        }
        let bad = |e: PyErr| -> PyErr {
            invalid(&format!("shears.prune: {key} = {}: {}", v, e.value(py))).into()
        };
        match key.as_str() {
            "sparsity" => req.sparsity = Some(v.extract().map_err(bad)?),
            "compression" => req.compression = Some(v.extract().map_err(bad)?),
            "quota" => {
                let s: String = v.extract().map_err(bad)?;
                req.unstructured.allocation = guarded(|| Ok(parse_allocation(&s)?))?;
            }
            "target_kind" => {
                let s: String = v.extract().map_err(bad)?;
                req.unstructured.target_kind = s
                    .parse()
                    .map_err(|e: shears_core::CoreError| invalid(&e.to_string()))?;
            }
            "apply_effective" => req.unstructured.apply_effective = v.extract().map_err(bad)?,
            "allow_collapse" => req.unstructured.allow_collapse = v.extract().map_err(bad)?,
            "synflow_rounds" => req.unstructured.synflow_rounds = v.extract().map_err(bad)?,
            "temperature" => req.unstructured.grasp_temperature = v.extract().map_err(bad)?,
            "score_batches" => req.score_batches = v.extract().map_err(bad)?,
            "score_batch_size" => req.score_batch_size = v.extract().map_err(bad)?,
            "data" => {
                let s: String = path_or_name(&v).map_err(bad)?;
                match s.parse::<DatasetKind>() {
                    Ok(DatasetKind::ImageFolder) => {
                        return Err(invalid(
                            "data = \"image-folder\": give the folder itself as data= (it holds \
                             train/CLASS/*.png|jpg and test/CLASS/*.png|jpg)",
                        )
                        .into());
                    }
                    Ok(_) => req.dataset = Some(s),
                    Err(_) if std::path::Path::new(&s).is_dir() => {
                        req.dataset = Some(DatasetKind::ImageFolder.name().into());
                        req.data = Some(PathBuf::from(s));
                    }
                    Err(_) => {
                        return Err(crate::errors::not_found(&format!(
                            "data = {s:?} is neither a data set ({}) nor a folder of images",
                            dataset_names().join(", ")
                        ))
                        .into());
                    }
                }
                req.evaluate = true;
            }
            "finetune_epochs" => req.finetune.epochs = v.extract().map_err(bad)?,
            "finetune_lr" => req.finetune.lr = v.extract().map_err(bad)?,
            "batch_size" => req.finetune.batch_size = v.extract().map_err(bad)?,
            "train_limit" => req.finetune.train_limit = Some(v.extract().map_err(bad)?),
            "test_limit" => req.finetune.test_limit = Some(v.extract().map_err(bad)?),
            "latency" => req.latency.enabled = v.extract().map_err(bad)?,
            "latency_batches" => req.latency.batches = v.extract().map_err(bad)?,
            "latency_threads" => req.latency.threads = v.extract().map_err(bad)?,
            "latency_repeats" => req.latency.repeats = v.extract().map_err(bad)?,
            "latency_warmup" => req.latency.warmup = v.extract().map_err(bad)?,
            "latency_rounds" => req.latency.rounds = v.extract().map_err(bad)?,
            "latency_budget" => req.latency.budget_s = v.extract().map_err(bad)?,
            "seed" => req.seed = v.extract().map_err(bad)?,
            "device" => req.device = v.extract().map_err(bad)?,
            "out" => req.out = Some(PathBuf::from(path_or_name(&v)?)),
            "runs_dir" => req.runs_dir = PathBuf::from(path_or_name(&v)?),
            "force" => req.force = v.extract().map_err(bad)?,
            "save_masked" => req.save_masked = Some(PathBuf::from(path_or_name(&v)?)),
            "input" => req.input = Some(v.extract().map_err(bad)?),
            "classes" => req.classes = Some(v.extract().map_err(bad)?),
            _ => unreachable!("every key of PRUNE_KEYS is matched"),
        }
    }
    let text: String = py
        .import("json")?
        .call_method1("dumps", (structured,))?
        .extract()?;
    req.structured = serde_json::from_str::<StructuredOptions>(&text).map_err(|e| {
        invalid(&format!(
            "shears.prune: {e} (or one of {})",
            PRUNE_KEYS.join(", ")
        ))
    })?;
    Ok(req)
}

/// The data sets `data=` names (a folder of images is given as its path).
pub fn dataset_names() -> Vec<&'static str> {
    DatasetKind::ALL
        .iter()
        .filter(|k| **k != DatasetKind::ImageFolder)
        .map(|k| k.name())
        .collect()
}

/// Masks from arrays (non-zero = kept), each the shape of its weight tensor.
pub fn masks_from_py(masks: &Bound<'_, PyDict>, weights: &Weights) -> PyResult<Masks> {
    let np = masks.py().import("numpy")?;
    let mut out = Masks::new();
    for (k, v) in masks.iter() {
        let name: String = k.extract()?;
        let Some(w) = weights.get(&name) else {
            return Err(invalid(&format!("masks: the model has no tensor `{name}`")).into());
        };
        let arr = np.call_method1("ascontiguousarray", (v, "float32"))?;
        let arr: PyReadonlyArrayDyn<f32> = arr.extract()?;
        let arr = arr.as_array();
        if arr.shape() != w.shape() {
            return Err(invalid(&format!(
                "masks: `{name}` has shape {:?}, its tensor {:?}",
                arr.shape(),
                w.shape()
            ))
            .into());
        }
        out.insert(name, arr.mapv(|x| x != 0.0));
    }
    Ok(out)
}
