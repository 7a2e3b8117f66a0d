"""Tests of the PyTorch bridge, ``shears.torch``.

Three kinds of tests:

* the bridge's helpers (value matching, tensor collection, fingerprints, naming the module at
  fault), with numpy and torch alone;
* the bridge's logic end to end against ``fake_shears`` (conftest.py), a stand-in for the
  extension that runs the ONNX graph in onnxruntime and cuts the channels the test names;
* the bridge on the real extension ``shears._shears`` (torchvision ResNet-18 and
  MobileNetV2, the test's own networks), skipped while the extension is not built.
"""

from __future__ import annotations

import copy
import io
import os

import numpy as np
import pytest
from conftest import import_or_skip

torch = import_or_skip("torch")
bridge = import_or_skip("shears.torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn.utils import prune as tprune  # noqa: E402

from shears import Error, InvalidInput  # noqa: E402

UnsliceableModule = bridge.UnsliceableModule
match_tensors = bridge.match_tensors


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


def randomize_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial statistics and affines for the norms (fresh ones are zeros and ones)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return module


class Residual(nn.Module):
    """conv-bn-relu x3 with a residual add, global pooling and a linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 8, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(h)))
        y = self.bn3(self.conv3(y))
        y = F.relu(y + h)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class Depthwise(nn.Module):
    """A MobileNet block: pointwise, depthwise, pointwise."""

    def __init__(self):
        super().__init__()
        self.pw1 = nn.Conv2d(3, 12, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.pw2 = nn.Conv2d(12, 6, 1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = F.relu6(self.bn1(self.pw1(x)))
        x = F.relu6(self.bn2(self.dw(x)))
        x = self.pw2(x)
        return self.fc(x.mean((2, 3)))


class Head(nn.Module):
    """A head with a literal channel count (64 channels of 4x4) in its view."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64 * 16, 10)

    def forward(self, x):
        return self.fc(x.view(x.shape[0], 64 * 16))


class LiteralNet(nn.Module):
    """Two conv-bn-relu layers (the second with 64 channels of 4x4 on a 3x8x8 input) and Head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 64, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.head = Head()

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(x)


class LayerScale(nn.Module):
    """A learned per-channel scale: a custom layer owning a per-channel parameter."""

    def __init__(self, channels):
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(channels, 1, 1) + 0.5)

    def forward(self, x):
        return x * self.gamma


class ScaledNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.ls = LayerScale(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.ls(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class Standardize(nn.Module):
    """``(x - mean) / std`` with buffers, times a literal per-channel constant."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1))

    def forward(self, x):
        literal = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
        return (x - self.mean) / self.std * literal


class StandardizedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = Standardize()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(self.pre(x))))
        return self.fc(x.mean((2, 3)))


