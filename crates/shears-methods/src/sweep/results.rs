//! Reading run directories back: each run's config and result, the figures every method's
//! report shares, and results tables (mean and std over seeds) as CSV and markdown.

use crate::run_dir::{CONFIG_FILE, read_failed, read_finished};
use crate::sweep::{RunState, SWEEP_DIR, run_state};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One run directory as read back.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub dir: PathBuf,
    /// The run's config flattened to dotted keys (`method.name` -> `"taylor"`).
    pub config: BTreeMap<String, String>,
    pub state: RunState,
    /// `result.json`, when the run finished.
    pub result: Option<Value>,
    /// The recorded error of a failed run.
    pub error: Option<String>,
    pub metrics: Metrics,
}

impl RunRecord {
    /// Reads the run in `dir` (its config must be there).
    pub fn read(dir: &Path) -> Option<RunRecord> {
        let text = std::fs::read_to_string(dir.join(CONFIG_FILE)).ok()?;
        let table: toml::Table = toml::from_str(&text).ok()?;
        let mut config = BTreeMap::new();
        flatten("", &toml::Value::Table(table), &mut config);
        // A value naming something of this run's own seed (a per-seed baseline `dense-s1`)
        // reads `dense-s*`, so that runs differing only in the seed fall in one row.
        if let Some(seed) = config.get("seed").cloned() {
            let suffix = format!("-s{seed}");
            for (k, v) in config.iter_mut() {
                if k != "seed" && v.ends_with(&suffix) {
                    v.truncate(v.len() - suffix.len());
                    v.push_str("-s*");
                }
            }
        }
        let read = read_finished(dir);
        let result: Option<Value> = read.clone().ok().flatten();
        let metrics = result.as_ref().map(Metrics::of).unwrap_or_default();
        Some(RunRecord {
            dir: dir.to_path_buf(),
            config,
            state: run_state(dir),
            error: read.err().or_else(|| read_failed(dir).map(|f| f.error)),
            result,
            metrics,
        })
    }

    /// The run directory's name.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }

    /// The method as a user names it: `[method] name`, else `[prune] method`.
    pub fn method(&self) -> String {
        self.config
            .get("method.name")
            .or_else(|| self.config.get("prune.method"))
            .cloned()
            .unwrap_or_else(|| "?".into())
    }
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), super::short(other));
        }
    }
}

/// Every run directory under `root` (a folder holding `config.toml`), searched a few levels
/// deep, skipping hidden folders (a sweep's own files), sorted by path.
pub fn scan_runs(root: &Path) -> Vec<RunRecord> {
    let mut out = Vec::new();
    walk(root, 0, &mut out);
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    out
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<RunRecord>) {
    if dir.join(CONFIG_FILE).is_file() {
        if let Some(r) = RunRecord::read(dir) {
            out.push(r);
        }
        return;
    }
    if depth >= 4 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.') || n == SWEEP_DIR);
        if p.is_dir() && !hidden {
            walk(&p, depth + 1, out);
        }
    }
}

/// The figures every method's report has in some form, NaN where a method has none.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    /// Final test accuracy (after fine-tuning; FTWT: with dynamic gating).
    pub accuracy: f64,
    /// Test accuracy of the network before pruning.
    pub accuracy_before: f64,
    /// Fraction of parameters physically removed (structured).
    pub params_reduction: f64,
    /// Fraction of MACs removed (structured: compacted; FTWT: per-input average).
    pub macs_reduction: f64,
    /// MACs per sample of the final network.
    pub macs: f64,
    /// Direct and effective compression of the masks (unstructured).
    pub direct_compression: f64,
    pub effective_compression: f64,
    /// Median latency of the pruned network at batch 1 (ms), and dense / pruned.
    pub latency_ms: f64,
    pub latency_ratio: f64,
    /// The same in onnxruntime (NaN where it was not measured).
    pub ort_latency_ms: f64,
    pub ort_latency_ratio: f64,
    pub seconds: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            accuracy: f64::NAN,
            accuracy_before: f64::NAN,
            params_reduction: f64::NAN,
            macs_reduction: f64::NAN,
            macs: f64::NAN,
            direct_compression: f64::NAN,
            effective_compression: f64::NAN,
            latency_ms: f64::NAN,
            latency_ratio: f64::NAN,
            ort_latency_ms: f64::NAN,
            ort_latency_ratio: f64::NAN,
            seconds: f64::NAN,
        }
    }
}

