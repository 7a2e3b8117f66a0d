//! Sweeps: one experiment config plus a `[sweep]` grid, expanded into runs.
//!
//! A sweep file is an ordinary experiment config (the base every run starts from) with one more
//! table:
//!
//! ```toml
//! [sweep]
//! workers = 2                       # local worker processes (default 1)
//! [sweep.grid]                      # every combination of these is one run
//! method = [{ name = "l1-filter" }, { name = "taylor" }]
//! "method.macs_reduction" = [0.3, 0.5, 0.7]
//! seed = [0, 1]
//! [sweep.slurm]                     # optional, for --slurm
//! partition = "gpu"
//! time = "02:00:00"
//! ```
//!
//! Methods that differ in more than one section (their own epochs, a fine-tune of their own)
//! are `[[sweep.variants]]`, each a `label` and the tables it merges into the config, crossed
//! with the grid:
//!
//! ```toml
//! [[sweep.variants]]
//! label = "l1-filter"
//! method = { name = "l1-filter", params_reduction = 0.5 }
//! finetune = { epochs = 4 }
//! ```
//!
//! A grid key is a dotted path into the config. A table value is merged into the table at its
//! path (so `method = {name = "taylor"}` keeps the base's other `[method]` keys), any other value
//! replaces it. Axes vary in key order with `seed` innermost. Each point is checked as a whole
//! config before anything runs, and the error names the point.
//!
//! Each run is an ordinary `shears run` of the expanded config in its ordinary run directory
//! (named by method, target, seed and config hash), so finished runs are found and skipped,
//! interrupted ones resume, and a run directory is never shared by two configs.

pub mod results;

use crate::config::ExperimentConfig;
use crate::error::{MethodError, Result};
use crate::invalid;
use crate::pipeline::run_path;
use crate::run_dir::{FAILED_FILE, RunLock, read_failed, read_finished};
use results::{Group, ResultsTable, RunRecord};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The name of the axis the `[[sweep.variants]]` make.
pub const VARIANT_AXIS: &str = "variant";

/// Where a sweep keeps its own files inside the runs directory.
pub const SWEEP_DIR: &str = ".sweep";

/// The `[sweep]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    /// Dotted config key -> the values it takes.
    #[serde(default)]
    pub grid: toml::Table,
    /// `[[sweep.variants]]`: whole-config variants (each a `label` and tables merged at the
    /// config's root), for methods that differ in more than one section; crossed with the grid.
    #[serde(default)]
    pub variants: Vec<toml::Table>,
    /// Local worker processes (overridden by `--workers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmSection>,
}

/// `[sweep.slurm]`: what the job array asks the scheduler for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Wall-clock limit per task, Slurm's format (`02:00:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_task: Option<usize>,
    /// Memory per task, Slurm's format (`8G`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// Tasks running at once (`--array=...%N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
    /// Further `#SBATCH` lines, verbatim (`--gres=gpu:1`).
    #[serde(default)]
    pub extra: Vec<String>,
}

/// A parsed sweep file.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The sweep's name (the base config's `name`).
    pub name: String,
    pub file: PathBuf,
    pub base: toml::Table,
    pub section: SweepSection,
}

/// One run of a sweep.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// Position in the sweep (0-based; the Slurm array index).
    pub index: usize,
    /// The grid point: `(key, value)` per axis, in axis order.
    pub point: Vec<(String, String)>,
    pub config: ExperimentConfig,
    /// Its run directory.
    pub dir: PathBuf,
}

