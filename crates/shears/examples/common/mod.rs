//! What the reproduction reports share: reading run results, mean ± std over seeds, and a line
//! plot. (Each report is an example: `cargo run --release -p shears --example NAME`.)

#![allow(dead_code)] // each report uses its own subset

use plotters::prelude::*;
use serde_json::Value;
use std::error::Error;
use std::path::{Path, PathBuf};

pub type Res<T> = Result<T, Box<dyn Error>>;

pub const COLORS: &[RGBColor] = &[
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(120, 120, 120),
];

/// Number `k` of a JSON object, NaN when absent.
/// One finished run of a reproduction script.
pub struct Run {
    pub model: String,
    pub method: String,
    /// The target as the directory names it (`0.5`).
    pub target: String,
    pub seed: u64,
    pub dir: PathBuf,
    /// The run's `result.json`.
    pub v: Value,
}

/// The finished runs under `root/<model>/<method>-<target_kind><target>-s<seed>/` (those with a
/// `result.json`), sorted by model, target, method and seed; other entries are skipped.
pub fn scan_runs(root: &Path, target_kind: &str) -> Res<Vec<Run>> {
    let mut out = Vec::new();
    for model in std::fs::read_dir(root)? {
        let model = model?.path();
        if !model.is_dir() {
            continue;
        }
        let mname = model.file_name().unwrap().to_string_lossy().to_string();
        for d in std::fs::read_dir(&model)? {
            let dir = d?.path();
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            let Some((head, seed)) = name.rsplit_once("-s") else {
                continue;
            };
            let Some((method, target)) = head.rsplit_once(&format!("-{target_kind}")) else {
                continue;
            };
            let Ok(seed) = seed.parse() else { continue };
            let Ok(text) = std::fs::read_to_string(dir.join("result.json")) else {
                continue;
            };
            out.push(Run {
                model: mname.clone(),
                method: method.to_string(),
                target: target.to_string(),
                seed,
                dir: dir.clone(),
                v: serde_json::from_str(&text)?,
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.model, &a.target, &a.method, a.seed).cmp(&(&b.model, &b.target, &b.method, b.seed))
    });
    Ok(out)
}

pub fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = if x.len() > 1 {
        x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, v.sqrt())
}

/// `mean ± std` of `x * scale` with `digits` decimals.
pub fn pm(x: &[f64], scale: f64, digits: usize) -> String {
    let (m, s) = mean_std(x);
    format!("{:.*} ± {:.*}", digits, m * scale, digits, s * scale)
}

/// A structured report's latency at batch `b`, 1 thread: (dense ms, compacted ms).
pub fn latency(v: &Value, b: u64) -> (f64, f64) {
    v["latency"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["batch"].as_u64() == Some(b) && r["threads"].as_u64() == Some(1))
        .map_or((f64::NAN, f64::NAN), |r| {
            (f(r, "dense_median_ms"), f(r, "compacted_median_ms"))
        })
}

/// The rows of a phase's `metrics.jsonl` (none when absent).
pub fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Column `k` of a phase's metrics.
pub fn metric(dir: &Path, k: &str) -> Vec<f64> {
    metrics(dir).iter().map(|v| f(v, k)).collect()
}

/// One SVG line plot with a marker per point and a legend.
pub fn line_plot(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    sets: &[(String, Vec<(f64, f64)>)],
) -> Res<()> {
    let pts = sets.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts.filter(|p| p.0.is_finite() && p.1.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return Ok(());
    }
    let (dx, dy) = (((x1 - x0) * 0.05).max(0.5), ((y1 - y0) * 0.1).max(1e-3));
    let root = SVGBackend::new(path, (820, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0 - dx..x1 + dx, y0 - dy..y1 + dy)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()?;
    for (k, (name, v)) in sets.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(v.clone(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(v.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