/// Number at `path` (dotted) in `v`, NaN when absent or null.
pub fn num(v: &Value, path: &str) -> f64 {
    path.split('.')
        .try_fold(v, |cur, k| cur.get(k))
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// The first of `paths` that `v` has.
fn first(v: &Value, paths: &[&str]) -> f64 {
    paths
        .iter()
        .map(|p| num(v, p))
        .find(|x| !x.is_nan())
        .unwrap_or(f64::NAN)
}

impl Metrics {
    /// The figures of one `result.json`, whatever method wrote it.
    pub fn of(v: &Value) -> Metrics {
        // The batch-1 row of the latency table, else its first row.
        let latency = v.get("latency").and_then(Value::as_array).and_then(|rows| {
            rows.iter()
                .find(|r| r.get("batch").and_then(Value::as_u64) == Some(1))
                .or(rows.first())
        });
        let (latency_ms, latency_ratio) = latency.map_or((f64::NAN, f64::NAN), |r| {
            (num(r, "compacted_median_ms"), num(r, "latency_ratio"))
        });
        let (ort_latency_ms, ort_latency_ratio) = latency.map_or((f64::NAN, f64::NAN), |r| {
            (
                num(r, "onnxruntime.compacted_median_ms"),
                num(r, "onnxruntime.latency_ratio"),
            )
        });
        Metrics {
            accuracy: first(
                v,
                &[
                    "accuracy_after_finetune",
                    "accuracy_dynamic",
                    "test_accuracy",
                ],
            ),
            accuracy_before: first(v, &["accuracy_before_pruning", "accuracy_baseline"]),
            params_reduction: num(v, "params_reduction"),
            macs_reduction: first(v, &["macs_reduction", "achieved.strict_reduction"]),
            macs: first(v, &["macs_after", "achieved.strict_macs", "macs"]),
            direct_compression: num(v, "direct_compression"),
            effective_compression: num(v, "effective_compression"),
            latency_ms,
            latency_ratio,
            ort_latency_ms,
            ort_latency_ratio,
            seconds: num(v, "seconds"),
        }
    }
}

/// A metric column of the results table.
struct Column {
    header: &'static str,
    get: fn(&Metrics) -> f64,
    /// Printed value = metric × scale.
    scale: f64,
    decimals: usize,
}

const COLUMNS: [Column; 12] = [
    Column {
        header: "accuracy %",
        get: |m| m.accuracy,
        scale: 100.0,
        decimals: 2,
    },
    Column {
        header: "before pruning %",
        get: |m| m.accuracy_before,
        scale: 100.0,
        decimals: 2,
    },
    Column {
        header: "params removed %",
        get: |m| m.params_reduction,
        scale: 100.0,
        decimals: 1,
    },
    Column {
        header: "MACs removed %",
        get: |m| m.macs_reduction,
        scale: 100.0,
        decimals: 1,
    },
    Column {
        header: "MACs (M)",
        get: |m| m.macs,
        scale: 1e-6,
        decimals: 2,
    },
    Column {
        header: "direct compression",
        get: |m| m.direct_compression,
        scale: 1.0,
        decimals: 1,
    },
    Column {
        header: "effective compression",
        get: |m| m.effective_compression,
        scale: 1.0,
        decimals: 1,
    },
    Column {
        header: "latency b1 ms",
        get: |m| m.latency_ms,
        scale: 1.0,
        decimals: 3,
    },
    Column {
        header: "latency ratio",
        get: |m| m.latency_ratio,
        scale: 1.0,
        decimals: 2,
    },
    Column {
        header: "ORT b1 ms",
        get: |m| m.ort_latency_ms,
        scale: 1.0,
        decimals: 3,
    },
    Column {
        header: "ORT ratio",
        get: |m| m.ort_latency_ratio,
        scale: 1.0,
        decimals: 2,
    },
    Column {
        header: "seconds",
        get: |m| m.seconds,
        scale: 1.0,
        decimals: 0,
    },
];

/// Mean and sample standard deviation (0 for one value) of the finite values.
pub fn mean_std(xs: &[f64]) -> Option<(f64, f64)> {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, var.sqrt()))
}

