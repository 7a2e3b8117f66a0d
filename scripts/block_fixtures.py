"""ONNX fixtures of the blocks modern classifiers are built from: each a whole tiny classifier
(stem conv, the block(s), pooling, a Linear to 10 classes, logits [N, 10]) with random weights,
exported as `scripts/onnx_fixtures.py` exports its models: opset 17, the TorchScript exporter
(dynamo=False), a dynamic batch axis, BatchNorm kept as its own node; a reference input
`NAME.x.bin` (batch 2) and PyTorch's output `NAME.y.bin` as raw little-endian f32, their shapes
in `NAME.json`.

Run with a Python that has torch, torchvision, onnx and onnxruntime:
    python3 scripts/block_fixtures.py OUTDIR [NAME ...]
For every fixture it prints the ONNX file's size, its sorted op types and the largest absolute
difference between onnxruntime's output and PyTorch's (must be < 1e-4). A fixture that fails is
reported and the others still run; the exit status is 1 if any failed.
"""
import json, os, sys, traceback
from functools import partial
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import SqueezeExcitation
from torchvision.models.mobilenetv3 import InvertedResidual as V3Block, InvertedResidualConfig
from torchvision.models.efficientnet import MBConv, MBConvConfig
from torchvision.models.shufflenetv2 import InvertedResidual as ShuffleUnit
from torchvision.models.convnext import CNBlock, LayerNorm2d

def cbr(c_in, c, k=3, s=1, act=nn.ReLU, groups=1):
    """Conv (no bias) - BatchNorm - activation (None: none)."""
    layers = [nn.Conv2d(c_in, c, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c)]
    return nn.Sequential(*layers, *([act()] if act else []))

class Classifier(nn.Module):
    """features -> global average pool -> flatten -> Linear to 10 classes."""
    def __init__(s, features, c):
        super().__init__()
        s.features = features; s.pool = nn.AdaptiveAvgPool2d(1); s.fc = nn.Linear(c, 10)
    def forward(s, x):
        return s.fc(torch.flatten(s.pool(s.features(x)), 1))

def se_block():
    """conv-BN-ReLU, torchvision's SqueezeExcitation (avg pool, 1x1 conv, ReLU, 1x1 conv,
    Sigmoid, scale the input), then more conv."""
    return Classifier(nn.Sequential(cbr(3, 16), cbr(16, 16), SqueezeExcitation(16, 4),
                                    cbr(16, 16, s=2)), 16)

class HardswishIR(nn.Module):
    """MobileNetV3: torchvision's InvertedResidual (1x1 expand-BN-Hardswish, depthwise 3x3-BN-
    Hardswish, SE with a Hardsigmoid scale, 1x1 project-BN, residual) and its classifier
    Linear -> Hardswish -> Dropout -> Linear."""
    def __init__(s):
        super().__init__()
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        cnf = InvertedResidualConfig(16, 3, 48, 16, True, "HS", 1, 1, 1.0)
        s.features = nn.Sequential(cbr(3, 16, act=nn.Hardswish), V3Block(cnf, norm),
                                   cbr(16, 32, k=1, act=nn.Hardswish))
        s.avgpool = nn.AdaptiveAvgPool2d(1)
        s.classifier = nn.Sequential(nn.Linear(32, 64), nn.Hardswish(), nn.Dropout(0.2),
                                     nn.Linear(64, 10))
    def forward(s, x):
        return s.classifier(torch.flatten(s.avgpool(s.features(x)), 1))

class SiluMBConv(nn.Module):
    """EfficientNet: torchvision's MBConv (1x1 expand-BN-SiLU, depthwise-BN-SiLU, SE with SiLU
    inside and a Sigmoid scale, 1x1 project-BN, residual), then a stride-2 MBConv without
    expansion; head conv, pool, Dropout, Linear."""
    def __init__(s):
        super().__init__()
        s.features = nn.Sequential(cbr(3, 16, act=nn.SiLU),
                                   MBConv(MBConvConfig(4, 3, 1, 16, 16, 1), 0.0, nn.BatchNorm2d),
                                   MBConv(MBConvConfig(1, 3, 2, 16, 24, 1), 0.0, nn.BatchNorm2d),
                                   cbr(24, 32, k=1, act=nn.SiLU))
        s.avgpool = nn.AdaptiveAvgPool2d(1)
        s.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))
    def forward(s, x):
        return s.classifier(torch.flatten(s.avgpool(s.features(x)), 1))

