"""Wall time of one whole `shears.run` from Python: train a zoo model on 1,920 images of the
embedded Fashion-MNIST subset for one epoch (batch 64), prune it with l1-filter to half the
MACs, evaluate on 256 test images, report and measure latency, in a temporary runs directory.

    python bench/python_run_speed.py THREADS MODEL      # e.g. 1 resnet-20
"""

import sys
import tempfile
import time

import shears


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    model = sys.argv[2] if len(sys.argv) > 2 else "resnet-20"
    cfg = {
        "name": "python-run-speed",
        "seed": 0,
        "threads": threads,
        "model": {"arch": model},
        "data": {"dataset": "fashion-mnist-subset"},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.05, "train_limit": 1920, "test_limit": 256},
        "method": {"name": "l1-filter", "macs_reduction": 0.5},
        "finetune": {"epochs": 0},
    }
    with tempfile.TemporaryDirectory() as runs:
        start = time.perf_counter()
        shears.run(cfg, runs_dir=runs, progress=False)
        print(f"{model}, {threads} thread(s): {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
