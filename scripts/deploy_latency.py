"""Deployment latency: shears' engine against onnxruntime, dense and pruned, as BENCHMARKS.md shows.

    /work/venv/bin/python scripts/deploy_latency.py [--work DIR] [--shears PATH] [--repeats 30]
        [--ftwt RUN_DIR] [--imagenet] [--out FILE]

Needs PyTorch, torchvision and onnxruntime in the venv that runs it (outside the repo) and a
release build of shears (--shears, default $CARGO_TARGET_DIR/release/shears, else
~/.cache/shears/target/release/shears). Every measurement is batch 1, one thread, median of
--repeats runs after 3 warm-ups, best of 3 rounds, made by shears itself (`shears prune` and
`shears bench`, which time onnxruntime through the library of this venv's onnxruntime package).
Random weights: latency does not depend on their values.

Tables, in Markdown on stdout (and --out):

  machine      CPU model and vector flags, and the fp32 GEMM peak: torch.mm of 2048x2048
               matrices on 1 and 2 threads, best of 5, in GFLOP/s.
  torchvision  mobilenet_v2, resnet18 and resnet50 exported at 3x64x64 as
               scripts/torchvision_coverage.py exports them, pruned by `shears prune --method
               l1-filter --macs-reduction 0.5` with --round-to 1, 8, 16 and auto (the default);
               dense and compacted in onnxruntime and in shears.
  zoo          `shears bench` of every zoo CNN: shears against onnxruntime, dense.
  resnet-56    the compacted ResNet-56 of scripts/bench_structured.sh (3x32x32, l1-filter, half
               the MACs) with --round-to 1 and auto, in both runtimes.
  ftwt         with --ftwt RUN_DIR (a finished FTWT run, e.g. configs/ftwt-quickstart.toml):
               `shears bench --dynamic`: dynamic inference against the dense network in shears
               and in onnxruntime.
  imagenet     with --imagenet: torchvision resnet50 at 3x224x224, `shears prune` with the
               default settings (latency at batch 1 and 64, 1 and 2 threads, 30 s budget each),
               its wall time and what its latency budget changed.
"""

import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from torchvision_coverage import default_shears, export_one  # noqa: E402

ZOO = [("lenet-5", "1x28x28"), ("small-cnn", "1x28x28"), ("resnet-20", "3x32x32"),
       ("resnet-56", "3x32x32"), ("vgg-16", "3x32x32"), ("mobilenet-v2", "3x32x32"),
       ("resnet-18", "3x32x32")]
TORCHVISION = ["mobilenet_v2", "resnet18", "resnet50"]
ROUNDINGS = ["1", "8", "16", "auto"]


def run(cmd, timeout=1800):
    t0 = time.time()
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: {out.stderr.strip()[-600:]}")
    return out.stdout, time.time() - t0


def machine():
    flags, model = set(), platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                          "avx512_bf16", "avx512_fp16", "amx_tile") if f in flags]
    return model, wanted, os.cpu_count()


def gemm_peak(threads, n=2048, tries=5):
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def prune(shears, model, out, repeats, extra, input_=None, classes=None):
    cmd = [shears, "prune", "--model", model, "--method", "l1-filter", "--macs-reduction", "0.5",
           "--no-eval", "--latency-batches", "1", "--latency-threads", "1", "--latency-repeats",
           repeats, "--latency-rounds", "3", "--out", out, "--json", *extra]
    if input_:
        cmd += ["--input", input_, "--classes", str(classes)]
    stdout, secs = run(cmd)
    return json.loads(stdout), secs


