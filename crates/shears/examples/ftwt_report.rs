//! Tables and SVG plots of the FTWT reproduction, from the run directories that
//! `scripts/repro_ftwt.sh` writes with the `shears` binary.
//!
//! Usage: `cargo run --release -p shears --example ftwt_report -- RUNS_DIR OUT_DIR`
//! Reads `RUNS_DIR/<model>/ftwt-<mode>-r<r>-s<seed>/{result.json,bench.json}`, writes
//! `results.csv`, `layers.csv` (per-layer mask accuracy and active share) and, per model,
//! `tradeoff-<model>.svg` (accuracy against the MACs reduction, both modes, with the estimate
//! before training) into OUT_DIR, and prints the Markdown table on stdout.

use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

type Res<T> = Result<T, Box<dyn Error>>;

const COLORS: &[RGBColor] = &[
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(120, 120, 120),
];

struct Run {
    model: String,
    mode: String,
    r: String,
    v: Value,
    bench: Value,
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

fn runs(root: &Path) -> Res<Vec<Run>> {
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
            let Some(rest) = name.strip_prefix("ftwt-") else {
                continue;
            };
            let Some((mode, rest)) = rest.split_once("-r") else {
                continue;
            };
            let Some((r, _seed)) = rest.rsplit_once("-s") else {
                continue;
            };
            let (Ok(result), Ok(bench)) = (
                std::fs::read_to_string(dir.join("result.json")),
                std::fs::read_to_string(dir.join("bench.json")),
            ) else {
                continue;
            };
            out.push(Run {
                model: mname.clone(),
                mode: mode.to_string(),
                r: r.to_string(),
                v: serde_json::from_str(&result)?,
                bench: serde_json::from_str(&bench)?,
            });
        }
    }
    out.sort_by(|a, b| {
        (
            a.model.as_str(),
            a.mode.as_str(),
            b.r.parse::<f64>().unwrap_or(0.0),
        )
            .partial_cmp(&(
                b.model.as_str(),
                b.mode.as_str(),
                a.r.parse::<f64>().unwrap_or(0.0),
            ))
            .unwrap()
    });
    Ok(out)
}

fn latency(b: &Value, batch: u64) -> (f64, f64, f64) {
    b["results"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["batch"].as_u64() == Some(batch)))
        .map_or((f64::NAN, f64::NAN, f64::NAN), |r| {
            (f(r, "dense_ms"), f(r, "dynamic_ms"), f(r, "time_reduction"))
        })
}

