//! Run directories: one per run, named from method, target, seed and a config hash, holding the
//! resolved config, per-epoch metrics (JSON lines), checkpoints, `result.json` and the model.
//! Every file is written atomically, so an interrupted run never leaves a half-written result.

use crate::error::{MethodError, Result};
use crate::invalid;
use serde::Serialize;
use sha2::{Digest, Sha256};
use shears_core::artifact::write_atomic;
use shears_engine::EpochMetrics;
use std::path::{Path, PathBuf};

/// The resolved config of a run.
pub const CONFIG_FILE: &str = "config.toml";
/// The run's report; its presence marks the run finished.
pub const RESULT_FILE: &str = "result.json";

/// The run's directory and file layout.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The directory itself.
    pub path: PathBuf,
}

/// What [`open_run`] found.
#[derive(Debug)]
pub enum Opened {
    /// A directory to run in (new, or holding an interrupted run).
    Fresh(RunDir),
    /// The run already finished; its `result.json` text.
    Finished { dir: RunDir, result: String },
}

/// Opens the run directory `path` for the run whose resolved config is `config` (TOML). With
/// `force`, an existing run directory is removed first (refused for a directory that is not a
/// shears run); a finished run is reported, not re-run. A directory holding a run of another
/// config is refused, so no stage cached there (a trained baseline, a mask, a checkpoint) is
/// ever reused for a config it was not made with.
pub fn open_run(path: PathBuf, force: bool, config: &str) -> Result<Opened> {
    let stored = path.join(CONFIG_FILE);
    if !force
        && let Ok(old) = std::fs::read_to_string(&stored)
        && old != config
    {
        invalid!(
            "{} holds a run of another config (config {} there, {} now): use --force to start it over, or another --out",
            path.display(),
            short_hash(old.as_bytes()),
            short_hash(config.as_bytes())
        );
    }
    if force && path.exists() {
        if !path.join(CONFIG_FILE).exists() && !path.join(OWNER_FILE).exists() {
            invalid!(
                "refusing to --force over {}: it is not a shears run directory",
                path.display()
            );
        }
        std::fs::remove_dir_all(&path).map_err(|e| MethodError::io("remove", &path, e))?;
    }
    let dir = RunDir::new(path)?;
    if dir.is_finished() {
        let result = std::fs::read_to_string(dir.result_path())
            .map_err(|e| MethodError::io("read", dir.result_path(), e))?;
        return Ok(Opened::Finished { dir, result });
    }
    Ok(Opened::Fresh(dir))
}

impl RunDir {
    /// Creates the directory if needed.
    pub fn new(path: PathBuf) -> Result<RunDir> {
        std::fs::create_dir_all(&path)
            .map_err(|e| MethodError::io("create run directory", &path, e))?;
        Ok(RunDir { path })
    }

    /// Sub-directory of one phase (`train`, `finetune`), holding its checkpoint and metrics.
    pub fn phase(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Where `result.json` goes.
    pub fn result_path(&self) -> PathBuf {
        self.path.join(RESULT_FILE)
    }

    /// True once the run wrote its result (a `result.json` that does not read as one, cut
    /// short by a full disk or a copy, does not count).
    pub fn is_finished(&self) -> bool {
        matches!(read_finished(&self.path), Ok(Some(_)))
    }

    /// Writes the resolved config.
    pub fn write_config(&self, toml: &str) -> Result<()> {
        write_atomic(&self.path.join(CONFIG_FILE), toml.as_bytes())?;
        Ok(())
    }

    /// Writes `result.json` (last, so that it marks the run finished).
    pub fn write_result<T: Serialize>(&self, result: &T) -> Result<()> {
        let json = serde_json::to_string_pretty(result)
            .map_err(|e| MethodError::Invalid(format!("cannot serialise the result: {e}")))?;
        write_atomic(&self.result_path(), json.as_bytes())?;
        Ok(())
    }
}

/// Writes the metrics of a phase as JSON lines (rewritten whole, atomically, after each epoch).
pub fn write_metrics(dir: &Path, rows: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(
            &serde_json::to_string(r)
                .map_err(|e| MethodError::Invalid(format!("cannot serialise metrics: {e}")))?,
        );
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
    let text = std::fs::read_to_string(&path).map_err(|e| MethodError::io("read", &path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| {
                MethodError::Invalid(format!("corrupt metrics line in {}: {e}", path.display()))
            })
        })
        .collect()
}