impl PlannedRun {
    /// A short label of the point, for progress lines (`method=taylor seed=1`).
    pub fn label(&self) -> String {
        self.point
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Where the worker finds this run's expanded config.
    pub fn config_file(&self, runs_dir: &Path, sweep: &str) -> PathBuf {
        sweep_dir(runs_dir, sweep)
            .join("configs")
            .join(format!("{}.toml", self.dir_name()))
    }

    /// The run directory's name.
    pub fn dir_name(&self) -> String {
        self.dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }
}

/// A sweep's own folder in `runs_dir` (expanded configs, logs, the Slurm script).
pub fn sweep_dir(runs_dir: &Path, sweep: &str) -> PathBuf {
    runs_dir.join(SWEEP_DIR).join(sweep)
}

impl Sweep {
    /// Reads and checks a sweep file (without expanding it).
    pub fn from_file(path: &Path) -> Result<Sweep> {
        let text =
            std::fs::read_to_string(path).map_err(|e| MethodError::io("read sweep", path, e))?;
        let bad = |message: String| MethodError::ConfigFile {
            path: path.to_path_buf(),
            message,
        };
        let mut base: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let section: SweepSection = match base.remove("sweep") {
            Some(v) => v
                .try_into()
                .map_err(|e: toml::de::Error| bad(format!("[sweep]: {e}")))?,
            None => return Err(bad("has no [sweep] table; a sweep file is an experiment config with [sweep.grid] = {key = [values]}".into())),
        };
        if section.grid.is_empty() && section.variants.is_empty() {
            return Err(bad(
                "[sweep.grid] is empty and there is no [[sweep.variants]]: give at least one key with a list of values".into(),
            ));
        }
        let mut labels = Vec::new();
        for (i, v) in section.variants.iter().enumerate() {
            let Some(label) = v.get("label").and_then(|l| l.as_str()) else {
                return Err(bad(format!(
                    "[[sweep.variants]] number {} has no `label = \"...\"`",
                    i + 1
                )));
            };
            if labels.contains(&label) {
                return Err(bad(format!(
                    "[[sweep.variants]] label `{label}` is given twice"
                )));
            }
            labels.push(label);
        }
        for (key, values) in &section.grid {
            match values.as_array() {
                Some(a) if !a.is_empty() => {}
                _ => {
                    return Err(bad(format!(
                        "[sweep.grid] `{key}` must be a non-empty list of values"
                    )));
                }
            }
            if key.split('.').any(str::is_empty) || key.starts_with("sweep") {
                return Err(bad(format!("[sweep.grid] `{key}` is not a config key")));
            }
        }
        if section.workers == Some(0) {
            return Err(bad("[sweep] workers must be at least 1".into()));
        }
        let name = base
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("sweep")
            .to_string();
        Ok(Sweep {
            name,
            file: path.to_path_buf(),
            base,
            section,
        })
    }

    /// The axes in the order they vary: the variants (if any), the grid keys in key order,
    /// `seed` innermost.
    fn axes(&self) -> Vec<(String, Vec<toml::Value>)> {
        let mut axes: Vec<(String, Vec<toml::Value>)> = self
            .section
            .grid
            .iter()
            .filter_map(|(k, v)| v.as_array().map(|a| (k.clone(), a.clone())))
            .collect();
        axes.sort_by_key(|(k, _)| k == "seed");
        if !self.section.variants.is_empty() {
            let variants = self
                .section
                .variants
                .iter()
                .map(|v| toml::Value::Table(v.clone()))
                .collect();
            axes.insert(0, (VARIANT_AXIS.to_string(), variants));
        }
        axes
    }

