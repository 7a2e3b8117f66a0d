//! Errors as the Python package's exceptions (`shears.errors`): `InvalidInput` (a `ValueError`)
//! for a request or file that cannot be honoured, `NotFound` (a `FileNotFoundError`) for a
//! missing file, `RunBusy` for a run another process holds, `KeyboardInterrupt` for a run stopped
//! by Ctrl-C, `Error` for the rest. Messages are the CLI's. A Rust panic becomes `Error` too.

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyType;
use std::panic::AssertUnwindSafe;

/// Which exception a failure becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Invalid,
    NotFound,
    RunBusy,
    Cancelled,
    Other,
}

/// A failure on the Rust side, made into a Python exception once the GIL is held again.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

pub type ShearsResult<T> = Result<T, Failure>;

/// A request that cannot be honoured.
pub fn invalid(message: &str) -> Failure {
    Failure {
        kind: Kind::Invalid,
        message: message.to_string(),
    }
}

/// A missing file.
pub fn not_found(message: &str) -> Failure {
    Failure {
        kind: Kind::NotFound,
        message: message.to_string(),
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `f`, turning its error (or a panic) into a [`Failure`] of the right kind.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, AnyError>) -> ShearsResult<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(e.as_ref())),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Failure {
                kind: Kind::Other,
                message: format!("internal error in shears (please report it): {msg}"),
            })
        }
    }
}

/// The kind and the whole message (`error: cause: cause`) of an error from the library.
fn classify(e: &(dyn std::error::Error + 'static)) -> Failure {
    use shears_methods::MethodError;
    let mut message = e.to_string();
    let mut kind = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(m) = err.downcast_ref::<MethodError>() {
            match m {
                MethodError::Cancelled => kind = kind.or(Some(Kind::Cancelled)),
                MethodError::RunBusy { .. } => kind = kind.or(Some(Kind::RunBusy)),
                MethodError::Invalid(_) | MethodError::ConfigFile { .. } => {
                    kind = kind.or(Some(Kind::Invalid))
                }
                MethodError::Core(_) | MethodError::Data(_) => kind = kind.or(Some(Kind::Invalid)),
                _ => {}
            }
        }
        if let Some(shears_engine::EngineError::Cancelled) =
            err.downcast_ref::<shears_engine::EngineError>()
        {
            kind = Some(Kind::Cancelled);
        }
        if err.downcast_ref::<shears_onnx::OnnxError>().is_some()
            || err.downcast_ref::<shears_core::CoreError>().is_some()
        {
            kind = kind.or(Some(Kind::Invalid));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::NotFound
        {
            kind = Some(Kind::NotFound);
        }
        cur = err.source();
        if let Some(c) = cur {
            let text = c.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
        }
    }
    Failure {
        kind: kind.unwrap_or(Kind::Other),
        message,
    }
}

/// The package's exception class `name` (`shears.errors`).
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py
        .import("shears.errors")?
        .getattr(name)?
        .downcast_into::<PyType>()?)
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        if f.kind == Kind::Cancelled {
            return PyKeyboardInterrupt::new_err(f.message);
        }
        let name = match f.kind {
            Kind::Invalid => "InvalidInput",
            Kind::NotFound => "NotFound",
            Kind::RunBusy => "RunBusy",
            _ => "Error",
        };
        Python::attach(|py| match class(py, name) {
            Ok(cls) => PyErr::from_type(cls, f.message),
            // The package is not importable (the extension used on its own): still an error.
            Err(_) => PyRuntimeError::new_err(f.message),
        })
    }
}
