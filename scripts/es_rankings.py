"""Direct against effective compression: do pruners rank differently? (effective-sparsity
reproduction, issue 26.)

    python3 scripts/es_rankings.py DIRECT_RUNS ERK_ES_RUNS PAGE_DIR

DIRECT_RUNS: the run directories of `configs/sweeps/effective-sparsity-direct.toml` (pruned at
initialisation to a *direct* compression, masks as made, then trained); ERK_ES_RUNS: those of
`configs/sweeps/effective-sparsity-erk-es.toml` (random with the paper's ERK, pruned to an
*effective* compression). PAGE_DIR holds `accuracy.csv`, the effective-target runs of the other
seven pruners (part b, written by the `effective_sparsity_plots` example from its runs).

Writes PAGE_DIR/direct.csv and PAGE_DIR/erk-es.csv (one row per run, read from each run's
result.json), and the tables between the markers `<!-- es_rankings:begin -->` and
`<!-- es_rankings:end -->` of PAGE_DIR/../effective-sparsity.md. Nothing is typed by hand.
"""
import csv, json, math, statistics, sys
from page_section import write_section
from pathlib import Path

TARGETS = [10, 30, 100, 300, 1000]
ORDER = ["random-uniform", "random-erk", "random-erk-es", "random-igq", "snip", "synflow",
         "magnitude-init", "magnitude-trained"]


def pruner(r):
    m, a = r["method"], r.get("allocation", "global")
    if m == "random":
        return f"random-{a}"
    if m == "magnitude":
        return "magnitude-trained" if r.get("when") == "after" else "magnitude-init"
    return m


def runs(d):
    out = []
    for f in sorted(Path(d).glob("*/result.json")):
        r = json.loads(f.read_text())
        c = round(1 / (1 - r["target_sparsity"]))
        out.append({"pruner": pruner(r), "target": c, "seed": r["seed"],
                    "direct": r["direct_compression"] or math.inf,
                    "effective": r["effective_compression"] or math.inf,
                    "accuracy": r["accuracy_after_finetune"], "run": f.parent.name})
    return out


def gmean(xs):
    xs = list(xs)
    if any(math.isinf(x) for x in xs):
        return math.inf
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def mean_sd(xs):
    xs = [100 * x for x in xs]
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return statistics.mean(xs), sd


def fmt_c(x):
    return "∞" if math.isinf(x) else (f"{x:.1f}" if x < 100 else f"{x:.0f}")


def table(rows, key, fmt, pruners):
    head = "| pruner | " + " | ".join(f"{c}x" for c in TARGETS) + " |"
    lines = [head, "|---|" + "---:|" * len(TARGETS)]
    for p in pruners:
        cells = []
        for c in TARGETS:
            sel = [r for r in rows if r["pruner"] == p and r["target"] == c]
            cells.append(fmt([r[key] for r in sel]) if sel else "-")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return lines


def ranking(rows, c, pruners):
    """Pruners by mean accuracy at target c, best first."""
    means = {}
    for p in pruners:
        sel = [r["accuracy"] for r in rows if r["pruner"] == p and r["target"] == c]
        if sel:
            means[p] = statistics.mean(sel)
    return sorted(means, key=lambda p: -means[p]), means


def kendall(a, b):
    """Kendall's tau between two orders of the same items."""
    items = [x for x in a if x in b]
    pa = {x: i for i, x in enumerate(items)}
    pb = {x: i for i, x in enumerate([x for x in b if x in pa])}
    n, s = len(items), 0
    for i in range(n):
        for j in range(i + 1, n):
            x, y = items[i], items[j]
            s += 1 if (pa[x] - pa[y]) * (pb[x] - pb[y]) > 0 else -1
    return s / (n * (n - 1) / 2) if n > 1 else float("nan")


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pruner", "target_compression", "seed", "direct_compression",
                    "effective_compression", "test_accuracy", "run"])
        for r in sorted(rows, key=lambda r: (ORDER.index(r["pruner"]), r["target"], r["seed"])):
            w.writerow([r["pruner"], r["target"], r["seed"], r["direct"], r["effective"],
                        r["accuracy"], r["run"]])


def main():
    direct_dir, erk_es_dir, page_dir = map(Path, sys.argv[1:4])
    direct = runs(direct_dir)
    erk_es = runs(erk_es_dir)
    effective = erk_es[:]
    with open(page_dir / "accuracy.csv") as f:
        for r in csv.DictReader(f):
            effective.append({"pruner": r["pruner"], "target": int(r["target_effective_compression"]),
                              "seed": int(r["seed"]), "direct": float(r["direct_compression"]),
                              "effective": float(r["effective_compression"]),
                              "accuracy": float(r["test_accuracy"])})
    write_csv(page_dir / "direct.csv", direct)
    write_csv(page_dir / "erk-es.csv", erk_es)
    pruners = [p for p in ORDER if any(r["pruner"] == p for r in direct + effective)]
    acc = lambda xs: "{:.2f} ± {:.2f}".format(*mean_sd(xs))
    out = [f"Direct-target runs: {len(direct)} (`{direct_dir.name}`), effective-target runs of "
           f"`random-erk-es`: {len(erk_es)}; mean ± standard deviation over seeds, in %.", "",
           "**Test accuracy at a direct compression** (masks as the pruner makes them):", ""]
    out += table(direct, "accuracy", acc, pruners)
    out += ["", "**Effective compression of those same masks** (geometric mean over seeds; ∞: no "
            "input-output path left in some seed):", ""]
    out += table(direct, "effective", lambda xs: fmt_c(gmean(xs)), pruners)
    out += ["", "**Test accuracy at an effective compression** (part b: pruned until the "
            "*effective* compression reaches the target, inactive weights removed; "
            "`random-erk-es` from this sweep, the others from `accuracy.csv`):", ""]
    out += table(effective, "accuracy", acc, pruners)
    out += ["", "**Rankings** (best first, by mean accuracy) at each compression, direct target "
            "against effective target, and Kendall's τ between the two orders (1: the same "
            "order):", "", "| compression | ranked at a direct target | ranked at an effective target | τ |",
            "|---|---|---|---:|"]
    for c in TARGETS:
        a, _ = ranking(direct, c, pruners)
        b, _ = ranking(effective, c, pruners)
        short = lambda xs: ", ".join(xs)
        out.append(f"| {c}x | {short(a)} | {short(b)} | {kendall(a, b):.2f} |")
    write_section(page_dir.parent / f"{page_dir.name}.md", "es_rankings", out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
