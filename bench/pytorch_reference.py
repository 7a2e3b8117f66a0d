#!/usr/bin/env python3
"""PyTorch reference benchmark for shears.

Defines, in plain PyTorch, the same architectures as shears' model zoo
(crates/shears-core/src/zoo) and measures CPU training and inference
throughput on synthetic data, so shears' own numbers have a baseline measured
on the same machine with the same thread count.

Module names follow shears' node names, so a state_dict key maps to shears'
parameter name by turning every '.' but the last into '_'
(`layer2_0.shortcut_conv.weight` -> `layer2_0_shortcut_conv.weight`).

Example:
    python3 bench/pytorch_reference.py --models lenet-5,vgg-11,resnet-20 \
        --input 3x32x32 --batch 64 --threads 2 --steps 10 --json out.json
"""

import argparse
import json
import math
import statistics
import sys
import time
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

# Parameter counts shears reports (conv/linear weights and biases, BN gamma and
# beta; no running statistics) at 3x32x32 with 10 classes. A model built here
# must match them, otherwise the comparison is between different networks.
SHEARS_PARAMS_3x32x32_10 = {
    "lenet-5": 62_006,
    "small-cnn": 66_410,
    "vgg-11": 9_231_114,
    "resnet-20": 272_474,
    "resnet-56": 855_770,
    "mobilenet-v2": 2_236_682,
    "vit-tiny": 2_693_578,
}


def pooled(side, kernel, stride):
    """Output side of a max-pool without padding (floor mode, as in shears)."""
    return (side - kernel) // stride + 1


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def lenet_5(input_shape, classes):
    """Valid 5x5 convs 6 and 16 (with bias), each ReLU + 2x2 max-pool, FC 120-84-classes."""
    c, h, w = input_shape
    if h < 16 or w < 16:
        raise ValueError(f"lenet-5 needs at least 16x16 pixels, got {h}x{w}")
    # conv 5x5 valid, then pool 2: twice.
    h2 = pooled(pooled(h - 4, 2, 2) - 4, 2, 2)
    w2 = pooled(pooled(w - 4, 2, 2) - 4, 2, 2)
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(c, 6, 5, bias=True)),
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2, 2)),
                ("conv2", nn.Conv2d(6, 16, 5, bias=True)),
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2, 2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(16 * h2 * w2, 120)),
                ("relu3", nn.ReLU()),
                ("fc2", nn.Linear(120, 84)),
                ("relu4", nn.ReLU()),
                ("fc", nn.Linear(84, classes)),
            ]
        )
    )


def conv_bn_relu(layers, name, cin, cout):
    """shears' `conv_bn_relu`: 3x3 conv (padding 1, no bias), BN, ReLU, named name/_bn/_relu."""
    layers.append((name, nn.Conv2d(cin, cout, 3, padding=1, bias=False)))
    layers.append((f"{name}_bn", nn.BatchNorm2d(cout)))
    layers.append((f"{name}_relu", nn.ReLU()))


def small_cnn(input_shape, classes):
    """conv-BN-ReLU 32, 32, pool, 64, 64, pool, global average pool, linear."""
    c, h, w = input_shape
    if h < 4 or w < 4:
        raise ValueError(f"small-cnn needs at least 4x4 pixels, got {h}x{w}")
    layers = []
    conv_bn_relu(layers, "conv1", c, 32)
    conv_bn_relu(layers, "conv2", 32, 32)
    layers.append(("pool1", nn.MaxPool2d(2, 2)))
    conv_bn_relu(layers, "conv3", 32, 64)
    conv_bn_relu(layers, "conv4", 64, 64)
    layers.append(("pool2", nn.MaxPool2d(2, 2)))
    layers.append(("gap", nn.AdaptiveAvgPool2d(1)))
    layers.append(("flatten", nn.Flatten()))
    layers.append(("fc", nn.Linear(64, classes)))
    return nn.Sequential(OrderedDict(layers))


