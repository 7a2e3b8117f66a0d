//! What a method's stages see when the pipeline runs them: the config, the runtime, the run
//! directory, the data, and the settings derived from them.

use crate::config::{ExperimentConfig, TrainSection};
use crate::error::Result;
use crate::run_dir::RunDir;
use crate::steps::Runtime;
use crate::steps::latency::LatencySettings;
use crate::steps::model::configured_model;
use shears_core::artifact::Model;
use shears_data::DataSplits;
use std::time::Instant;

/// Everything a method's stages see.
pub struct Pipeline<'a> {
    pub cfg: &'a ExperimentConfig,
    pub rt: Runtime,
    pub dir: &'a RunDir,
    pub data: &'a DataSplits,
    pub resume: bool,
    pub command: &'static str,
    /// The config has a `[finetune]` phase (pruning at initialisation fine-tunes only then:
    /// its main phase is `[train]`).
    pub explicit_finetune: bool,
    pub started: Instant,
}

impl Pipeline<'_> {
    /// The fine-tuning phase (the config's, or [`TrainSection::default_finetune`]).
    pub fn finetune(&self) -> TrainSection {
        self.cfg.finetune()
    }

    /// The configured model with its initial weights.
    pub fn initial(&self) -> Result<Model> {
        configured_model(self.cfg, Some(self.data))
    }

    /// Evaluate on the first N test samples only.
    pub fn test_limit(&self) -> Option<usize> {
        self.cfg.train.test_limit
    }

    /// How latency is measured, or `None` when it is switched off.
    pub fn latency(&self) -> Option<LatencySettings> {
        let l = self.cfg.latency.clone().unwrap_or_default();
        l.enabled.then_some(l)
    }
}
