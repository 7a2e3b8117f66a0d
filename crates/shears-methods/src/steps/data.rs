//! Loading the configured data set, the one path every command takes.

use crate::error::{MethodError, Result};
use shears_data::{DataSplits, DatasetKind};
use std::path::Path;

/// Loads data set `name` (a [`DatasetKind`] name) from `dir`, or from its default place.
pub fn load_data(name: &str, dir: Option<&Path>) -> Result<DataSplits> {
    let kind: DatasetKind = name
        .parse()
        .map_err(|e| MethodError::Invalid(format!("{e}")))?;
    let data = shears_data::load(kind, dir)?;
    tracing::info!(
        "data `{}`: {} train / {} test samples of {:?}, {} classes",
        kind.name(),
        data.train.len(),
        data.test.len(),
        data.train.shape(),
        data.train.classes()
    );
    Ok(data)
}

/// Loads the data set of an experiment config.
pub fn load_configured(cfg: &crate::config::ExperimentConfig) -> Result<DataSplits> {
    load_data(&cfg.data.dataset, cfg.data.dir.as_deref())
}