class NormNet(nn.Module):
    """GroupNorm, and a LayerNorm over the channels (channels-last, as ConvNeXt)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.ln = nn.LayerNorm(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.gn(self.conv1(x)))
        x = self.conv2(x)
        x = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = F.relu(self.conv3(F.relu(x)))
        return self.fc(x.mean((2, 3)))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def snapshot(m: nn.Module):
    """Every parameter and buffer object, and every attribute the bridge may change."""
    tensors = {k: v for k, v in m.state_dict(keep_vars=True).items()}
    attrs = {}
    for path, mod in m.named_modules():
        for a in ("in_channels", "out_channels", "groups", "num_features", "in_features",
                  "out_features", "normalized_shape", "num_channels", "num_groups"):
            if hasattr(mod, a):
                attrs[(path, a)] = getattr(mod, a)
    return tensors, attrs


def assert_unchanged(m, before_snapshot, before_out, x):
    tensors, attrs = snapshot(m)
    t0, a0 = before_snapshot
    assert tensors.keys() == t0.keys()
    for k in t0:
        assert tensors[k] is t0[k], f"{k} was replaced"
    assert attrs == a0
    with torch.no_grad():
        assert torch.equal(m.eval()(x), before_out)


def train_step(m: nn.Module, x: torch.Tensor) -> float:
    """One SGD step with an optimizer built after pruning; returns the loss."""
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    target = torch.randint(0, 10, (x.shape[0],), generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(m(x), target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    m.eval()
    return loss.item()


def assert_state_dict_round_trip(m: nn.Module, x: torch.Tensor):
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    fresh = copy.deepcopy(m)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), m.eval()(x), rtol=0, atol=0)


def assert_attributes_consistent(m: nn.Module):
    """Every resized layer's attributes describe its tensors."""
    for path, mod in m.named_modules():
        if isinstance(mod, nn.Conv2d):
            assert mod.weight.shape[0] == mod.out_channels, path
            assert mod.weight.shape[1] * mod.groups == mod.in_channels, path
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            assert mod.running_mean.shape[0] == mod.num_features, path
        elif isinstance(mod, nn.Linear):
            assert tuple(mod.weight.shape) == (mod.out_features, mod.in_features), path
        elif isinstance(mod, nn.LayerNorm):
            assert tuple(mod.weight.shape) == tuple(mod.normalized_shape), path
        elif isinstance(mod, nn.GroupNorm):
            assert mod.weight.shape[0] == mod.num_channels, path
            assert mod.num_channels % mod.num_groups == 0, path


def bn_keep(prefix, idx):
    return {f"{prefix}.{s}": {0: idx} for s in ("weight", "bias", "running_mean", "running_var")}


# ----------------------------------------------------------------------------------------------
# Helpers, numpy and torch only
# ----------------------------------------------------------------------------------------------


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)


def test_match_linear_seen_as_a_1x1_conv():
    w = _rand(10, 8)
    matches, unmatched = match_tensors({"n3.weight": w.reshape(10, 8, 1, 1)}, {"fc.weight": w})
    assert unmatched == []
    m = matches["n3.weight"]
    assert (m.torch_name, m.value_fn, m.transposed) == ("fc.weight", "identity", False)
    assert m.axes == {0: 0, 1: 1}
    np.testing.assert_array_equal(m.to_ir(w), w.reshape(10, 8, 1, 1))


def test_match_layer_scale_seen_as_a_vector():
    g = _rand(8, 1, 1)
    matches, _ = match_tensors({"n1.scale": g.reshape(8)}, {"ls.gamma": g})
    assert matches["n1.scale"].axes == {0: 0}


def test_match_transpose_maps_axes_crosswise():
    w = _rand(6, 4)  # torch stores [in, out]; the IR [out, in]
    matches, _ = match_tensors({"n2.weight": np.ascontiguousarray(w.T)}, {"proj": w})
    m = matches["n2.weight"]
    assert m.transposed and m.axes == {0: 1, 1: 0}
    np.testing.assert_array_equal(m.to_ir(w), w.T)


def test_match_negated_and_inverted_constants():
    mean, std = _rand(3, 1, 1, seed=1), _rand(3, 1, 1, seed=2)
    ir = {"n0.shift": -mean.reshape(3, 1, 1), "n1.scale": (np.float32(1) / std).reshape(3, 1, 1)}
    matches, unmatched = match_tensors(ir, {"pre.mean": mean, "pre.std": std})
    assert unmatched == []
    assert matches["n0.shift"].value_fn == "neg" and matches["n0.shift"].torch_name == "pre.mean"
    assert matches["n1.scale"].value_fn == "reciprocal"
    np.testing.assert_allclose(matches["n1.scale"].to_ir(std * 2), np.float32(0.5) / std)
    # a mask is carried over without the value function
    np.testing.assert_array_equal(
        matches["n1.scale"].to_ir(np.ones((3, 1, 1)), mask=True), np.ones((3, 1, 1))
    )


def test_match_scalar_broadcast_per_channel():
    alpha = np.array([0.3125], dtype=np.float32)
    matches, _ = match_tensors({"n4.scale": np.full((5, 1, 1), 0.3125, np.float32)}, {"a": alpha})
    m = matches["n4.scale"]
    assert m.value_fn == "broadcast" and m.axes is None
    np.testing.assert_array_equal(m.to_ir(np.array([2.0])), np.full((5, 1, 1), 2.0))