    /// Expands the grid into runs under `runs_dir`, checking every point as a config.
    pub fn plan(&self, runs_dir: &Path) -> Result<Vec<PlannedRun>> {
        let axes = self.axes();
        let total: usize = axes.iter().map(|(_, v)| v.len()).product();
        let mut runs = Vec::with_capacity(total);
        for index in 0..total {
            // Mixed radix: the last axis varies fastest.
            let mut rest = index;
            let mut choice = vec![0; axes.len()];
            for (a, (_, values)) in axes.iter().enumerate().rev() {
                choice[a] = rest % values.len();
                rest /= values.len();
            }
            let mut table = self.base.clone();
            let mut point = Vec::with_capacity(axes.len());
            for (a, (key, values)) in axes.iter().enumerate() {
                let value = &values[choice[a]];
                if key == VARIANT_AXIS
                    && let toml::Value::Table(variant) = value
                {
                    let mut variant = variant.clone();
                    let label = variant
                        .remove("label")
                        .map(|l| short(&l))
                        .unwrap_or_default();
                    merge(&mut table, variant);
                    point.push((key.clone(), label));
                    continue;
                }
                set_path(&mut table, key, value.clone());
                point.push((key.clone(), short(value)));
            }
            let at = || {
                point
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut config: ExperimentConfig =
                toml::Value::Table(table)
                    .try_into()
                    .map_err(|e: toml::de::Error| {
                        MethodError::Invalid(format!("sweep point {}: {e}", at()))
                    })?;
            // `shears run` prunes by magnitude when a config names no method; so does a sweep.
            if config.method.is_none() && config.prune.is_none() {
                config.prune = Some(Default::default());
            }
            config
                .validate()
                .map_err(|e| MethodError::Invalid(format!("sweep point {}: {e}", at())))?;
            let dir = run_path(&config, runs_dir)
                .map_err(|e| MethodError::Invalid(format!("sweep point {}: {e}", at())))?;
            runs.push(PlannedRun {
                index,
                point,
                config,
                dir,
            });
        }
        for (i, r) in runs.iter().enumerate() {
            if let Some(other) = runs[..i].iter().find(|o| o.dir == r.dir) {
                invalid!(
                    "sweep points {} and {} are the same run (the grid repeats a value?)",
                    other.label(),
                    r.label()
                );
            }
        }
        Ok(runs)
    }

    /// Writes every run's expanded config where its worker reads it.
    pub fn write_configs(&self, runs: &[PlannedRun], runs_dir: &Path) -> Result<()> {
        for r in runs {
            let file = r.config_file(runs_dir, &self.name);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| MethodError::io("create", parent, e))?;
            }
            shears_core::artifact::write_atomic(&file, r.config.to_toml().as_bytes())?;
        }
        Ok(())
    }
}

/// A value as a table cell: strings bare; a table as its `name` or `method` followed by its
/// other keys (`magnitude when=after rewind=true`).
pub fn short(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Table(t) => {
            let lead = ["name", "method"]
                .iter()
                .find_map(|k| t.get(*k).and_then(|n| n.as_str()).map(|n| (*k, n)));
            let mut parts: Vec<String> = lead.iter().map(|(_, n)| n.to_string()).collect();
            parts.extend(
                t.iter()
                    .filter(|(k, _)| lead.is_none_or(|(l, _)| l != k.as_str()))
                    .map(|(k, v)| format!("{k}={}", short(v))),
            );
            parts.join(" ")
        }
        other => other.to_string(),
    }
}

/// Sets dotted `path` in `table`: a table value merges into an existing table, anything else
/// replaces what is there.
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts = path.split('.').peekable();
    let mut cur = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            match (cur.get_mut(part), value) {
                (Some(toml::Value::Table(existing)), toml::Value::Table(new)) => {
                    merge(existing, new);
                }
                (_, value) => {
                    cur.insert(part.to_string(), value);
                }
            }
            return;
        }
        let next = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !next.is_table() {
            *next = toml::Value::Table(toml::Table::new());
        }
        cur = next.as_table_mut().expect("made a table above");
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Where one run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Not started, or interrupted and not running now.
    Pending,
    /// A process holds its lock.
    Running,
    /// `result.json` is there and reads as a result.
    Done,
    /// `failed.json` is there, or a `result.json` that does not read, and nothing runs it.
    Failed,
}

impl RunState {
    pub fn name(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
        }
    }
}

/// The state of the run in `dir`, from its files and its lock.
pub fn run_state(dir: &Path) -> RunState {
    let result = read_finished(dir);
    if matches!(result, Ok(Some(_))) {
        RunState::Done
    } else if RunLock::is_held(dir) {
        RunState::Running
    } else if result.is_err() || dir.join(FAILED_FILE).is_file() {
        RunState::Failed
    } else {
        RunState::Pending
    }
}

/// The recorded error of a failed run, if any (a `result.json` that does not read is one).
pub fn failure(dir: &Path) -> Option<String> {
    read_finished(dir)
        .err()
        .or_else(|| read_failed(dir).map(|f| f.error))
}

/// The results table of the sweep's runs: one row per grid point without its seed.
pub fn sweep_table(runs: &[PlannedRun]) -> ResultsTable {
    let keys: Vec<String> = runs
        .first()
        .map(|r| {
            r.point
                .iter()
                .map(|(k, _)| k.clone())
                .filter(|k| k != "seed")
                .collect()
        })
        .unwrap_or_default();
    let mut groups: Vec<Group> = Vec::new();
    for run in runs {
        let key: Vec<String> = run
            .point
            .iter()
            .filter(|(k, _)| k != "seed")
            .map(|(_, v)| v.clone())
            .collect();
        let record = RunRecord::read(&run.dir).unwrap_or_else(|| pending_record(run));
        match groups.iter_mut().find(|g| g.key == key) {
            Some(g) => g.runs.push(record),
            None => groups.push(Group {
                key,
                runs: vec![record],
            }),
        }
    }
    ResultsTable { keys, groups }
}

