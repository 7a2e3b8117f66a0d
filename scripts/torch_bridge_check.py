"""Prunes torchvision resnet18 and mobilenet_v2 (random weights, 3x64x64) in place with
shears.torch to half the MACs and prints the time, the sizes and the output check.

    python scripts/torch_bridge_check.py     (torch, torchvision and the shears package installed)
"""

import time

import torch
import torchvision

import shears.torch

torch.manual_seed(0)
for arch in ["resnet18", "mobilenet_v2"]:
    model = getattr(torchvision.models, arch)(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    started = time.perf_counter()
    model, report = shears.torch.prune(model, x, "l1-filter", macs_reduction=0.5, return_report=True)
    seconds = time.perf_counter() - started
    t = report["torch"]
    print(
        f"{arch}: {seconds:.1f} s, MACs -{report['macs_reduction']:.1%}, params "
        f"{t['params_before']:,} -> {t['params_after']:,}, max |module - compacted| "
        f"{t['check']['max_abs_difference']:.1e}"
    )
