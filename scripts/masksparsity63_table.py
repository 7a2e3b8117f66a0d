"""The MaskSparsity comparison at issue 26's scale, from the run directories of
`configs/sweeps/masksparsity-63.toml`:

    python3 scripts/masksparsity63_table.py RUNS_DIR docs/reproductions/masksparsity

Writes PAGE_DIR/sweep-63.csv (one row per run) and the table between the markers
`<!-- masksparsity63:begin -->` and `<!-- masksparsity63:end -->` of PAGE_DIR/../masksparsity.md.
Accuracies are on the full 10,000-image test set; "train loss before the cut" is the last epoch of
the phase before the cut (the sparsity phase; the baseline for L1-filter).
"""
import json, sys
from page_section import write_section
from run_tables import finished_runs, mean_sd, write_csv
from pathlib import Path

ORDER = ["dense-control", "masksparsity-target", "masksparsity-tau", "slimming", "l1-filter"]


def last(path):
    lines = [l for l in Path(path).read_text().splitlines() if l.strip()]
    return json.loads(lines[-1]) if lines else {}


def variant(cfg):
    m = cfg["method"]
    if m["name"] == "masksparsity":
        return "masksparsity-tau" if m.get("cut") == "threshold" else "masksparsity-target"
    if m["name"] == "slimming":
        return "dense-control" if m.get("lambda", 1) == 0 else "slimming"
    return m["name"]


def phase_before_cut(d, v):
    for sub in (["masksparsity"] if v.startswith("masksparsity") else
                ["sparsity"] if v in ("slimming", "dense-control") else ["train"]):
        f = d / sub / "metrics.jsonl"
        if f.is_file():
            return last(f)
    return {}


def main():
    runs_dir, page_dir = Path(sys.argv[1]), Path(sys.argv[2])
    rows = []
    for d, r, cfg in finished_runs(runs_dir):
        v = variant(cfg)
        base = last(d / "train" / "metrics.jsonl") if (d / "train" / "metrics.jsonl").is_file() else {}
        before = phase_before_cut(d, v)
        rows.append({
            "variant": v, "seed": r["seed"],
            "baseline": base.get("test_accuracy"),
            "before_cut": r["accuracy_before_pruning"], "after_cut": r["accuracy_after_pruning"],
            "final": r["accuracy_after_finetune"],
            "train_loss_before_cut": before.get("train_loss"),
            "macs_removed": r["macs_reduction"], "params_removed": r["params_reduction"],
            "run": d.name,
        })
    rows.sort(key=lambda x: (ORDER.index(x["variant"]), x["seed"]))
    write_csv(page_dir / "sweep-63.csv", rows)

    def stat(v, key, scale=100.0, digits=2):
        return mean_sd([x for x in rows if x["variant"] == v], key, scale, digits)

    control = stat("dense-control", "final")[1]
    out = ["Full 10,000-image test set; mean ± standard deviation over the seeds finished.", "",
           "| variant | seeds | baseline | before the cut | right after the cut | final | vs dense control | train loss before the cut | MACs removed % | params removed % |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for v in ORDER:
        n = sum(1 for x in rows if x["variant"] == v)
        if not n:
            out.append(f"| {v} | 0 | - | - | - | - | - | - | - | - |")
            continue
        final_s, final_m = stat(v, "final")
        gap = "-" if control is None or v == "dense-control" else f"{final_m - control:+.2f}"
        out.append(" | ".join([
            f"| {v}", str(n), stat(v, "baseline")[0], stat(v, "before_cut")[0],
            stat(v, "after_cut")[0], final_s, gap,
            stat(v, "train_loss_before_cut", 1.0, 3)[0], stat(v, "macs_removed", 100.0, 1)[0],
            stat(v, "params_removed", 100.0, 1)[0]]) + " |")
    write_section(page_dir.parent / f"{page_dir.name}.md", "masksparsity63", out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