fn tradeoff(path: &Path, model: &str, runs: &[&Run]) -> Res<()> {
    let root = SVGBackend::new(path, (820, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let accs: Vec<f64> = runs
        .iter()
        .map(|r| 100.0 * f(&r.v, "accuracy_dynamic"))
        .collect();
    let base = runs
        .first()
        .map_or(f64::NAN, |r| 100.0 * f(&r.v, "accuracy_baseline"));
    let lo = accs
        .iter()
        .chain([base].iter())
        .fold(100f64, |a, &b| a.min(b))
        - 2.0;
    let hi = accs
        .iter()
        .chain([base].iter())
        .fold(0f64, |a, &b| a.max(b))
        + 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("FTWT on {model}: accuracy and MACs reduction (paper convention)"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..100f64, lo.max(0.0)..hi.min(100.0))?;
    chart
        .configure_mesh()
        .x_desc("MACs reduction (%)")
        .y_desc("test accuracy (%)")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, base), (100.0, base)],
            BLACK.mix(0.5).stroke_width(1),
        ))?
        .label("dense baseline")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
    let modes: Vec<String> = {
        let mut m: Vec<String> = runs.iter().map(|r| r.mode.clone()).collect();
        m.dedup();
        m
    };
    for (k, mode) in modes.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| &r.mode == mode)
            .map(|r| {
                (
                    100.0 * f(&r.v["achieved"], "paper_reduction"),
                    100.0 * f(&r.v, "accuracy_dynamic"),
                )
            })
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(format!("{mode} (achieved)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        // The estimate before training, at the same accuracy, as open circles.
        let est: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| &r.mode == mode)
            .map(|r| {
                (
                    100.0 * f(&r.v["estimate"], "paper_reduction"),
                    100.0 * f(&r.v, "accuracy_dynamic"),
                )
            })
            .collect();
        chart.draw_series(
            est.iter()
                .map(|&p| Circle::new(p, 5, color.stroke_width(1))),
        )?;
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

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err("usage: ftwt_report RUNS_DIR OUT_DIR".into());
    }
    let (root, out) = (Path::new(&args[1]), Path::new(&args[2]));
    std::fs::create_dir_all(out)?;
    let runs = runs(root)?;
    if runs.is_empty() {
        return Err(format!(
            "no finished FTWT runs (result.json and bench.json) under {}",
            root.display()
        )
        .into());
    }
    let mut csv = String::from(
        "model,mode,r,acc_baseline,acc_dynamic,acc_target_gated_train,mask_accuracy,\
est_paper_red,est_strict_red,paper_red,strict_red,run_macs_red,dense_ms_b1,dynamic_ms_b1,time_red_b1,dense_ms_b64,dynamic_ms_b64,time_red_b64\n",
    );
    let mut layers =
        String::from("model,mode,r,conv,filters,mask_accuracy,active_share,target_share\n");
    let mut md = String::from(
        "| model | mode | r | accuracy (baseline → dynamic) | mask acc. | MACs red. estimated (paper / strict) | achieved (paper / strict) | batch 1 ms dense → dynamic (time red.) | batch 64 ms dense → dynamic (time red.) | time red. ÷ MACs red. (b1) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let pct = |v: f64| format!("{:.1}", 100.0 * v);
    for r in &runs {
        let (d1, q1, t1) = latency(&r.bench, 1);
        let (d64, q64, t64) = latency(&r.bench, 64);
        let (e, a) = (&r.v["estimate"], &r.v["achieved"]);
        let run_red = f(&r.bench, "macs_reduction");
        writeln!(
            csv,
            "{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.3},{:.3},{:.4},{:.2},{:.2},{:.4}",
            r.model,
            r.mode,
            r.r,
            f(&r.v, "accuracy_baseline"),
            f(&r.v, "accuracy_dynamic"),
            f(&r.v, "accuracy_target_gated_train"),
            f(&r.v, "mask_accuracy"),
            f(e, "paper_reduction"),
            f(e, "strict_reduction"),
            f(a, "paper_reduction"),
            f(a, "strict_reduction"),
            run_red,
            d1,
            q1,
            t1,
            d64,
            q64,
            t64
        )?;
        writeln!(
            md,
            "| {} | {} | {} | {} → {} | {} | {} / {} | {} / {} | {:.2} → {:.2} ({}%) | {:.1} → {:.1} ({}%) | {:.2} |",
            r.model,
            r.mode,
            r.r,
            pct(f(&r.v, "accuracy_baseline")),
            pct(f(&r.v, "accuracy_dynamic")),
            pct(f(&r.v, "mask_accuracy")),
            pct(f(e, "paper_reduction")),
            pct(f(e, "strict_reduction")),
            pct(f(a, "paper_reduction")),
            pct(f(a, "strict_reduction")),
            d1,
            q1,
            pct(t1),
            d64,
            q64,
            pct(t64),
            t1 / run_red
        )?;
        for l in r.v["layers"].as_array().into_iter().flatten() {
            writeln!(
                layers,
                "{},{},{},{},{},{:.4},{:.4},{:.4}",
                r.model,
                r.mode,
                r.r,
                l["conv"].as_str().unwrap_or("?"),
                l["filters"],
                f(l, "mask_accuracy"),
                f(l, "active_share"),
                f(l, "target_share")
            )?;
        }
    }
    std::fs::write(out.join("results.csv"), csv)?;
    std::fs::write(out.join("layers.csv"), layers)?;
    let mut by_model: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in &runs {
        by_model.entry(r.model.as_str()).or_default().push(r);
    }
    for (model, rs) in by_model {
        tradeoff(&out.join(format!("tradeoff-{model}.svg")), model, &rs)?;
    }
    print!("{md}");
    Ok(())
}
