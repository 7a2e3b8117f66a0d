#!/usr/bin/env python3
"""Runs shears and PyTorch on the same models, back to back on this machine, and prints the
Markdown tables recorded in BENCHMARKS.md: training and inference images/s at batch 64 for each
thread count, with the shears/PyTorch ratio, each process's peak memory (max RSS) and the share
of this machine's sgemm peak that training reaches (6 FLOPs per multiply-accumulate of the
forward pass: forward, input gradient, weight gradient; the peak measured here with a 2048^3
`torch.mm` on the same threads), then the batch-1 inference latency on one thread.

Usage: python3 bench/compare_pytorch.py [--models lenet-5,vgg-11,resnet-20,mobilenet-v2,resnet-56]
       [--input 3x32x32] [--batch 64] [--threads 1,2] [--latency-models resnet-56,...]
       [--shears target/release/shears] [--kernels burn]

`--kernels burn` runs shears with Burn's own convolution and BatchNorm (`shears bench --kernels
burn`), the path before our kernels, for a before/after table in one session.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def run_json(cmd, env=None):
    """Runs cmd, returns (parsed JSON from stdout, peak RSS of the process in MiB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"error: {' '.join(cmd)} failed:\n{err.read().decode()}")
        out.seek(0)
        return json.loads(out.read()), usage.ru_maxrss / 1024.0


GEMM_PEAK = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
for _ in range(3):
    torch.mm(a, b)
best = float("inf")
for _ in range(10):
    t = time.perf_counter()
    torch.mm(a, b)
    best = min(best, time.perf_counter() - t)
print(2 * 2048 ** 3 / best / 1e9)
"""


def gemm_peak_gflops(threads):
    """This machine's single-precision GEMM rate on `threads` threads (torch.mm, 2048^3), in a
    process of its own: importing torch here would count its memory in every child's peak RSS
    (a forked child starts with its parent's pages)."""
    out = subprocess.run([sys.executable, "-c", GEMM_PEAK, str(threads)], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip())


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    wanted = [x for x in flags if x.startswith(("avx512", "avx2", "fma"))]
                    return f"{name}; {' '.join(sorted(wanted))}"
    except OSError:
        pass
    return "unknown CPU"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="lenet-5,vgg-11,resnet-20,mobilenet-v2,resnet-56")
    p.add_argument("--latency-models", default="lenet-5,vgg-11,resnet-20,mobilenet-v2,resnet-56")
    p.add_argument("--input", default="3x32x32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--kernels", choices=["ours", "burn"], default="ours")
    default_bin = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "shears")
    p.add_argument("--shears", default=default_bin)
    a = p.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    reference = os.path.join(here, "pytorch_reference.py")
    env = None
    print(f"CPU: {cpu_flags()}; shears kernels: {a.kernels}\n")
    for threads in [int(t) for t in a.threads.split(",")]:
        peak = gemm_peak_gflops(threads)
        rows = []
        for model in a.models.split(","):
            s, s_mem = run_json([a.shears, "bench", "--model", model, "--input", a.input,
                                 "--batch", str(a.batch), "--threads", str(threads), "--warmup", "3",
                                 "--repeats", str(a.repeats), "--train", "--kernels", a.kernels,
                                 "--json"], env)
            by_mode = {r["mode"]: r for r in s["results"]}
            t, t_mem = run_json([sys.executable, reference, "--models", model, "--input", a.input,
                                 "--batch", str(a.batch), "--threads", str(threads),
                                 "--steps", str(a.repeats), "--json", "/dev/stdout"])
            tr = t["results"][0]
            rows.append((model, s["params"], by_mode["training"]["images_per_s"],
                         tr["train_images_per_s"], by_mode["inference"]["images_per_s"],
                         tr["infer_images_per_s"], s_mem, t_mem, 6 * s["macs"] / 1e9))
        print(f"{threads} thread(s), batch {a.batch}, input {a.input}; sgemm peak here "
              f"{peak:.0f} GFLOP/s:\n")
        print("| model | params | shears train img/s | PyTorch train img/s | ratio "
              "| shears infer img/s | PyTorch infer img/s | ratio | peak MiB shears / PyTorch "
              "| training % of sgemm peak shears / PyTorch |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for m, n, st, pt, si, pi, sm, pm, gflop in rows:
            print(f"| {m} | {n:,} | {st:.1f} | {pt:.1f} | {st / pt:.2f}x | {si:.1f} | {pi:.1f} "
                  f"| {si / pi:.2f}x | {sm:.0f} / {pm:.0f} "
                  f"| {100 * st * gflop / peak:.0f} % / {100 * pt * gflop / peak:.0f} % |")
        print()
    rows = []
    for model in a.latency_models.split(","):
        s, _ = run_json([a.shears, "bench", "--model", model, "--input", a.input, "--batch", "1",
                         "--threads", "1", "--warmup", "10", "--repeats", str(10 * a.repeats),
                         "--kernels", a.kernels, "--json"], env)
        # PyTorch's training at batch 2 is skipped (--no-train); inference at batch 1.
        t, _ = run_json([sys.executable, reference, "--models", model, "--input", a.input,
                         "--batch", "2", "--infer-batch", "1", "--threads", "1", "--no-train",
                         "--steps", str(10 * a.repeats), "--json", "/dev/stdout"])
        s_ms = s["results"][0]["median_ms"]
        t_ms = 1000.0 / t["results"][0]["infer_images_per_s"]
        rows.append((model, s_ms, t_ms))
    print("Batch 1, 1 thread, inference latency:\n")
    print("| model | shears ms | PyTorch ms | PyTorch / shears |")
    print("|---|---:|---:|---:|")
    for m, s_ms, t_ms in rows:
        print(f"| {m} | {s_ms:.2f} | {t_ms:.2f} | {t_ms / s_ms:.2f}x |")
    print(f"\nmedians after warm-up; shears median of {a.repeats} timed steps (batch 1: "
          f"{10 * a.repeats}); PyTorch median of 5 windows of {a.repeats} steps")


if __name__ == "__main__":
    main()