def test_match_close_values_and_unmatched_names():
    w = _rand(4, 3, 3, 3)
    near = np.nextafter(w, np.float32(2))  # one ulp off: matched within rtol
    matches, unmatched = match_tensors(
        {
            "a.weight": near,
            "b.const": np.ones(4, np.float32),
            "c.weight": _rand(4, 3, 3, 3, seed=9),
        },
        {"conv.weight": w},
    )
    assert matches["a.weight"].torch_name == "conv.weight"
    assert unmatched == ["b.const", "c.weight"]


def test_match_merged_axes_have_no_axis_map():
    w = _rand(4, 6)
    matches, _ = match_tensors({"x": w.reshape(24)}, {"t": w})
    assert matches["x"].axes is None


def test_match_unit_axes_and_size_one_dims():
    w = _rand(1, 5)  # a one-output linear layer
    matches, _ = match_tensors({"n.weight": w.reshape(1, 5, 1, 1)}, {"fc.weight": w})
    assert matches["n.weight"].axes == {1: 1}


def test_collect_tensors_ties_shared_weights():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight

    t = bridge._collect_tensors(Tied())
    assert set(t) == {"a.weight", "a.bias", "b.bias"}
    assert [(s.path, s.attr) for s in t["a.weight"].slots] == [("a", "weight"), ("b", "weight")]


def test_fingerprint_is_distinct_and_keeps_variances_positive():
    m = Residual()
    tensors = bridge._collect_tensors(m)
    fps = bridge._fill_fingerprint(tensors, seed=3)
    assert "bn1.num_batches_tracked" not in fps  # integer buffers are left alone
    assert all(np.all(v > 0) for k, v in fps.items() if k.endswith("running_var"))
    firsts = [v.reshape(-1)[:2].tobytes() for v in fps.values()]
    assert len(set(firsts)) == len(firsts)
    np.testing.assert_array_equal(fps["conv2.weight"], m.conv2.weight.detach().numpy())
    again = bridge._fill_fingerprint(bridge._collect_tensors(Residual()), seed=3)
    assert all(np.array_equal(fps[k], again[k]) for k in fps)


def test_culprit_is_the_innermost_module_with_its_own_code():
    m = LiteralNet()
    assert bridge._culprit(["", "head"], m) == "head"
    assert bridge._culprit(["", "head", "head.fc"], m) == "head"
    seq = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
    assert bridge._culprit(["", "0"], seq) == "0"


def test_shape_anomaly_ignores_the_channel_axis():
    T = bridge._Trace
    before = T(None, None, [], [("a", ("", "a"), (2, 64, 4, 4)), ("b", ("", "b"), (2, 64, 16))])
    after = T(None, None, [], [("a", ("", "a"), (2, 32, 4, 4)), ("b", ("", "b"), (2, 64, 8))])
    assert bridge._shape_anomaly(before, after)[0] == "b"
    after_ok = T(None, None, [], [("a", ("", "a"), (2, 32, 4, 4)), ("b", ("", "b"), (2, 32, 16))])
    assert bridge._shape_anomaly(before, after_ok) is None


def test_effective_sparsity_without_inputs_reads_masks_and_zeros():
    m = SmallCNN()
    tprune.l1_unstructured(m.conv1, "weight", amount=0.5)
    with torch.no_grad():
        m.fc.weight[:5] = 0
    res = bridge.effective_sparsity(m)
    layers = {l["name"]: l for l in res["layers"]}
    assert set(layers) == {"conv1.weight", "conv2.weight", "fc.weight"}
    assert layers["conv1.weight"]["direct_sparsity"] == pytest.approx(0.5, abs=1 / 216)
    assert layers["fc.weight"]["direct_sparsity"] == pytest.approx(0.5)
    assert layers["conv2.weight"]["direct_sparsity"] == 0
    assert res["effective_sparsity"] is None
    total = sum(l["total"] for l in layers.values())
    zeros = sum(l["total"] * l["direct_sparsity"] for l in layers.values())
    assert res["direct_sparsity"] == pytest.approx(zeros / total)


