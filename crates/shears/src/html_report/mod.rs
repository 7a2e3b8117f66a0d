//! `shears report`'s page: one self-contained HTML file (inline CSS and SVG, no script, nothing
//! fetched) with the results table of a runs directory and its plots.
//!
//! Rows are the groups of runs that differ only in their seed. A plot's series are the rows'
//! non-numeric keys (the method, the model); its points are the numeric keys (the targets),
//! each at the mean over seeds with the standard deviation as an error bar.

pub mod plots;

use plots::{Chart, Point, Series};
use serde_json::Value;
use shears_methods::sweep::RunState;
use shears_methods::sweep::results::{Group, Metrics, ResultsTable, RunRecord, mean_std, num};
use std::fmt::Write as _;
use std::path::Path;

/// The x value a chart takes from a run's figures.
type XOf = fn(&Metrics) -> f64;

/// One run's per-layer profile: layer names, a percentage per layer (kept channels, active
/// share, or direct sparsity), the effective sparsity (unstructured only) and which kind.
struct LayerProfile {
    names: Vec<String>,
    values: Vec<f64>,
    effective: Vec<f64>,
    kind: &'static str,
}

/// Most lines one per-run chart (per-layer profiles, training curves) draws.
const MAX_PROFILE_SERIES: usize = 8;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page for the runs found under `runs_dir`; an error when there are none.
pub fn render(runs_dir: &Path, title: &str) -> anyhow::Result<String> {
    let runs = shears_methods::sweep::results::scan_runs(runs_dir);
    if runs.is_empty() {
        anyhow::bail!(
            "no run directories under {} (a run directory holds config.toml)",
            runs_dir.display()
        );
    }
    let table = ResultsTable::by_varying_keys(runs);
    let mut html = String::new();
    let total: usize = table.groups.iter().map(|g| g.runs.len()).sum();
    let count = |s: RunState| {
        table
            .groups
            .iter()
            .flat_map(|g| &g.runs)
            .filter(|r| r.state == s)
            .count()
    };
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n\
         <p class=\"summary\">{total} runs in <code>{dir}</code>: {done} done, {running} running, \
         {pending} pending, {failed} failed. Written by shears {v}.</p>\n",
        t = escape(title),
        dir = escape(&runs_dir.display().to_string()),
        done = count(RunState::Done),
        running = count(RunState::Running),
        pending = count(RunState::Pending),
        failed = count(RunState::Failed),
        v = env!("CARGO_PKG_VERSION"),
    );
    html.push_str("<h2>Results</h2>\n<p>Mean ± sample standard deviation over seeds; <em>runs</em> counts finished / all.</p>\n");
    html.push_str(&results_table(&table));

    html.push_str("<h2>Plots</h2>\n<div class=\"plots\">\n");
    let series_of = SeriesKeys::of(&table);
    let accuracy = |m: &Metrics| m.accuracy * 100.0;
    let charts: [(&str, &str, bool, XOf); 6] = [
        (
            "Accuracy vs direct compression",
            "compression (dense / remaining weights)",
            true,
            |m| {
                if m.direct_compression.is_finite() {
                    m.direct_compression
                } else {
                    1.0 / (1.0 - m.params_reduction)
                }
            },
        ),
        (
            "Accuracy vs effective compression",
            "effective compression (dense / connected weights)",
            true,
            |m| m.effective_compression,
        ),
        ("Accuracy vs MACs", "MACs per sample (M)", false, |m| {
            m.macs / 1e6
        }),
        (
            "Accuracy vs measured latency",
            "latency at batch 1 (ms, median)",
            false,
            |m| m.latency_ms,
        ),
        (
            "Accuracy vs latency in onnxruntime",
            "onnxruntime latency at batch 1 (ms, median)",
            false,
            |m| m.ort_latency_ms,
        ),
        (
            "Accuracy before and after pruning",
            "accuracy before pruning (%)",
            false,
            |m| m.accuracy_before * 100.0,
        ),
    ];
    let mut drawn = 0;
    for (title, x_label, log_x, x) in charts {
        let series = series_of.series(&table, x, accuracy);
        if let Some(svg) = plots::svg(&Chart {
            title,
            x_label,
            y_label: "test accuracy (%)",
            log_x,
            series: &series,
        }) {
            figure(&mut html, title, &svg, &series, None);
            drawn += 1;
        }
    }
    drawn += per_layer(&mut html, &table, &series_of);
    drawn += curves(&mut html, &table, &series_of);
    if drawn == 0 {
        html.push_str("<p>No finished run has figures to plot yet.</p>\n");
    }
    html.push_str("</div>\n");
    failures(&mut html, &table);
    html.push_str("</body></html>\n");
    Ok(html)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1600px;padding:0 1em;color:#222}\
