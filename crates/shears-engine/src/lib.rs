//! Burn execution of shears graphs: forward passes, training, scores that need gradients, gating
//! and latency measurement.

pub use burn;

pub mod device;
pub mod error;
pub mod executor;

pub use error::{EngineError, Result};
pub use executor::{Executor, Mode, Value};
