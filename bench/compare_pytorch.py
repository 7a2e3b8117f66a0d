#!/usr/bin/env python3
"""Runs shears and PyTorch on the same models, back to back on this machine, and prints the
Markdown table recorded in BENCHMARKS.md (training and inference images/s, and shears/PyTorch).

Usage: python3 bench/compare_pytorch.py [--models lenet-5,vgg-11,resnet-20] [--input 3x32x32]
       [--batch 64] [--threads 2] [--shears target/release/shears]
"""
import argparse
import json
import os
import subprocess
import sys


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="lenet-5,vgg-11,resnet-20")
    p.add_argument("--input", default="3x32x32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    default_bin = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "shears")
    p.add_argument("--shears", default=default_bin)
    a = p.parse_args()
    rows = []
    for model in a.models.split(","):
        s = run_json([a.shears, "bench", "--model", model, "--input", a.input, "--batch", str(a.batch),
                      "--threads", str(a.threads), "--warmup", "3", "--repeats", str(a.repeats), "--train", "--json"])
        by_mode = {r["mode"]: r for r in s["results"]}
        t = run_json([sys.executable, os.path.join(os.path.dirname(__file__), "pytorch_reference.py"),
                      "--models", model, "--input", a.input, "--batch", str(a.batch), "--threads", str(a.threads),
                      "--steps", str(a.repeats), "--json", "/dev/stdout"])
        tr = t["results"][0]
        rows.append((model, s["params"], by_mode["training"]["images_per_s"], tr["train_images_per_s"],
                     by_mode["inference"]["images_per_s"], tr["infer_images_per_s"]))
    print(f"| model | params | shears train img/s | PyTorch train img/s | ratio | shears infer img/s | PyTorch infer img/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for m, n, st, pt, si, pi in rows:
        print(f"| {m} | {n:,} | {st:.1f} | {pt:.1f} | {st / pt:.2f}x | {si:.1f} | {pi:.1f} | {si / pi:.2f}x |")
    print(f"\nbatch {a.batch}, {a.threads} threads, input {a.input}; median of {a.repeats} timed steps after warm-up")


if __name__ == "__main__":
    main()
