//! Experiment configuration: a TOML file whose sections mirror the pipeline (model, data, train,
//! method, finetune). Precedence: command line > config file > these defaults. Unknown keys are
//! errors, so a typo never silently falls back to a default.
//!
//! The method is `[method] name = "..."` with that method's own keys (see [`crate::registry`]);
//! `[prune]` is the older spelling of an unstructured method and stays accepted unchanged, so
//! configs written before `[method]` existed keep their hash and their run directory.

use crate::error::{Context, MethodError, Result};
use crate::invalid;
use crate::run_dir::short_hash;
use serde::{Deserialize, Serialize};
use shears_engine::{OptimizerConfig, Schedule, TrainConfig};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Names the run directory.
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    /// Backend: `flex` (CPU, default), or `cuda` / `wgpu` when built with those features.
    #[serde(default = "default_device")]
    pub device: String,
    /// CPU threads (default: all cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSection>,
    /// The method with its own keys: `[method] name = "slimming"`, `lambda = 1e-4`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<MethodSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<TrainSection>,
    /// `[latency]`: how structured methods measure dense against compacted latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<crate::steps::latency::LatencySettings>,
}

/// `[method]`: a registered method's name and its keys, checked by that method when resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSection {
    /// A name from [`crate::registry::METHODS`].
    pub name: String,
    /// The method's own keys; an unknown one is an error naming it.
    #[serde(flatten)]
    pub keys: toml::Table,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A zoo name (`shears inspect --list`) or the directory of a saved model.
    #[serde(default = "default_arch")]
    pub arch: String,
    /// Per-sample input shape like `1x28x28`; defaults to the data set's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Output classes; defaults to the data set's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `fashion-mnist-subset` (embedded), `fashion-mnist`, `mnist`, `cifar10`, `cifar100`, or
    /// `image-folder` (`dir/train/CLASS/*.png|jpg`, `dir/test/CLASS/...`, brought to the model's
    /// input shape).
    #[serde(default = "default_dataset")]
    pub dataset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerConfig,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    #[serde(default)]
    pub crop_padding: usize,
    #[serde(default)]
    pub flip: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Recompute BatchNorm statistics exactly over this many training batches after every
    /// epoch (precise BN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precise_bn_batches: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSection {
    /// `magnitude`, `random` or `lamp` (unstructured).
    #[serde(default = "default_method")]
    pub method: String,
    /// `global` ranking, or a layer quota: `uniform`, `uniform+`, `er`, `erk`, `igq`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Fraction of prunable (conv + linear) weights to remove.
    pub sparsity: f64,
    /// `direct` or `effective`.
    #[serde(default = "default_target_kind")]
    pub target_kind: String,
    /// When `shears run` prunes: `after` training (default), at `init`ialisation (then trains
    /// the masked model), or `gradual`ly at every epoch end (cubic schedule).
    #[serde(default = "default_when", skip_serializing_if = "is_default_when")]
    pub when: String,
    /// With `when = "after"`: rewind the weights to their initial values after each pruning
    /// round and retrain with the `[train]` settings (lottery ticket).
    #[serde(default, skip_serializing_if = "is_false")]
    pub rewind: bool,
    /// With `when = "after"`: prune in this many rounds, each removing the same fraction of the
    /// remaining weights, with (re)training between rounds.
    #[serde(default = "default_rounds", skip_serializing_if = "is_one")]
    pub rounds: usize,
    /// Also zero the unpruned weights that lie on no input→output path (the effective masks),
    /// as Vysogorets & Kempe train.
    #[serde(default, skip_serializing_if = "is_false")]
    pub apply_effective: bool,
    /// Training batches that data-dependent scores (snip, grasp) average over.
    #[serde(
        default = "default_score_batches",
        skip_serializing_if = "is_default_score_batches"
    )]
    pub score_batches: usize,
}

impl Default for PruneSection {
    fn default() -> Self {
        PruneSection {
            method: default_method(),
            scope: default_scope(),
            sparsity: 0.8,
            target_kind: default_target_kind(),
            when: default_when(),
            rewind: false,
            rounds: default_rounds(),
            apply_effective: false,
            score_batches: default_score_batches(),
        }
    }
}

