//! Tables and SVG plots of the MaskSparsity reproduction, from the run directories that
//! `scripts/repro_masksparsity.sh` writes with the `shears` binary.
//!
//! Usage: `cargo run --release -p shears --example masksparsity_report -- RUNS_DIR OUT_DIR`
//! Reads `RUNS_DIR/<model>/<method>-macs<target>-s<seed>/result.json` (`shears run --json`) and
//! the models saved next to them (`dense/`, `sparse/`), writes `results.csv`, one
//! `gamma-<model>.svg` (histograms of |γ| before and after sparsity training) and one
//! `loss-<model>.svg` (training loss of the sparsity phases) per model into OUT_DIR, and prints
//! the Markdown table (mean ± std over seeds) on stdout.

mod common;

use common::{COLORS, Res, Run, f, latency, line_plot, mean_std, metric, pm, scan_runs};
use plotters::prelude::*;
use serde_json::Value;
use shears_core::artifact::load_model;
use shears_core::graph::ParamKind;
use std::collections::BTreeMap;
use std::path::Path;

const METHODS: &[&str] = &["masksparsity", "slimming", "l1-filter"];

/// Training loss of the network just before the cut.
fn loss_before_cut(r: &Run) -> f64 {
    if let Some(l) = r.v["masksparsity"]["train_loss_before_cut"].as_f64() {
        return l;
    }
    let phase = if r.method == "slimming" {
        "sparsity"
    } else {
        ""
    };
    if phase.is_empty() {
        // L1-filter cuts the baseline: its last training epoch.
        return last_loss(
            &r.dir
                .parent()
                .unwrap()
                .join(format!("dense-s{}/train", r.seed)),
        );
    }
    last_loss(&r.dir.join(phase))
}

fn losses(dir: &Path) -> Vec<f64> {
    metric(dir, "train_loss")
}

fn last_loss(dir: &Path) -> f64 {
    losses(dir).last().copied().unwrap_or(f64::NAN)
}

