//! Run directories: one per run, named from method, target, seed and a config hash, holding the
//! resolved config, per-epoch metrics (JSON lines), checkpoints, `result.json` and the model.

use anyhow::{Context, Result};
use serde::Serialize;
use shears_core::artifact::write_atomic;
use shears_engine::EpochMetrics;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.toml";
pub const RESULT_FILE: &str = "result.json";

/// The run's directory and file layout.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub fn new(path: PathBuf) -> Result<RunDir> {
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create run directory {}", path.display()))?;
        Ok(RunDir { path })
    }

    /// Sub-directory of one phase (`train`, `finetune`), holding its checkpoint and metrics.
    pub fn phase(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn result_path(&self) -> PathBuf {
        self.path.join(RESULT_FILE)
    }

    pub fn is_finished(&self) -> bool {
        self.result_path().is_file()
    }

    pub fn write_config(&self, toml: &str) -> Result<()> {
        write_atomic(&self.path.join(CONFIG_FILE), toml.as_bytes())?;
        Ok(())
    }

    pub fn write_result<T: Serialize>(&self, result: &T) -> Result<()> {
        let json = serde_json::to_string_pretty(result)?;
        write_atomic(&self.result_path(), json.as_bytes())?;
        Ok(())
    }
}

/// Writes the metrics of a phase as JSON lines (rewritten whole, atomically, after each epoch).
pub fn write_metrics(dir: &Path, rows: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    write_atomic(&dir.join("metrics.jsonl"), text.as_bytes())?;
    Ok(())
}

/// Reads the metrics rows of a phase written by [`write_metrics`] (none if the file is absent).
pub fn read_metrics(dir: &Path) -> Result<Vec<EpochMetrics>> {
    let path = dir.join("metrics.jsonl");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .with_context(|| format!("corrupt metrics line in {}", path.display()))
        })
        .collect()
}

/// Directory name for a run: `{name}-{method}-{target}-s{seed}-{hash}`.
pub fn run_name(name: &str, method: &str, target: Option<f64>, seed: u64, hash: &str) -> String {
    let target = target.map(|t| format!("-{t}")).unwrap_or_default();
    format!("{name}-{method}{target}-s{seed}-{hash}")
}