def test_prune_rejects_bad_arguments():
    m = Residual()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(InvalidInput, match="one target"):
        bridge.prune(m, x, macs_reduction=0.5, channel_ratio=0.5)
    with pytest.raises(InvalidInput, match="one input"):
        bridge.prune(m, (x, x))
    tprune.l1_unstructured(m.conv1, "weight", amount=0.5)
    with pytest.raises(InvalidInput, match="prune.remove"):
        bridge.prune(m, x)


# ----------------------------------------------------------------------------------------------
# The bridge's logic against the fake extension
# ----------------------------------------------------------------------------------------------


def test_fake_prune_residual_in_place(fake_shears):
    m = randomize_norms(Residual())
    x = torch.randn(2, 3, 8, 8)
    k1, k2 = [0, 2, 3, 5, 7], [0, 1, 4, 6, 8, 9, 12, 15]
    fake_shears.keep = {
        "conv1.weight": {0: k1},
        **bn_keep("bn1", k1),
        "conv2.weight": {0: k2, 1: k1},
        "conv2.bias": {0: k2},
        **bn_keep("bn2", k2),
        "conv3.weight": {0: k1, 1: k2},
        **bn_keep("bn3", k1),
        "fc.weight": {1: k1},
    }
    w2 = m.conv2.weight.detach().clone()
    before = n_params(m)
    m.train()
    out, report = bridge.prune(m, x, return_report=True)
    assert out is m and m.training  # the same object, its mode restored
    assert fake_shears.plan_calls[-1]["macs_reduction"] == 0.5
    assert (m.conv1.out_channels, m.conv2.in_channels, m.conv2.out_channels) == (5, 5, 8)
    assert (m.conv3.in_channels, m.conv3.out_channels, m.bn2.num_features) == (8, 5, 8)
    assert m.fc.in_features == 5
    torch.testing.assert_close(m.conv2.weight.detach(), w2[k2][:, k1])
    assert n_params(m) < before
    assert report["torch"]["params_before"] == before
    assert report["torch"]["params_after"] == n_params(m)
    assert report["torch"]["tensors"]["conv2.weight"] == {"before": [16, 8, 3, 3],
                                                          "after": [8, 5, 3, 3]}
    assert report["torch"]["check"]["max_abs_difference"] <= 1e-4
    assert_attributes_consistent(m)
    assert all(p.requires_grad for p in m.parameters())
    assert np.isfinite(train_step(m, torch.randn(4, 3, 8, 8)))
    assert_state_dict_round_trip(m, x)


def test_fake_prune_depthwise_keeps_groups(fake_shears):
    m = randomize_norms(Depthwise())
    k = [1, 2, 5, 7, 8, 11]
    fake_shears.keep = {
        "pw1.weight": {0: k},
        **bn_keep("bn1", k),
        "dw.weight": {0: k},
        **bn_keep("bn2", k),
        "pw2.weight": {1: k},
    }
    bridge.prune(m, torch.randn(2, 3, 8, 8), channel_ratio=0.5)
    assert fake_shears.plan_calls[-1]["channel_ratio"] == 0.5
    assert (m.dw.in_channels, m.dw.out_channels, m.dw.groups) == (6, 6, 6)
    assert m.pw2.in_channels == 6
    assert_attributes_consistent(m)