class LeakyCSP(nn.Module):
    """CSP block, LeakyReLU(0.1): two 1x1 convs split the input into two paths, one goes
    through a residual bottleneck, the two are concatenated and mixed by a 1x1 conv."""
    def __init__(s):
        super().__init__()
        act = partial(nn.LeakyReLU, 0.1)
        s.stem = cbr(3, 16, act=act)
        s.cv1 = cbr(16, 8, k=1, act=act); s.cv2 = cbr(16, 8, k=1, act=act)
        s.b1 = cbr(8, 8, k=1, act=act); s.b2 = cbr(8, 8, k=3, act=act)
        s.cv3 = cbr(16, 16, k=1, act=act)
        s.down = cbr(16, 24, s=2, act=act)
        s.pool = nn.AdaptiveAvgPool2d(1); s.fc = nn.Linear(24, 10)
    def forward(s, x):
        x = s.stem(x)
        a = s.cv1(x)
        a = a + s.b2(s.b1(a))
        y = s.cv3(torch.cat([a, s.cv2(x)], 1))
        return s.fc(torch.flatten(s.pool(s.down(y)), 1))

class ActZoo(nn.Module):
    """Tanh, GELU (exact: the Erf pattern), Clip(-1.5, 2), Hardtanh(-1, 1), ReLU6 and a hand-
    written x * sigmoid(x) (the SiLU pattern), each after a conv."""
    def __init__(s):
        super().__init__()
        s.stem = cbr(3, 8, act=None)
        s.c1 = cbr(8, 8, act=None); s.c2 = cbr(8, 8, act=None); s.c3 = cbr(8, 8, act=None)
        s.c4 = cbr(8, 8, act=None); s.c5 = cbr(8, 16, s=2, act=None)
        s.gelu = nn.GELU(); s.hardtanh = nn.Hardtanh(-1.0, 1.0); s.relu6 = nn.ReLU6()
        s.pool = nn.AdaptiveAvgPool2d(1); s.fc = nn.Linear(16, 10)
    def forward(s, x):
        x = torch.tanh(s.stem(x))
        x = s.gelu(s.c1(x))
        x = torch.clamp(s.c2(x), -1.5, 2.0)
        x = s.hardtanh(s.c3(x))
        x = s.relu6(s.c4(x))
        x = s.c5(x)
        x = x * torch.sigmoid(x)
        return s.fc(torch.flatten(s.pool(x), 1))

class Fire(nn.Module):
    """SqueezeNet's Fire module: squeeze 1x1, expand 1x1 and expand 3x3 concatenated."""
    def __init__(s, c_in, sq, e1, e3):
        super().__init__()
        s.squeeze = nn.Conv2d(c_in, sq, 1); s.e1 = nn.Conv2d(sq, e1, 1); s.e3 = nn.Conv2d(sq, e3, 3, padding=1)
    def forward(s, x):
        x = torch.relu(s.squeeze(x))
        return torch.cat([torch.relu(s.e1(x)), torch.relu(s.e3(x))], 1)

class CeilPool(nn.Module):
    """SqueezeNet/GoogLeNet pooling: MaxPool2d(3, 2, ceil_mode) (24 -> 12) and AvgPool2d(3, 2,
    padding 1, ceil_mode, count_include_pad=False) (12 -> 7), both with a partial last window;
    a Fire module; the spatial mean with keepdim (ReduceMean), flatten, Linear. Input 3x24x24."""
    def __init__(s):
        super().__init__()
        s.stem = nn.Conv2d(3, 16, 3, 1, 1)
        s.maxpool = nn.MaxPool2d(3, 2, ceil_mode=True)
        s.fire = Fire(16, 4, 8, 8)
        s.avgpool = nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False)
        s.conv = nn.Conv2d(16, 16, 1)
        s.fc = nn.Linear(16, 10)
    def forward(s, x):
        x = s.maxpool(torch.relu(s.stem(x)))
        x = s.avgpool(s.fire(x))
        x = torch.relu(s.conv(x)).mean((2, 3), keepdim=True)
        return s.fc(torch.flatten(x, 1))