fn default_when() -> String {
    "after".into()
}
fn is_default_when(v: &str) -> bool {
    v == "after"
}
fn is_false(v: &bool) -> bool {
    !*v
}
fn default_rounds() -> usize {
    1
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
fn default_score_batches() -> usize {
    10
}
fn is_default_score_batches(v: &usize) -> bool {
    *v == default_score_batches()
}

fn default_name() -> String {
    "experiment".into()
}
fn default_device() -> String {
    "flex".into()
}
fn default_arch() -> String {
    "small-cnn".into()
}
fn default_dataset() -> String {
    "fashion-mnist-subset".into()
}
fn default_epochs() -> usize {
    3
}
fn default_batch() -> usize {
    128
}
fn default_lr() -> f64 {
    0.05
}
fn default_optimizer() -> OptimizerConfig {
    OptimizerConfig::Sgd {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
    }
}
fn default_schedule() -> Schedule {
    Schedule::Cosine { min_lr: 0.0 }
}
fn default_method() -> String {
    "magnitude".into()
}
fn default_scope() -> String {
    "global".into()
}
fn default_target_kind() -> String {
    "direct".into()
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: default_arch(),
            input: None,
            classes: None,
        }
    }
}
impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: default_dataset(),
            dir: None,
        }
    }
}
impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            epochs: default_epochs(),
            batch_size: default_batch(),
            lr: default_lr(),
            optimizer: default_optimizer(),
            schedule: default_schedule(),
            crop_padding: 0,
            flip: false,
            train_limit: None,
            test_limit: None,
            precise_bn_batches: None,
        }
    }
}
impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            name: default_name(),
            seed: 0,
            device: default_device(),
            threads: None,
            model: ModelConfig::default(),
            data: DataConfig::default(),
            train: TrainSection::default(),
            prune: None,
            method: None,
            finetune: None,
            latency: None,
        }
    }
}

impl TrainSection {
    /// The engine's view of this section.
    pub fn to_engine(&self, seed: u64) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            schedule: self.schedule.clone(),
            seed,
            crop_padding: self.crop_padding,
            flip: self.flip,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            precise_bn_batches: self.precise_bn_batches,
        }
    }

    /// Checks every value; errors name `[section]` and the key.
    pub fn validate(&self, section: &str) -> Result<()> {
        if self.batch_size == 0 {
            invalid!("[{section}] batch_size must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            invalid!("[{section}] lr must be a positive number, got {}", self.lr);
        }
        self.optimizer
            .validate()
            .with_context(|| format!("[{section}] optimizer"))?;
        self.schedule
            .validate()
            .with_context(|| format!("[{section}] schedule"))?;
        if self.precise_bn_batches == Some(0) {
            invalid!("[{section}] precise_bn_batches must be at least 1");
        }
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            invalid!("[{section}] train_limit and test_limit must be at least 1");
        }
        Ok(())
    }
}

impl ExperimentConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<ExperimentConfig> {
        let text =
            std::fs::read_to_string(path).map_err(|e| MethodError::io("read config", path, e))?;
        toml::from_str(&text).map_err(|e| MethodError::ConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks every value; errors name the section and key.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            invalid!(
                "name must be non-empty and contain no path separators, got `{}`",
                self.name
            );
        }
        if self.threads == Some(0) {
            invalid!("threads must be at least 1");
        }
        self.data
            .dataset
            .parse::<shears_data::DatasetKind>()
            .map_err(|e| MethodError::Invalid(format!("[data] dataset: {e}")))?;
        if self.data.dataset == shears_data::DatasetKind::ImageFolder.name()
            && self.data.dir.is_none()
        {
            invalid!(
                "[data] dataset = \"image-folder\" needs [data] dir (or --data): a folder holding \
                 train/CLASS/*.png|jpg and test/CLASS/*.png|jpg"
            );
        }
        if let Some(s) = &self.model.input {
            parse_shape(s).context("[model] input")?;
        }
        if self.model.classes == Some(0) {
            invalid!("[model] classes must be at least 1");
        }
        self.train.validate("train")?;
        if let Some(f) = &self.finetune {
            f.validate("finetune")?;
        }
        if let Some(p) = &self.prune {
            if !(0.0..1.0).contains(&p.sparsity) {
                invalid!("[prune] sparsity must be in [0, 1), got {}", p.sparsity);
            }
            if !crate::methods::unstructured::METHODS.contains(&p.method.as_str()) {
                invalid!(
                    "[prune] method `{}` is unknown (known: {})",
                    p.method,
                    crate::methods::unstructured::METHODS.join(", ")
                );
            }
            if !crate::methods::unstructured::WHEN.contains(&p.when.as_str()) {
                invalid!(
                    "[prune] when = `{}` is unknown (known: {})",
                    p.when,
                    crate::methods::unstructured::WHEN.join(", ")
                );
            }
            if p.rounds == 0 {
                invalid!("[prune] rounds must be at least 1");
            }
            if p.when != "after" && (p.rewind || p.rounds != 1) {
                invalid!("[prune] rewind and rounds only apply with when = \"after\"");
            }
            if p.score_batches == 0 {
                invalid!("[prune] score_batches must be at least 1");
            }
            if p.when == "gradual" && self.train.epochs == 0 {
                invalid!(
                    "[prune] when = \"gradual\" prunes at epoch ends: [train] epochs must be at least 1"
                );
            }
            if p.method == "synflow" && p.scope != "global" {
                invalid!("[prune] synflow is a global iterative pruner: use scope = \"global\"");
            }
            if p.scope != "global" {
                p.scope
                    .parse::<shears_core::sparsity::Quota>()
                    .map_err(|e| MethodError::Invalid(format!("[prune] scope: {e}")))?;
            }
            p.target_kind
                .parse::<shears_core::sparsity::TargetKind>()
                .map_err(|e| MethodError::Invalid(format!("[prune] target_kind: {e}")))?;
        }
        if let Some(l) = &self.latency {
            l.validate()?;
        }
        if self.prune.is_some() && self.method.is_some() {
            invalid!(
                "give the method once: either [method] or the older [prune] section, not both"
            );
        }
        if self.method.is_some() {
            // Resolving checks the name and every key of the method.
            crate::registry::resolve(self)?;
        }
        Ok(())
    }

    /// The resolved config as TOML (what a run directory's `config.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Short hash of the resolved config, for run names and reports.
    pub fn hash(&self) -> String {
        short_hash(self.to_toml().as_bytes())
    }
}