def latency_cells(r):
    row = r["latency"][0]
    o = row.get("onnxruntime")
    ort = (f"{o['dense_median_ms']:.3f} → {o['compacted_median_ms']:.3f} "
           f"({o['latency_ratio']:.2f}x)") if o else "-"
    own = (f"{row['dense_median_ms']:.3f} → {row['compacted_median_ms']:.3f} "
           f"({row['latency_ratio']:.2f}x)")
    chosen = (r.get("rounding") or {}).get("chosen")
    rounding = f"auto → {chosen}" if chosen else str(r["spec"]["round_to"])
    return rounding, ort, own, f"{100 * r['macs_reduction']:.1f}%"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/shears-deploy"))
    ap.add_argument("--shears", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--ftwt", type=Path, help="a finished FTWT run directory")
    ap.add_argument("--imagenet", action="store_true", help="also resnet50 at 224x224")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    shears = args.shears or default_shears()
    if not Path(shears).is_file():
        sys.exit(f"no shears binary at {shears} (cargo build --release -p shears, or --shears)")
    env_python = os.environ.get("SHEARS_PYTHON")
    if env_python is None:
        os.environ["SHEARS_PYTHON"] = sys.executable  # onnxruntime of this venv
    args.work.mkdir(parents=True, exist_ok=True)
    rep = str(args.repeats)
    lines = []

    def emit(s=""):
        print(s, flush=True)
        lines.append(s)

    import onnxruntime, torch
    model, flags, cores = machine()
    emit(f"CPU: {model}, {cores} logical cores; {' '.join(flags)}. onnxruntime "
         f"{onnxruntime.__version__}, torch {torch.__version__}; "
         f"{time.strftime('%Y-%m-%d', time.gmtime())}.")
    emit(f"fp32 GEMM peak (torch.mm 2048³, best of 5): {gemm_peak(1):.0f} GFLOP/s on one thread, "
         f"{gemm_peak(min(2, cores)):.0f} on {min(2, cores)}.")
    torch.set_num_threads(1)
    emit()

    emit("| network | round_to | MACs removed | onnxruntime ms dense → compacted | "
         "shears ms dense → compacted |")
    emit("|---|---|---:|---|---|")
    for name in TORCHVISION:
        path = args.work / f"{name}.onnx"
        if not path.exists():
            export_one(name, 64, str(path), 100e6)
        for r in ROUNDINGS:
            report, _ = prune(shears, path, args.work / f"{name}-r{r}", rep, ["--round-to", r])
            rounding, ort, own, macs = latency_cells(report)
            emit(f"| {name} (3x64x64) | {rounding} | {macs} | {ort} | {own} |")
    for r in ("1", "auto"):
        report, _ = prune(shears, "resnet-56", args.work / f"resnet-56-r{r}", rep,
                          ["--round-to", r], "3x32x32", 10)
        rounding, ort, own, macs = latency_cells(report)
        emit(f"| resnet-56 (zoo, 3x32x32) | {rounding} | {macs} | {ort} | {own} |")
    emit()

    emit("| zoo model | input | shears ms | onnxruntime ms | shears / onnxruntime |")
    emit("|---|---|---:|---:|---:|")
    for name, shape in ZOO:
        stdout, _ = run([shears, "bench", "--model", name, "--input", shape, "--batch", "1",
                         "--threads", "1", "--repeats", rep, "--json"])
        b = json.loads(stdout)
        ms = {r["mode"]: r["median_ms"] for r in b["results"]}
        own, ort = ms["inference"], ms.get("onnxruntime")
        cells = ("-", "-") if ort is None else (f"{ort:.3f}", f"{own / ort:.2f}")
        emit(f"| {name} | {shape} | {own:.3f} | {cells[0]} | {cells[1]} |")
    emit()

    if args.ftwt:
        stdout, _ = run([shears, "bench", "--dynamic", args.ftwt, "--batch", "1", "--threads",
                         "1", "--repeats", rep, "--json"])
        d = json.loads(stdout)
        emit("| FTWT run | batch | shears dense ms | shears dynamic ms | onnxruntime dense ms | "
             "dynamic vs onnxruntime dense |")
        emit("|---|---:|---:|---:|---:|---:|")
        for r in d["results"]:
            o = r.get("onnxruntime_dense_ms")
            cells = ("-", "-") if o is None else (
                f"{o:.3f}", f"{100 * (1 - r['dynamic_ms'] / o):+.1f}%")
            emit(f"| {d['model']} ({args.ftwt.name}) | {r['batch']} | {r['dense_ms']:.3f} | "
                 f"{r['dynamic_ms']:.3f} | {cells[0]} | {cells[1]} |")
        emit()

    if args.imagenet:
        path = args.work / "resnet50-224.onnx"
        if not path.exists():
            export_one("resnet50", 224, str(path), 100e6)
        out = args.work / "resnet50-224"
        stdout, secs = run([shears, "prune", "--model", path, "--method", "l1-filter",
                            "--macs-reduction", "0.5", "--no-eval", "--out", out, "--json"])
        r = json.loads(stdout)
        emit(f"torchvision resnet50 at 3x224x224, `shears prune --method l1-filter "
             f"--macs-reduction 0.5 --no-eval` with the default latency settings: {secs:.0f} s "
             f"in all (round_to auto chose {(r.get('rounding') or {}).get('chosen')}).")
        emit()
        emit("| batch | threads | shears ms dense → compacted | onnxruntime ms dense → compacted |")
        emit("|---:|---:|---|---|")
        for row in r["latency"]:
            o = row.get("onnxruntime")
            emit(f"| {row['batch']} | {row['threads']} | {row['dense_median_ms']:.1f} → "
                 f"{row['compacted_median_ms']:.1f} | "
                 + (f"{o['dense_median_ms']:.1f} → {o['compacted_median_ms']:.1f}" if o else "-")
                 + " |")
        for n in r.get("latency_notes", []):
            emit(f"- {n}")
        emit()

    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