table{border-collapse:collapse;font-size:14px;margin:1em 0}\
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}\
th{background:#f0f0f0}td{white-space:nowrap}td.key{text-align:left;font-family:monospace;white-space:normal}\
.plots{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0;border:1px solid #ddd;padding:8px}\
figcaption{font-size:13px;color:#555;max-width:700px}\
ul.legend{list-style:none;padding:0;margin:4px 0;font-size:13px;max-width:700px}\
ul.legend li{display:inline-block;margin-right:14px}\
.swatch{display:inline-block;width:14px;height:4px;margin-right:5px;vertical-align:middle}code{background:#f4f4f4;padding:1px 3px}\
.failed{color:#b00}";

fn results_table(table: &ResultsTable) -> String {
    let (header, rows) = table.html_cells();
    let keys = table.keys.len();
    let mut out = String::from("<table id=\"results\"><thead><tr>");
    for h in &header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let class = if i < keys { " class=\"key\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", escape(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    out
}

fn figure(html: &mut String, title: &str, svg: &str, series: &[Series], caption: Option<&str>) {
    let _ = write!(
        html,
        "<figure class=\"plot\" data-title=\"{}\">{svg}{}",
        escape(title),
        plots::legend(series)
    );
    if let Some(c) = caption {
        let _ = write!(html, "<figcaption>{}</figcaption>", escape(c));
    }
    html.push_str("</figure>\n");
}

/// Which key columns name a series (non-numeric) and which place a point (numeric).
struct SeriesKeys {
    categorical: Vec<usize>,
}

impl SeriesKeys {
    fn of(table: &ResultsTable) -> SeriesKeys {
        let categorical = (0..table.keys.len())
            .filter(|&i| {
                table
                    .groups
                    .iter()
                    .any(|g| g.key[i] != "-" && g.key[i].parse::<f64>().is_err())
            })
            .collect();
        SeriesKeys { categorical }
    }

    fn name(&self, g: &Group) -> String {
        let parts: Vec<&str> = self
            .categorical
            .iter()
            .map(|&i| g.key[i].as_str())
            .collect();
        if parts.is_empty() {
            "runs".into()
        } else {
            parts.join(" · ")
        }
    }

    fn full_name(g: &Group, table: &ResultsTable) -> String {
        if g.key.is_empty() {
            return "runs".into();
        }
        table
            .keys
            .iter()
            .zip(&g.key)
            .filter(|(_, v)| *v != "-")
            .map(|(k, v)| {
                // `method.name` reads `method`, `method.macs_reduction` reads `macs_reduction`.
                let short = k.strip_suffix(".name").unwrap_or(k);
                format!("{}={v}", short.rsplit('.').next().unwrap_or(short))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One series per series name: a point per group at the means of `x` and `y` over its
    /// finished runs, `y`'s std as the error bar.
    fn series(
        &self,
        table: &ResultsTable,
        x: fn(&Metrics) -> f64,
        y: impl Fn(&Metrics) -> f64,
    ) -> Vec<Series> {
        let mut out: Vec<Series> = Vec::new();
        for g in &table.groups {
            let done: Vec<&RunRecord> = g
                .runs
                .iter()
                .filter(|r| r.state == RunState::Done)
                .collect();
            let xs: Vec<f64> = done.iter().map(|r| x(&r.metrics)).collect();
            let ys: Vec<f64> = done.iter().map(|r| y(&r.metrics)).collect();
            let (Some((mx, _)), Some((my, sy))) = (mean_std(&xs), mean_std(&ys)) else {
                continue;
            };
            let name = self.name(g);
            let point: Point = (mx, my, sy);
            match out.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push(point),
                None => out.push(Series {
                    name,
                    points: vec![point],
                }),
            }
        }
        out
    }
}

/// The first finished run of each group, at most [`MAX_PROFILE_SERIES`] of them.
fn representatives(table: &ResultsTable) -> Vec<(&Group, &RunRecord)> {
    table
        .groups
        .iter()
        .filter_map(|g| {
            g.runs
                .iter()
                .find(|r| r.state == RunState::Done)
                .map(|r| (g, r))
        })
        .take(MAX_PROFILE_SERIES)
        .collect()
}

/// The per-layer profile of one result, where its method reports one.
fn layer_profile(v: &Value) -> Option<LayerProfile> {
    if let Some(groups) = v.get("pruned_groups").and_then(Value::as_array) {
        let names = groups
            .iter()
            .map(|g| {
                g.get("producers")
                    .and_then(|p| p.get(0))
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        let kept = groups
            .iter()
            .map(|g| 100.0 * num(g, "kept") / num(g, "channels"))
            .collect();
        return Some(LayerProfile {
            names,
            values: kept,
            effective: Vec::new(),
            kind: "structured",
        });
    }
    let layers = v.get("layers").and_then(Value::as_array)?;
    if layers
        .first()
        .is_some_and(|l| l.get("active_share").is_some())
    {
        let names = layers
            .iter()
            .map(|l| {
                l.get("conv")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        let kept = layers
            .iter()
            .map(|l| 100.0 * num(l, "active_share"))
            .collect();
        return Some(LayerProfile {
            names,
            values: kept,
            effective: Vec::new(),
            kind: "dynamic",
        });
    }
    let names = layers
        .iter()
        .map(|l| {
            l.get("tensor")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    let direct = layers
        .iter()
        .map(|l| 100.0 * num(l, "direct_sparsity"))
        .collect();
    let effective = layers
        .iter()
        .map(|l| 100.0 * num(l, "effective_sparsity"))
        .collect();
    Some(LayerProfile {
        names,
        values: direct,
        effective,
        kind: "unstructured",
    })
}

/// Per-layer widths (structured), active shares (dynamic) and sparsities (unstructured).
fn per_layer(html: &mut String, table: &ResultsTable, keys: &SeriesKeys) -> usize {
    let mut widths: Vec<Series> = Vec::new();
    let mut sparsities: Vec<Series> = Vec::new();
    let mut names_w: Vec<String> = Vec::new();
    let mut names_s: Vec<String> = Vec::new();
    for (g, r) in representatives(table) {
        let Some(LayerProfile {
            names,
            values: a,
            effective: b,
            kind,
        }) = r.result.as_ref().and_then(layer_profile)
        else {
            continue;
        };
        let label = if keys.categorical.len() == g.key.len() {
            keys.name(g)
        } else {
            SeriesKeys::full_name(g, table)
        };
        let pts = |ys: &[f64]| -> Vec<Point> {
            ys.iter()
                .enumerate()
                .map(|(i, &y)| ((i + 1) as f64, y, 0.0))
                .collect()
        };
        match kind {
            "unstructured" => {
                sparsities.push(Series {
                    name: format!("{label} direct"),
                    points: pts(&a),
                });
                sparsities.push(Series {
                    name: format!("{label} effective"),
                    points: pts(&b),
                });
                if names_s.is_empty() {
                    names_s = names;
                }
            }
            _ => {
                let suffix = if kind == "dynamic" {
                    " (active share)"
                } else {
                    ""
                };
                widths.push(Series {
                    name: format!("{label}{suffix}"),
                    points: pts(&a),
                });
                if names_w.is_empty() {
                    names_w = names;
                }
            }
        }
    }
    let mut drawn = 0;
    let caption = |names: &[String]| {
        let list: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{}: {n}", i + 1))
            .collect();
        format!("Layers (first seed of each row): {}", list.join(", "))
    };
    for (title, y, series, names) in [
        (
            "Per-layer kept channels",
            "channels kept (%)",
            &widths,
            &names_w,
        ),
        (
            "Per-layer sparsity",
            "weights pruned (%)",
            &sparsities,
            &names_s,
        ),
    ] {
        if let Some(svg) = plots::svg(&Chart {
            title,
            x_label: "layer",
            y_label: y,
            log_x: false,
            series,
        }) {
            figure(html, title, &svg, series, Some(&caption(names)));
            drawn += 1;
        }
    }
    drawn
}

/// The phases of a run that logged metrics, in the order they ran.
fn phases(dir: &Path) -> Vec<std::path::PathBuf> {
    let rank = |name: &str| match name {
        "train" | "baseline" => 0,
        "finetune" => 2,
        _ => 1,
    };
    let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("metrics.jsonl").is_file())
        .collect();
    out.sort_by_key(|p| {
        let n = p
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        (rank(&n), n)
    });
    out
}

/// Test accuracy per epoch of each row's first finished run, phases one after another.
fn curves(html: &mut String, table: &ResultsTable, _keys: &SeriesKeys) -> usize {
    let mut series = Vec::new();
    let mut phase_names: Vec<String> = Vec::new();
    for (g, r) in representatives(table) {
        let mut points = Vec::new();
        let mut epoch = 0.0;
        for p in phases(&r.dir) {
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            if !phase_names.contains(&name) {
                phase_names.push(name);
            }
            let text = std::fs::read_to_string(p.join("metrics.jsonl")).unwrap_or_default();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                epoch += 1.0;
                points.push((epoch, 100.0 * num(&v, "test_accuracy"), 0.0));
            }
        }
        if !points.is_empty() {
            series.push(Series {
                name: SeriesKeys::full_name(g, table),
                points,
            });
        }
    }
    let title = "Training curves";
    match plots::svg(&Chart {
        title,
        x_label: "epoch (all phases in order)",
        y_label: "test accuracy (%)",
        log_x: false,
        series: &series,
    }) {
        Some(svg) => {
            let caption = format!(
                "First seed of each row; phases in order: {}",
                phase_names.join(", ")
            );
            figure(html, title, &svg, &series, Some(&caption));
            1
        }
        None => 0,
    }
}

fn failures(html: &mut String, table: &ResultsTable) {
    let failed: Vec<&RunRecord> = table
        .groups
        .iter()
        .flat_map(|g| &g.runs)
        .filter(|r| r.state == RunState::Failed)
        .collect();
    if failed.is_empty() {
        return;
    }
    html.push_str("<h2 class=\"failed\">Failed runs</h2>\n<ul>\n");
    for r in failed {
        let _ = writeln!(
            html,
            "<li><code>{}</code>: {}</li>",
            escape(&r.name()),
            escape(r.error.as_deref().unwrap_or("(no error recorded)"))
        );
    }
    html.push_str("</ul>\n");
}
