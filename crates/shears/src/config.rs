//! Experiment configuration: a TOML file whose sections mirror the pipeline (model, data, train,
//! prune, finetune). Precedence: command line > config file > these defaults. Unknown keys are
//! errors, so a typo never silently falls back to a default.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<TrainSection>,
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
    /// `fashion-mnist-subset` (embedded), `fashion-mnist`, `mnist`, `cifar10`, `cifar100`.
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
            finetune: None,
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
        }
    }

    fn validate(&self, section: &str) -> Result<()> {
        if self.batch_size == 0 {
            bail!("[{section}] batch_size must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("[{section}] lr must be a positive number, got {}", self.lr);
        }
        self.optimizer
            .validate()
            .with_context(|| format!("[{section}] optimizer"))?;
        self.schedule
            .validate()
            .with_context(|| format!("[{section}] schedule"))?;
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            bail!("[{section}] train_limit and test_limit must be at least 1");
        }
        Ok(())
    }
}

impl ExperimentConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<ExperimentConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: ExperimentConfig =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        Ok(cfg)
    }

    /// Checks every value; errors name the section and key.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            bail!(
                "name must be non-empty and contain no path separators, got `{}`",
                self.name
            );
        }
        if self.threads == Some(0) {
            bail!("threads must be at least 1");
        }
        self.data
            .dataset
            .parse::<shears_data::DatasetKind>()
            .map_err(|e| anyhow::anyhow!("[data] dataset: {e}"))?;
        if let Some(s) = &self.model.input {
            parse_shape(s).context("[model] input")?;
        }
        if self.model.classes == Some(0) {
            bail!("[model] classes must be at least 1");
        }
        self.train.validate("train")?;
        if let Some(f) = &self.finetune {
            f.validate("finetune")?;
        }
        if let Some(p) = &self.prune {
            if !(0.0..1.0).contains(&p.sparsity) {
                bail!("[prune] sparsity must be in [0, 1), got {}", p.sparsity);
            }
            if !crate::unstructured::METHODS.contains(&p.method.as_str()) {
                bail!(
                    "[prune] method `{}` is unknown (known: {})",
                    p.method,
                    crate::unstructured::METHODS.join(", ")
                );
            }
            if !crate::unstructured::WHEN.contains(&p.when.as_str()) {
                bail!(
                    "[prune] when = `{}` is unknown (known: {})",
                    p.when,
                    crate::unstructured::WHEN.join(", ")
                );
            }
            if p.rounds == 0 {
                bail!("[prune] rounds must be at least 1");
            }
            if p.when != "after" && (p.rewind || p.rounds != 1) {
                bail!("[prune] rewind and rounds only apply with when = \"after\"");
            }
            if p.score_batches == 0 {
                bail!("[prune] score_batches must be at least 1");
            }
            if p.when == "gradual" && self.train.epochs == 0 {
                bail!(
                    "[prune] when = \"gradual\" prunes at epoch ends: [train] epochs must be at least 1"
                );
            }
            if p.method == "synflow" && p.scope != "global" {
                bail!("[prune] synflow is a global iterative pruner: use scope = \"global\"");
            }
            if p.scope != "global" {
                p.scope
                    .parse::<shears_core::sparsity::Quota>()
                    .map_err(|e| anyhow::anyhow!("[prune] scope: {e}"))?;
            }
            p.target_kind
                .parse::<shears_core::sparsity::TargetKind>()
                .map_err(|e| anyhow::anyhow!("[prune] target_kind: {e}"))?;
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Short hash of the resolved config, for run names and reports.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.to_toml().as_bytes());
        digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
    }
}

/// Parses `3x32x32` or `784` into a shape.
pub fn parse_shape(s: &str) -> Result<Vec<usize>> {
    let dims: Vec<usize> = s
        .split(['x', 'X', ','])
        .map(|d| d.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("`{s}` is not a shape like 3x32x32 or 784"))?;
    if dims.is_empty() || dims.contains(&0) || !(dims.len() == 1 || dims.len() == 3) {
        bail!("`{s}` is not a shape like 3x32x32 or 784 (one or three non-zero dimensions)");
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
}