class MeanHead(nn.Module):
    """MNASNet head: features, x.mean([2, 3]) (ReduceMean, keepdims 0), Dropout, Linear."""
    def __init__(s):
        super().__init__()
        s.layers = nn.Sequential(cbr(3, 16, s=2), cbr(16, 32))
        s.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))
    def forward(s, x):
        return s.classifier(s.layers(x).mean([2, 3]))

class GhostSlice(nn.Module):
    """Ghost module: a primary 1x1 conv (8 channels), a cheap depthwise 3x3 conv on it (8
    more), concatenated, the first 12 channels sliced (out[:, :12]) before the next conv."""
    def __init__(s):
        super().__init__()
        s.stem = cbr(3, 16)
        s.primary = cbr(16, 8, k=1); s.cheap = cbr(8, 8, k=3, groups=8)
        s.oup = 12
        s.next = cbr(12, 16, s=2)
        s.pool = nn.AdaptiveAvgPool2d(1); s.fc = nn.Linear(16, 10)
    def forward(s, x):
        x1 = s.primary(s.stem(x))
        out = torch.cat([x1, s.cheap(x1)], dim=1)
        x = s.next(out[:, :s.oup, :, :])
        return s.fc(torch.flatten(s.pool(x), 1))

class Shuffle(nn.Module):
    """ShuffleNetV2: torchvision's InvertedResidual, a stride-2 unit (two branches, cat,
    channel shuffle) and a stride-1 unit (chunk into two halves (Split), branch on one, cat,
    channel shuffle: view, transpose, contiguous, view)."""
    def __init__(s):
        super().__init__()
        s.conv1 = cbr(3, 16)
        s.stage = nn.Sequential(ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1))
        s.conv5 = cbr(32, 32, k=1)
        s.pool = nn.AdaptiveAvgPool2d(1); s.fc = nn.Linear(32, 10)
    def forward(s, x):
        return s.fc(torch.flatten(s.pool(s.conv5(s.stage(s.conv1(x)))), 1))

class Res2Net(nn.Module):
    """Res2Net bottleneck: 1x1 conv, torch.split into 4 chunks of 4, a cascade of three 3x3
    convs where each chunk adds the previous conv's output, the last chunk as is, concat, 1x1
    conv-BN, residual, ReLU."""
    def __init__(s, width=4, scale=4):
        super().__init__()
        s.width, s.scale = width, scale
        s.stem = cbr(3, 16)
        s.conv1 = cbr(16, width * scale, k=1)
        s.convs = nn.ModuleList([cbr(width, width) for _ in range(scale - 1)])
        s.conv3 = cbr(width * scale, 16, k=1, act=None)
        s.pool = nn.AdaptiveAvgPool2d(1); s.fc = nn.Linear(16, 10)
    def forward(s, x):
        x = s.stem(x)
        spx = torch.split(s.conv1(x), s.width, 1)
        outs = []
        for i, conv in enumerate(s.convs):
            sp = spx[i] if i == 0 else sp + spx[i]
            sp = conv(sp)
            outs.append(sp)
        outs.append(spx[s.scale - 1])
        x = torch.relu(s.conv3(torch.cat(outs, 1)) + x)
        return s.fc(torch.flatten(s.pool(x), 1))