fn gammas(dir: &Path) -> Vec<f64> {
    let Ok(m) = load_model(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for spec in m.graph.param_specs() {
        if spec.kind == ParamKind::BnScale {
            out.extend(m.weights[&spec.name].iter().map(|v| v.abs() as f64));
        }
    }
    out
}

fn histogram(path: &Path, title: &str, sets: &[(String, Vec<f64>)]) -> Res<()> {
    let top = sets
        .iter()
        .flat_map(|s| s.1.iter())
        .fold(0f64, |a, &b| a.max(b))
        .max(1e-3)
        * 1.02;
    let bins = 40;
    let w = top / bins as f64;
    let counts: Vec<Vec<f64>> = sets
        .iter()
        .map(|(_, v)| {
            let mut c = vec![0f64; bins];
            for &x in v {
                c[((x / w) as usize).min(bins - 1)] += 1.0;
            }
            let n = v.len().max(1) as f64;
            c.iter().map(|k| k / n).collect()
        })
        .collect();
    let ymax = counts.iter().flatten().fold(0f64, |a, &b| a.max(b)) * 1.1;
    let root = SVGBackend::new(path, (820, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..top, 0f64..ymax.max(1e-3))?;
    chart
        .configure_mesh()
        .x_desc("|γ| of every BatchNorm scale")
        .y_desc("share of scales")
        .draw()?;
    for (k, ((name, _), c)) in sets.iter().zip(&counts).enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<(f64, f64)> = c
            .iter()
            .enumerate()
            .flat_map(|(i, &y)| [(i as f64 * w, y), ((i + 1) as f64 * w, y)])
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err("usage: masksparsity_report RUNS_DIR OUT_DIR".into());
    }
    let (root, out) = (Path::new(&args[1]), Path::new(&args[2]));
    std::fs::create_dir_all(out)?;
    let all = scan_runs(root, "macs")?;
    let mut csv = String::from(
        "model,method,macs_target,seed,acc_before_cut,acc_after_cut,acc_finetuned,params_after,macs_after,macs_reduction,params_reduction,train_loss_before_cut,dense_ms_b1,compacted_ms_b1,dense_ms_b64,compacted_ms_b64\n",
    );
    for r in &all {
        let (d1, c1) = latency(&r.v, 1);
        let (d64, c64) = latency(&r.v, 64);
        csv.push_str(&format!(
            "{},{},{},{},{:.4},{:.4},{:.4},{},{},{:.4},{:.4},{:.4},{:.3},{:.3},{:.2},{:.2}\n",
            r.model,
            r.method,
            r.target,
            r.seed,
            f(&r.v, "accuracy_before_pruning"),
            f(&r.v, "accuracy_after_pruning"),
            f(&r.v, "accuracy_after_finetune"),
            r.v["params_after"],
            r.v["macs_after"],
            f(&r.v, "macs_reduction"),
            f(&r.v, "params_reduction"),
            loss_before_cut(r),
            d1,
            c1,
            d64,
            c64
        ));
    }
    std::fs::write(out.join("results.csv"), csv)?;

    // Mean ± std over seeds.
    let mut groups: BTreeMap<(String, String, String), Vec<&Run>> = BTreeMap::new();
    for r in &all {
        groups
            .entry((r.model.clone(), r.target.clone(), r.method.clone()))
            .or_default()
            .push(r);
    }
    println!(
        "| model | MACs target | method | seeds | before cut | right after cut | after fine-tuning | train loss before cut | params removed | MACs removed | latency b1 dense → compacted (ms) | latency b64 dense → compacted (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let order = |m: &str| METHODS.iter().position(|x| *x == m).unwrap_or(99);
    let mut keys: Vec<_> = groups.keys().cloned().collect();
    keys.sort_by(|a, b| (&a.0, &a.1, order(&a.2)).cmp(&(&b.0, &b.1, order(&b.2))));
    for k in keys {
        let rs = &groups[&k];
        let col = |key: &str| rs.iter().map(|r| f(&r.v, key)).collect::<Vec<_>>();
        let lat = |b: u64| {
            let d: Vec<f64> = rs.iter().map(|r| latency(&r.v, b).0).collect();
            let c: Vec<f64> = rs.iter().map(|r| latency(&r.v, b).1).collect();
            format!("{:.2} → {:.2}", mean_std(&d).0, mean_std(&c).0)
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            k.0,
            k.1,
            k.2,
            rs.len(),
            pm(&col("accuracy_before_pruning"), 100.0, 2),
            pm(&col("accuracy_after_pruning"), 100.0, 2),
            pm(&col("accuracy_after_finetune"), 100.0, 2),
            pm(
                &rs.iter().map(|r| loss_before_cut(r)).collect::<Vec<_>>(),
                1.0,
                3
            ),
            pm(&col("params_reduction"), 100.0, 1),
            pm(&col("macs_reduction"), 100.0, 1),
            lat(1),
            lat(64)
        );
    }

    // The unpruned networks: the shared baseline and the dense control of the same budget.
    println!();
    println!("| model | network | seeds | test accuracy |");
    println!("|---|---|---|---|");
    let mut models: Vec<String> = all.iter().map(|r| r.model.clone()).collect();
    models.dedup();
    for model in &models {
        for (label, prefix) in [
            ("dense baseline (3 epochs)", "dense-s"),
            ("dense control (3 + 4 epochs, unpruned)", "dense-control-s"),
        ] {
            let acc: Vec<f64> = std::fs::read_dir(root.join(model))?
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.strip_prefix(prefix)
                        .is_some_and(|s| s.parse::<u64>().is_ok())
                })
                .filter_map(|e| std::fs::read_to_string(e.path().join("result.json")).ok())
                .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
                .map(|v| f(&v, "test_accuracy"))
                .collect();
            if !acc.is_empty() {
                println!(
                    "| {model} | {label} | {} | {} |",
                    acc.len(),
                    pm(&acc, 100.0, 2)
                );
            }
        }
    }

    // Plots per model, from the first seed at the first target.
    let models: Vec<String> = {
        let mut m: Vec<String> = all.iter().map(|r| r.model.clone()).collect();
        m.dedup();
        m
    };
    for model in models {
        let pick = |method: &str| {
            all.iter()
                .filter(|r| r.model == model && r.method == method)
                .min_by(|a, b| (a.seed, &a.target).cmp(&(b.seed, &b.target)))
        };
        let mut sets = Vec::new();
        if let Some(r) = pick("masksparsity") {
            sets.push(("baseline".to_string(), gammas(&r.dir.join("dense"))));
            sets.push((
                format!(
                    "after global sparsity training (the mask), macs{}",
                    r.target
                ),
                gammas(&r.dir.join("global-sparse")),
            ));
            sets.push((
                format!("after MaskSparsity training, macs{}", r.target),
                gammas(&r.dir.join("sparse")),
            ));
        }
        if let Some(r) = pick("slimming") {
            sets.push((
                format!("after Slimming sparsity training, macs{}", r.target),
                gammas(&r.dir.join("sparse")),
            ));
        }
        sets.retain(|s| !s.1.is_empty());
        if !sets.is_empty() {
            histogram(
                &out.join(format!("gamma-{model}.svg")),
                &format!("{model}: BatchNorm |γ| (seed 0)"),
                &sets,
            )?;
        }
        let mut loss_sets = Vec::new();
        if let Some(r) = pick("masksparsity") {
            loss_sets.push((
                "global sparsity training (mask)".to_string(),
                losses(&r.dir.join("global")),
            ));
            loss_sets.push((
                "MaskSparsity training".to_string(),
                losses(&r.dir.join("masksparsity")),
            ));
            loss_sets.push((
                "MaskSparsity: fine-tuning".to_string(),
                losses(&r.dir.join("finetune")),
            ));
        }
        if let Some(r) = pick("slimming") {
            loss_sets.push((
                "Slimming sparsity training".to_string(),
                losses(&r.dir.join("sparsity")),
            ));
        }
        loss_sets.retain(|s| !s.1.is_empty());
        if !loss_sets.is_empty() {
            let sets: Vec<(String, Vec<(f64, f64)>)> = loss_sets
                .into_iter()
                .map(|(n, v)| {
                    let pts = v
                        .iter()
                        .enumerate()
                        .map(|(i, &y)| (i as f64 + 1.0, y))
                        .collect();
                    (n, pts)
                })
                .collect();
            line_plot(
                &out.join(format!("loss-{model}.svg")),
                &format!("{model}: training loss of the phases (seed 0)"),
                ("epoch of the phase", "training loss"),
                &sets,
            )?;
        }
    }
    Ok(())
}
