//! `shears.Model`: a network (graph, weights, masks) held by Rust, with numpy views of its
//! tensors, inference, inspection, and saving as a model directory or ONNX.

use crate::convert::{json_to_py, path_or_name, to_py};
use crate::errors::{guarded, invalid, not_found};
use numpy::{IntoPyArray, PyReadonlyArrayDyn};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use shears_core::artifact::{Model, save_model};
use shears_core::cost::{Convention, cost};
use shears_methods::steps::Runtime;
use shears_methods::steps::model::{infer, load_or_build};
use std::path::Path;

#[pyclass(name = "Model", module = "shears")]
pub struct PyModel {
    pub name: String,
    pub inner: Model,
    /// False for a zoo model with fresh weights (reports say it was pruned at `init`).
    pub saved: bool,
}

impl PyModel {
    pub fn new(name: String, inner: Model, saved: bool) -> Self {
        PyModel { name, inner, saved }
    }
}

/// A name that is a path (it has a separator or ends in `.onnx`) must exist.
pub fn check_exists(name: &str) -> PyResult<()> {
    let looks_like_path = name.contains('/') || name.contains('\\') || name.ends_with(".onnx");
    if looks_like_path && !Path::new(name).exists() {
        return Err(not_found(&format!("no model file or directory at {name}")).into());
    }
    Ok(())
}

#[pymethods]
impl PyModel {
    /// Loads a model: a zoo name (fresh weights, shaped by `input` and `classes`), a model
    /// directory, an ONNX file, or the bytes of an ONNX file.
    #[staticmethod]
    #[pyo3(signature = (source, *, input=None, classes=None, seed=0, name=None))]
    fn load(
        py: Python<'_>,
        source: &Bound<'_, PyAny>,
        input: Option<String>,
        classes: Option<usize>,
        seed: u64,
        name: Option<String>,
    ) -> PyResult<PyModel> {
        if let Ok(bytes) = source.downcast::<PyBytes>() {
            let data = bytes.as_bytes().to_vec();
            let label = name.unwrap_or_else(|| "onnx".into());
            let l = label.clone();
            let model =
                py.detach(move || guarded(|| Ok(shears_onnx::import_onnx_bytes(&data, &l)?)))?;
            return Ok(PyModel::new(label, model, true));
        }
        let text = path_or_name(source)?;
        check_exists(&text)?;
        let t = text.clone();
        let model = py.detach(move || {
            guarded(|| {
                Ok(load_or_build(
                    &t,
                    Some(input.as_deref().unwrap_or("1x28x28")),
                    Some(classes.unwrap_or(10)),
                    None,
                    seed,
                )?)
            })
        })?;
        let saved = shears_methods::steps::model::is_saved_model(&text);
        Ok(PyModel::new(name.unwrap_or(text), model, saved))
    }

    /// Imports the bytes of an ONNX file; `name` names the model in reports.
    #[staticmethod]
    fn from_onnx_bytes(
        py: Python<'_>,
        data: &Bound<'_, PyBytes>,
        name: String,
    ) -> PyResult<PyModel> {
        let data = data.as_bytes().to_vec();
        let l = name.clone();
        let model =
            py.detach(move || guarded(|| Ok(shears_onnx::import_onnx_bytes(&data, &l)?)))?;
        Ok(PyModel::new(name, model, true))
    }

    /// The name reports use.
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The per-sample input shape, e.g. `(3, 32, 32)`.
    #[getter]
    fn input_shape(&self) -> Vec<usize> {
        self.inner.graph.input.shape.clone()
    }

    /// Parameters of the graph (every stored tensor that is trained).
    #[getter]
    fn params(&self) -> PyResult<u64> {
        Ok(guarded(|| {
            Ok(cost(&self.inner.graph, Convention::ConvLinear)?.params)
        })?)
    }

    /// Multiply-accumulates of one sample through the convolutions and linear layers.
    #[getter]
    fn macs(&self) -> PyResult<u64> {
        Ok(guarded(|| {
            Ok(cost(&self.inner.graph, Convention::ConvLinear)?.macs)
        })?)
    }

    /// The layer table of `shears inspect`: output shapes, params, MACs, direct and effective
    /// sparsity; `groups=True` adds the channel groups.
    #[pyo3(signature = (groups=false, convention="conv-linear"))]
    fn inspect(&self, py: Python<'_>, groups: bool, convention: &str) -> PyResult<Py<PyAny>> {
        let convention: Convention = convention.parse().map_err(|e: String| invalid(&e))?;
        let out = guarded(|| {
            Ok(shears_methods::inspect::inspect(
                &self.inner,
                &self.name,
                convention,
                groups,
            )?)
        })?;
        to_py(py, &out)
    }