# VGG configurations: an int is a 3x3 conv with that many channels, "M" a 2x2 max-pool.
VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg(input_shape, classes, config):
    """CIFAR-style VGG with BN: 3x3 convs with bias, BN, ReLU, max-pools, GAP, one linear.

    Like shears, a pool is skipped once the map is below 2x2, so the same
    configuration also runs on 28x28 or smaller inputs.
    """
    c, h, w = input_shape
    layers = []
    convs = pools = 0
    for entry in config:
        if entry == "M":
            pools += 1
            if h >= 2 and w >= 2:
                layers.append((f"pool{pools}", nn.MaxPool2d(2, 2)))
                h, w = pooled(h, 2, 2), pooled(w, 2, 2)
        else:
            convs += 1
            layers.append((f"conv{convs}", nn.Conv2d(c, entry, 3, padding=1, bias=True)))
            layers.append((f"bn{convs}", nn.BatchNorm2d(entry)))
            layers.append((f"relu{convs}", nn.ReLU()))
            c = entry
    layers.append(("gap", nn.AdaptiveAvgPool2d(1)))
    layers.append(("flatten", nn.Flatten()))
    layers.append(("fc", nn.Linear(c, classes)))
    return nn.Sequential(OrderedDict(layers))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, add, ReLU (convs without bias).

    Where the shape changes, the shortcut is option B, a 1x1 conv (stride s)
    + BN projection, as in shears (He et al.'s CIFAR ResNets use option A).
    """

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.projection = stride != 1 or cin != planes
        if self.projection:
            self.shortcut_conv = nn.Conv2d(cin, planes, 1, stride=stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(planes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.shortcut_bn(self.shortcut_conv(x)) if self.projection else x
        return F.relu(y + s)


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2): 3x3 stem 16, stages of n basic blocks 16/32/64, GAP, linear."""

    def __init__(self, input_shape, classes, n):
        super().__init__()
        c = input_shape[0]
        self.conv1 = nn.Conv2d(c, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        # Blocks are attributes named like shears' node prefixes (`layer2_0`), in order.
        self.block_names = []
        cin = 16
        for s, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
            for i in range(n):
                name = f"layer{s}_{i}"
                setattr(self, name, BasicBlock(cin, planes, stride if i == 0 else 1))
                self.block_names.append(name)
                cin = planes
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for name in self.block_names:
            x = getattr(self, name)(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# MobileNetV2 inverted-residual stages as shears' zoo lists them: expansion t, output
# channels c, repeats n, stride s of the first block (CIFAR: the second stage keeps stride 1).
MOBILENET_V2_STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class InvertedResidual(nn.Module):
    """Expand 1x1-BN-ReLU (absent when t = 1), depthwise 3x3-BN-ReLU, project 1x1-BN (no biases).

    The input is added when the stride is 1 and the channels are kept, as in shears.
    """

    def __init__(self, cin, expansion, cout, stride):
        super().__init__()
        hidden = cin * expansion
        self.expanded = expansion != 1
        if self.expanded:
            self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden,
                            bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu(self.expand_bn(self.expand(x))) if self.expanded else x
        y = F.relu(self.dw_bn(self.dw(y)))
        y = self.project_bn(self.project(y))
        return y + x if self.residual else y


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2: 3x3 stem 32 (stride 1)-BN-ReLU, the 17 inverted residuals of
    MOBILENET_V2_STAGES, 1x1 conv 1280-BN-ReLU, GAP, dropout 0.2, linear.

    ReLU stands in for ReLU6, as in shears (its IR has no ReLU6); parameter counts are the same.
    """

    def __init__(self, input_shape, classes):
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Conv2d(c, 32, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(32)
        # Blocks are attributes named like shears' node prefixes (`block3`), in order.
        self.block_names = []
        cin = 32
        for t, cout, n, s in MOBILENET_V2_STAGES:
            for k in range(n):
                name = f"block{len(self.block_names)}"
                setattr(self, name, InvertedResidual(cin, t, cout, s if k == 0 else 1))
                self.block_names.append(name)
                cin = cout
        self.head = nn.Conv2d(cin, 1280, 1, bias=False)
        self.head_bn = nn.BatchNorm2d(1280)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        for name in self.block_names:
            x = getattr(self, name)(x)
        x = F.relu(self.head_bn(self.head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))


class VitAttention(nn.Module):
    """Multi-head self-attention from a packed qkv projection, as shears' `attention` op reads it
    ([T, 3*H*D]: every head's queries, then keys, then values), then the output projection."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads, self.scale = heads, (width // heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, c))


class VitBlock(nn.Module):
    """Pre-norm block: x + proj(attention(qkv(norm1(x)))), x + fc2(gelu(fc1(norm2(x))))."""

    def __init__(self, width, heads, mlp):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = VitAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VitTiny(nn.Module):
    """shears' `vit-tiny`: 4x4 patch conv (with bias) to width 192, class token, position table,
    6 blocks of 3 heads and MLP 768, final LayerNorm, the class token to a linear classifier."""

    def __init__(self, input_shape, classes, patch=4, width=192, heads=3, depth=6, mlp=768):
        super().__init__()
        c, h, w = input_shape
        tokens = (h // patch) * (w // patch) + 1
        self.patch_embed = nn.Conv2d(c, width, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.blocks = nn.Sequential(*[VitBlock(width, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        return self.fc(self.norm(self.blocks(x))[:, 0])


MODELS = {
    "vit-tiny": VitTiny,
    "lenet-5": lenet_5,
    "small-cnn": small_cnn,
    "vgg-11": lambda shape, classes: vgg(shape, classes, VGG11),
    "resnet-20": lambda shape, classes: CifarResNet(shape, classes, 3),
    "resnet-56": lambda shape, classes: CifarResNet(shape, classes, 9),
    "mobilenet-v2": MobileNetV2,
}


def count_params(model):
    """Trainable parameters, counted the way shears counts them (no BN running statistics)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def timed_windows(step, warmup, steps, repeats, images_per_step):
    """Runs `warmup` untimed steps, then `repeats` windows of `steps` steps each.

    Returns the median throughput over the windows in images/s; the median
    keeps one window disturbed by other work on a shared machine from
    deciding the result.
    """
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed = time.perf_counter() - start
        rates.append(steps * images_per_step / elapsed)
    return statistics.median(rates)


def bench_train(model, input_shape, classes, batch, args):
    """Full SGD steps (forward, cross-entropy, backward, update) with BN in training mode."""
    model.train()
    opt = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4
    )
    # One fixed synthetic batch: the data pipeline is not what is being measured.
    x = torch.randn(batch, *input_shape)
    y = torch.randint(0, classes, (batch,))
    last = {}

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        last["loss"] = loss

    rate = timed_windows(step, args.warmup, args.steps, args.repeats, batch)
    # A diverged run (inf/NaN) would time different arithmetic.
    final = last["loss"].item()
    if not math.isfinite(final):
        print(f"warning: training loss became {final}; throughput is suspect", file=sys.stderr)
    return rate


def bench_infer(model, input_shape, batch, args):
    """Forward passes in eval mode (BN uses running statistics) under inference_mode."""
    model.eval()
    x = torch.randn(batch, *input_shape)

    def step():
        with torch.inference_mode():
            model(x)

    return timed_windows(step, args.warmup, args.steps, args.repeats, batch)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_shape(text):
    try:
        dims = [int(d) for d in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x32x32, got {text!r}")
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW with positive sizes, got {text!r}")
    return dims


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="PyTorch CPU training/inference throughput of shears' zoo models."
    )
    p.add_argument("--models", default="lenet-5,vgg-11,resnet-20",
                   help=f"comma-separated, from: {', '.join(MODELS)}")
    p.add_argument("--input", type=parse_shape, default=[3, 32, 32],
                   help="per-sample input shape CxHxW (default 3x32x32)")
    p.add_argument("--classes", type=positive, default=10)
    p.add_argument("--batch", type=positive, default=64, help="training batch size")
    p.add_argument("--infer-batch", type=positive, default=None,
                   help="inference batch size (default: --batch)")
    p.add_argument("--threads", type=positive, default=2, help="intra-op threads")
    p.add_argument("--steps", type=positive, default=10, help="steps per timed window")
    p.add_argument("--repeats", type=positive, default=5,
                   help="timed windows; the median is reported")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true",
                   help="measure inference only (batch-1 latency runs)")
    p.add_argument("--json", metavar="PATH", help="write the results as one JSON object")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if args.infer_batch is None:
        args.infer_batch = args.batch
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    # Must precede any parallel work: PyTorch refuses to change inter-op threads afterwards.
    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    input_text = "x".join(map(str, args.input))
    print(
        f"pytorch {torch.__version__}, {torch.get_num_threads()} threads, input {input_text}, "
        f"{args.classes} classes, batch {args.batch} train / {args.infer_batch} infer, "
        f"{args.warmup} warm-up + median of {args.repeats} x {args.steps} steps",
        file=sys.stderr,
    )
    results = []
    for name in args.models:
        try:
            model = MODELS[name](args.input, args.classes)
            params = count_params(model)
            expected = SHEARS_PARAMS_3x32x32_10.get(name)
            if args.input == [3, 32, 32] and args.classes == 10 and params != expected:
                print(f"warning: {name} has {params} parameters, shears has {expected}",
                      file=sys.stderr)
            train = (None if args.no_train
                     else bench_train(model, args.input, args.classes, args.batch, args))
            infer = bench_infer(model, args.input, args.infer_batch, args)
        except ValueError as e:
            # Input too small for the model, or BN in train mode seeing one value per channel.
            sys.exit(f"error: {name}: {e}")
        results.append(
            {
                "model": name,
                "params": params,
                "train_images_per_s": None if train is None else round(train, 1),
                "infer_images_per_s": round(infer, 1),
                "batch": args.batch,
                "infer_batch": args.infer_batch,
                "input": list(args.input),
            }
        )
        shown = "-" if train is None else f"{train:.1f}"
        print(f"  {name}: train {shown} img/s, infer {infer:.1f} img/s", file=sys.stderr)

    print(f"\n{'model':<12} {'params':>11} {'train img/s':>12} {'infer img/s':>12}",
          file=sys.stderr)
    for r in results:
        train = r["train_images_per_s"]
        shown = "-" if train is None else f"{train:.1f}"
        print(f"{r['model']:<12} {r['params']:>11,} {shown:>12} "
              f"{r['infer_images_per_s']:>12.1f}", file=sys.stderr)

    report = {
        "framework": "pytorch",
        "version": torch.__version__,
        "threads": args.threads,
        "classes": args.classes,
        "warmup": args.warmup,
        "steps": args.steps,
        "repeats": args.repeats,
        "results": results,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
