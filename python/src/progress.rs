//! Progress and Ctrl-C across the boundary: the library calls [`PyProgress`] from a thread of
//! the kernels' pool; it takes the GIL for a moment to call the Python callback
//! (`callback("stage", name)`, `callback("step", (epoch, epochs, step, steps, loss))`). The
//! calling Python thread, waiting for the run, looks for a pending signal
//! ([`PyProgress::check_signals`]). A Ctrl-C, or an exception in the callback, stops the run at
//! the next step and is raised once the call returns.

use crate::errors::{Failure, Kind, ShearsResult};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use shears_methods::steps::progress::{Progress, StepProgress};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct PyProgress {
    callback: Option<Py<PyAny>>,
    stop: AtomicBool,
    /// The exception that stopped the run (KeyboardInterrupt, or the callback's own).
    raised: Mutex<Option<PyErr>>,
}

impl PyProgress {
    pub fn new(callback: Option<Py<PyAny>>) -> Self {
        PyProgress {
            callback,
            stop: AtomicBool::new(false),
            raised: Mutex::new(None),
        }
    }

    fn record(&self, e: PyErr) {
        self.stop.store(true, Ordering::SeqCst);
        let mut slot = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    /// Calls the callback with `(event, payload)`; its exception stops the run.
    fn call<P>(&self, event: &str, payload: P)
    where
        P: for<'py> IntoPyObject<'py>,
    {
        let Some(cb) = &self.callback else {
            return;
        };
        Python::attach(|py| {
            if let Err(e) = cb.call1(py, (event, payload)) {
                self.record(e);
            }
        });
    }

    /// Records a pending signal (a Ctrl-C) so that the run stops at its next step. Only the
    /// Python thread that called sees one: Python delivers signals to its main thread.
    pub fn check_signals(&self, py: Python<'_>) {
        if let Err(e) = py.check_signals() {
            self.record(e);
        }
    }

    /// The call's result: the exception that stopped it first, else the library's own outcome.
    pub fn finish<T>(&self, _py: Python<'_>, outcome: ShearsResult<T>) -> PyResult<T> {
        let raised = self.raised.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (outcome, raised) {
            // A Ctrl-C or a callback's exception is raised even when the run got to its end
            // (a signal consumed on the last step must not be lost).
            (_, Some(e)) => Err(e),
            (Ok(v), None) => Ok(v),
            (
                Err(Failure {
                    kind: Kind::Cancelled,
                    message,
                }),
                None,
            ) => Err(PyKeyboardInterrupt::new_err(message)),
            (Err(f), None) => Err(f.into()),
        }
    }
}

impl Progress for PyProgress {
    fn stage(&self, name: &str) {
        self.call("stage", name.to_string());
    }

    fn step(&self, at: StepProgress) {
        self.call("step", (at.epoch, at.epochs, at.step, at.steps, at.loss));
    }

    fn cancelled(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
