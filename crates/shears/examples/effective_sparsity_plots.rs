//! Tables and SVG plots of the effective-sparsity reproduction, from the run directories that
//! `scripts/repro_effective_sparsity.sh` writes with the `shears` binary.
//!
//! Usage: `cargo run --release -p shears --example effective_sparsity_plots -- RUNS_DIR OUT_DIR`
//! Reads `RUNS_DIR/a/<pruner>-c<compression>-s<seed>/result.json` (`shears prune --json`),
//! `RUNS_DIR/b/<pruner>-c<compression>-s<seed>/result.json` (`shears run --json`), the same
//! masks without the effective correction in `RUNS_DIR/b-masks/...` (`shears prune --json`) and
//! `RUNS_DIR/dense-s<seed>/result.json` (`shears train --json`); writes `no-training.svg`,
//! `accuracy.svg` and the raw rows as CSV into OUT_DIR and prints Markdown tables on stdout.

use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

type Res<T> = Result<T, Box<dyn Error>>;

/// Pruners in table and legend order.
const PRUNERS: &[&str] = &[
    "random-uniform",
    "random-erk",
    "random-igq",
    "snip",
    "synflow",
    "magnitude-init",
    "magnitude-trained",
];

const COLORS: &[RGBColor] = &[
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// One run: pruner, target compression, seed and its result JSON.
struct Run {
    pruner: String,
    target: f64,
    seed: u64,
    result: Value,
}

/// Parses `<pruner>-c<compression>-s<seed>`.
fn parse_name(name: &str) -> Option<(String, f64, u64)> {
    let (rest, seed) = name.rsplit_once("-s")?;
    let (pruner, c) = rest.rsplit_once("-c")?;
    Some((pruner.to_string(), c.parse().ok()?, seed.parse().ok()?))
}

/// The pruner, effective compression and seed of a run made by the sweep
/// `configs/sweeps/effective-sparsity.toml`, read from its `config.toml`.
fn parse_config(dir: &Path) -> Option<(String, f64, u64)> {
    let cfg: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).ok()?).ok()?;
    let prune = cfg.get("prune")?.as_table()?;
    let text = |k: &str| prune.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let pruner = match (text("method"), text("scope"), text("when")) {
        ("random", scope, _) => format!("random-{scope}"),
        ("magnitude", _, "after") => "magnitude-trained".to_string(),
        ("magnitude", _, _) => "magnitude-init".to_string(),
        (m, _, _) => m.to_string(),
    };
    let sparsity = prune.get("sparsity")?.as_float()?;
    let seed = cfg.get("seed").and_then(|v| v.as_integer()).unwrap_or(0);
    Some((pruner, (1.0 / (1.0 - sparsity)).round(), seed as u64))
}

fn read_runs(dir: &Path) -> Res<Vec<Run>> {
    let mut runs = Vec::new();
    if !dir.is_dir() {
        return Ok(runs);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let Some((pruner, target, seed)) = parse_name(&name).or_else(|| parse_config(&path)) else {
            continue;
        };
        let file = path.join("result.json");
        if !file.is_file() {
            eprintln!(
                "skipping {} (no result.json: unfinished run)",
                path.display()
            );
            continue;
        }
        let result: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        runs.push(Run {
            pruner,
            target,
            seed,
            result,
        });
    }
    runs.sort_by(|a, b| {
        (pruner_rank(&a.pruner), a.target, a.seed)
            .partial_cmp(&(pruner_rank(&b.pruner), b.target, b.seed))
            .expect("finite")
    });
    Ok(runs)
}

fn pruner_rank(p: &str) -> usize {
    PRUNERS
        .iter()
        .position(|x| *x == p)
        .unwrap_or(PRUNERS.len())
}

/// A compression from JSON: `null` is an infinite compression (everything pruned or inactive).
fn compression(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::INFINITY)
}

/// Geometric mean, infinite if any value is.
fn geo_mean(xs: &[f64]) -> f64 {
    if xs.iter().any(|x| x.is_infinite()) {
        return f64::INFINITY;
    }
    (xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp()
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, v.sqrt())
}

/// Compact log-axis tick labels: 10, 300, 1000, 1e5.
fn axis_label(v: f64) -> String {
    if v >= 1e5 {
        format!("1e{}", v.log10().round())
    } else {
        format!("{v:.0}")
    }
}

fn fmt_compression(c: f64) -> String {
    if c.is_infinite() {
        "∞".into()
    } else if c >= 100.0 {
        format!("{c:.0}")
    } else {
        format!("{c:.1}")
    }
}

/// Values of one pruner grouped by target compression.
fn grouped<'a>(
    runs: &'a [Run],
    pruner: &str,
    f: impl Fn(&Run) -> f64 + 'a,
) -> BTreeMap<u64, Vec<f64>> {
    let mut m: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.pruner == pruner) {
        m.entry(r.target as u64).or_default().push(f(r));
    }
    m
}

fn targets(runs: &[Run]) -> Vec<u64> {
    let mut t: Vec<u64> = runs.iter().map(|r| r.target as u64).collect();
    t.sort();
    t.dedup();
    t
}

