"""ONNX test fixtures for shears-onnx: small PyTorch models exported to ONNX, with a reference
input and PyTorch's output for it (raw little-endian f32, shapes in the .json next to them).

Run with a Python that has torch and onnx (kept out of CI; the small outputs are committed):
    python3 scripts/onnx_fixtures.py crates/shears-onnx/tests/fixtures
"""
import json, sys
import numpy as np
import torch
import torch.nn as nn
torch.manual_seed(0)
class Block(nn.Module):
    def __init__(s, c_in, c, stride):
        super().__init__()
        s.conv1=nn.Conv2d(c_in,c,3,stride,1,bias=False); s.bn1=nn.BatchNorm2d(c)
        s.conv2=nn.Conv2d(c,c,3,1,1,bias=False); s.bn2=nn.BatchNorm2d(c)
        s.short = None if stride==1 and c_in==c else nn.Sequential(nn.Conv2d(c_in,c,1,stride,bias=False), nn.BatchNorm2d(c))
    def forward(s,x):
        y=torch.relu(s.bn1(s.conv1(x))); y=s.bn2(s.conv2(y))
        return torch.relu(y + (x if s.short is None else s.short(x)))
class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem=nn.Conv2d(1,16,3,1,1,bias=False); s.bn=nn.BatchNorm2d(16)
        s.layer1=Block(16,16,1); s.layer2=Block(16,32,2); s.pool=nn.AdaptiveAvgPool2d(1); s.fc=nn.Linear(32,10)
    def forward(s,x):
        x=torch.relu(s.bn(s.stem(x))); x=s.layer2(s.layer1(x)); x=s.pool(x); return s.fc(torch.flatten(x,1))
class Vgg(nn.Module):
    """VGG-style: conv-BN-ReLU stacks, max pools, a flatten of a feature map, dropout, linears."""
    def __init__(s):
        super().__init__()
        s.features=nn.Sequential(nn.Conv2d(1,8,3,1,1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(8,16,3,1,1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.AvgPool2d(2))
        s.classifier=nn.Sequential(nn.Linear(16*3*3,32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32,10))
    def forward(s,x):
        # view(size(0), -1): the exporter writes the Shape → Gather → Unsqueeze → Concat → Reshape
        # chain the importer must fold into a flatten.
        x = s.features(x)
        return s.classifier(x.view(x.size(0), -1))

class InvertedResidual(nn.Module):
    def __init__(s, c, expand):
        super().__init__()
        h = c * expand
        s.conv = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                               nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                               nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))
    def forward(s, x):
        return x + s.conv(x)

class MobileNet(nn.Module):
    """MobileNet-V2-style: ReLU6, depthwise convs, inverted residual blocks."""
    def __init__(s):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        s.blocks = nn.Sequential(InvertedResidual(8, 4), InvertedResidual(8, 4))
        s.pool = nn.AdaptiveAvgPool2d(1)
        s.fc = nn.Linear(8, 10)
    def forward(s, x):
        return s.fc(torch.flatten(s.pool(s.blocks(s.stem(x))), 1))

def export(model, name, out):
    torch.manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2,0.2); mod.running_var.uniform_(0.5,1.5)
            mod.weight.data.uniform_(0.5,1.5); mod.bias.data.uniform_(-0.2,0.2)
    model.eval()
    x=torch.randn(2,1,28,28)
    # Keep BatchNorm as its own node (no folding into the conv), as a trained PyTorch model
    # exported for pruning should be.
    torch.onnx.export(model,x,f"{out}/{name}.onnx",input_names=["x"],output_names=["y"],
                      dynamic_axes={"x":{0:"n"},"y":{0:"n"}},opset_version=17,dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    y=model(x).detach()
    x.numpy().astype("<f4").tofile(f"{out}/{name}.x.bin")
    y.numpy().astype("<f4").tofile(f"{out}/{name}.y.bin")
    json.dump({"x":list(x.shape),"y":list(y.shape)}, open(f"{out}/{name}.json","w"))

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "crates/shears-onnx/tests/fixtures"
    torch.manual_seed(0)
    export(Net(), "resnet", out)
    torch.manual_seed(0)
    export(Vgg(), "vgg", out)
    torch.manual_seed(0)
    export(MobileNet(), "mobilenet", out)