class ConvNeXt(nn.Module):
    """ConvNeXt: torchvision's stem (4x4/4 conv, LayerNorm2d), CNBlock (7x7 depthwise conv,
    Permute to NHWC, LayerNorm(C, eps 1e-6), Linear(C, 4C), GELU, Linear(4C, C), Permute back,
    layer scale [C, 1, 1] (random here), residual), a LayerNorm2d + 2x2/2 conv downsample, a
    second CNBlock, and torchvision's head (avg pool, LayerNorm2d, Flatten, Linear)."""
    def __init__(s):
        super().__init__()
        s.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 4, 4), LayerNorm2d(8, eps=1e-6)),
            CNBlock(8, 1e-6, 0.0),
            nn.Sequential(LayerNorm2d(8, eps=1e-6), nn.Conv2d(8, 16, 2, 2)),
            CNBlock(16, 1e-6, 0.0))
        for m in s.modules():
            if isinstance(m, CNBlock):
                m.layer_scale.data.uniform_(0.5, 1.5)
        s.avgpool = nn.AdaptiveAvgPool2d(1)
        s.classifier = nn.Sequential(LayerNorm2d(16, eps=1e-6), nn.Flatten(1), nn.Linear(16, 10))
    def forward(s, x):
        return s.classifier(s.avgpool(s.features(x)))

class HRNetFuse(nn.Module):
    """HRNet fusion: a high (16x16) and a low (8x8) resolution branch; the low one through 1x1
    conv-BN, nn.Upsample(scale_factor=2, nearest), added to the high one; and again through
    another 1x1 conv-BN and F.interpolate(scale_factor=2, bilinear, align_corners=False)."""
    def __init__(s):
        super().__init__()
        s.stem = cbr(3, 16)
        s.high = cbr(16, 16); s.low = cbr(16, 32, s=2)
        s.fuse1 = cbr(32, 16, k=1, act=None); s.up = nn.Upsample(scale_factor=2, mode="nearest")
        s.fuse2 = cbr(32, 16, k=1, act=None)
        s.mix = cbr(32, 16, k=1)
        s.pool = nn.AdaptiveAvgPool2d(1); s.fc = nn.Linear(16, 10)
    def forward(s, x):
        x = s.stem(x)
        h, l = s.high(x), s.low(x)
        a = torch.relu(h + s.up(s.fuse1(l)))
        b = torch.relu(h + F.interpolate(s.fuse2(l), scale_factor=2, mode="bilinear", align_corners=False))
        return s.fc(torch.flatten(s.pool(s.mix(torch.cat([a, b], 1))), 1))

class GroupNormBlock(nn.Module):
    """conv -> GroupNorm(4, 16) -> ReLU -> conv -> GroupNorm -> residual -> ReLU."""
    def __init__(s):
        super().__init__()
        s.stem = nn.Conv2d(3, 16, 3, 1, 1)
        s.conv1 = nn.Conv2d(16, 16, 3, 1, 1, bias=False); s.gn1 = nn.GroupNorm(4, 16)
        s.conv2 = nn.Conv2d(16, 16, 3, 1, 1, bias=False); s.gn2 = nn.GroupNorm(4, 16)
        s.pool = nn.AdaptiveAvgPool2d(1); s.fc = nn.Linear(16, 10)
    def forward(s, x):
        x = torch.relu(s.stem(x))
        y = s.gn2(s.conv2(torch.relu(s.gn1(s.conv1(x)))))
        return s.fc(torch.flatten(s.pool(torch.relu(x + y)), 1))

# name -> (builder, per-sample input shape)
class CbamMaxHead(nn.Module):
    """A channel-attention head in the style of CBAM: a spatial max (ReduceMax) and mean of the
    map through one shared MLP, their sum through a sigmoid scaling the map, then a global max
    pool and a Linear. (F.pad is left out: the TorchScript exporter computes its pads at run time
    through ConstantOfShape, which the importer does not evaluate.)"""
    def __init__(s):
        super().__init__()
        s.stem = cbr(3, 16)
        s.down = nn.Conv2d(16, 24, 3, 2, 1, bias=False)
        s.bn = nn.BatchNorm2d(24)
        s.mlp = nn.Sequential(nn.Conv2d(24, 8, 1), nn.ReLU(), nn.Conv2d(8, 24, 1))
        s.fc = nn.Linear(24, 10)
    def forward(s, x):
        x = s.stem(x)
        x = torch.relu(s.bn(s.down(x)))
        att = s.mlp(x.amax((2, 3), keepdim=True)) + s.mlp(x.mean((2, 3), keepdim=True))
        x = x * torch.sigmoid(att)
        return s.fc(x.amax((2, 3)))

