"""PyTorch's GFLOP/s on the layers of `crates/shears-kernels/examples/blocked_speed.rs`, batch 64:
the forward pass, and the input and weight gradients together.

    python bench/pytorch_conv_layers.py THREADS
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/pytorch_conv_layers.py THREADS   # oneDNN held to AVX2
"""

import sys
import time

import torch

LAYERS = [
    ("resnet-20 64x8x8", 64, 64, 8),
    ("vgg-11 64->128 16x16", 64, 128, 16),
    ("vgg-11 128->256 8x8", 128, 256, 8),
    ("vgg-11 256->256 8x8", 256, 256, 8),
    ("128x16x16", 128, 128, 16),
    ("48->80 12x12", 48, 80, 12),
]


def best(f, repeats=5, inner=5):
    """The fastest of `repeats` windows of `inner` calls, per call, after two warm-up calls."""
    f()
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            f()
        times.append((time.perf_counter() - start) / inner)
    return min(times)


def main():
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    print(f"{torch.get_num_threads()} thread(s), batch 64, PyTorch {torch.__version__}")
    for name, cin, cout, hw in LAYERS:
        x = torch.randn(64, cin, hw, hw, requires_grad=True)
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        gflop = 2 * cin * cout * 9 * hw * hw * 64 / 1e9
        with torch.no_grad():
            forward = best(lambda: conv(x))
        y = conv(x)
        dy = torch.randn_like(y)
        backward = best(lambda: torch.autograd.grad(y, (x, conv.weight), dy, retain_graph=True))
        print(f"{name:<22} forward {gflop / forward:6.0f}  input + weight grad {2 * gflop / backward:6.0f} GFLOP/s")


if __name__ == "__main__":
    main()