/// Directory name for a run: `{name}-{method}-{target}-s{seed}-{hash}`.
pub fn run_name(name: &str, method: &str, target: Option<f64>, seed: u64, hash: &str) -> String {
    let target = target.map(|t| format!("-{t}")).unwrap_or_default();
    format!("{name}-{method}{target}-s{seed}-{hash}")
}

/// The one short hash of shears (config hashes, spec hashes): the first 4 bytes of SHA-256, as
/// 8 hex digits.
pub fn short_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hash_is_eight_hex_digits_and_stable() {
        let h = short_hash(b"shears");
        assert_eq!(h.len(), 8);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, short_hash(b"shears"));
        assert_ne!(h, short_hash(b"shears "));
    }

    #[test]
    fn force_refuses_a_directory_that_is_not_a_run() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("mine");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("precious.txt"), "x").unwrap();
        let e = open_run(p.clone(), true, "x").unwrap_err().to_string();
        assert!(e.contains("not a shears run directory"), "{e}");
        assert!(p.join("precious.txt").exists());
        let Opened::Fresh(dir) = open_run(tmp.path().join("r"), false, "a = 1").unwrap() else {
            panic!("a new directory is fresh")
        };
        dir.write_config("a = 1").unwrap();
        // Another config is refused; the same one continues.
        let e = open_run(dir.path.clone(), false, "a = 2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("another config") && e.contains("--force"), "{e}");
        assert!(matches!(
            open_run(dir.path.clone(), false, "a = 1").unwrap(),
            Opened::Fresh(_)
        ));
        dir.write_result(&serde_json::json!({"ok": 1})).unwrap();
        assert!(matches!(
            open_run(dir.path.clone(), false, "a = 1").unwrap(),
            Opened::Finished { .. }
        ));
    }
}

/// The `result.json` of the run in `dir`: `None` when there is none, an error naming what is
/// wrong when it is there but is not a JSON object (truncated, empty, not JSON).
pub fn read_result(dir: &Path) -> std::result::Result<Option<serde_json::Value>, String> {
    let path = dir.join(RESULT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{} is unreadable: {e}", path.display())),
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v.is_object() => Ok(Some(v)),
        Ok(_) => Err(format!("{} is not a JSON object", path.display())),
        Err(e) => Err(format!("{} is not valid JSON ({e})", path.display())),
    }
}

/// [`read_result`], and every phase's `metrics.jsonl` in `dir` checked too: a finished run
/// whose metrics do not read is no finished run (its tables and curves would be wrong).
pub fn read_finished(dir: &Path) -> std::result::Result<Option<serde_json::Value>, String> {
    let result = read_result(dir)?;
    if result.is_some() {
        let phases = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_else(|_| Vec::new());
        for phase in std::iter::once(dir.to_path_buf()).chain(phases) {
            read_metrics(&phase).map_err(|e| e.to_string())?;
        }
    }
    Ok(result)
}

/// The record of a run that stopped with an error; removed when the run is tried again.
pub const FAILED_FILE: &str = "failed.json";

/// The lock file of run directory `dir`: a hidden sibling (`.NAME.lock`), so that removing the
/// directory (`--force`) never removes a lock another process holds.
pub fn lock_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!(".{name}.lock"))
}

/// An exclusive lock on one run directory, held while the run goes on and released when
/// dropped or when the process dies (an OS file lock, so a killed run leaves no stale lock).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Opens (creating it and its folder if needed) the lock file of `dir`.
    fn open(dir: &Path) -> Result<(std::fs::File, PathBuf)> {
        let lock = lock_path(dir);
        if let Some(parent) = lock.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| MethodError::io("create runs directory", parent, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|e| MethodError::io("open lock", &lock, e))?;
        Ok((file, lock))
    }

    /// Takes the lock of run directory `dir`, or fails with [`MethodError::RunBusy`] when
    /// another process holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let (file, lock) = Self::open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(MethodError::RunBusy {
                dir: dir.to_path_buf(),
                lock,
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(MethodError::io("lock", &lock, e)),
        }
    }

    /// Takes the lock of `dir`, waiting while another process holds it.
    pub fn wait(dir: &Path) -> Result<RunLock> {
        let (file, lock) = Self::open(dir)?;
        file.lock().map_err(|e| MethodError::io("lock", &lock, e))?;
        Ok(RunLock { _file: file })
    }

    /// True while another process holds `dir`'s lock (a run is going on there).
    pub fn is_held(dir: &Path) -> bool {
        let lock = lock_path(dir);
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&lock) else {
            return false;
        };
        matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }
}

