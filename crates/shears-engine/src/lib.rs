//! Burn execution of shears graphs: forward passes, training, scores that need gradients, gating
//! and latency measurement.

pub use burn;

pub mod checkpoint;
pub mod device;
pub mod dynamic;
pub mod error;
pub mod executor;
pub mod fast_ops;
pub mod hooks;
pub mod latency;
pub mod memory;
pub mod ops;
pub mod optim;
pub mod regularize;
pub mod schedule;
pub mod scores;
pub mod taylor;
pub mod train;

pub use error::{EngineError, Result};
pub use executor::{Executor, Mode, Value};
pub use hooks::{
    DynamicGates, EpochStart, ExtraParams, GradientEdit, LossTerm, PassParams, StepInfo, TrainHooks,
};
pub use optim::{Optimizer, OptimizerConfig};
pub use schedule::Schedule;
pub use train::{EpochMetrics, StepProgress, TrainConfig, evaluate, train, train_observed};
