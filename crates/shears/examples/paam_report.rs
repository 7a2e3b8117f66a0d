//! Tables and SVG plots of the PAAM reproduction, from the run directories that
//! `scripts/repro_paam.sh` writes with the `shears` binary.
//!
//! Usage: `cargo run --release -p shears --example paam_report -- RUNS_DIR OUT_DIR`
//! Reads `RUNS_DIR/<model>/<method>-params<target>-s<seed>/result.json` (`shears run --json`),
//! the baselines `dense-s<seed>` and controls `dense-control-s<seed>` (`shears train --json`),
//! writes `results.csv` and per model `widths-<model>.svg` (kept share of every channel group,
//! by method), `accuracy-<model>.svg` (test accuracy over the epoch budget) and
//! `scores-<model>.svg` (PAAM's mean score of the kept and the cut filters at every budget
//! step) into OUT_DIR, and prints the Markdown tables (mean ± std over seeds) on stdout.

mod common;

use common::{Res, Run, f, latency, line_plot, mean_std, metric, pm, scan_runs};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const METHODS: &[&str] = &[
    "paam",
    "paam-independent",
    "paam-sigmoid",
    "masksparsity",
    "slimming",
    "l1-filter",
];

fn order(m: &str) -> usize {
    METHODS.iter().position(|x| *x == m).unwrap_or(99)
}

/// Kept share of every pruned-or-scored group of a structured report, by group id.
fn kept_shares(v: &Value) -> BTreeMap<u64, f64> {
    v["pruned_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            (
                g["id"].as_u64().unwrap_or(0),
                f(g, "kept") / f(g, "channels"),
            )
        })
        .collect()
}

