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
use shears_core::sparsity::{Allocation, Quota, TargetKind};
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
    /// The unstructured score (`magnitude`, `random`, `lamp`, `snip`, `grasp`, `synflow`).
    #[serde(default = "default_method")]
    pub method: Score,
    /// `global` ranking, or a layer quota: `uniform`, `uniform+`, `er`, `erk`, `igq`.
    #[serde(default = "default_scope")]
    pub scope: Spelled<Allocation>,
    /// Fraction of prunable (conv + linear) weights to remove.
    pub sparsity: f64,
    /// `direct` or `effective`.
    #[serde(default = "default_target_kind")]
    pub target_kind: Spelled<TargetKind>,
    /// When `shears run` prunes: `after` training (default), at `init`ialisation (then trains
    /// the masked model), or `gradual`ly at every epoch end (cubic schedule).
    #[serde(default = "default_when", skip_serializing_if = "is_default_when")]
    pub when: When,
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

fn default_when() -> When {
    When::After
}
fn is_default_when(v: &When) -> bool {
    *v == When::After
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
fn default_method() -> Score {
    Score::Magnitude
}
fn default_scope() -> Spelled<Allocation> {
    Spelled::of(Allocation::Global)
}
fn default_target_kind() -> Spelled<TargetKind> {
    Spelled::of(TargetKind::Direct)
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
    /// The fine-tuning phase of a config without `[finetune]`: one epoch of this phase at a
    /// tenth of its learning rate.
    pub fn default_finetune(&self) -> TrainSection {
        let mut f = self.clone();
        f.epochs = 1;
        f.lr = self.lr / 10.0;
        f
    }

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
    /// The fine-tuning phase: `[finetune]`, or [`TrainSection::default_finetune`] of `[train]`.
    pub fn finetune(&self) -> TrainSection {
        self.finetune
            .clone()
            .unwrap_or_else(|| self.train.default_finetune())
    }

    /// Sets the fine-tuning epochs (from the default phase when the config has none), as
    /// `--finetune-epochs` does.
    pub fn set_finetune_epochs(&mut self, epochs: usize) {
        let mut f = self.finetune();
        f.epochs = epochs;
        self.finetune = Some(f);
    }

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
            if p.rounds == 0 {
                invalid!("[prune] rounds must be at least 1");
            }
            if p.when != When::After && (p.rewind || p.rounds != 1) {
                invalid!("[prune] rewind and rounds only apply with when = \"after\"");
            }
            if p.score_batches == 0 {
                invalid!("[prune] score_batches must be at least 1");
            }
            if p.when == When::Gradual && self.train.epochs == 0 {
                invalid!(
                    "[prune] when = \"gradual\" prunes at epoch ends: [train] epochs must be at least 1"
                );
            }
            if p.method == Score::Synflow && p.scope.value != Allocation::Global {
                invalid!("[prune] synflow is a global iterative pruner: use scope = \"global\"");
            }
        }
        if let Some(l) = &self.latency {
            l.validate()?;
        }
        if self.prune.is_some() && self.method.is_some() {
            invalid!(
                "give the method once: either [method] or the older [prune] section, not both"
            );
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
/// Every unstructured score, as `--method` and `[prune] method` accept them.
pub const METHODS: &[&str] = &["magnitude", "random", "lamp", "snip", "grasp", "synflow"];

/// When `shears run` prunes, as `[prune] when` accepts it.
pub const WHEN: &[&str] = &["after", "init", "gradual"];

/// When the masks of an unstructured method are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum When {
    /// After training the dense network (then fine-tune, or rewind and retrain).
    After,
    /// At initialisation (then train the masked network).
    Init,
    /// At every epoch end of training, to the cubic schedule's sparsity.
    Gradual,
}

impl When {
    /// The name `[prune] when` takes.
    pub fn name(self) -> &'static str {
        match self {
            When::After => "after",
            When::Init => "init",
            When::Gradual => "gradual",
        }
    }
}

impl std::str::FromStr for When {
    type Err = MethodError;
    fn from_str(s: &str) -> Result<When> {
        Ok(match s {
            "after" => When::After,
            "init" => When::Init,
            "gradual" => When::Gradual,
            other => invalid!(
                "[prune] when = `{other}` is unknown (known: {})",
                WHEN.join(", ")
            ),
        })
    }
}

/// What ranks the weights of an unstructured method (low = pruned first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Score {
    /// |w|.
    Magnitude,
    /// Uniform random scores (with a layer quota: random pruning).
    Random,
    /// Layer-adaptive magnitude (Lee et al. 2021).
    Lamp,
    /// |g ⊙ w| on training batches (Lee et al. 2019).
    Snip,
    /// −w ⊙ Hg on training batches (Wang et al. 2020).
    Grasp,
    /// Iterative synaptic flow, data-free (Tanaka et al. 2020).
    Synflow,
}

impl Score {
    /// The name users type.
    pub fn name(self) -> &'static str {
        match self {
            Score::Magnitude => "magnitude",
            Score::Random => "random",
            Score::Lamp => "lamp",
            Score::Snip => "snip",
            Score::Grasp => "grasp",
            Score::Synflow => "synflow",
        }
    }

    /// True for the scores computed on training data.
    pub fn needs_data(self) -> bool {
        matches!(self, Score::Snip | Score::Grasp)
    }
}

