//! Human-readable reports on stdout (`--json` prints the same reports as JSON instead).

use crate::cmd::thousands;
use shears_core::structured::Normalization;
use shears_methods::Report;
use shears_methods::report::{StructuredReport, UnstructuredReport, percent};
use shears_methods::steps::rounding::RoundTo;
use shears_methods::steps::structured::{Cut, scope_name};

/// Any report, as its kind prints it (a one-shot unstructured prune prints in `shears prune`).
pub fn report(report: &Report) {
    match report {
        Report::Unstructured(r) => unstructured(r),
        Report::Structured(r) => structured(r),
        Report::Dynamic(r) => {
            for line in &r.lines {
                println!("{line}");
            }
        }
        Report::OneShot(r) => println!(
            "pruned {} to {} sparsity {}; saved to {}",
            r.model, r.target_kind, r.target, r.run_dir
        ),
    }
}

fn normalization_name(n: Normalization) -> &'static str {
    match n {
        Normalization::None => "none",
        Normalization::Mean => "mean",
        Normalization::Max => "max",
        Normalization::Sum => "sum",
        Normalization::Kind => "kind",
    }
}

/// The report of an unstructured run.
pub fn unstructured(report: &UnstructuredReport) {
    let r = &report;
    println!(
        "shears run: {} on {} (seed {}, config {})",
        r.model, r.dataset, r.seed, r.config_hash
    );
    println!(
        "  pruning        {} {} to {} sparsity {} ({}{}{})",
        r.method,
        r.allocation,
        r.target_kind,
        r.target_sparsity,
        r.when,
        if r.rewind { ", rewinding" } else { "" },
        if r.rounds > 1 {
            format!(", {} rounds", r.rounds)
        } else {
            String::new()
        }
    );
    let pct = |v: f64| {
        if v.is_nan() {
            "-".to_string()
        } else {
            format!("{:.2}%", v * 100.0)
        }
    };
    println!(
        "  accuracy       before pruning {}  right after {}  after fine-tuning {}",
        pct(r.accuracy_before_pruning),
        pct(r.accuracy_after_pruning),
        pct(r.accuracy_after_finetune)
    );
    println!(
        "  params         {} total, {} non-zero",
        thousands(r.params),
        thousands(r.nonzero_params)
    );
    println!(
        "  sparsity       direct {:.4} ({:.1}x), effective {:.4} ({:.1}x) of conv+linear weights",
        r.direct_sparsity,
        r.direct_compression.unwrap_or(f64::INFINITY),
        r.effective_sparsity,
        r.effective_compression.unwrap_or(f64::INFINITY)
    );
    println!(
        "  dense MACs     {} ({}); unstructured masks do not reduce measured latency",
        thousands(r.macs),
        r.macs_convention
    );
    println!("  run directory  {}  ({:.0} s)", r.run_dir, r.seconds);
}

fn pct_opt(v: Option<f64>) -> String {
    percent(v)
}