FIXTURES = {
    "se_block": (se_block, (3, 16, 16)),
    "hardswish_ir": (HardswishIR, (3, 16, 16)),
    "silu_mbconv": (SiluMBConv, (3, 16, 16)),
    "leaky_csp": (LeakyCSP, (3, 16, 16)),
    "act_zoo": (ActZoo, (3, 16, 16)),
    "ceil_pool": (CeilPool, (3, 24, 24)),
    "mean_head": (MeanHead, (3, 16, 16)),
    "ghost_slice": (GhostSlice, (3, 16, 16)),
    "shuffle_unit": (Shuffle, (3, 16, 16)),
    "res2net_split": (Res2Net, (3, 16, 16)),
    "convnext_block": (ConvNeXt, (3, 16, 16)),
    "hrnet_fuse": (HRNetFuse, (3, 16, 16)),
    "groupnorm_block": (GroupNormBlock, (3, 16, 16)),
    "cbam_maxhead": (CbamMaxHead, (3, 16, 16)),
}

def export(model, name, out, shape):
    """As `scripts/onnx_fixtures.py`: BatchNorm statistics and affine parameters randomised
    (also GroupNorm's and LayerNorm's affine ones), eval mode, a batch of 2."""
    torch.manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2,0.2); mod.running_var.uniform_(0.5,1.5)
        if isinstance(mod, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) and mod.weight is not None:
            mod.weight.data.uniform_(0.5,1.5); mod.bias.data.uniform_(-0.2,0.2)
    model.eval()
    x=torch.randn(2,*shape)
    # Keep BatchNorm as its own node (no folding into the conv), as a trained PyTorch model
    # exported for pruning should be.
    torch.onnx.export(model,x,f"{out}/{name}.onnx",input_names=["x"],output_names=["y"],
                      dynamic_axes={"x":{0:"n"},"y":{0:"n"}},opset_version=17,dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    with torch.no_grad():
        y=model(x).detach()
    x.numpy().astype("<f4").tofile(f"{out}/{name}.x.bin")
    y.numpy().astype("<f4").tofile(f"{out}/{name}.y.bin")
    json.dump({"x":list(x.shape),"y":list(y.shape)}, open(f"{out}/{name}.json","w"))
    return x.numpy(), y.numpy()

def check(name, out, x, y):
    """Sorted op types of the exported graph, and onnxruntime's max abs difference from y."""
    import onnx, onnxruntime as ort
    path = f"{out}/{name}.onnx"
    ops = sorted({n.op_type for n in onnx.load(path).graph.node})
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})[0]
    if got.shape != y.shape:
        raise AssertionError(f"onnxruntime output shape {got.shape} != PyTorch's {y.shape}")
    return ops, float(np.abs(got - y).max()), os.path.getsize(path)

def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "crates/shears-onnx/tests/fixtures"
    names = sys.argv[2:] or list(FIXTURES)
    os.makedirs(out, exist_ok=True)
    failed = []
    for name in names:
        build, shape = FIXTURES[name]
        try:
            torch.manual_seed(0)
            x, y = export(build(), name, out, shape)
            ops, diff, size = check(name, out, x, y)
            ok = diff < 1e-4 and size < 60_000
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {size} bytes, input {list(x.shape)}, "
                  f"output {list(y.shape)}, onnxruntime max abs diff {diff:.3g}")
            print(f"     ops: {' '.join(ops)}")
            if not ok:
                failed.append(name)
        except Exception as e:
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=3)
            failed.append(name)
        sys.stdout.flush()
    print(f"{len(names) - len(failed)}/{len(names)} fixtures ok" + (f"; failed: {' '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)

if __name__ == "__main__":
    main()