impl std::str::FromStr for Score {
    type Err = MethodError;
    fn from_str(s: &str) -> Result<Score> {
        Ok(match s {
            "magnitude" => Score::Magnitude,
            "random" => Score::Random,
            "lamp" => Score::Lamp,
            "snip" => Score::Snip,
            "grasp" => Score::Grasp,
            "synflow" => Score::Synflow,
            _ => invalid!(
                "unknown pruning method `{s}` (known: {})",
                METHODS.join(", ")
            ),
        })
    }
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The text forms of the `[prune]` vocabulary: what the config file holds, parsed once on load.
macro_rules! text_serde {
    ($t:ty, $name:expr, $parse:expr) => {
        impl From<$t> for String {
            fn from(v: $t) -> String {
                $name(v).to_string()
            }
        }
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> std::result::Result<$t, String> {
                $parse(&s).map_err(|e: MethodError| e.to_string())
            }
        }
    };
}
text_serde!(Score, Score::name, |s: &str| s.parse::<Score>());
text_serde!(When, When::name, |s: &str| s.parse::<When>());

/// `global` or a layer quota's name.
pub fn allocation_name(a: Allocation) -> &'static str {
    match a {
        Allocation::Global => "global",
        Allocation::Layerwise(q) => q.name(),
    }
}

/// `global` (one ranking over all layers) or a layer quota (`uniform`, `uniform+`, `er`, `erk`,
/// `igq`).
pub fn parse_allocation(s: &str) -> Result<Allocation> {
    if s == "global" {
        return Ok(Allocation::Global);
    }
    Ok(Allocation::Layerwise(s.parse::<Quota>()?))
}

/// A value parsed from the text a config holds, written back as that same text: a config's
/// hash (and so its run directory) must not change because shears accepts another spelling of
/// a word (`ERK`, `uniform_plus`) than the one it prints.
#[derive(Debug, Clone)]
pub struct Spelled<T> {
    pub value: T,
    pub text: String,
}

/// How a config word is read and printed.
pub trait ConfigWord: Sized {
    /// The key it is the value of, for errors (`[prune] scope`).
    const KEY: &'static str;
    fn parse_word(s: &str) -> std::result::Result<Self, String>;
    fn word(&self) -> String;
}

impl<T: ConfigWord> Spelled<T> {
    /// `value` spelled as shears prints it.
    pub fn of(value: T) -> Self {
        let text = value.word();
        Spelled { value, text }
    }
}

impl<T: PartialEq> PartialEq for Spelled<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T> std::ops::Deref for Spelled<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Serialize for Spelled<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de, T: ConfigWord> Deserialize<'de> for Spelled<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let value = T::parse_word(&text)
            .map_err(|e| serde::de::Error::custom(format!("{}: {e}", T::KEY)))?;
        Ok(Spelled { value, text })
    }
}

impl ConfigWord for Allocation {
    const KEY: &'static str = "[prune] scope";
    fn parse_word(s: &str) -> std::result::Result<Self, String> {
        parse_allocation(s).map_err(|e| e.to_string())
    }
    fn word(&self) -> String {
        allocation_name(*self).into()
    }
}

impl ConfigWord for TargetKind {
    const KEY: &'static str = "[prune] target_kind";
    fn parse_word(s: &str) -> std::result::Result<Self, String> {
        s.parse::<TargetKind>().map_err(|e| e.to_string())
    }
    fn word(&self) -> String {
        self.name().into()
    }
}

/// A per-sample shape written `3x32x32` (or `784`).
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
            sparsity: 1.5,
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
        assert_eq!(p.when, When::After);
        assert_eq!(p.method, Score::Magnitude);
        assert_eq!(p.scope.value, Allocation::Global);
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

    #[test]
    fn prune_keys_parse_into_their_types_once_and_write_back_as_the_same_text() {
        let text = "[prune]\nsparsity = 0.5\nmethod = \"lamp\"\nscope = \"uniform+\"\ntarget_kind = \"effective\"\nwhen = \"init\"\n";
        let c: ExperimentConfig = toml::from_str(text).unwrap();
        let p = c.prune.clone().unwrap();
        assert_eq!(p.method, Score::Lamp);
        assert_eq!(p.scope.value, Allocation::Layerwise(Quota::UniformPlus));
        assert_eq!(p.target_kind.value, TargetKind::Effective);
        assert_eq!(p.when, When::Init);
        let again: ExperimentConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(again.prune, c.prune);
        // Another accepted spelling is written back as it was given: the hash stays.
        let odd: ExperimentConfig = toml::from_str(
            "[prune]\nsparsity = 0.5\nscope = \"ERK\"\ntarget_kind = \"Effective\"\n",
        )
        .unwrap();
        let p = odd.prune.clone().unwrap();
        assert_eq!(p.scope.value, Allocation::Layerwise(Quota::Erk));
        assert!(
            odd.to_toml().contains("scope = \"ERK\""),
            "{}",
            odd.to_toml()
        );
        assert!(odd.to_toml().contains("target_kind = \"Effective\""));
        for (bad, named) in [
            ("method = \"snop\"", "unknown pruning method `snop`"),
            ("scope = \"ring\"", "[prune] scope"),
            ("target_kind = \"wide\"", "[prune] target_kind"),
            ("when = \"later\"", "[prune] when = `later` is unknown"),
        ] {
            let e =
                toml::from_str::<ExperimentConfig>(&format!("[prune]\nsparsity = 0.5\n{bad}\n"))
                    .unwrap_err()
                    .to_string();
            assert!(e.contains(named), "{bad}: {e}");
        }
    }
}
