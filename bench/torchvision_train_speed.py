#!/usr/bin/env python3
"""Training and inference speed of torchvision models as a user brings them: each model (10
classes) is exported to ONNX, `shears bench --train` times it from that file, and PyTorch times
the same module in this process, one thread count after another on this machine. Prints a
Markdown table for BENCHMARKS.md.

Usage: python3 bench/torchvision_train_speed.py [--models mobilenet_v2,resnet18]
       [--input 3x32x32] [--batch 64] [--threads 1,2] [--shears target/release/shears]

Needs torch and torchvision (a venv outside the repo) and a release build of shears.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torchvision


def pytorch_rates(model, shape, batch, threads, steps=8):
    """Median training (SGD with momentum, cross-entropy) and inference images/s of `model`."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(x)

    rates = []
    for mode, step in (("train", train), ("eval", infer)):
        getattr(model, mode)()
        for _ in range(3):
            step()
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        rates.append(batch / statistics.median(times))
    return rates


def shears_rates(shears, onnx, input_arg, batch, threads):
    """`shears bench --train` on the ONNX file: training and inference images/s."""
    cmd = [shears, "bench", "--model", onnx, "--input", input_arg, "--batch", str(batch),
           "--threads", str(threads), "--warmup", "2", "--repeats", "5", "--train", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stderr}")
    by_mode = {r["mode"]: r["images_per_s"] for r in json.loads(out.stdout)["results"]}
    return by_mode["training"], by_mode["inference"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="mobilenet_v2,resnet18")
    p.add_argument("--input", default="3x32x32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", default="1,2")
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    p.add_argument("--shears", default=os.path.join(target, "release", "shears"))
    a = p.parse_args()
    shape = [int(d) for d in a.input.split("x")]
    print("| model | threads | shears train img/s | PyTorch train img/s | ratio "
          "| shears infer img/s | PyTorch infer img/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            model = getattr(torchvision.models, name)(num_classes=10)
            onnx = os.path.join(tmp, f"{name}.onnx")
            torch.onnx.export(model.eval(), torch.randn(1, *shape), onnx, opset_version=17,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
            for threads in [int(t) for t in a.threads.split(",")]:
                s_train, s_infer = shears_rates(a.shears, onnx, a.input, a.batch, threads)
                t_train, t_infer = pytorch_rates(model, shape, a.batch, threads)
                print(f"| {name} | {threads} | {s_train:.1f} | {t_train:.1f} "
                      f"| {s_train / t_train:.2f}x | {s_infer:.1f} | {t_infer:.1f} "
                      f"| {s_infer / t_infer:.2f}x |", flush=True)
    print(f"\nbatch {a.batch}, input {a.input}; shears median of 5 timed steps after 2, PyTorch "
          "median of 8 after 3 (SGD with momentum, cross-entropy)")


if __name__ == "__main__":
    main()