    /// The channel groups: channels that must be removed together, what produces and reads them,
    /// and whether they can be pruned (with the reason when not).
    fn groups(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let out = guarded(|| {
            Ok(shears_methods::steps::structured::group_infos(
                &self.inner.graph,
            )?)
        })?;
        to_py(py, &out)
    }

    /// The graph's nodes as `graph.json` holds them (`name`, `op` with its attributes, `inputs`).
    fn nodes(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let text =
            serde_json::to_string(&self.inner.graph.nodes).map_err(|e| invalid(&e.to_string()))?;
        json_to_py(py, &text)
    }

    /// Every stored tensor as a float32 array, by name (`conv1.weight`, `bn1.running_var`).
    fn weights(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.inner.weights {
            d.set_item(k, v.clone().into_pyarray(py))?;
        }
        Ok(d.unbind())
    }

    /// The masks (True = kept) of a masked model, by tensor name; empty for a dense one.
    fn masks(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.inner.masks {
            d.set_item(k, v.clone().into_pyarray(py))?;
        }
        Ok(d.unbind())
    }

    /// Replaces stored tensors by name; each must exist and keep its shape.
    fn set_weights(&mut self, values: &Bound<'_, PyDict>) -> PyResult<()> {
        let np = values.py().import("numpy")?;
        let mut updated = self.inner.weights.clone();
        for (k, v) in values.iter() {
            let name: String = k.extract()?;
            let Some(old) = updated.get(&name) else {
                return Err(invalid(&format!(
                    "set_weights: the model has no tensor `{name}` (it has {} tensors; see weights())",
                    updated.len()
                ))
                .into());
            };
            let arr = np.call_method1("ascontiguousarray", (v, "float32"))?;
            let arr: PyReadonlyArrayDyn<f32> = arr.extract()?;
            let arr = arr.as_array().to_owned();
            if arr.shape() != old.shape() {
                return Err(invalid(&format!(
                    "set_weights: `{name}` has shape {:?}, the model's has {:?}",
                    arr.shape(),
                    old.shape()
                ))
                .into());
            }
            if arr.iter().any(|x| !x.is_finite()) {
                return Err(
                    invalid(&format!("set_weights: `{name}` holds NaN or infinity")).into(),
                );
            }
            updated.insert(name, arr);
        }
        self.inner.weights = updated;
        Ok(())
    }

    /// The model's outputs for a batch `x` of shape `(N, *input_shape)` (float32).
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let np = py.import("numpy")?;
        let arr = np.call_method1("ascontiguousarray", (x, "float32"))?;
        let arr: PyReadonlyArrayDyn<f32> = arr.extract()?;
        let shape = arr.as_array().shape().to_vec();
        let want = &self.inner.graph.input.shape;
        if shape.len() != want.len() + 1 || &shape[1..] != want.as_slice() {
            return Err(invalid(&format!(
                "forward: the input has shape {shape:?}; this model takes (N, {})",
                want.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
        }
        let data: Vec<f32> = arr.as_array().iter().copied().collect();
        if data.iter().any(|v| !v.is_finite()) {
            return Err(invalid("forward: the input holds NaN or infinity").into());
        }
        let n = shape[0];
        let model = self.inner.clone();
        let (out, width) =
            py.detach(move || guarded(|| Ok(infer(&Runtime::new("flex", 0), &model, data, n)?)))?;
        let out = ndarray::Array2::from_shape_vec((n, width), out)
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(out.into_pyarray(py).into_any().unbind())
    }

    /// Saves the model as a directory (`graph.json`, `weights.safetensors`, masks if any).
    fn save(&self, py: Python<'_>, dir: &Bound<'_, PyAny>) -> PyResult<()> {
        let dir = path_or_name(dir)?;
        let model = self.inner.clone();
        Ok(py.detach(move || guarded(|| Ok(save_model(Path::new(&dir), &model)?)))?)
    }

    /// Writes the model as an ONNX file (opset 17, masks applied to the weights).
    fn to_onnx(&self, py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<()> {
        let path = path_or_name(path)?;
        let model = self.inner.clone();
        Ok(py.detach(move || guarded(|| Ok(shears_onnx::export_onnx(&model, Path::new(&path))?)))?)
    }

    /// The model as the bytes of an ONNX file (for onnxruntime in memory).
    fn to_onnx_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = guarded(|| Ok(shears_onnx::to_onnx_bytes(&self.inner)?))?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn __repr__(&self) -> String {
        let c = cost(&self.inner.graph, Convention::ConvLinear).ok();
        format!(
            "shears.Model({:?}, input {:?}, {} nodes, {} params, {} MACs)",
            self.name,
            self.inner.graph.input.shape,
            self.inner.graph.nodes.len(),
            c.as_ref().map_or(0, |c| c.params),
            c.as_ref().map_or(0, |c| c.macs)
        )
    }
}