/// The human-readable report on stdout.
pub fn structured(r: &StructuredReport) {
    let s = &r.sizes;
    let cut = match r.spec.cut {
        Cut::ChannelRatio(v) => format!("channel ratio {v}"),
        Cut::ParamsReduction(v) => format!("params reduction {v}"),
        Cut::MacsReduction(v) => format!("MACs reduction {v} ({})", r.spec.convention.name()),
        Cut::LatencyReduction(v) => format!(
            "latency reduction {v} (batch 1, one thread, in {})",
            r.latency_search
                .as_ref()
                .map_or("the target runtime", |l| l.runtime)
        ),
        Cut::Percentile(v) => format!(
            "global percentile {v} of the scores (threshold {})",
            r.threshold.map_or("-".into(), |t| format!("{t:.4e}"))
        ),
        Cut::Threshold(t) => format!("|γ| ≤ {t} (residual groups merged by vote)"),
        Cut::Mask => "the mask's channels".into(),
    };
    println!(
        "structured pruning of {}: {} (importance {}, {} scope, normalisation {}) to {}",
        r.model,
        r.spec.method,
        r.spec.importance.name(),
        scope_name(r.spec.scope),
        normalization_name(r.spec.normalization),
        cut
    );
    println!(
        "  params    {} -> {}  ({:.1}% removed)",
        thousands(s.params_before),
        thousands(s.params_after),
        s.params_reduction * 100.0
    );
    println!(
        "  MACs      {} -> {}  ({:.1}% removed, MACs ratio {:.2}, {})",
        thousands(s.macs_before),
        thousands(s.macs_after),
        s.macs_reduction * 100.0,
        s.macs_ratio,
        s.macs_convention
    );
    println!(
        "  channels  {} -> {} in {} prunable groups ({} pruned, {} groups in all)",
        s.channels_before,
        s.channels_after,
        s.prunable_groups,
        s.pruned_groups.len(),
        s.groups
    );
    println!(
        "  check     compacted vs gated dense on a random input: max |difference| {:.1e} (outputs up to {:.1e}){}",
        s.compaction_max_abs_diff,
        s.compaction_output_scale,
        if s.masked_model_equivalent {
            ""
        } else {
            " (a LayerNorm normalised over removed channels: a zeroed dense model would differ)"
        }
    );
    match (&r.rounding, r.spec.round_to) {
        (Some(c), _) => {
            let tried: Vec<String> = c
                .tried
                .iter()
                .map(|t| match t.median_ms {
                    Some(ms) => format!("{}: {ms:.3}", t.multiple),
                    None => format!("{}: out of reach", t.multiple),
                })
                .collect();
            println!(
                "  rounding  auto: kept counts multiples of {}, the fastest in {} (batch 1, one thread, median ms: dense {:.3}; {}){}",
                c.chosen,
                c.runtime,
                c.dense_ms,
                tried.join(", "),
                c.note.as_ref().map_or(String::new(), |n| format!("; {n}"))
            );
        }
        (None, RoundTo::Multiple(m)) if m > 1 => {
            println!("  rounding  kept counts multiples of {m}");
        }
        _ => {}
    }
    if let Some(l) = &r.latency_search {
        println!(
            "  latency target  {:.1}% less batch-1 latency in {}: measured {:.1}% ({:.3} -> {:.3} ms, {} cuts timed){}",
            l.target * 100.0,
            l.runtime,
            l.reduction * 100.0,
            l.dense_ms,
            l.compacted_ms,
            l.evaluations,
            l.note.as_ref().map_or(String::new(), |n| format!("; {n}"))
        );
    }
    if let Some(details) = &r.details {
        for line in &details.lines {
            println!("{line}");
        }
    }
    let a = &r.accuracy;
    if a.accuracy_before_pruning.is_some() {
        println!(
            "  accuracy  before pruning {}  right after {} (gated dense {})  after fine-tuning {}  ({} test samples)",
            pct_opt(a.accuracy_before_pruning),
            pct_opt(a.accuracy_after_pruning),
            pct_opt(a.accuracy_after_pruning_gated),
            pct_opt(a.accuracy_after_finetune),
            a.test_samples.unwrap_or(0)
        );
    }
    if !r.latency.is_empty() {
        let ort = r.latency.iter().all(|l| l.onnxruntime.is_some());
        println!(
            "  latency (inference, median ms; warm-up {}, {} repeats, best of {} rounds):",
            r.latency_warmup, r.latency_repeats, r.latency_rounds
        );
        print!(
            "    {:>5} {:>7} {:>10} {:>10} {:>14} {:>10} {:>13}",
            "batch", "threads", "dense", "compacted", "latency ratio", "MACs ratio", "lat/MACs"
        );
        if ort {
            print!(
                " {:>9} {:>13} {:>9}",
                "ORT dense", "ORT compacted", "ORT ratio"
            );
        }
        println!();
        for l in &r.latency {
            print!(
                "    {:>5} {:>7} {:>10.3} {:>10.3} {:>14.2} {:>10.2} {:>13.2}",
                l.batch,
                l.threads,
                l.dense_median_ms,
                l.compacted_median_ms,
                l.latency_ratio,
                l.macs_ratio,
                l.ratio_of_ratios
            );
            if let Some(o) = l.onnxruntime.as_ref().filter(|_| ort) {
                print!(
                    " {:>9.3} {:>13.3} {:>9.2}",
                    o.dense_median_ms, o.compacted_median_ms, o.latency_ratio
                );
            }
            println!();
        }
        if let Some(note) = &r.onnxruntime {
            println!("  onnxruntime: {note}");
        }
        for note in &r.latency_notes {
            println!("  latency budget: {note}");
        }
        for l in &r.latency {
            let slower = [
                Some(("shears", l.latency_ratio)),
                l.onnxruntime
                    .as_ref()
                    .map(|o| ("onnxruntime", o.latency_ratio)),
            ];
            for (runtime, ratio) in slower.into_iter().flatten().filter(|(_, q)| *q < 1.0) {
                println!(
                    "  warning: the compacted model is slower than the dense one in {runtime} at batch {}, {} threads (latency ratio {ratio:.2}); kept counts that are multiples of 8 or 16 often run faster (--round-to auto times which)",
                    l.batch, l.threads
                );
            }
        }
    }
    println!(
        "  saved the compacted model to {} (before fine-tuning: {})  ({:.1} s)",
        r.run_dir, r.pruned_dir, r.seconds
    );
}
