//! Loading the configured data set, the one path every command takes.

use crate::error::{MethodError, Result};
use crate::invalid;
use serde::Serialize;
use shears_core::artifact::write_atomic;
use shears_data::{DataSplits, DatasetKind, Normalization};
use std::path::Path;

/// The file in a run directory that records the data a run saw and how it was normalised.
pub const DATA_FILE: &str = "data.json";

/// Loads data set `name` (a [`DatasetKind`] name) from `dir`, or from its default place.
pub fn load_data(name: &str, dir: Option<&Path>) -> Result<DataSplits> {
    load_data_shaped(name, dir, || Ok(None))
}

/// [`load_data`] where an image folder's images are brought to the shape `model_input` gives
/// (the model's `[C, H, W]` input). `model_input` is only called for an image folder, so no
/// model is read for the published data sets.
pub fn load_data_shaped(
    name: &str,
    dir: Option<&Path>,
    model_input: impl FnOnce() -> Result<Option<Vec<usize>>>,
) -> Result<DataSplits> {
    let kind: DatasetKind = name
        .parse()
        .map_err(|e| MethodError::Invalid(format!("{e}")))?;
    let shape = match kind {
        DatasetKind::ImageFolder => match model_input()? {
            Some(s) => match s[..] {
                [c, h, w] => Some([c, h, w]),
                _ => invalid!(
                    "the model's input is {s:?}, but an image folder needs a [C, H, W] input \
                     (a convolutional model)"
                ),
            },
            None => None,
        },
        _ => None,
    };
    let data = shears_data::load_sized(kind, dir, shape)?;
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

/// The input shape of a model named `arch` as far as it is known before the data: `input` when
/// given, else a saved model's own input; `None` for a zoo model shaped by its data.
pub fn known_model_input(arch: &str, input: Option<&str>) -> Result<Option<Vec<usize>>> {
    if let Some(s) = input {
        return crate::config::parse_shape(s).map(Some);
    }
    if crate::steps::model::is_saved_model(arch) {
        let model = crate::steps::model::load_saved(Path::new(arch))?;
        return Ok(Some(model.graph.input.shape));
    }
    Ok(None)
}

/// Loads the data set of an experiment config.
pub fn load_configured(cfg: &crate::config::ExperimentConfig) -> Result<DataSplits> {
    load_data_shaped(&cfg.data.dataset, cfg.data.dir.as_deref(), || {
        known_model_input(&cfg.model.arch, cfg.model.input.as_deref())
    })
}

/// Which data set a run read, by name and folder, as the user gave them.
#[derive(Debug, Clone, Serialize)]
pub struct DataSource {
    pub dataset: String,
    pub dir: Option<std::path::PathBuf>,
}

impl DataSource {
    /// The data set of an experiment config.
    pub fn of(cfg: &crate::config::ExperimentConfig) -> Self {
        DataSource {
            dataset: cfg.data.dataset.clone(),
            dir: cfg.data.dir.clone(),
        }
    }
}

/// What a run records of its data in [`DATA_FILE`]: enough to preprocess new inputs for the
/// trained model exactly as training did.
#[derive(Debug, Serialize)]
pub struct DataRecord<'a> {
    #[serde(flatten)]
    pub source: &'a DataSource,
    /// Per-sample `[C, H, W]` the images were brought to.
    pub shape: [usize; 3],
    pub classes: usize,
    /// Class names in label order, where the data set has them.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub class_names: &'a [String],
    pub train_samples: usize,
    pub test_samples: usize,
    /// A pixel `x` in [0, 255] becomes `(x/255 - mean[c]) / std[c]`.
    pub normalization: &'a Normalization,
}

/// Writes [`DATA_FILE`] into `dir` (atomically).
pub fn write_data_record(dir: &Path, source: &DataSource, data: &DataSplits) -> Result<()> {
    let record = DataRecord {
        source,
        shape: data.train.shape(),
        classes: data.train.classes(),
        class_names: data.train.class_names(),
        train_samples: data.train.len(),
        test_samples: data.test.len(),
        normalization: &data.normalization,
    };
    let json = serde_json::to_string_pretty(&record)
        .map_err(|e| MethodError::Invalid(format!("cannot serialise the data record: {e}")))?;
    write_atomic(&dir.join(DATA_FILE), json.as_bytes())?;
    Ok(())
}
