"""Shared fixtures of the Python tests.

``fake_shears`` stands in for the compiled extension ``shears._shears`` in the tests of the
PyTorch bridge's own logic (mapping, slicing, restoring, naming the module at fault). It
implements the extension's contract over onnx and onnxruntime, except that its ``plan`` does not
choose channels: the test says which to keep (by ONNX initializer name, which torch's exporter
takes from the module's state_dict) and the fake cuts exactly those from the ONNX graph,
independently of the bridge's torch-side slicing. Its IR names are opaque (``n<k>.<suffix>``)
and some of its tensors are stored the way shears' importer stores them (a Linear weight as
``[O, I, 1, 1]``, a subtracted constant negated, a divisor inverted), so the bridge's
value-based mapping is exercised. The tests on the real extension do not use it.
"""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest


def import_or_skip(name: str):
    """`name` imported, or the test (module) skipped saying why: not installed, or installed
    but broken (a truncated download, a missing CUDA library), which `pytest.importorskip`
    would report as an error."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - every way an import fails is a reason to skip
        pytest.skip(
            f"{name} cannot be imported here ({type(e).__name__}: {e})", allow_module_level=True
        )


class _Param:
    """One IR tensor: which ONNX initializer (or Constant) it comes from and how it is stored."""

    def __init__(self, onnx_name, kind="identity", unit_axes=0, constant=False):
        self.onnx_name = onnx_name
        self.kind = kind  # identity | neg | reciprocal | transpose
        self.unit_axes = unit_axes  # axes of size 1 appended in the IR (a Linear as a 1x1 conv)
        self.constant = constant

    def to_ir(self, a):
        a = np.asarray(a, dtype=np.float32)
        if self.kind == "neg":
            a = -a
        elif self.kind == "reciprocal":
            a = np.float32(1) / a
        elif self.kind == "transpose":
            a = a.T
        a = a.reshape(a.shape + (1,) * self.unit_axes)
        return np.ascontiguousarray(a, dtype=np.float32)

    def from_ir(self, a, onnx_shape):
        a = np.asarray(a, dtype=np.float32)
        if self.kind == "transpose":
            a = a.reshape(onnx_shape[::-1]).T
        else:
            a = a.reshape(onnx_shape)
        if self.kind == "neg":
            a = -a
        elif self.kind == "reciprocal":
            a = np.float32(1) / a
        return np.ascontiguousarray(a, dtype=np.float32)

    def ir_axis(self, onnx_axis):
        """The IR axis of an ONNX axis (the fake only reshapes by appending unit axes)."""
        if self.kind == "transpose":
            return 1 - onnx_axis
        return onnx_axis


class FakeModel:
    """``_shears.Model`` over an ONNX graph run by onnxruntime."""

    def __init__(self, proto, params, values, constants):
        self._proto = proto
        self._params = params  # IR name -> _Param
        self._values = values  # ONNX initializer name -> array
        self._constants = constants  # Constant output name -> array

    @classmethod
    def from_onnx_bytes(cls, data, name):
        import onnx
        from onnx import numpy_helper

        proto = onnx.load_from_string(data)
        values = {
            i.name: numpy_helper.to_array(i).astype(np.float32)
            for i in proto.graph.initializer
            if i.data_type == onnx.TensorProto.FLOAT
        }
        constants = {}
        params = {}
        for k, node in enumerate(proto.graph.node):
            nname = f"n{k}"
            if node.op_type == "Constant":
                t = numpy_helper.to_array(node.attribute[0].t)
                if t.dtype == np.float32 and t.size > 1:
                    constants[node.output[0]] = t
                    params[f"{nname}.const"] = _Param(node.output[0], constant=True)
                continue
            suffixes = {
                "Conv": ["input", "weight", "bias"],
                "BatchNormalization": ["input", "weight", "bias", "running_mean", "running_var"],
                "Gemm": ["input", "weight", "bias"],
                "LayerNormalization": ["input", "weight", "bias"],
            }.get(node.op_type)
            for j, inp in enumerate(node.input):
                if inp not in values:
                    continue
                suffix = suffixes[j] if suffixes else f"p{j}"
                p = _Param(inp)
                if node.op_type == "Gemm" and j == 1 and values[inp].ndim == 2:
                    p.unit_axes = 2
                elif node.op_type == "Sub" and j == 1:
                    p.kind = "neg"
                elif node.op_type == "Div" and j == 1:
                    p.kind = "reciprocal"
                elif node.op_type == "MatMul" and values[inp].ndim == 2:
                    p.kind = "transpose"
                params[f"{nname}.{suffix}"] = p
        return cls(proto, params, values, constants)

    def _array(self, p):
        return self._constants[p.onnx_name] if p.constant else self._values[p.onnx_name]

    def weights(self):
        return {n: p.to_ir(self._array(p)) for n, p in self._params.items()}

    def set_weights(self, d):
        assert set(d) == set(self._params), "set_weights needs every IR tensor"
        for n, p in self._params.items():
            cur = self._array(p)
            assert tuple(np.shape(d[n])) == p.to_ir(cur).shape, n
            new = p.from_ir(d[n], cur.shape)
            if p.constant:
                assert np.array_equal(new, cur), f"constant {n} changed"
            else:
                self._values[p.onnx_name] = new

    def nodes(self):
        out = []
        for k, node in enumerate(self._proto.graph.node):
            attrs = {a.name: a for a in node.attribute}
            op = {"type": node.op_type.lower()}
            if node.op_type == "Conv":
                w = self._values[node.input[1]]
                g = attrs["group"].i if "group" in attrs else 1
                op = {
                    "type": "conv2d",
                    "in_channels": int(w.shape[1]) * g,
                    "out_channels": int(w.shape[0]),
                    "groups": g,
                }
            elif node.op_type == "Gemm":
                op = {"type": "linear"}
            elif node.op_type == "BatchNormalization":
                op = {"type": "batch_norm", "channels": int(self._values[node.input[1]].shape[0])}
            out.append({"name": f"n{k}", "op": op, "inputs": list(node.input)})
        return out

    def _session_proto(self):
        from onnx import numpy_helper

        proto = copy.deepcopy(self._proto)
        inits = [numpy_helper.from_array(self._values[i.name], i.name) if i.name in self._values
                 else i for i in proto.graph.initializer]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(inits)
        # Let the shapes follow the cut tensors.
        del proto.graph.value_info[:]
        for o in proto.graph.output:
            o.type.tensor_type.ClearField("shape")
        return proto

    def forward(self, x):
        import onnxruntime as ort

        sess = ort.InferenceSession(
            self._session_proto().SerializeToString(), providers=["CPUExecutionProvider"]
        )
        name = sess.get_inputs()[0].name
        return sess.run(None, {name: np.asarray(x, dtype=np.float32)})[0]


class FakeShears:
    """The module-level functions of ``_shears`` (``Model``, ``plan``, ``sparsity``)."""

    Model = FakeModel

    def __init__(self):
        #: What ``plan`` keeps: ONNX initializer name -> {ONNX axis: kept indices}.
        self.keep = {}
        self.plan_calls = []
        #: The compacted model of the last ``plan``.
        self.compacted = None

    def plan(self, model, method, *, macs_reduction=None, params_reduction=None,
             channel_ratio=None, round_to=1, seed=0):
        self.plan_calls.append(
            dict(method=method, macs_reduction=macs_reduction, params_reduction=params_reduction,
                 channel_ratio=channel_ratio, round_to=round_to, seed=seed)
        )
        compacted = FakeModel(copy.deepcopy(model._proto), dict(model._params),
                              dict(model._values), dict(model._constants))
        for name, axes in self.keep.items():
            a = compacted._values[name]
            for axis, idx in axes.items():
                a = np.take(a, idx, axis=axis)
            compacted._values[name] = np.ascontiguousarray(a)
        # A depthwise conv stays depthwise.
        for node in compacted._proto.graph.node:
            if node.op_type != "Conv":
                continue
            old_w = model._values[node.input[1]]
            for a in node.attribute:
                if a.name == "group" and a.i > 1 and old_w.shape[1] == 1:
                    a.i = int(compacted._values[node.input[1]].shape[0])
        kept = {}
        for ir_name, p in model._params.items():
            if p.onnx_name in self.keep and not p.constant:
                kept[ir_name] = {p.ir_axis(ax): list(map(int, idx))
                                 for ax, idx in self.keep[p.onnx_name].items()}
        self.compacted = compacted
        return compacted, kept, {"method": method, "fake": True}

    def sparsity(self, model, masks):
        weights = model.weights()
        layers = []
        zeros = total = 0
        for name, m in masks.items():
            assert m.shape == weights[name].shape, name
            assert np.all(weights[name][m == 0] == 0), f"{name}: a masked weight is not zero"
            n = int(m.size)
            z = int((m == 0).sum())
            zeros, total = zeros + z, total + n
            layers.append({"tensor": name, "total": n, "direct_sparsity": z / n,
                           "effective_sparsity": z / n})
        s = zeros / total if total else 0.0
        return {"direct_sparsity": s, "effective_sparsity": s, "layers": layers}


@pytest.fixture
def fake_shears(monkeypatch):
    """Replace the extension seen by ``shears.torch`` with :class:`FakeShears`."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    bridge = pytest.importorskip("shears.torch")
    fake = FakeShears()
    monkeypatch.setattr(bridge, "_ext", lambda: fake)
    return fake