/// Parses `3x32x32` or `784` into a shape.
pub fn parse_shape(s: &str) -> Result<Vec<usize>> {
    let dims: Vec<usize> = s
        .split(['x', 'X', ','])
        .map(|d| d.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| MethodError::Invalid(format!("`{s}` is not a shape like 3x32x32 or 784")))?;
    if dims.is_empty() || dims.contains(&0) || !(dims.len() == 1 || dims.len() == 3) {
        invalid!("`{s}` is not a shape like 3x32x32 or 784 (one or three non-zero dimensions)");
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_validate() {
        let c = ExperimentConfig::default();
        c.validate().unwrap();
        let back: ExperimentConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.hash().len(), 8);
    }

    #[test]
    fn shipped_configs_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c = ExperimentConfig::from_file(&path)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                c.validate()
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 3);
    }

    #[test]
    fn bad_values_are_named() {
        let e = toml::from_str::<ExperimentConfig>("[train]\nepochz = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("epochz"), "{e}");
        let mut c = ExperimentConfig::default();
        c.train.lr = -1.0;
        assert!(c.validate().unwrap_err().to_string().contains("[train] lr"));
        let mut c = ExperimentConfig::default();
        c.data.dataset = "imagenet".into();
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("imagenet"));
        let mut c = ExperimentConfig::default();
        c.prune = Some(PruneSection {
            method: "magnitude".into(),
            scope: "global".into(),
            sparsity: 1.5,
            target_kind: "direct".into(),
            ..PruneSection::default()
        });
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("[prune] sparsity")
        );
        assert!(parse_shape("3x0x2").is_err());
        assert_eq!(parse_shape("1x28x28").unwrap(), vec![1, 28, 28]);
    }

    #[test]
    fn new_prune_keys_have_defaults_that_keep_old_configs_unchanged() {
        let c: ExperimentConfig = toml::from_str("[prune]\nsparsity = 0.5\n").unwrap();
        let p = c.prune.clone().unwrap();
        assert_eq!(p.when, "after");
        assert_eq!((p.rewind, p.rounds, p.apply_effective), (false, 1, false));
        assert_eq!(p.score_batches, 10);
        // Defaults are not written back, so configs without them keep their hash.
        let text = c.to_toml();
        for key in [
            "when",
            "rewind",
            "rounds",
            "apply_effective",
            "score_batches",
        ] {
            assert!(!text.contains(key), "{key} in {text}");
        }
        let c: ExperimentConfig =
            toml::from_str("[prune]\nsparsity = 0.5\nwhen = \"gradual\"\nmethod = \"snip\"\n")
                .unwrap();
        c.validate().unwrap();
        assert!(c.to_toml().contains("when = \"gradual\""));
        let c: ExperimentConfig = toml::from_str("[prune]\nsparsity = 0.5\nrounds = 0\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("rounds"));
    }
}