fn pruners(runs: &[Run]) -> Vec<String> {
    let mut p: Vec<String> = runs.iter().map(|r| r.pruner.clone()).collect();
    p.dedup();
    p
}

fn write_csv(path: &Path, header: &str, rows: &[String]) -> Res<()> {
    let mut text = String::from(header);
    text.push('\n');
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(path, text)?;
    Ok(())
}

fn no_training(runs: &[Run], out: &Path) -> Res<()> {
    let ts = targets(runs);
    println!("### (a) Effective compression of masks at direct compression (no training)\n");
    println!(
        "Geometric mean over seeds of the effective compression; ∞ = every weight pruned or \
         disconnected (in k of n seeds when marked k/n).\n"
    );
    let head: Vec<String> = ts.iter().map(|t| format!("{t}x")).collect();
    println!("| pruner | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(ts.len()));
    for p in pruners(runs) {
        let g = grouped(runs, &p, |r| {
            compression(&r.result["effective_compression"])
        });
        let cells: Vec<String> = ts
            .iter()
            .map(|t| match g.get(t) {
                None => "-".into(),
                Some(v) => {
                    let inf = v.iter().filter(|x| x.is_infinite()).count();
                    if inf > 0 && inf < v.len() {
                        let finite: Vec<f64> =
                            v.iter().copied().filter(|x| x.is_finite()).collect();
                        format!(
                            "∞ ({inf}/{}), else {}",
                            v.len(),
                            fmt_compression(geo_mean(&finite))
                        )
                    } else {
                        fmt_compression(geo_mean(v))
                    }
                }
            })
            .collect();
        println!("| {p} | {} |", cells.join(" | "));
    }
    println!();
    let rows: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{},{},{},{},{},{},{}",
                r.pruner,
                r.target,
                r.seed,
                r.result["direct_sparsity"],
                r.result["effective_sparsity"],
                r.result["direct_compression"],
                r.result["effective_compression"]
            )
        })
        .collect();
    write_csv(
        &out.join("no-training.csv"),
        "pruner,target_direct_compression,seed,direct_sparsity,effective_sparsity,direct_compression,effective_compression",
        &rows,
    )?;

    // Log-log plot; infinite compressions are drawn at the top edge.
    let top = 1e6;
    let path = out.join("no-training.svg");
    let root = SVGBackend::new(&path, (820, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "LeNet-300-100, no training: effective vs direct compression",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((5f64..20_000f64).log_scale(), (5f64..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("direct compression (target)")
        .y_desc("effective compression (∞ at the top edge)")
        .x_label_formatter(&|v| axis_label(*v))
        .y_label_formatter(&|v| axis_label(*v))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(5.0, 5.0), (20_000.0, 20_000.0)],
            BLACK.mix(0.4).stroke_width(1),
        ))?
        .label("effective = direct")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for p in pruners(runs) {
        let color = COLORS[pruner_rank(&p).min(COLORS.len() - 1)];
        let g = grouped(runs, &p, |r| {
            compression(&r.result["effective_compression"])
        });
        let pts: Vec<(f64, f64)> = g
            .iter()
            .map(|(t, v)| (*t as f64, geo_mean(v).min(top)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(p.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn accuracy(runs: &[Run], masks: &[Run], dense: &[f64], out: &Path) -> Res<()> {
    let ts = targets(runs);
    println!("### (b) Test accuracy after training, at effective compression\n");
    if !dense.is_empty() {
        let (m, s) = mean_std(dense);
        println!(
            "Dense LeNet-300-100 (same training): {:.2} ± {:.2} % ({} seeds).\n",
            m * 100.0,
            s * 100.0,
            dense.len()
        );
    }
    println!("Mean ± standard deviation over seeds, in %.\n");
    let head: Vec<String> = ts.iter().map(|t| format!("{t}x")).collect();
    println!("| pruner | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(ts.len()));
    for p in pruners(runs) {
        let g = grouped(runs, &p, |r| {
            r.result["accuracy_after_finetune"]
                .as_f64()
                .unwrap_or(f64::NAN)
        });
        let cells: Vec<String> = ts
            .iter()
            .map(|t| {
                g.get(t).map_or("-".into(), |v| {
                    let (m, s) = mean_std(v);
                    format!("{:.2} ± {:.2}", m * 100.0, s * 100.0)
                })
            })
            .collect();
        println!("| {p} | {} |", cells.join(" | "));
    }
    println!();
    println!(
        "Effective compression reached (geometric mean; the search stops at or below the target):\n"
    );
    println!("| pruner | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(ts.len()));
    for p in pruners(runs) {
        let g = grouped(runs, &p, |r| {
            compression(&r.result["effective_compression"])
        });
        let cells: Vec<String> = ts
            .iter()
            .map(|t| {
                g.get(t)
                    .map_or("-".into(), |v| fmt_compression(geo_mean(v)))
            })
            .collect();
        println!("| {p} | {} |", cells.join(" | "));
    }
    println!();
    if !masks.is_empty() {
        println!(
            "Direct compression of the same masks before the effective correction, i.e. what each \
             pruner had to remove to reach the effective target (geometric mean):\n"
        );
        println!("| pruner | {} |", head.join(" | "));
        println!("|---|{}", "---:|".repeat(ts.len()));
        for p in pruners(masks) {
            let g = grouped(masks, &p, |r| compression(&r.result["direct_compression"]));
            let cells: Vec<String> = ts
                .iter()
                .map(|t| {
                    g.get(t)
                        .map_or("-".into(), |v| fmt_compression(geo_mean(v)))
                })
                .collect();
            println!("| {p} | {} |", cells.join(" | "));
        }
        println!();
        // The prune-only runs must have found the masks `shears run` trained.
        let mismatched = runs
            .iter()
            .filter(|r| {
                masks
                    .iter()
                    .find(|m| m.pruner == r.pruner && m.target == r.target && m.seed == r.seed)
                    .is_some_and(|m| {
                        m.result["effective_sparsity"] != r.result["effective_sparsity"]
                    })
            })
            .count();
        if mismatched > 0 {
            eprintln!("warning: {mismatched} mask runs differ from the trained runs' masks");
        }
    }
    let rows: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{},{},{},{},{},{},{}",
                r.pruner,
                r.target,
                r.seed,
                r.result["direct_compression"],
                r.result["effective_compression"],
                r.result["accuracy_after_pruning"],
                r.result["accuracy_after_finetune"]
            )
        })
        .collect();
    write_csv(
        &out.join("accuracy.csv"),
        "pruner,target_effective_compression,seed,direct_compression,effective_compression,accuracy_at_init,test_accuracy",
        &rows,
    )?;

    let all: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.result["accuracy_after_finetune"].as_f64())
        .chain(dense.iter().copied())
        .collect();
    let lo = (all.iter().cloned().fold(1.0, f64::min) * 100.0 - 2.0).max(0.0);
    let hi = (all.iter().cloned().fold(0.0, f64::max) * 100.0 + 1.0).min(100.0);
    let path = out.join("accuracy.svg");
    let root = SVGBackend::new(&path, (820, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = (
        *ts.first().unwrap_or(&10) as f64 / 1.5,
        *ts.last().unwrap_or(&1000) as f64 * 1.5,
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "LeNet-300-100 on Fashion-MNIST: accuracy at effective compression",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x0..x1).log_scale(), lo..hi)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| axis_label(*v))
        .x_desc("effective compression")
        .y_desc("test accuracy (%), mean ± std over seeds")
        .draw()?;
    if !dense.is_empty() {
        let (m, _) = mean_std(dense);
        chart
            .draw_series(LineSeries::new(
                [(x0, m * 100.0), (x1, m * 100.0)],
                BLACK.mix(0.5).stroke_width(1),
            ))?
            .label("dense")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    }
    for (k, p) in pruners(runs).into_iter().enumerate() {
        let color = COLORS[pruner_rank(&p).min(COLORS.len() - 1)];
        // Measured effective compressions match the targets within a few weights; plot at the
        // target, nudged sideways per pruner so error bars do not overlap.
        let nudge = 1.0 + 0.012 * (k as f64 - 3.0);
        let acc = grouped(runs, &p, |r| {
            r.result["accuracy_after_finetune"]
                .as_f64()
                .unwrap_or(f64::NAN)
                * 100.0
        });
        let pts: Vec<(f64, f64, f64)> = acc
            .iter()
            .map(|(t, v)| {
                let (m, s) = mean_std(v);
                (*t as f64 * nudge, m, s)
            })
            .collect();
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, m, _)| (x, m)),
                color.stroke_width(2),
            ))?
            .label(p.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            pts.iter()
                .map(|&(x, m, _)| Circle::new((x, m), 3, color.filled())),
        )?;
        chart.draw_series(pts.iter().map(|&(x, m, s)| {
            PathElement::new(vec![(x, m - s), (x, m + s)], color.stroke_width(1))
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err(format!("usage: {} RUNS_DIR OUT_DIR", args[0]).into());
    }
    let (runs_dir, out) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    std::fs::create_dir_all(&out)?;
    let a = read_runs(&runs_dir.join("a"))?;
    if !a.is_empty() {
        no_training(&a, &out)?;
    }
    let b = read_runs(&runs_dir.join("b"))?;
    let mut dense = Vec::new();
    for entry in std::fs::read_dir(&runs_dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name.starts_with("dense-s") && path.join("result.json").is_file() {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(path.join("result.json"))?)?;
            if let Some(acc) = v["test_accuracy"].as_f64() {
                dense.push(acc);
            }
        }
    }
    if !b.is_empty() {
        let masks = read_runs(&runs_dir.join("b-masks"))?;
        accuracy(&b, &masks, &dense, &out)?;
    }
    if a.is_empty() && b.is_empty() {
        return Err(format!("no results under {}", runs_dir.display()).into());
    }
    Ok(())
}