/// Whether `inner` is `outer` or lies inside it (both resolved through the file system where
/// they exist, so `a/../b` and symbolic links compare as what they name).
pub fn is_within(inner: &Path, outer: &Path) -> bool {
    fn resolved(p: &Path) -> PathBuf {
        // The longest existing ancestor, canonicalised, with the rest appended.
        let mut head = p.to_path_buf();
        let mut tail = Vec::new();
        while !head.as_os_str().is_empty() && !head.exists() {
            match (head.file_name(), head.parent()) {
                (Some(n), Some(parent)) => {
                    tail.push(n.to_os_string());
                    head = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let base = if head.as_os_str().is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            head.canonicalize().unwrap_or(head)
        };
        tail.iter().rev().fold(base, |acc, n| acc.join(n))
    }
    resolved(inner).starts_with(resolved(outer))
}

/// The commands that run a method's whole pipeline.
fn pipeline(command: &str) -> bool {
    matches!(command, "run" | "slim")
}

/// The command that claimed a directory (see [`claim`]), in the directory itself.
pub const OWNER_FILE: &str = ".owner";

/// Whether two commands may replace each other's output: the same command, or the two that run
/// a method's pipeline (`slim` is `run` with Network Slimming's config; the config check tells
/// their runs apart).
fn same_family(a: &str, b: &str) -> bool {
    a == b || pipeline(a) && pipeline(b)
}

/// What an output directory holds that `command` must not write over: another command's result
/// (finished, or unfinished as its owner file says), or a saved model no command claimed.
fn foreign(dir: &Path, command: &str) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join(RESULT_FILE)) {
        // Pipeline reports of some methods carry no `command`; their directory has the config.
        let theirs = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["command"].as_str().map(str::to_string))
            .or_else(|| dir.join(CONFIG_FILE).is_file().then(|| "run".to_string()));
        return match theirs {
            Some(c) if same_family(&c, command) => None,
            Some(c) => Some(format!("the finished result of `shears {c}`")),
            None => Some("a result.json that is not a shears result".into()),
        };
    }
    if let Ok(owner) = std::fs::read_to_string(dir.join(OWNER_FILE)) {
        let owner = owner.trim();
        return (!same_family(owner, command))
            .then(|| format!("the output of `shears {owner}` (without a result.json)"));
    }
    if dir.join(CONFIG_FILE).is_file() {
        // A run directory from before owner files: a pipeline's or train's.
        return (!pipeline(command) && command != "train")
            .then(|| "a run directory of `shears run` or `shears train`".to_string());
    }
    if shears_core::artifact::is_model_dir(dir) {
        return Some("a saved model".into());
    }
    None
}

/// Claims the output directory `dir` for `command` (`prune`, `import`, `train`, `run`): takes
/// its lock (refused while another process holds it) and refuses a directory holding another
/// command's result, finished or not, or a saved model no command claimed, naming what it holds,
/// unless `force`, which removes it under the lock. The same command replaces (or resumes) its
/// own output. The claim is recorded in the directory ([`OWNER_FILE`]); the lock is held until
/// the returned guard drops.
pub fn claim(dir: &Path, command: &str, force: bool) -> Result<RunLock> {
    let lock = RunLock::acquire(dir)?;
    if let Some(what) = foreign(dir, command) {
        if !force {
            invalid!(
                "{} holds {what}: `shears {command}` will not write over it (use --force to replace it, or another --out)",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).map_err(|e| MethodError::io("remove", dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| MethodError::io("create", dir, e))?;
    if !dir.join(OWNER_FILE).is_file() {
        write_atomic(&dir.join(OWNER_FILE), command.as_bytes())?;
    }
    Ok(lock)
}

/// Why a run failed, as [`FAILED_FILE`] records it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FailedRun {
    pub error: String,
    /// Seconds from the start of the attempt to the error.
    pub seconds: f64,
}

/// Records a failure in `dir` (atomically).
pub fn write_failed(dir: &Path, failed: &FailedRun) -> Result<()> {
    let json = serde_json::to_string_pretty(failed)
        .map_err(|e| MethodError::Invalid(format!("cannot serialise the failure: {e}")))?;
    write_atomic(&dir.join(FAILED_FILE), json.as_bytes())?;
    Ok(())
}

/// The failure recorded in `dir`, if any.
pub fn read_failed(dir: &Path) -> Option<FailedRun> {
    let text = std::fs::read_to_string(dir.join(FAILED_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}
