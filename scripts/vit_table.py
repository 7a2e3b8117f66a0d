#!/usr/bin/env python3
"""The table of docs/transformers.md from the run directories of
configs/sweeps/vit-fashion-mnist.toml: per variant, accuracy (dense, right after the cut, after
fine-tuning), parameters, MACs and the measured latency of the dense and the compacted network in
shears' engine and in onnxruntime at batch 1 and 64, one thread.

    python3 scripts/vit_table.py runs/vit-fashion-mnist
"""
import json
import sys
from pathlib import Path


def variant(run: Path) -> str:
    """The sweep variant a run belongs to, from the ignore list in its resolved config."""
    path = run / "config.toml"
    if not path.exists():
        return run.name
    config = path.read_text()
    if "position_embedding" in config:
        return "heads + MLP channels (width kept)"
    if "attention" in config and "gelu" in config:
        return "embedding width (heads and MLP kept)"
    return run.name


def ms(row, key, ort=False):
    src = row.get("onnxruntime") if ort else row
    if not src or src.get(key) is None:
        return "-"
    return f"{src[key]:.2f}"


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/vit-fashion-mnist")
    results = sorted(p for p in root.glob("*/result.json"))
    if not results:
        sys.exit(f"no finished runs (result.json) under {root}")
    print("| pruned | accuracy dense → cut → fine-tuned % | params | MACs (conv+linear) "
          "| shears b1 ms | shears b64 ms | onnxruntime b1 ms | onnxruntime b64 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for path in results:
        r = json.loads(path.read_text())
        if "params_before" not in r:  # not a structured run
            continue
        rows = {row["batch"]: row for row in r.get("latency", []) if row["threads"] == 1}
        acc = [r.get(k) for k in ("accuracy_before_pruning", "accuracy_after_pruning",
                                  "accuracy_after_finetune")]
        acc = " → ".join("-" if a is None else f"{100 * a:.2f}" for a in acc)
        lat = []
        for ort in (False, True):
            for b in (1, 64):
                row = rows.get(b)
                lat.append("-" if row is None else
                           f"{ms(row, 'dense_median_ms', ort)} → {ms(row, 'compacted_median_ms', ort)}")
        print(f"| {variant(path.parent)} | {acc} | {r['params_before']:,} → {r['params_after']:,} "
              f"| {r['macs_before'] / 1e6:.1f}M → {r['macs_after'] / 1e6:.1f}M "
              f"({100 * r['macs_reduction']:.1f}% removed) | " + " | ".join(lat) + " |")


if __name__ == "__main__":
    main()
