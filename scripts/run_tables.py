"""What the reproduction-table scripts share: the finished runs of a runs directory, a CSV of
their rows, and the two statistics every table shows (mean ± standard deviation over seeds, and
the per-seed difference to a control run of the same seed)."""
import csv, json, statistics, tomllib
from pathlib import Path


def finished_runs(runs_dir):
    """(run directory, its result.json, its config.toml) for every finished run, in name order."""
    for f in sorted(Path(runs_dir).glob("*/result.json")):
        d = f.parent
        yield d, json.loads(f.read_text()), tomllib.loads((d / "config.toml").read_text())


def write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def mean_sd(rows, key, scale=100.0, digits=2):
    """"mean ± sd" of `key` over the rows that have it (sd 0 for one row), and the mean; ("-", None)
    for none."""
    vals = [x[key] * scale for x in rows if x[key] is not None]
    if not vals:
        return "-", None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    m = statistics.mean(vals)
    return f"{m:.{digits}f} ± {sd:.{digits}f}", m


def paired_gap(rows, control, key="final"):
    """Each row against the control row of its seed, in points: "mean ± sd (pairs)", or "-"."""
    by_seed = {c["seed"]: c[key] for c in control}
    d = [100 * (x[key] - by_seed[x["seed"]]) for x in rows if x["seed"] in by_seed]
    if not d:
        return "-"
    sd = statistics.stdev(d) if len(d) > 1 else 0.0
    return f"{statistics.mean(d):+.2f} ± {sd:.2f} ({len(d)})"