/// Test accuracies of the unpruned networks `prefix<seed>` (`shears train` results).
fn dense(root: &Path, model: &str, prefix: &str) -> Vec<(u64, f64)> {
    let Ok(dir) = std::fs::read_dir(root.join(model)) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, f64)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            let seed = n.strip_prefix(prefix)?.parse::<u64>().ok()?;
            let t = std::fs::read_to_string(e.path().join("result.json")).ok()?;
            let v: Value = serde_json::from_str(&t).ok()?;
            Some((seed, f(&v, "test_accuracy")))
        })
        .collect();
    out.sort_by_key(|p| p.0);
    out
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err("usage: paam_report RUNS_DIR OUT_DIR".into());
    }
    let (root, out) = (Path::new(&args[1]), Path::new(&args[2]));
    std::fs::create_dir_all(out)?;
    let all = scan_runs(root, "params")?;
    let mut csv = String::from(
        "model,method,seed,acc_before_cut,acc_after_cut,acc_finetuned,params_after,params_reduction,macs_after,macs_reduction,dense_ms_b1,compacted_ms_b1,dense_ms_b64,compacted_ms_b64,kept_channels\n",
    );
    for r in &all {
        let (d1, c1) = latency(&r.v, 1);
        let (d64, c64) = latency(&r.v, 64);
        let kept: Vec<String> = r.v["pruned_groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| format!("{}/{}", g["kept"], g["channels"]))
            .collect();
        csv.push_str(&format!(
            "{},{},{},{:.4},{:.4},{:.4},{},{:.4},{},{:.4},{:.3},{:.3},{:.2},{:.2},{}\n",
            r.model,
            r.method,
            r.seed,
            f(&r.v, "accuracy_before_pruning"),
            f(&r.v, "accuracy_after_pruning"),
            f(&r.v, "accuracy_after_finetune"),
            r.v["params_after"],
            f(&r.v, "params_reduction"),
            r.v["macs_after"],
            f(&r.v, "macs_reduction"),
            d1,
            c1,
            d64,
            c64,
            kept.join(" ")
        ));
    }
    std::fs::write(out.join("results.csv"), csv)?;

    let mut groups: BTreeMap<(String, usize, String), Vec<&Run>> = BTreeMap::new();
    for r in &all {
        groups
            .entry((r.model.clone(), order(&r.method), r.method.clone()))
            .or_default()
            .push(r);
    }
    println!(
        "| model | method | seeds | right after the cut | after fine-tuning | params removed | MACs removed | latency b1 dense → compacted (ms) | latency b64 dense → compacted (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for ((model, _, method), rs) in &groups {
        let col = |key: &str| rs.iter().map(|r| f(&r.v, key)).collect::<Vec<_>>();
        let lat = |b: u64| {
            let d: Vec<f64> = rs.iter().map(|r| latency(&r.v, b).0).collect();
            let c: Vec<f64> = rs.iter().map(|r| latency(&r.v, b).1).collect();
            format!("{:.2} → {:.2}", mean_std(&d).0, mean_std(&c).0)
        };
        println!(
            "| {model} | {method} | {} | {} | {} | {} | {} | {} | {} |",
            rs.len(),
            pm(&col("accuracy_after_pruning"), 100.0, 2),
            pm(&col("accuracy_after_finetune"), 100.0, 2),
            pm(&col("params_reduction"), 100.0, 1),
            pm(&col("macs_reduction"), 100.0, 1),
            lat(1),
            lat(64)
        );
    }

    let mut models: Vec<String> = all.iter().map(|r| r.model.clone()).collect();
    models.dedup();
    println!();
    println!("| model | unpruned network | seeds | test accuracy |");
    println!("|---|---|---|---|");
    for model in &models {
        for (label, prefix) in [
            (
                "dense baseline (what the other methods start from)",
                "dense-s",
            ),
            (
                "dense control (baseline + 4 epochs: the whole budget)",
                "dense-control-s",
            ),
        ] {
            let acc: Vec<f64> = dense(root, model, prefix).iter().map(|p| p.1).collect();
            if !acc.is_empty() {
                println!(
                    "| {model} | {label} | {} | {} |",
                    acc.len(),
                    pm(&acc, 100.0, 2)
                );
            }
        }
    }

    // Learned widths: kept share per group, mean over seeds, by method.
    for model in &models {
        println!();
        println!("Kept channels per group of {model} (mean over seeds; groups by id):");
        println!();
        let methods: Vec<&(String, usize, String)> =
            groups.keys().filter(|k| &k.0 == model).collect();
        let ids: Vec<u64> = {
            let mut ids: Vec<u64> = methods
                .iter()
                .flat_map(|k| {
                    groups[*k]
                        .iter()
                        .flat_map(|r| kept_shares(&r.v).into_keys())
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let channels: BTreeMap<u64, f64> = all
            .iter()
            .filter(|r| &r.model == model)
            .flat_map(|r| {
                r.v["pruned_groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| (g["id"].as_u64().unwrap_or(0), f(g, "channels")))
                    .collect::<Vec<_>>()
            })
            .collect();
        print!("| method |");
        for id in &ids {
            print!(
                " g{id} ({}) |",
                channels.get(id).copied().unwrap_or(f64::NAN)
            );
        }
        println!();
        println!("|---|{}", "---|".repeat(ids.len()));
        let mut sets = Vec::new();
        for k in &methods {
            let rs = &groups[*k];
            let mean_share = |id: u64| {
                let v: Vec<f64> = rs
                    .iter()
                    .map(|r| kept_shares(&r.v).get(&id).copied().unwrap_or(1.0))
                    .collect();
                mean_std(&v).0
            };
            print!("| {} |", k.2);
            let mut pts = Vec::new();
            for (x, &id) in ids.iter().enumerate() {
                let s = mean_share(id);
                print!(" {:.2} |", s);
                pts.push((x as f64, s));
            }
            println!();
            sets.push((k.2.clone(), pts));
        }
        line_plot(
            &out.join(format!("widths-{model}.svg")),
            &format!("{model}: kept share of each channel group (mean over seeds)"),
            (
                "channel group (by id, input to output)",
                "kept channels / channels",
            ),
            &sets,
        )?;
    }

    // Per model, seed 0: test accuracy over the whole epoch budget, and PAAM's score history.
    for model in &models {
        let pick = |method: &str| {
            all.iter()
                .filter(|r| &r.model == model && r.method == method)
                .min_by_key(|r| r.seed)
        };
        let mut acc_sets = Vec::new();
        let dense_curve: Vec<f64> = [
            root.join(model).join("dense-s0/train"),
            root.join(model).join("dense-control-s0/train"),
        ]
        .iter()
        .flat_map(|d| metric(d, "test_accuracy"))
        .collect();
        if !dense_curve.is_empty() {
            acc_sets.push(("dense (baseline, then control)".to_string(), dense_curve));
        }
        for m in ["paam", "paam-independent", "paam-sigmoid"] {
            if let Some(r) = pick(m) {
                let mut c = metric(&r.dir.join("paam"), "test_accuracy");
                c.extend(metric(&r.dir.join("finetune"), "test_accuracy"));
                acc_sets.push((format!("{m} (from scratch, then fine-tuning)"), c));
            }
        }
        for m in ["masksparsity", "slimming", "l1-filter"] {
            if let Some(r) = pick(m) {
                let mut c = metric(&root.join(model).join("dense-s0/train"), "test_accuracy");
                for phase in ["global", "masksparsity", "sparsity", "finetune"] {
                    c.extend(metric(&r.dir.join(phase), "test_accuracy"));
                }
                acc_sets.push((format!("{m} (baseline, then its phases)"), c));
            }
        }
        let acc_sets: Vec<(String, Vec<(f64, f64)>)> = acc_sets
            .into_iter()
            .map(|(n, c)| {
                let pts = c
                    .iter()
                    .enumerate()
                    .map(|(i, &a)| (i as f64 + 1.0, 100.0 * a))
                    .collect();
                (n, pts)
            })
            .collect();
        line_plot(
            &out.join(format!("accuracy-{model}.svg")),
            &format!("{model}: test accuracy over the epoch budget (seed 0)"),
            ("epoch of the budget", "test accuracy (%)"),
            &acc_sets,
        )?;
        let mut score_sets = Vec::new();
        for m in ["paam", "paam-independent", "paam-sigmoid"] {
            let Some(r) = pick(m) else { continue };
            let rows = r.v["paam"]["history"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let kept: Vec<(f64, f64)> = rows
                .iter()
                .map(|h| (f(h, "epoch"), f(h, "mean_score_kept")))
                .collect();
            let cut: Vec<(f64, f64)> = rows
                .iter()
                .filter(|h| h["mean_score_cut"].is_number())
                .map(|h| (f(h, "epoch"), f(h, "mean_score_cut")))
                .collect();
            score_sets.push((format!("{m}: kept filters"), kept));
            score_sets.push((format!("{m}: cut filters"), cut));
        }
        line_plot(
            &out.join(format!("scores-{model}.svg")),
            &format!("{model}: PAAM's mean score when each epoch's cut is made (seed 0)"),
            ("epoch", "mean score"),
            &score_sets,
        )?;
    }
    Ok(())
}
