"""PAAM at issue 26's scale, from the run directories of `configs/sweeps/paam-10k.toml`:

    python3 scripts/paam10k_table.py RUNS_DIR docs/reproductions/paam

Writes PAGE_DIR/sweep-10k.csv (one row per run, both dense controls included) and the table
between `<!-- paam10k:begin -->` and `<!-- paam10k:end -->` of PAGE_DIR/../paam.md. Every accuracy is
on the full 10,000-image test set. Each method is compared, seed by seed, with the dense network
trained on its own schedule: PAAM's variants with `dense-paam` (6 epochs from scratch + 1),
L1-filter with `dense-control` (3 + 4 fine-tune epochs), MaskSparsity with `dense-ms` (3 + 3 at
the training lr + 1).
"""
import sys
from page_section import write_section
from run_tables import finished_runs, mean_sd, paired_gap, write_csv
from pathlib import Path

ORDER = ["dense-paam", "paam-params", "paam-macs47", "paam-macs57", "paam-independent", "paam-sigmoid",
         "dense-control", "l1-filter", "dense-ms", "masksparsity"]


def variant(cfg):
    m = cfg["method"]
    if m["name"] == "paam":
        if "macs_reduction" in m:
            return f"paam-macs{round(100 * m['macs_reduction'])}"
        if m.get("scorer") == "independent":
            return "paam-independent"
        if m.get("activation") == "sigmoid":
            return "paam-sigmoid"
        return "paam-params"
    if m["name"] == "l1-filter" and m.get("params_reduction", 1) == 0:
        return "dense-paam" if cfg["train"]["epochs"] == 6 else "dense-control"
    if m["name"] == "slimming" and m.get("lambda", 1) == 0:
        return "dense-ms"
    return m["name"]


def control_of(v):
    return {"l1-filter": "dense-control", "masksparsity": "dense-ms"}.get(v, "dense-paam")


def main():
    runs_dir, page_dir = Path(sys.argv[1]), Path(sys.argv[2])
    rows = []
    for d, r, cfg in finished_runs(runs_dir):
        groups = r.get("pruned_groups") or []
        thinnest = min((g for g in groups if g.get("channels")),
                       key=lambda g: g["kept"] / g["channels"], default=None)
        rows.append({
            "variant": variant(cfg), "seed": r["seed"],
            "before_cut": r.get("accuracy_before_pruning"), "after_cut": r.get("accuracy_after_pruning"),
            "final": r.get("accuracy_after_finetune"),
            "params_removed": r["params_reduction"], "macs_removed": r["macs_reduction"],
            # The channel group cut hardest: "<its first producer> kept/channels".
            "thinnest_group": (f"{thinnest['producers'][0]} {thinnest['kept']}/{thinnest['channels']}"
                               if thinnest else None),
            "epochs": cfg["train"]["epochs"] + cfg.get("finetune", {}).get("epochs", 0)
            + cfg["method"].get("mask_epochs", 0) + cfg["method"].get("sparsity_epochs", 0),
            "run": d.name,
        })
    if not rows:
        sys.exit(f"no finished runs under {runs_dir}")
    rows.sort(key=lambda x: (ORDER.index(x["variant"]), x["seed"]))
    write_csv(page_dir / "sweep-10k.csv", rows)

    def pick(v):
        return [x for x in rows if x["variant"] == v]

    def stat(xs, key, scale=100.0, digits=2):
        return mean_sd(xs, key, scale, digits)[0]

    out = ["ResNet-20, 10,000 training images, full 10,000-image test set, 7 training epochs per "
           "run; mean ± standard deviation over the seeds finished. \"vs its dense control\" is the "
           "per-seed difference to the dense network on the same schedule (PAAM's variants: "
           "`dense-paam`; L1-filter: `dense-control`; MaskSparsity: `dense-ms`), mean ± std (pairs). "
           "\"Thinnest group\" is, per seed, the channel group cut hardest, named by its first conv (kept / channels).", "",
           "| variant | seeds | before the cut | right after the cut | final | vs its dense control | params removed % | MACs removed % | thinnest group per seed |",
           "|---|---|---|---|---|---|---|---|---|"]
    for v in ORDER:
        xs = pick(v)
        if not xs:
            out.append(f"| {v} | 0 | - | - | - | - | - | - | - |")
            continue
        dense = v.startswith("dense")
        thinnest = ", ".join(x["thinnest_group"] for x in xs if x["thinnest_group"])
        out.append(" | ".join([
            f"| {v}", str(len(xs)), "-" if dense else stat(xs, "before_cut"),
            "-" if dense else stat(xs, "after_cut"), stat(xs, "final"),
            "-" if dense else paired_gap(xs, pick(control_of(v))),
            stat(xs, "params_removed", 100, 1), stat(xs, "macs_removed", 100, 1),
            "-" if dense or not thinnest else thinnest]) + " |")
    write_section(page_dir.parent / f"{page_dir.name}.md", "paam10k", out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
