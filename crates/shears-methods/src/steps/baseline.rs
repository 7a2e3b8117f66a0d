//! The dense baseline a method starts from, trained once per runs directory and shared.
//!
//! Training is deterministic in the model, the data, the `[train]` section, the seed and the
//! device. So runs that agree on those (the methods and targets of one sweep, for each seed)
//! train the same network. The first run to need it trains it in its own run directory and
//! then keeps a copy in `RUNS_DIR/.baselines/<key>/`. Later runs copy it from there instead of
//! training it again. A file lock on the key lets one process train while the others wait for
//! its result.

use crate::error::{MethodError, Result};
use crate::run_dir::{RunLock, short_hash};
use crate::steps::context::Pipeline;
use crate::steps::phase::cached_phase;
use shears_core::artifact::{Model, is_model_dir, load_model, save_model, write_atomic};
use shears_engine::TrainHooks;
use std::path::{Path, PathBuf};

/// Where the shared baselines of a runs directory live.
pub const BASELINES_DIR: &str = ".baselines";

/// The key of the baseline `p`'s config trains: a hash of everything that decides it, the
/// files of a data folder (so one changed in place is a new baseline, never a stale one) and
/// the code's version included.
pub fn baseline_key(p: &Pipeline<'_>) -> String {
    let c = p.cfg;
    let parts = format!(
        "model = {}\ndata = {}\ntrain = {}\nseed = {}\ndevice = {}\nfiles = {}\nshears = {}\n",
        toml::to_string(&c.model).unwrap_or_default(),
        toml::to_string(&c.data).unwrap_or_default(),
        toml::to_string(&c.train).unwrap_or_default(),
        c.seed,
        c.device,
        c.data
            .dir
            .as_deref()
            .map(folder_fingerprint)
            .unwrap_or_default(),
        crate::report::version()
    );
    short_hash(parts.as_bytes())
}

/// Every file under `dir` (recursively, in name order) with its size and modification time:
/// what changes when a data folder is edited in place, without reading the data.
pub fn folder_fingerprint(dir: &Path) -> String {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                walk(&path, root, out);
            } else {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                let name = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                out.push(format!("{name} {} {modified}", meta.len()));
            }
        }
    }
    let mut lines = Vec::new();
    walk(dir, dir, &mut lines);
    short_hash(lines.join("\n").as_bytes())
}

/// The shared copy of `p`'s baseline, beside its run directory.
fn shared_dir(p: &Pipeline<'_>) -> Option<PathBuf> {
    let runs = p.dir.path.parent()?;
    Some(runs.join(BASELINES_DIR).join(baseline_key(p)))
}

/// The trained dense network of `p`'s config: this run's own (an interrupted run resumes it), a
/// copy of one another run of the same runs directory trained, or trained now and shared.
pub fn dense_baseline(p: &Pipeline<'_>) -> Result<Model> {
    let own = p.dir.phase("dense");
    let shared = match shared_dir(p) {
        Some(s) if !is_model_dir(&own) && p.cfg.train.epochs > 0 => s,
        _ => return train(p),
    };
    // Waits while another process trains this baseline; released when `_lock` drops.
    let _lock = RunLock::wait(&shared)?;
    if is_model_dir(&shared) {
        tracing::info!("dense baseline: shared copy {}", shared.display());
        let model = load_model(&shared)?;
        save_model(&own, &model)?;
        copy_metrics(&shared, &p.dir.phase("train"))?;
        return train(p);
    }
    let model = train(p)?;
    copy_metrics(&p.dir.phase("train"), &shared)?;
    save_model(&shared, &model)?;
    Ok(model)
}

/// This run's baseline phase: loaded from `dense/` when there, else trained (and resumed).
fn train(p: &Pipeline<'_>) -> Result<Model> {
    Ok(cached_phase(
        &p.rt,
        &p.cfg.train,
        p.initial()?,
        p.data,
        &p.dir.phase("train"),
        &p.dir.phase("dense"),
        p.resume,
        &mut TrainHooks::default(),
    )?
    .0)
}

/// Copies the per-epoch metrics of a baseline phase, so a shared baseline keeps its curve.
fn copy_metrics(from: &Path, to: &Path) -> Result<()> {
    let src = from.join("metrics.jsonl");
    if !src.is_file() {
        return Ok(());
    }
    let text = std::fs::read(&src).map_err(|e| MethodError::io("read", &src, e))?;
    std::fs::create_dir_all(to).map_err(|e| MethodError::io("create", to, e))?;
    write_atomic(&to.join("metrics.jsonl"), &text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_folder_changed_in_place_has_another_fingerprint() {
        let tmp = tempfile::tempdir().unwrap();
        let class = tmp.path().join("train").join("a");
        std::fs::create_dir_all(&class).unwrap();
        std::fs::write(class.join("1.png"), b"one").unwrap();
        let first = folder_fingerprint(tmp.path());
        assert_eq!(
            first,
            folder_fingerprint(tmp.path()),
            "stable when nothing changes"
        );
        // Another file, a changed size, a renamed file: each changes it.
        std::fs::write(class.join("2.png"), b"two").unwrap();
        let second = folder_fingerprint(tmp.path());
        assert_ne!(first, second);
        std::fs::write(class.join("2.png"), b"two, longer").unwrap();
        let third = folder_fingerprint(tmp.path());
        assert_ne!(second, third);
        std::fs::rename(class.join("2.png"), class.join("3.png")).unwrap();
        assert_ne!(third, folder_fingerprint(tmp.path()));
    }
}