def _half(n, seed):
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[: n // 2].tolist())


def _torchvision_inner_cuts(arch, m):
    """Keep half of the channels inside every block (groups that touch no residual add)."""
    keep = {}
    if arch == "resnet18":
        for i, (path, mod) in enumerate(m.named_modules()):
            if type(mod).__name__ == "BasicBlock":
                k = _half(mod.conv1.out_channels, i)
                keep.update({f"{path}.conv1.weight": {0: k}, **bn_keep(f"{path}.bn1", k),
                             f"{path}.conv2.weight": {1: k}})
    else:
        for i in range(2, 18):
            p = f"features.{i}.conv"
            k = _half(m.features[i].conv[0][0].out_channels, i)
            keep.update({f"{p}.0.0.weight": {0: k}, **bn_keep(f"{p}.0.1", k),
                         f"{p}.1.0.weight": {0: k}, **bn_keep(f"{p}.1.1", k),
                         f"{p}.2.weight": {1: k}})
    return keep


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_fake_torchvision_prune_in_place(fake_shears, arch):
    tv = import_or_skip("torchvision")
    torch.manual_seed(0)
    m = randomize_norms(getattr(tv.models, arch)(weights=None, num_classes=10)).eval()
    fake_shears.keep = _torchvision_inner_cuts(arch, m)
    x = torch.randn(2, 3, 64, 64)
    before = n_params(m)
    assert bridge.prune(m, x) is m
    assert n_params(m) < before
    assert_attributes_consistent(m)
    if arch == "mobilenet_v2":
        dw = m.features[5].conv[1][0]
        assert dw.groups == dw.in_channels == dw.out_channels == dw.weight.shape[0]
    with torch.no_grad():
        y = m(x).numpy()
    ref = fake_shears.compacted.forward(x.numpy())
    assert np.max(np.abs(y - ref)) <= 1e-4 * max(1.0, float(np.max(np.abs(ref))))
    assert np.isfinite(train_step(m, torch.randn(2, 3, 64, 64)))
    assert_state_dict_round_trip(m, x)


def test_fake_channel_layer_norm(fake_shears):
    m = randomize_norms(NormNet()).eval()
    k = [0, 1, 4, 5, 9, 10, 14]
    fake_shears.keep = {"conv2.weight": {0: k}, "conv2.bias": {0: k}, "ln.weight": {0: k},
                        "ln.bias": {0: k}, "conv3.weight": {1: k}}
    bridge.prune(m, torch.randn(2, 3, 8, 8))
    assert m.ln.normalized_shape == (7,) and m.conv3.in_channels == 7
    assert_attributes_consistent(m)


def test_fake_literal_channel_count_names_module_and_leaves_it_unchanged(fake_shears):
    m = randomize_norms(LiteralNet()).eval()
    x = torch.randn(2, 3, 8, 8)
    k = list(range(0, 64, 2))
    fake_shears.keep = {
        "conv2.weight": {0: k},
        "conv2.bias": {0: k},
        **bn_keep("bn2", k),
        "head.fc.weight": {1: [c * 16 + j for c in k for j in range(16)]},
    }
    with torch.no_grad():
        out0 = m(x)
    snap = snapshot(m)
    with pytest.raises(UnsliceableModule) as err:
        bridge.prune(m, x)
    assert err.value.module_path == "head"
    assert "`head` (Head)" in str(err.value) and "literal" in str(err.value)
    assert_unchanged(m, snap, out0, x)


def test_fake_custom_layer_is_refused_unless_allowed(fake_shears):
    m = randomize_norms(ScaledNet()).eval()
    x = torch.randn(2, 3, 8, 8)
    k = [0, 3, 4, 6]
    fake_shears.keep = {
        "conv1.weight": {0: k},
        "conv1.bias": {0: k},
        **bn_keep("bn1", k),
        "ls.gamma": {0: k},
        "fc.weight": {1: k},
    }
    with torch.no_grad():
        out0 = m(x)
    snap = snapshot(m)
    with pytest.raises(UnsliceableModule) as err:
        bridge.prune(m, x)
    assert err.value.module_path == "ls"
    assert "`ls` (LayerScale)" in str(err.value) and "allow_custom" in str(err.value)
    assert_unchanged(m, snap, out0, x)

    bridge.prune(m, x, allow_custom=True)
    assert m.ls.gamma.shape == (4, 1, 1) and m.conv1.out_channels == 4


def test_fake_maps_subtracted_divided_and_literal_constants(fake_shears):
    # (x - mean) / std: the IR holds -mean and 1/std; the literal [1, 2, 3] is no parameter.
    m = randomize_norms(StandardizedNet()).eval()
    k = [1, 2, 6]
    fake_shears.keep = {"conv1.weight": {0: k}, "conv1.bias": {0: k}, **bn_keep("bn1", k),
                        "fc.weight": {1: k}}
    _, report = bridge.prune(m, torch.randn(2, 3, 8, 8), return_report=True)
    assert m.conv1.out_channels == 3
    assert report["torch"]["modules"] == ["bn1", "conv1", "fc"]


def test_fake_mismatch_restores_and_raises(fake_shears, monkeypatch):
    m = randomize_norms(Residual()).eval()
    x = torch.randn(2, 3, 8, 8)
    k = [0, 1, 4, 6, 8, 9, 12, 15]
    fake_shears.keep = {"conv2.weight": {0: k}, "conv2.bias": {0: k}, **bn_keep("bn2", k),
                        "conv3.weight": {1: k}}
    plan = fake_shears.plan

    def wrong_plan(*args, **kwargs):  # a compacted model that computes something else
        compacted, kept, report = plan(*args, **kwargs)
        forward = compacted.forward
        compacted.forward = lambda a: forward(a) + 1
        return compacted, kept, report

    monkeypatch.setattr(fake_shears, "plan", wrong_plan)
    with torch.no_grad():
        out0 = m(x)
    snap = snapshot(m)
    with pytest.raises(UnsliceableModule, match="does not compute what shears' compacted"):
        bridge.prune(m, x)
    assert_unchanged(m, snap, out0, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fake_prune_on_cuda(fake_shears):
    m = randomize_norms(Depthwise()).cuda()
    k = [1, 2, 5, 7, 8, 11]
    fake_shears.keep = {"pw1.weight": {0: k}, **bn_keep("bn1", k), "dw.weight": {0: k},
                        **bn_keep("bn2", k), "pw2.weight": {1: k}}
    bridge.prune(m, torch.randn(2, 3, 8, 8))  # a CPU input for a CUDA module
    assert all(p.is_cuda for p in m.parameters()) and all(b.is_cuda for b in m.buffers())
    assert m.dw.groups == 6
    assert np.isfinite(train_step(m, torch.randn(4, 3, 8, 8, device="cuda")))


def test_fake_effective_sparsity_maps_masks(fake_shears):
    m = SmallCNN()
    tprune.global_unstructured(
        [(m.conv1, "weight"), (m.conv2, "weight"), (m.fc, "weight")],
        pruning_method=tprune.L1Unstructured,
        amount=0.7,
    )
    res = bridge.effective_sparsity(m, torch.randn(2, 3, 8, 8))
    names = {l["name"] for l in res["layers"]}
    assert names == {"conv1.weight", "conv2.weight", "fc.weight"}
    for layer in res["layers"]:
        mask = m.get_submodule(layer["module"]).weight_mask
        assert layer["direct_sparsity"] == pytest.approx(1 - float(mask.mean()))
        assert layer["total"] == mask.numel()
    assert hasattr(m.conv1, "weight_orig")  # the module keeps its masks


# ----------------------------------------------------------------------------------------------
# The real extension
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def shears_ext(monkeypatch):
    """The compiled extension, with its ``plan`` spied on to keep the compacted model."""
    ext = pytest.importorskip("shears._shears")
    captured = {}

    class Spy:
        def __getattr__(self, name):
            return getattr(ext, name)

        def plan(self, *args, **kwargs):
            result = ext.plan(*args, **kwargs)
            captured["compacted"] = result[0]
            return result

    monkeypatch.setattr(bridge, "_ext", lambda: Spy())
    return captured


def prune_and_check(m: nn.Module, x: torch.Tensor, captured, **kwargs):
    """Prune, and check everything the bridge promises about the pruned module."""
    m.eval()
    before = n_params(m)
    cwd_before = set(os.listdir(os.getcwd()))
    out, report = bridge.prune(m, x, return_report=True, **kwargs)
    # The plan's run directory was scratch: nothing is left in the caller's folder.
    assert set(os.listdir(os.getcwd())) == cwd_before
    assert out is m
    assert n_params(m) < before
    assert_attributes_consistent(m)
    with torch.no_grad():
        y = m(x).numpy()
    ref = np.asarray(captured["compacted"].forward(x.numpy()))
    assert np.max(np.abs(y - ref)) <= 1e-4 * max(1.0, float(np.max(np.abs(ref))))
    # And shears' compacted model as the ONNX file a user deploys, run by onnxruntime.
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(
        captured["compacted"].to_onnx_bytes(), providers=["CPUExecutionProvider"]
    )
    (deployed,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert np.max(np.abs(y - deployed)) <= 1e-4 * max(1.0, float(np.max(np.abs(deployed))))
    assert np.isfinite(train_step(m, torch.randn(4, *x.shape[1:])))
    assert_state_dict_round_trip(m, x)
    return report


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision_prune_in_place(shears_ext, arch):
    tv = import_or_skip("torchvision")
    torch.manual_seed(0)
    m = randomize_norms(getattr(tv.models, arch)(weights=None, num_classes=10))
    prune_and_check(m, torch.randn(2, 3, 64, 64), shears_ext, macs_reduction=0.5)


def test_own_residual_network(shears_ext):
    torch.manual_seed(0)
    m = randomize_norms(Residual())
    prune_and_check(m, torch.randn(2, 3, 16, 16), shears_ext, macs_reduction=0.5)


def test_own_depthwise_network(shears_ext):
    torch.manual_seed(0)
    m = randomize_norms(Depthwise())
    prune_and_check(m, torch.randn(2, 3, 16, 16), shears_ext, macs_reduction=0.5)


def test_group_norm_and_channel_layer_norm(shears_ext):
    torch.manual_seed(0)
    m = randomize_norms(NormNet())
    prune_and_check(m, torch.randn(2, 3, 16, 16), shears_ext, macs_reduction=0.5)


def test_literal_channel_count_raises_and_leaves_module_unchanged(shears_ext):
    torch.manual_seed(0)
    m = randomize_norms(LiteralNet()).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out0 = m(x)
    snap = snapshot(m)
    with pytest.raises(UnsliceableModule) as err:
        bridge.prune(m, x, channel_ratio=0.5)
    assert err.value.module_path == "head"
    assert "`head`" in str(err.value)
    assert_unchanged(m, snap, out0, x)


def test_effective_sparsity_of_global_magnitude_pruning(shears_ext):
    torch.manual_seed(0)
    m = SmallCNN()
    tprune.global_unstructured(
        [(m.conv1, "weight"), (m.conv2, "weight"), (m.fc, "weight")],
        pruning_method=tprune.L1Unstructured,
        amount=0.9,
    )
    res = bridge.effective_sparsity(m, torch.randn(2, 3, 8, 8))
    assert {l["name"] for l in res["layers"]} == {"conv1.weight", "conv2.weight", "fc.weight"}
    for layer in res["layers"]:
        mask = m.get_submodule(layer["module"]).weight_mask
        assert layer["direct_sparsity"] == pytest.approx(1 - float(mask.mean()), abs=1e-6)
        assert layer["effective_sparsity"] >= layer["direct_sparsity"] - 1e-9
    assert res["effective_sparsity"] >= res["direct_sparsity"] - 1e-9
    zeros = sum(float((1 - m.get_submodule(l["module"]).weight_mask).sum()) for l in res["layers"])
    total = sum(l["total"] for l in res["layers"])
    assert res["direct_sparsity"] == pytest.approx(zeros / total, abs=1e-6)


def test_errors_are_shears_errors():
    assert issubclass(UnsliceableModule, Error)
    assert issubclass(InvalidInput, Error)
