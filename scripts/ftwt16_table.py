"""FTWT at issue 26's scale, from the run directories of `configs/sweeps/ftwt-16.toml` and
`configs/sweeps/ftwt-16-static.toml`:

    python3 scripts/ftwt16_table.py FTWT_RUNS STATIC_RUNS docs/reproductions/ftwt

Writes PAGE_DIR/sweep-16.csv (one row per run, the static controls included) and the tables
between `<!-- ftwt16:begin -->` and `<!-- ftwt16:end -->` of PAGE_DIR/../ftwt.md. Every accuracy
is on the full 10,000-image test set except the target-gated one, which is the baseline gated by
its own targets on the training images the MACs estimate is taken over. Both sweeps may use one runs
directory; a missing STATIC_RUNS directory leaves its rows pending.
"""
import statistics, sys
from page_section import write_section
from run_tables import finished_runs, mean_sd, paired_gap, write_csv
from pathlib import Path


def ftwt_row(d, r, cfg):
    heads = "softmax" if cfg["method"].get("softmax", True) else "raw-mean"
    return {
        "variant": f"ftwt-{heads}", "r": r["r"], "seed": r["seed"],
        "baseline": r["accuracy_baseline"], "target_gated": r["accuracy_target_gated_train"],
        "final": r["accuracy_dynamic"],
        "estimate_paper": r["estimate"]["paper_reduction"], "estimate_strict": r["estimate"]["strict_reduction"],
        "macs_removed_paper": r["achieved"]["paper_reduction"], "macs_removed_strict": r["achieved"]["strict_reduction"],
        "mask_accuracy": r["mask_accuracy"], "keep_one": cfg["method"].get("keep_one", True),
        "epochs_after_baseline": r["epochs"], "run": d.name,
    }


def static_row(d, r, cfg):
    m = cfg["method"]
    v = m["name"]
    epochs = cfg.get("finetune", {}).get("epochs", 0)
    if m["name"] == "masksparsity":
        epochs += m.get("mask_epochs", 0) + m.get("sparsity_epochs", 0)
    return {
        "variant": v, "r": "", "seed": r["seed"], "baseline": r["accuracy_before_pruning"],
        "target_gated": None, "final": r["accuracy_after_finetune"],
        "estimate_paper": None, "estimate_strict": None,
        "macs_removed_paper": None, "macs_removed_strict": r["macs_reduction"],
        "mask_accuracy": None, "keep_one": "", "epochs_after_baseline": epochs, "run": d.name,
    }


def main():
    ftwt_dir, static_dir, page_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    rows = []
    # Both sweeps may share one runs directory (and so one baseline per seed): each run is
    # classified by its own config, every directory read once.
    for runs_dir in dict.fromkeys(d.resolve() for d in (ftwt_dir, static_dir) if d.is_dir()):
        for d, r, cfg in finished_runs(runs_dir):
            rows.append((ftwt_row if cfg["method"]["name"] == "ftwt" else static_row)(d, r, cfg))
    if not rows:
        sys.exit(f"no finished runs under {ftwt_dir}")
    order = ["ftwt-softmax", "ftwt-raw-mean", "l1-filter", "masksparsity"]
    rows.sort(key=lambda x: (order.index(x["variant"]), -float(x["r"] or 0), x["seed"]))
    write_csv(page_dir / "sweep-16.csv", rows)

    def pick(v, r=None):
        return [x for x in rows if x["variant"] == v and (r is None or x["r"] == r)]

    stat = mean_sd

    out = ["ResNet-20, decoupled, 16 dynamic epochs after a 3-epoch baseline, 5,000 training images; "
           "accuracies on the full 10,000-image test set (the target-gated one: the baseline gated by "
           "its own targets on the first 1,000 training images: at r = 1 that is the ungated baseline on those images, and the bracket beside the r = 0.9 value is the paired drop from it, the price of the targets alone); mean ± standard deviation over the seeds "
           "finished; \"vs r = 1\" is the difference to the same heads' r = 1 run of the same seed "
           "(the equal-budget control), mean ± std over seeds (number of pairs).", "",
           "| heads | r | seeds | baseline | estimate: MACs removed paper / strict % | estimate: accuracy target-gated | dynamic accuracy | vs r = 1 | achieved MACs removed paper / strict % | mask accuracy |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for v in ["ftwt-softmax", "ftwt-raw-mean"]:
        for r in [1.0, 0.9]:
            xs = pick(v, r)
            if not xs:
                out.append(f"| {v[5:]} | {r} | 0 | - | - | - | - | - | - | - |")
                continue
            gap = "-" if r == 1.0 else paired_gap(xs, pick(v, 1.0))
            out.append(" | ".join([
                f"| {v[5:]}", str(r), str(len(xs)), stat(xs, "baseline")[0],
                f"{stat(xs, 'estimate_paper', 100, 1)[0]} / {stat(xs, 'estimate_strict', 100, 1)[0]}",
                stat(xs, "target_gated")[0] + ("" if r == 1.0 else
                                               f" ({paired_gap(xs, pick(v, 1.0), 'target_gated')})"),
                stat(xs, "final")[0], gap,
                f"{stat(xs, 'macs_removed_paper', 100, 1)[0]} / {stat(xs, 'macs_removed_strict', 100, 1)[0]}",
                stat(xs, "mask_accuracy")[0]]) + " |")
    # The static controls were cut to one FTWT row's MACs: compare them with those heads.
    static = [x for x in rows if x["variant"] in ("l1-filter", "masksparsity")]
    matched = "ftwt-softmax"
    if static:
        target = statistics.mean(x["macs_removed_strict"] for x in static)
        reached = {v: statistics.mean(x["macs_removed_strict"] for x in pick(v, 0.9))
                   for v in ("ftwt-softmax", "ftwt-raw-mean") if pick(v, 0.9)}
        if reached:
            matched = min(reached, key=lambda v: abs(reached[v] - target))
    h = matched[5:]
    out += ["", "Static pruning cut to the MACs FTWT reaches (strict count: every channel that enters "
            f"a conv, the classifier included) with {h} heads at r = 0.9, on the same baseline and "
            "the same 16 epochs after it; each seed is paired with the same seed's FTWT runs with "
            f"{h} heads.", "",
            f"| method | seeds | final accuracy | MACs removed % | vs FTWT r = 1 ({h}) | vs FTWT r = 0.9 ({h}) |",
            "|---|---|---|---|---|---|"]
    for v in ["l1-filter", "masksparsity"]:
        xs = pick(v)
        if not xs:
            out.append(f"| {v} | 0 | - | - | - | - |")
            continue
        out.append(" | ".join([
            f"| {v}", str(len(xs)), stat(xs, "final")[0], stat(xs, "macs_removed_strict", 100, 1)[0],
            paired_gap(xs, pick(matched, 1.0)), paired_gap(xs, pick(matched, 0.9))]) + " |")
    write_section(page_dir.parent / f"{page_dir.name}.md", "ftwt16", out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