/// A run that has not written its config yet, counted as pending.
fn pending_record(run: &PlannedRun) -> RunRecord {
    RunRecord {
        dir: run.dir.clone(),
        config: Default::default(),
        state: run_state(&run.dir),
        result: None,
        error: None,
        metrics: Default::default(),
    }
}

/// Writes `<sweep>-results.csv` and `.md` into the runs directory; returns the table and both
/// paths.
pub fn write_tables(
    sweep: &Sweep,
    runs: &[PlannedRun],
    runs_dir: &Path,
) -> Result<(ResultsTable, PathBuf, PathBuf)> {
    let table = sweep_table(runs);
    let base = runs_dir.join(format!("{}-results", sweep.name));
    let md = format!(
        "# Sweep `{}`\n\nMean ± sample std over seeds; `runs` counts finished / planned.\n\
         Reproduce: `shears sweep {}`\n\n{}",
        sweep.name,
        sweep.file.display(),
        table.to_markdown()
    );
    // Two sweeps sharing the runs directory write the tables one after the other.
    let _lock = RunLock::wait(&base)?;
    shears_core::artifact::write_atomic(&base.with_extension("csv"), table.to_csv().as_bytes())?;
    shears_core::artifact::write_atomic(&base.with_extension("md"), md.as_bytes())?;
    Ok((table, base.with_extension("csv"), base.with_extension("md")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("sweep.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const BASE: &str = r#"
name = "cmp"
[model]
arch = "small-cnn"
[train]
epochs = 1
[method]
name = "l1-filter"
macs_reduction = 0.5
"#;

    #[test]
    fn the_grid_expands_to_every_point_with_seed_innermost() {
        let tmp = tempfile::tempdir().unwrap();
        let f = write(
            tmp.path(),
            &format!(
                "{BASE}[sweep.grid]\nseed = [0, 1]\nmethod = [{{ name = \"l1-filter\" }}, {{ name = \"taylor\" }}]\n\"method.macs_reduction\" = [0.3, 0.5, 0.7]\n"
            ),
        );
        let sweep = Sweep::from_file(&f).unwrap();
        let runs = sweep.plan(tmp.path()).unwrap();
        assert_eq!(runs.len(), 12);
        assert_eq!(
            runs[0].label(),
            "method=l1-filter method.macs_reduction=0.3 seed=0"
        );
        assert_eq!(
            runs[1].label(),
            "method=l1-filter method.macs_reduction=0.3 seed=1"
        );
        assert_eq!(
            runs[11].label(),
            "method=taylor method.macs_reduction=0.7 seed=1"
        );
        let m = runs[11].config.method.as_ref().unwrap();
        assert_eq!(m.name, "taylor");
        assert_eq!(m.keys["macs_reduction"].as_float(), Some(0.7));
        assert_eq!(runs[11].config.seed, 1);
        let pruner: toml::Value = toml::from_str::<toml::Table>(
            "v = { method = \"magnitude\", when = \"after\", rewind = true }",
        )
        .unwrap()["v"]
            .clone();
        assert_eq!(short(&pruner), "magnitude rewind=true when=after");
        // Every point has its own run directory, named as `shears run` names it.
        let mut dirs: Vec<_> = runs.iter().map(|r| r.dir.clone()).collect();
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), 12);
        assert_eq!(runs[3].dir, run_path(&runs[3].config, tmp.path()).unwrap());
    }

    #[test]
    fn variants_merge_whole_sections_and_cross_the_grid() {
        let tmp = tempfile::tempdir().unwrap();
        let f = write(
            tmp.path(),
            &format!(
                "{BASE}[[sweep.variants]]\nlabel = \"l1-long\"\nmethod = {{ name = \"l1-filter\" }}\ntrain = {{ epochs = 3 }}\n\
                 [[sweep.variants]]\nlabel = \"taylor\"\nmethod = {{ name = \"taylor\", macs_reduction = 0.3 }}\n\
                 [sweep.grid]\nseed = [0, 1]\n"
            ),
        );
        let runs = Sweep::from_file(&f).unwrap().plan(tmp.path()).unwrap();
        assert_eq!(runs.len(), 4);
        assert_eq!(runs[0].label(), "variant=l1-long seed=0");
        assert_eq!(runs[0].config.train.epochs, 3);
        // The base's other keys stay: l1-filter keeps macs_reduction = 0.5.
        assert_eq!(
            runs[0].config.method.as_ref().unwrap().keys["macs_reduction"].as_float(),
            Some(0.5)
        );
        assert_eq!(runs[3].label(), "variant=taylor seed=1");
        assert_eq!(runs[3].config.train.epochs, 1);
        assert_eq!(
            runs[3].config.method.as_ref().unwrap().keys["macs_reduction"].as_float(),
            Some(0.3)
        );
        let f = write(
            tmp.path(),
            &format!("{BASE}[[sweep.variants]]\nmethod = {{ name = \"taylor\" }}\n"),
        );
        let e = Sweep::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("number 1 has no `label"), "{e}");
    }

    #[test]
    fn a_bad_point_is_named_before_anything_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let f = write(
            tmp.path(),
            &format!("{BASE}[sweep.grid]\n\"method.macs_reduction\" = [0.5, 1.5]\n"),
        );
        let e = Sweep::from_file(&f)
            .unwrap()
            .plan(tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sweep point method.macs_reduction=1.5:"),
            "{e}"
        );

        let f = write(tmp.path(), BASE);
        let e = Sweep::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("has no [sweep] table"), "{e}");
        let f = write(tmp.path(), &format!("{BASE}[sweep.grid]\nseed = 3\n"));
        let e = Sweep::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("`seed` must be a non-empty list"), "{e}");
        let f = write(
            tmp.path(),
            &format!("{BASE}[sweep]\nworker = 2\n[sweep.grid]\nseed = [1]\n"),
        );
        let e = Sweep::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("unknown field `worker`"), "{e}");
    }

    #[test]
    fn states_follow_the_files_and_the_lock() {
        use crate::run_dir::RESULT_FILE;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(run_state(&dir), RunState::Pending);
        std::fs::write(dir.join(FAILED_FILE), r#"{"error":"boom","seconds":1.0}"#).unwrap();
        assert_eq!(run_state(&dir), RunState::Failed);
        assert_eq!(failure(&dir).as_deref(), Some("boom"));
        // A lock taken in this process is held for another open file description too.
        let lock = RunLock::acquire(&dir).unwrap();
        assert_eq!(run_state(&dir), RunState::Running);
        assert!(matches!(
            RunLock::acquire(&dir),
            Err(MethodError::RunBusy { .. })
        ));
        drop(lock);
        assert_eq!(run_state(&dir), RunState::Failed);
        std::fs::write(dir.join(RESULT_FILE), "{}").unwrap();
        assert_eq!(run_state(&dir), RunState::Done);
        // A result cut short (a full disk, a copy) is not a result: the run failed, saying why.
        std::fs::remove_file(dir.join(FAILED_FILE)).unwrap();
        std::fs::write(dir.join(RESULT_FILE), r#"{"accuracy": 0.8"#).unwrap();
        assert_eq!(run_state(&dir), RunState::Failed);
        let why = failure(&dir).unwrap();
        assert!(why.contains("result.json is not valid JSON"), "{why}");
        std::fs::write(dir.join(RESULT_FILE), "").unwrap();
        assert_eq!(run_state(&dir), RunState::Failed);
        // A whole result beside a phase's metrics cut short: failed too, naming the file.
        std::fs::write(dir.join(RESULT_FILE), "{}").unwrap();
        std::fs::create_dir_all(dir.join("train")).unwrap();
        std::fs::write(dir.join("train/metrics.jsonl"), "{\"epoch\": 1, \"tra").unwrap();
        assert_eq!(run_state(&dir), RunState::Failed);
        let why = failure(&dir).unwrap();
        assert!(
            why.contains("corrupt metrics line") && why.contains("train"),
            "{why}"
        );
    }
}