/// One row: a point of the grid without its seed, and its runs (one per seed).
#[derive(Debug, Clone)]
pub struct Group {
    /// The point's values, one per key column.
    pub key: Vec<String>,
    pub runs: Vec<RunRecord>,
}

/// A results table: key columns, then per metric mean ± std over the finished runs of a group.
#[derive(Debug, Clone)]
pub struct ResultsTable {
    pub keys: Vec<String>,
    pub groups: Vec<Group>,
}

impl ResultsTable {
    /// Groups `runs` by the config keys that vary among them (the seed aside), in the order the
    /// groups first appear.
    pub fn by_varying_keys(runs: Vec<RunRecord>) -> ResultsTable {
        let keys = varying_keys(&runs);
        let mut groups: Vec<Group> = Vec::new();
        for r in runs {
            let key: Vec<String> = keys
                .iter()
                .map(|k| r.config.get(k).cloned().unwrap_or_else(|| "-".into()))
                .collect();
            match groups.iter_mut().find(|g| g.key == key) {
                Some(g) => g.runs.push(r),
                None => groups.push(Group { key, runs: vec![r] }),
            }
        }
        ResultsTable { keys, groups }
    }

    /// The metric columns that have a value in some run.
    fn columns(&self) -> Vec<&'static Column> {
        COLUMNS
            .iter()
            .filter(|c| {
                self.groups
                    .iter()
                    .flat_map(|g| &g.runs)
                    .any(|r| (c.get)(&r.metrics).is_finite())
            })
            .collect()
    }

    /// Rows of cells: key values, `done/total` runs, then `mean ± std` per metric column.
    fn cells(&self, plain: bool) -> (Vec<String>, Vec<Vec<String>>) {
        let cols = self.columns();
        let mut header: Vec<String> = self.keys.clone();
        header.push("runs".into());
        for c in &cols {
            if plain {
                header.push(format!("{} mean", c.header));
                header.push(format!("{} std", c.header));
            } else {
                header.push(c.header.to_string());
            }
        }
        let rows = self
            .groups
            .iter()
            .map(|g| {
                let done: Vec<&RunRecord> = g
                    .runs
                    .iter()
                    .filter(|r| r.state == RunState::Done)
                    .collect();
                let failed = g
                    .runs
                    .iter()
                    .filter(|r| r.state == RunState::Failed)
                    .count();
                let mut row = g.key.clone();
                row.push(if failed > 0 {
                    format!("{}/{} ({failed} failed)", done.len(), g.runs.len())
                } else {
                    format!("{}/{}", done.len(), g.runs.len())
                });
                for c in &cols {
                    let xs: Vec<f64> = done.iter().map(|r| (c.get)(&r.metrics) * c.scale).collect();
                    let d = c.decimals;
                    match (mean_std(&xs), plain) {
                        (Some((m, s)), true) => {
                            row.push(format!("{m:.prec$}", prec = d + 2));
                            row.push(format!("{s:.prec$}", prec = d + 2));
                        }
                        (Some((m, s)), false) if done.len() > 1 => {
                            row.push(format!("{m:.d$} ± {s:.d$}"))
                        }
                        (Some((m, _)), false) => row.push(format!("{m:.d$}")),
                        (None, true) => row.extend([String::new(), String::new()]),
                        (None, false) => row.push("-".into()),
                    }
                }
                row
            })
            .collect();
        (header, rows)
    }

    /// CSV: one row per group, mean and std in separate columns.
    pub fn to_csv(&self) -> String {
        let (header, rows) = self.cells(true);
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row.iter().map(|c| csv_field(c)).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
        out
    }

    /// A markdown table, `mean ± std` over the seeds in each cell.
    pub fn to_markdown(&self) -> String {
        let (header, rows) = self.cells(false);
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
        for row in &rows {
            let _ = writeln!(out, "| {} |", row.join(" | ").replace('\n', " "));
        }
        out
    }

    /// Header and rows for an HTML table (same cells as the markdown).
    pub fn html_cells(&self) -> (Vec<String>, Vec<Vec<String>>) {
        self.cells(false)
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Config keys set to two different values among `runs`, the seed aside; `method.name` (or
/// `prune.method`) leads.
pub fn varying_keys(runs: &[RunRecord]) -> Vec<String> {
    let mut all: BTreeMap<&str, Vec<Option<&String>>> = BTreeMap::new();
    for r in runs {
        for k in r.config.keys() {
            all.entry(k).or_default();
        }
    }
    let mut keys: Vec<String> = all
        .keys()
        .filter(|k| **k != "seed")
        .filter(|k| {
            // Two different values where the key is set; a key only some runs have (the
            // fine-tuning of the pruned runs beside a dense baseline) does not split by itself.
            let mut values = runs.iter().filter_map(|r| r.config.get(**k));
            let first = values.next();
            values.any(|v| Some(v) != first)
        })
        .map(|k| k.to_string())
        .collect();
    // The method first, then the rest in key order.
    keys.sort_by_key(|k| !(k == "method.name" || k == "prune.method"));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(config: &[(&str, &str)], result: Value) -> RunRecord {
        RunRecord {
            dir: PathBuf::from("r"),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: RunState::Done,
            metrics: Metrics::of(&result),
            result: Some(result),
            error: None,
        }
    }

    #[test]
    fn metrics_come_from_each_report_shape() {
        let structured = serde_json::json!({
            "accuracy_after_finetune": 0.8, "accuracy_before_pruning": 0.9,
            "params_reduction": 0.5, "macs_reduction": 0.6, "macs_after": 2_000_000,
            "latency": [{"batch": 64, "compacted_median_ms": 9.0, "latency_ratio": 1.5},
                        {"batch": 1, "compacted_median_ms": 0.5, "latency_ratio": 1.8,
                         "onnxruntime": {"compacted_median_ms": 0.2, "latency_ratio": 0.9}}],
            "seconds": 12.0
        });
        let m = Metrics::of(&structured);
        assert_eq!((m.accuracy, m.macs_reduction, m.macs), (0.8, 0.6, 2e6));
        assert_eq!((m.latency_ms, m.latency_ratio), (0.5, 1.8));
        assert_eq!((m.ort_latency_ms, m.ort_latency_ratio), (0.2, 0.9));
        assert!(m.direct_compression.is_nan());
        let ftwt = serde_json::json!({
            "accuracy_dynamic": 0.7, "accuracy_baseline": 0.75,
            "achieved": {"strict_reduction": 0.4, "strict_macs": 3.0e6}
        });
        let m = Metrics::of(&ftwt);
        assert_eq!(
            (m.accuracy, m.accuracy_before, m.macs_reduction),
            (0.7, 0.75, 0.4)
        );
        let unstructured = serde_json::json!({
            "accuracy_after_finetune": 0.6, "direct_compression": 10.0,
            "effective_compression": null
        });
        let m = Metrics::of(&unstructured);
        assert_eq!(m.direct_compression, 10.0);
        assert!(m.effective_compression.is_nan());
    }

    #[test]
    fn tables_group_by_what_varies_and_average_over_seeds() {
        let runs = vec![
            record(
                &[("method.name", "a"), ("seed", "0"), ("model.arch", "x")],
                serde_json::json!({"accuracy_after_finetune": 0.5}),
            ),
            record(
                &[("method.name", "a"), ("seed", "1"), ("model.arch", "x")],
                serde_json::json!({"accuracy_after_finetune": 0.7}),
            ),
            record(
                &[("method.name", "b"), ("seed", "0"), ("model.arch", "x")],
                serde_json::json!({"accuracy_after_finetune": 0.9}),
            ),
        ];
        let t = ResultsTable::by_varying_keys(runs);
        assert_eq!(t.keys, vec!["method.name"]);
        assert_eq!(t.groups.len(), 2);
        let md = t.to_markdown();
        assert!(
            md.starts_with("| method.name | runs | accuracy % |\n|---|---|---|\n"),
            "{md}"
        );
        // mean 60, sample std of (50, 70) = 14.14
        assert!(md.contains("| a | 2/2 | 60.00 ± 14.14 |"), "{md}");
        assert!(md.contains("| b | 1/1 | 90.00 |"), "{md}");
        let csv = t.to_csv();
        assert!(
            csv.starts_with("method.name,runs,accuracy % mean,accuracy % std\n"),
            "{csv}"
        );
        assert!(csv.contains("a,2/2,60.0000,14.1421\n"), "{csv}");
    }

    #[test]
    fn mean_std_skips_missing_values() {
        assert_eq!(mean_std(&[f64::NAN]), None);
        assert_eq!(mean_std(&[2.0, f64::NAN]), Some((2.0, 0.0)));
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
    }
}
