"""Prune a PyTorch module in place with shears.

:func:`prune` exports the module to ONNX in memory, lets shears plan the cut (channel groups,
importance computed on the module's own weights, the target), slices the module's own
``Conv2d``, ``BatchNorm*``, ``Linear``, ``LayerNorm`` and ``GroupNorm`` tensors in place and fixes
their attributes. The same module object comes back smaller, computing what shears' compacted
model computes (checked on the example inputs), ready for the caller's training loop and
``state_dict`` saving.

:func:`effective_sparsity` reads ``torch.nn.utils.prune`` masks (or exact zeros) and returns
direct and effective sparsity per layer (effective: a weight that lies on no input-to-output
path counts as pruned too, Vysogorets & Kempe).

How the bridge finds its way back from shears to torch: shears' ONNX importer names the IR
tensors its own way, so the bridge never relies on names. It fills a deep copy of the module
with distinct random values (a *fingerprint*), exports and imports that copy, and matches every
IR tensor to the torch tensor holding the same values (the same values in another shape, the
transpose of a matrix, or the negation / reciprocal / broadcast scalar the importer makes of a
constant operand). The module's real values are then loaded into the shears model through that
map. An IR tensor that matches nothing and stays the same under another fingerprint is a
constant of the module's code (kept as imported); one that changes is an error naming it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import Error, InvalidInput

__all__ = [
    "prune",
    "effective_sparsity",
    "UnsliceableModule",
    "TensorMatch",
    "match_tensors",
]

#: Tolerance of the output checks, relative to ``max(1, max |output|)``.
DEFAULT_ATOL = 1e-4
#: ONNX opset the bridge exports with (the one shears' importer is tested with).
OPSET = 17
#: Seeds of the two fingerprints (the second is only drawn when some IR tensor matched nothing).
_FINGERPRINT_SEEDS = (0x5EED, 0x5EED + 1)


class UnsliceableModule(Error):
    """A module of the network cannot be cut the way shears planned.

    Raised by :func:`prune` when a sliced tensor belongs to a module the bridge does not know
    how to resize, when the pruned module fails to run, or when it computes something other
    than shears' compacted model (typically a literal channel count in a ``view``/``reshape``
    or a custom layer). The module is left exactly as it was. ``module_path`` is the dotted
    path of the module at fault (``""`` for the top-level module).
    """

    def __init__(self, message: str, module_path: str = ""):
        super().__init__(message)
        self.module_path = module_path


def _ext():
    """The compiled extension (imported lazily, so that this module imports without it)."""
    from . import _shears

    return _shears


# --------------------------------------------------------------------------------------------
# Tensor matching (pure numpy; tested on its own)
# --------------------------------------------------------------------------------------------

_VALUE_FNS = ("identity", "neg", "reciprocal")


def _apply_value_fn(fn: str, a: np.ndarray) -> np.ndarray:
    if fn == "identity":
        return a
    if fn == "neg":
        return -a
    if fn == "reciprocal":
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            return (np.float32(1.0) / a).astype(np.float32)
    raise ValueError(f"unknown value function {fn!r}")


@dataclass(frozen=True)
class TensorMatch:
    """How one shears IR tensor is made from one torch tensor.

    ``ir = value_fn(torch_tensor[.T]).reshape(ir_shape)``, where ``value_fn`` is
    ``"identity"``, ``"neg"`` (a subtracted constant), ``"reciprocal"`` (a divisor) or
    ``"broadcast"`` (a scalar repeated per channel). ``axes`` maps each IR axis of size > 1 to
    the torch axis it indexes, or is ``None`` when the reshape merges or splits axes (or for a
    broadcast scalar), in which case the tensor cannot be sliced.
    """

    ir_name: str
    torch_name: str
    ir_shape: Tuple[int, ...]
    torch_shape: Tuple[int, ...]
    value_fn: str = "identity"
    transposed: bool = False
    axes: Optional[Dict[int, int]] = None

    def to_ir(self, value: np.ndarray, *, mask: bool = False) -> np.ndarray:
        """The IR array for a torch array of this tensor (``mask``: layout only, no value_fn)."""
        v = np.asarray(value, dtype=np.float32)
        if tuple(v.shape) != self.torch_shape:
            raise ValueError(
                f"{self.torch_name}: expected shape {list(self.torch_shape)}, got {list(v.shape)}"
            )
        if self.value_fn == "broadcast":
            return np.full(self.ir_shape, v.reshape(-1)[0], dtype=np.float32)
        if self.transposed:
            v = v.T
        if not mask:
            v = _apply_value_fn(self.value_fn, v)
        return np.ascontiguousarray(v.reshape(self.ir_shape), dtype=np.float32)


def _axis_map(
    ir_shape: Sequence[int], torch_shape: Sequence[int], transposed: bool
) -> Optional[Dict[int, int]]:
    """IR axes of size > 1, in order, onto the torch axes of size > 1 (in transposed order)."""
    order = list(range(len(torch_shape)))
    if transposed:
        order = order[::-1]
    t_axes = [i for i in order if torch_shape[i] > 1]
    ir_axes = [i for i, d in enumerate(ir_shape) if d > 1]
    if len(t_axes) != len(ir_axes):
        return None
    if any(ir_shape[i] != torch_shape[t] for i, t in zip(ir_axes, t_axes)):
        return None
    return dict(zip(ir_axes, t_axes))


def _key(a: np.ndarray) -> Tuple[int, bytes]:
    data = np.ascontiguousarray(a, dtype=np.float32).tobytes()
    return a.size, hashlib.blake2b(data, digest_size=16).digest()


def match_tensors(
    ir_weights: Mapping[str, np.ndarray],
    torch_fingerprints: Mapping[str, np.ndarray],
    *,
    rtol: float = 1e-6,
) -> Tuple[Dict[str, TensorMatch], List[str]]:
    """Match every IR tensor to the torch tensor it was made from, by value.

    ``ir_weights`` maps IR names to arrays (shears' ``Model.weights()`` of the fingerprinted
    copy); ``torch_fingerprints`` maps torch names to the distinct random values the copy was
    filled with. An IR tensor matches a torch tensor holding the same values in C order (any
    reshape), the transpose of a 2-D torch tensor, their negation or reciprocal, or (for a
    constant array) a one-element torch tensor broadcast. Exact byte equality is tried first,
    then closeness within ``rtol``.

    Returns ``(matches, unmatched)``: the :class:`TensorMatch` of each matched IR name, and the
    IR names that match nothing (sorted).
    """
    index: Dict[Tuple[int, bytes], Tuple[str, str, bool]] = {}
    by_numel: Dict[int, List[str]] = defaultdict(list)
    scalars: Dict[float, str] = {}
    fps = {n: np.asarray(a, dtype=np.float32) for n, a in torch_fingerprints.items()}
    for name, a in fps.items():
        variants = [(False, a)]
        if a.ndim == 2:
            variants.append((True, a.T))
        # The importer negates or inverts only per-channel constants: vectors, however shaped.
        fns = _VALUE_FNS if sum(d > 1 for d in a.shape) <= 1 else ("identity",)
        for transposed, v in variants:
            for fn in fns:
                index.setdefault(_key(_apply_value_fn(fn, v)), (name, fn, transposed))
        by_numel[a.size].append(name)
        if a.size == 1:
            scalars.setdefault(float(a.reshape(-1)[0]), name)

    def make(ir_name, ir, torch_name, fn, transposed):
        t_shape = tuple(int(d) for d in fps[torch_name].shape)
        ir_shape = tuple(int(d) for d in ir.shape)
        axes = None if fn == "broadcast" else _axis_map(ir_shape, t_shape, transposed)
        return TensorMatch(ir_name, torch_name, ir_shape, t_shape, fn, transposed, axes)

    matches: Dict[str, TensorMatch] = {}
    unmatched: List[str] = []
    for ir_name in sorted(ir_weights):
        ir = np.asarray(ir_weights[ir_name], dtype=np.float32)
        hit = index.get(_key(ir))
        if hit is not None:
            matches[ir_name] = make(ir_name, ir, *hit)
            continue
        found = None
        flat = ir.reshape(-1)
        for torch_name in by_numel.get(ir.size, ()):
            a = fps[torch_name]
            for transposed in (False, True) if a.ndim == 2 else (False,):
                v = a.T if transposed else a
                for fn in _VALUE_FNS:
                    cand = _apply_value_fn(fn, v).reshape(-1)
                    if flat.size and not np.isclose(flat[0], cand[0], rtol=rtol, atol=0):
                        continue
                    if np.allclose(flat, cand, rtol=rtol, atol=0):
                        found = (torch_name, fn, transposed)
                        break
                if found:
                    break
            if found:
                break
        if found is None and flat.size > 1 and np.all(flat == flat[0]):
            name = scalars.get(float(flat[0]))
            if name is not None:
                found = (name, "broadcast", False)
        if found is None:
            unmatched.append(ir_name)
        else:
            matches[ir_name] = make(ir_name, ir, *found)
    return matches, unmatched


# --------------------------------------------------------------------------------------------
# The module's tensors
# --------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One place a tensor is stored: ``module._parameters[attr]`` or ``module._buffers[attr]``."""

    path: str
    module: nn.Module
    attr: str
    is_param: bool

    def get(self):
        store = self.module._parameters if self.is_param else self.module._buffers
        return store[self.attr]

    def set(self, value) -> None:
        store = self.module._parameters if self.is_param else self.module._buffers
        store[self.attr] = value


@dataclass
class _TorchTensor:
    """One distinct tensor of a module, under every name it has (tied weights share one)."""

    name: str  # canonical: the first state_dict-style name met
    slots: List[_Slot]

    @property
    def tensor(self) -> torch.Tensor:
        return self.slots[0].get()


def _join(path: str, attr: str) -> str:
    return f"{path}.{attr}" if path else attr


def _collect_tensors(module: nn.Module) -> Dict[str, _TorchTensor]:
    """Every distinct parameter and buffer of ``module``, by canonical name, in a fixed order."""
    by_id: Dict[int, _TorchTensor] = {}
    out: Dict[str, _TorchTensor] = {}
    for path, mod in module.named_modules(remove_duplicate=False):
        for is_param, store in ((True, mod._parameters), (False, mod._buffers)):
            for attr, t in store.items():
                if t is None:
                    continue
                slot = _Slot(path, mod, attr, is_param)
                entry = by_id.get(id(t))
                if entry is None:
                    entry = _TorchTensor(_join(path, attr), [slot])
                    by_id[id(t)] = entry
                    out[entry.name] = entry
                elif not any(s.module is mod and s.attr == attr for s in entry.slots):
                    entry.slots.append(slot)
    return out


def _fill_fingerprint(tensors: Mapping[str, _TorchTensor], seed: int) -> Dict[str, np.ndarray]:
    """Fill every floating-point tensor with distinct random values; return them by name."""
    gen = torch.Generator().manual_seed(seed)
    values: Dict[str, np.ndarray] = {}
    with torch.no_grad():
        for name, entry in tensors.items():
            t = entry.tensor
            if not t.is_floating_point() or t.numel() == 0:
                continue
            r = torch.rand(t.shape, generator=gen, dtype=torch.float32)
            if name.rsplit(".", 1)[-1].endswith("running_var"):
                r = r + 0.5  # a variance must stay positive
            else:
                r = r * 2 - 1
            t.copy_(r.to(t.dtype))
            values[name] = t.detach().cpu().float().numpy().copy()
    return values


def _real_values(tensors: Mapping[str, _TorchTensor]) -> Dict[str, np.ndarray]:
    return {
        n: e.tensor.detach().cpu().float().numpy()
        for n, e in tensors.items()
        if e.tensor.is_floating_point()
    }


# --------------------------------------------------------------------------------------------
# Export and import
# --------------------------------------------------------------------------------------------


def _as_args(example_inputs) -> Tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        args = (example_inputs,)
    elif isinstance(example_inputs, (tuple, list)):
        args = tuple(example_inputs)
    else:
        raise InvalidInput(
            "example_inputs must be a tensor (or a tuple holding one tensor), "
            f"not {type(example_inputs).__name__}"
        )
    if len(args) != 1 or not isinstance(args[0], torch.Tensor):
        raise InvalidInput(
            "shears runs networks of one input tensor: pass example_inputs as one tensor "
            "(e.g. torch.randn(2, 3, 64, 64)), or a tuple holding one tensor"
        )
    if not args[0].is_floating_point():
        raise InvalidInput(f"example_inputs must be floating point, not {args[0].dtype}")
    return args


def _module_device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """Every submodule in eval mode for the duration; each one's own flag restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _has_prune_hooks(module: nn.Module) -> List[str]:
    from torch.nn.utils import prune as tprune

    found = []
    for path, mod in module.named_modules():
        for hook in mod._forward_pre_hooks.values():
            if isinstance(hook, tprune.BasePruningMethod):
                found.append(_join(path, hook._tensor_name))
    return found


def _remove_prune_hooks(module: nn.Module) -> None:
    """Make ``torch.nn.utils.prune`` reparametrisations permanent (on a copy)."""
    from torch.nn.utils import prune as tprune

    for mod in module.modules():
        for hook in list(mod._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(mod, hook._tensor_name)


def _copy_module(module: nn.Module) -> nn.Module:
    """A deep copy; the masked tensors ``torch.nn.utils.prune`` computes are left out of it
    (they are not leaves, which deepcopy refuses; the copy's hooks compute them again)."""
    from torch.nn.utils import prune as tprune

    computed = []
    for mod in module.modules():
        for hook in mod._forward_pre_hooks.values():
            if isinstance(hook, tprune.BasePruningMethod) and hook._tensor_name in mod.__dict__:
                computed.append((mod, hook._tensor_name, mod.__dict__.pop(hook._tensor_name)))
    try:
        return copy.deepcopy(module)
    except Exception as e:  # noqa: BLE001
        raise InvalidInput(
            f"the module cannot be deep-copied ({type(e).__name__}: {e}); the bridge exports a copy"
        ) from e
    finally:
        for mod, name, value in computed:
            mod.__dict__[name] = value


def _export(module: nn.Module, args: Tuple[torch.Tensor, ...]) -> bytes:
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                buf,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=False,
            )
    except Exception as e:  # noqa: BLE001 - any exporter failure is reported the same way
        raise InvalidInput(
            f"torch.onnx.export could not export the module ({type(e).__name__}: {e}); "
            "shears imports networks through ONNX"
        ) from e
    return buf.getvalue()


@dataclass
class _Imported:
    model: Any  # _shears.Model, with the real values loaded
    matches: Dict[str, TensorMatch]
    literals: Dict[str, np.ndarray]  # IR tensors that are constants of the module's code
    copy_tensors: Dict[str, _TorchTensor]


def _import_mapped(
    module: nn.Module,
    args: Tuple[torch.Tensor, ...],
    *,
    name: str,
    prepare=None,
) -> _Imported:
    """Export a fingerprinted copy of ``module``, import it with shears, map it back by value."""
    ext = _ext()

    def fingerprinted(seed):
        dup = _copy_module(module)
        dup = dup.to(device="cpu", dtype=torch.float32)
        if prepare is not None:
            prepare(dup)
        dup.eval()
        tensors = _collect_tensors(dup)
        fps = _fill_fingerprint(tensors, seed)
        cargs = tuple(a.detach().to("cpu", torch.float32) for a in args)
        model = ext.Model.from_onnx_bytes(_export(dup, cargs), name)
        return model, tensors, fps

    model, tensors, fps = fingerprinted(_FINGERPRINT_SEEDS[0])
    ir = model.weights()
    matches, unmatched = match_tensors(ir, fps)
    literals: Dict[str, np.ndarray] = {}
    if unmatched:
        other, _, _ = fingerprinted(_FINGERPRINT_SEEDS[1])
        ir2 = other.weights()
        derived = [
            n for n in unmatched if n not in ir2 or not np.array_equal(ir[n], ir2[n])
        ]
        if derived:
            raise Error(
                "shears' import of the module has parameter(s) "
                + ", ".join(f"`{n}`" for n in derived)
                + " that change with the module's parameters but match none of them: the "
                "module transforms a parameter in its forward (e.g. w.exp(), a weight-norm or "
                "other torch.nn.utils.parametrize parametrisation), which the bridge cannot map "
                "back. Store the value shears should see as the parameter itself (e.g. "
                "torch.nn.utils.parametrize.remove_parametrizations) and prune again"
            )
        literals = {n: np.asarray(ir[n], dtype=np.float32) for n in unmatched}
    return _Imported(model, matches, literals, tensors)


def _load_real(imp: _Imported, values: Mapping[str, np.ndarray]) -> None:
    """Load real torch values (by canonical copy name) into the shears model."""
    d: Dict[str, np.ndarray] = dict(imp.literals)
    for ir_name, m in imp.matches.items():
        v = m.to_ir(values[m.torch_name])
        if not np.all(np.isfinite(v)):
            raise InvalidInput(
                f"`{m.torch_name}` holds a zero or non-finite value, and shears stores its "
                f"{m.value_fn} as `{ir_name}` (e.g. the divisor of a division), which must be "
                "finite"
            )
        d[ir_name] = v
    imp.model.set_weights(d)


# --------------------------------------------------------------------------------------------
# Running with a trace (to name the module at fault)
# --------------------------------------------------------------------------------------------


@dataclass
class _Trace:
    output: Optional[torch.Tensor]
    error: Optional[BaseException]
    stack: List[str]  # modules active when the error was raised, outermost first
    records: List[Tuple[str, Tuple[str, ...], Optional[Tuple[int, ...]]]]


def _run_traced(module: nn.Module, args: Tuple[torch.Tensor, ...]) -> _Trace:
    """Run ``module(*args)`` in eval mode without gradients, recording which module runs."""
    paths: Dict[int, str] = {}
    for path, mod in module.named_modules():
        paths.setdefault(id(mod), path)
    stack: List[str] = []
    records: list = []
    handles = []

    def pre(mod, _inputs):
        stack.append(paths[id(mod)])

    def post(mod, _inputs, output):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
        records.append((paths[id(mod)], tuple(stack), shape))
        if stack:
            stack.pop()

    try:
        for mod in module.modules():
            handles.append(mod.register_forward_pre_hook(pre))
            handles.append(mod.register_forward_hook(post))
        with _eval_mode(module), torch.no_grad():
            try:
                out = module(*args)
            except Exception as e:  # noqa: BLE001 - reported as the module's failure
                return _Trace(None, e, list(stack), records)
    finally:
        for h in handles:
            h.remove()
    return _Trace(out, None, [], records)


def _tensor_output(out, what: str) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise InvalidInput(f"{what} must return a tensor, not {type(out).__name__}")
    return out


def _show(path: str, module: nn.Module) -> str:
    mod = module.get_submodule(path) if path else module
    where = f"`{path}`" if path else "the top-level module"
    return f"{where} ({type(mod).__name__})"


def _is_builtin(mod: nn.Module) -> bool:
    return type(mod).__module__.startswith("torch.nn.")


def _culprit(stack: Sequence[str], module: nn.Module) -> str:
    """The innermost module on ``stack`` whose own code ran (not a torch.nn built-in layer)."""
    for path in reversed(stack):
        mod = module.get_submodule(path) if path else module
        if not _is_builtin(mod):
            return path
    return stack[-1] if stack else ""


def _shape_anomaly(
    before: _Trace, after: _Trace
) -> Optional[Tuple[str, Tuple[str, ...], Any, Any]]:
    """The first module output whose shape changed on an axis other than the channel axis."""
    for (p0, _s0, sh0), (p1, s1, sh1) in zip(before.records, after.records):
        if p0 != p1:
            return (p1, s1, sh0, sh1)
        if sh0 is None or sh1 is None or sh0 == sh1:
            continue
        if len(sh0) != len(sh1) or any(a != b for i, (a, b) in enumerate(zip(sh0, sh1)) if i != 1):
            return (p1, s1, sh0, sh1)
    return None


_ADVICE = (
    "Its forward probably uses a literal channel count (in a view/reshape, a slice or a "
    "constant tensor) or is a custom layer: compute the count from the tensor instead "
    "(x.flatten(1), x.shape[1], nn.Flatten) or replace the custom layer with standard ones, "
    "then prune again. The module was left unchanged."
)


# --------------------------------------------------------------------------------------------
# Slicing
# --------------------------------------------------------------------------------------------

#: Module types the bridge resizes, with the tensors it may slice on each.
_SLICEABLE = (
    (nn.Conv2d, {"weight", "bias"}),
    (nn.modules.batchnorm._BatchNorm, {"weight", "bias", "running_mean", "running_var"}),
    (nn.Linear, {"weight", "bias"}),
    (nn.LayerNorm, {"weight", "bias"}),
    (nn.GroupNorm, {"weight", "bias"}),
)


def _sliceable(mod: nn.Module, attr: str) -> bool:
    return any(isinstance(mod, cls) and attr in attrs for cls, attrs in _SLICEABLE)


_ATTRS = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.modules.batchnorm._BatchNorm: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
    nn.LayerNorm: ("normalized_shape",),
    nn.GroupNorm: ("num_channels", "num_groups"),
}


def _attr_names(mod: nn.Module) -> Tuple[str, ...]:
    for cls, names in _ATTRS.items():
        if isinstance(mod, cls):
            return names
    return ()


def _ir_node_of(
    torch_name: str, matches: Mapping[str, TensorMatch], nodes: Mapping[str, dict]
) -> Optional[dict]:
    """The compacted IR node whose parameter was made from ``torch_name``."""
    for ir_name, m in matches.items():
        if m.torch_name == torch_name:
            node = nodes.get(ir_name.rsplit(".", 1)[0])
            if node is not None:
                return node
    return None


def _fix_attributes(
    mod: nn.Module,
    path: str,
    label: str,
    name_of: Mapping[Tuple[int, str], str],
    matches: Mapping[str, TensorMatch],
    nodes: Mapping[str, dict],
    old: Mapping[str, Any],
) -> None:
    """Set a resized module's size attributes from its new tensors (and the compacted IR)."""

    def t(attr):
        return mod._parameters.get(attr) if attr in mod._parameters else mod._buffers.get(attr)

    def ir_op(attr):
        name = name_of.get((id(mod), attr))
        node = _ir_node_of(name, matches, nodes) if name else None
        return (node or {}).get("op", {})

    if isinstance(mod, nn.Conv2d):
        w = t("weight")
        out_c = int(w.shape[0])
        op = ir_op("weight")
        groups = op.get("groups")
        if groups is None:
            g0 = old["groups"]
            if g0 == 1:
                groups = 1
            elif g0 == old["in_channels"] == old["out_channels"]:
                groups = out_c  # depthwise stays depthwise
            else:
                groups = g0
        groups = int(groups)
        in_c = int(w.shape[1]) * groups
        if out_c % groups:
            raise UnsliceableModule(
                f"{label}: {out_c} output channels do not split into {groups} groups", path
            )
        mod.out_channels, mod.in_channels, mod.groups = out_c, in_c, groups
    elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
        ref = next(x for x in (t("running_mean"), t("weight"), t("bias")) if x is not None)
        mod.num_features = int(ref.shape[0])
    elif isinstance(mod, nn.Linear):
        w = t("weight")
        mod.out_features, mod.in_features = int(w.shape[0]), int(w.shape[1])
    elif isinstance(mod, nn.LayerNorm):
        ref = next(x for x in (t("weight"), t("bias")) if x is not None)
        mod.normalized_shape = tuple(int(d) for d in ref.shape)
    elif isinstance(mod, nn.GroupNorm):
        ref = next(x for x in (t("weight"), t("bias")) if x is not None)
        channels = int(ref.shape[0])
        op = ir_op("weight" if t("weight") is not None else "bias")
        groups = int(op.get("groups", old["num_groups"]))
        if channels % groups:
            raise UnsliceableModule(
                f"{label}: {channels} channels do not split into {groups} groups", path
            )
        mod.num_channels, mod.num_groups = channels, groups


@dataclass
class _Snapshot:
    """What slicing replaces: every slot's tensor and every resized module's attributes."""

    slots: List[Tuple[_Slot, Any]]
    attrs: List[Tuple[str, nn.Module, Dict[str, Any]]]

    def restore(self) -> None:
        for slot, value in self.slots:
            slot.set(value)
        for _path, mod, values in self.attrs:
            for k, v in values.items():
                setattr(mod, k, v)


def _cuts_in_torch(
    kept: Mapping[str, Mapping[Any, Sequence[int]]],
    imp: _Imported,
    real: Mapping[str, _TorchTensor],
    module: nn.Module,
) -> Dict[str, Dict[int, List[int]]]:
    """``kept`` (IR names and axes) as kept indices per torch tensor name and torch axis."""
    cuts: Dict[str, Dict[int, List[int]]] = {}
    source: Dict[Tuple[str, int], str] = {}
    for ir_name, axes in kept.items():
        m = imp.matches.get(ir_name)
        if m is None:
            if ir_name in imp.literals:
                continue  # a constant of the module's code: the check below decides
            raise Error(f"shears cut `{ir_name}`, which is not a tensor of the imported model")
        if m.value_fn == "broadcast" or not axes:
            continue
        entry = real[m.torch_name]
        owner = entry.slots[0]
        for ir_axis, idx in axes.items():
            ir_axis = int(ir_axis)
            idx = [int(i) for i in idx]
            if not 0 <= ir_axis < len(m.ir_shape):
                raise Error(
                    f"shears cut axis {ir_axis} of `{ir_name}`, of shape {list(m.ir_shape)}"
                )
            if len(idx) == m.ir_shape[ir_axis]:
                continue  # nothing lost on this axis
            t_axis = None if m.axes is None else m.axes.get(ir_axis)
            if t_axis is None:
                raise UnsliceableModule(
                    f"{_show(owner.path, module)}: its tensor `{m.torch_name}` of shape "
                    f"{list(m.torch_shape)} is seen by shears as `{ir_name}` of shape "
                    f"{list(m.ir_shape)}, and axis {ir_axis} of that does not correspond to one "
                    "axis of the tensor, so its channels cannot be cut. " + _ADVICE,
                    owner.path,
                )
            prev = cuts.setdefault(m.torch_name, {}).get(t_axis)
            if prev is not None and prev != idx:
                raise UnsliceableModule(
                    f"{_show(owner.path, module)}: its tensor `{m.torch_name}` is used as both "
                    f"`{source[(m.torch_name, t_axis)]}` and `{ir_name}` in shears' graph, which "
                    "cuts them differently (a shared layer applied to different channel groups); "
                    "give each use its own layer",
                    owner.path,
                )
            cuts[m.torch_name][t_axis] = idx
            source[(m.torch_name, t_axis)] = ir_name
    return cuts


def _params_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _output_scale(ref: np.ndarray) -> float:
    return max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0


def _difference(out: np.ndarray, ref: np.ndarray) -> Tuple[float, str]:
    """Max absolute difference (inf for other shapes) and its description."""
    if out.shape != ref.shape:
        return float("inf"), f"output shape {list(out.shape)} against {list(ref.shape)}"
    diff = float(np.max(np.abs(out - ref), initial=0.0))
    return diff, f"max |difference| {diff:.3g}"


def _check_targets(
    macs_reduction, params_reduction, channel_ratio, latency_reduction=None
) -> Dict[str, float]:
    targets = {
        k: v
        for k, v in (
            ("macs_reduction", macs_reduction),
            ("params_reduction", params_reduction),
            ("channel_ratio", channel_ratio),
            ("latency_reduction", latency_reduction),
        )
        if v is not None
    }
    if len(targets) > 1:
        raise InvalidInput(f"give one target, not {len(targets)}: {', '.join(sorted(targets))}")
    return targets or {"macs_reduction": 0.5}


def _check_module(module: nn.Module) -> None:
    if not isinstance(module, nn.Module):
        raise InvalidInput(f"module must be a torch.nn.Module, not {type(module).__name__}")
    hooked = _has_prune_hooks(module)
    if hooked:
        raise InvalidInput(
            "the module carries torch.nn.utils.prune masks on "
            + ", ".join(f"`{n}`" for n in hooked)
            + ": make them permanent with torch.nn.utils.prune.remove(module, name) first"
        )
    low = sorted(
        {
            str(t.dtype)
            for t in module.state_dict().values()
            if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64)
        }
    )
    if low:
        raise InvalidInput(
            f"the module holds {', '.join(low)} tensors: prune it in float32 (module.float()) "
            "and convert it afterwards; the output check needs float32 accuracy"
        )


def _check_owners(cuts, real: Mapping[str, _TorchTensor], module: nn.Module, allow_custom: bool):
    """Every cut tensor must sit on a module the bridge resizes (checked before any change)."""
    for tname, axes in cuts.items():
        entry = real[tname]
        for slot in entry.slots:
            if not allow_custom and not _sliceable(slot.module, slot.attr):
                raise UnsliceableModule(
                    f"{_show(slot.path, module)} owns `{_join(slot.path, slot.attr)}`, whose "
                    "channels shears cuts, but the bridge only resizes Conv2d, BatchNorm, "
                    "Linear, LayerNorm and GroupNorm layers. Build it from those layers, or pass "
                    "allow_custom=True to slice its tensors anyway (its own attributes are left "
                    "as they are; the output check still applies). The module was left unchanged.",
                    slot.path,
                )
        size = entry.tensor.shape
        for axis, idx in axes.items():
            if axis >= len(size) or not idx or any(i < 0 or i >= size[axis] for i in idx):
                raise Error(f"shears kept indices out of range for `{tname}` axis {axis}")


def _snapshot(cuts, real: Mapping[str, _TorchTensor]) -> _Snapshot:
    slots = [s for tname in cuts for s in real[tname].slots]
    modules: Dict[int, Tuple[str, nn.Module]] = {}
    for s in slots:
        modules.setdefault(id(s.module), (s.path, s.module))
    return _Snapshot(
        slots=[(s, s.get()) for s in slots],
        attrs=[
            (path, mod, {k: copy.copy(getattr(mod, k)) for k in _attr_names(mod)})
            for path, mod in modules.values()
        ],
    )


def _apply_cuts(
    cuts, real: Mapping[str, _TorchTensor], snapshot: _Snapshot, imp: _Imported, compacted, module
) -> Dict[str, Dict[str, List[int]]]:
    """Slice the tensors in place and fix the resized modules' attributes; old and new shapes."""
    shapes = {}
    with torch.no_grad():
        for tname, axes in cuts.items():
            entry = real[tname]
            old = entry.tensor
            new = old.detach()
            for axis in sorted(axes):
                index = torch.as_tensor(axes[axis], dtype=torch.long, device=new.device)
                new = new.index_select(axis, index)
            new = new.contiguous()
            if entry.slots[0].is_param:
                new = nn.Parameter(new, requires_grad=old.requires_grad)
            for s in entry.slots:
                s.set(new)
            shapes[tname] = {"before": list(old.shape), "after": list(new.shape)}
    name_of = {(id(s.module), s.attr): n for n, e in real.items() for s in e.slots}
    nodes = {n["name"]: n for n in compacted.nodes()}
    for path, mod, old_attrs in snapshot.attrs:
        _fix_attributes(mod, path, _show(path, module), name_of, imp.matches, nodes, old_attrs)
    return shapes


def _check_pruned(module, run_args, x, dense: _Trace, compacted, atol: float) -> Dict[str, float]:
    """Run the pruned module against shears' compacted model; raise naming the module at fault."""
    after = _run_traced(module, run_args)
    if after.error is not None:
        culprit = _culprit(after.stack, module)
        inner = after.stack[-1] if after.stack else ""
        where = "" if inner == culprit else f" (raised in {_show(inner, module)})"
        raise UnsliceableModule(
            f"{_show(culprit, module)} fails once its channels are cut: "
            f"{type(after.error).__name__}: {after.error}{where}. " + _ADVICE,
            culprit,
        ) from after.error
    out = _tensor_output(after.output, "the module").detach().cpu().float().numpy()
    ref = np.asarray(compacted.forward(x))
    tol = atol * _output_scale(ref)
    diff, what = _difference(out, ref)
    if diff <= tol:
        return {"max_abs_difference": diff, "tolerance": tol}
    anomaly = _shape_anomaly(dense, after)
    if anomaly is not None:
        path, stack, sh0, sh1 = anomaly
        culprit = _culprit(list(stack) or [path], module)
        detail = (
            f"the output of {_show(path, module)} went from shape "
            f"{None if sh0 is None else list(sh0)} to {None if sh1 is None else list(sh1)}"
        )
    else:
        ran = dict.fromkeys(p for p, _, _ in after.records if p)
        custom = [p for p in ran if not _is_builtin(module.get_submodule(p))]
        culprit = custom[0] if custom else ""
        detail = (
            "custom modules that ran: " + ", ".join(f"`{p}`" for p in custom)
            if custom
            else "no custom module ran"
        )
    raise UnsliceableModule(
        "the pruned module does not compute what shears' compacted model computes "
        f"({what}, tolerance {tol:.3g}); {detail}; the likely culprit is "
        f"{_show(culprit, module)}. " + _ADVICE,
        culprit,
    )


def prune(
    module: nn.Module,
    example_inputs,
    method: str = "l1-filter",
    *,
    macs_reduction: Optional[float] = None,
    params_reduction: Optional[float] = None,
    channel_ratio: Optional[float] = None,
    latency_reduction: Optional[float] = None,
    round_to: Union[int, str] = "auto",
    seed: int = 0,
    allow_custom: bool = False,
    atol: float = DEFAULT_ATOL,
    return_report: bool = False,
    **options: Any,
):
    """Prune the channels of ``module`` in place with shears and return the same module.

    The module is exported to ONNX (opset 17, in eval mode, without constant folding) and
    imported by shears, which plans the cut with ``method`` (a structured method such as
    ``"l1-filter"``, ``"l2-filter"``, ``"bn-scale"``, ``"random-filter"``) to one target:
    ``macs_reduction`` (the default, 0.5, when no target is given), ``params_reduction``,
    ``channel_ratio`` or ``latency_reduction`` (batch-1 latency in onnxruntime, or in shears'
    engine with ``latency_runtime="shears"``); ``round_to`` rounds the kept channel counts up
    to a multiple (``"auto"``, the default, times the multiples 1 to 32 in onnxruntime and
    keeps the fastest), ``seed`` seeds random methods. Importance is computed on the module's own weights (shears' model of the module
    is first checked to compute what the module computes on ``example_inputs``).

    The module's own ``Conv2d``, ``BatchNorm1d/2d``, ``Linear``, ``LayerNorm`` and
    ``GroupNorm`` tensors are then sliced in place (new ``nn.Parameter`` objects with the same
    ``requires_grad``; buffers replaced) and their size attributes fixed (``in_channels``,
    ``out_channels``, ``groups``, ``num_features``, ``in_features``, ``out_features``,
    ``normalized_shape``, ``num_channels``, ``num_groups``). Finally the pruned module is run on
    ``example_inputs`` and must equal shears' compacted model within ``atol`` (times
    ``max(1, max |output|)``). Each submodule's train/eval mode is left as it was.

    Args:
        module: the network, in float32 (or float64), on any device; one tensor in, one out
            (of a tuple output, the first element is checked).
        example_inputs: one input tensor (or a tuple holding one), e.g. ``torch.randn(2, 3,
            64, 64)``; it fixes the input shape shears sees.
        method, macs_reduction, params_reduction, channel_ratio, latency_reduction, round_to,
            seed: passed to
            shears' planner.
        **options: further options of ``shears.prune`` for the planner (``ignore``, ``scope``,
            ``normalize``, ``max_layer_ratio``, ``percentile``, ``data`` for ``taylor``, ...).
        allow_custom: also slice tensors owned by modules of other types (their attributes are
            left as they are; the output check still guards the result). Off by default: such
            a tensor raises :class:`UnsliceableModule`.
        atol: tolerance of the output checks.
        return_report: return ``(module, report)`` instead of ``module``.

    Returns:
        ``module`` itself, or ``(module, report)`` with ``return_report=True``. ``report`` is
        shears' planning report plus ``"torch"``: ``"tensors"`` (each sliced tensor's
        ``"before"`` and ``"after"`` shape), ``"modules"`` (the resized modules' paths),
        ``"params_before"``, ``"params_after"`` and ``"check"`` (``"max_abs_difference"``,
        ``"tolerance"``).

    Raises:
        UnsliceableModule: a module cannot be cut (a custom layer owns a cut tensor, or the
            pruned module fails or computes something else, e.g. a literal channel count in a
            ``view``); ``module_path`` names it, and ``module`` is left exactly as it was.
        InvalidInput: bad arguments, or a module that cannot be copied, exported or run.
        shears.Error: shears cannot import or plan the network, or its import of the module
            computes something else than the module.

    The parameters are new objects: build the optimizer (and any learning-rate scheduler, EMA
    or DDP wrapper) *after* pruning; one made before still holds the old tensors. Gradients of
    the old parameters are not carried over. ``torch.nn.utils.prune`` reparametrisations must
    be made permanent first (``torch.nn.utils.prune.remove``).
    """
    _check_module(module)
    targets = _check_targets(macs_reduction, params_reduction, channel_ratio, latency_reduction)
    args = _as_args(example_inputs)
    run_args = tuple(a.to(_module_device(module)) for a in args)
    x = args[0].detach().to("cpu", torch.float32).numpy()

    imp = _import_mapped(module, args, name=type(module).__name__)
    real = _collect_tensors(module)
    if set(real) != set(imp.copy_tensors):
        raise Error("the module's tensors changed while it was copied; prune it again")
    _load_real(imp, _real_values(real))

    dense = _run_traced(module, run_args)
    if dense.error is not None:
        raise InvalidInput(
            f"the module fails on example_inputs: {type(dense.error).__name__}: {dense.error}"
        ) from dense.error
    dense_out = _tensor_output(dense.output, "the module").detach().cpu().float().numpy()
    diff, what = _difference(np.asarray(imp.model.forward(x)), dense_out)
    if not diff <= atol * _output_scale(dense_out):
        raise Error(
            "shears' import of the module does not compute what the module computes on "
            f"example_inputs ({what}); nothing was pruned. Please report this with the module"
        )

    compacted, kept, report = _ext().plan(
        imp.model, method, round_to=round_to, seed=seed, **targets, **options
    )
    cuts = _cuts_in_torch(kept, imp, real, module)
    _check_owners(cuts, real, module, allow_custom)

    params_before = _params_count(module)
    snapshot = _snapshot(cuts, real)
    try:
        shapes = _apply_cuts(cuts, real, snapshot, imp, compacted, module)
        check = _check_pruned(module, run_args, x, dense, compacted, atol)
    except BaseException:
        snapshot.restore()
        raise

    report = dict(report)
    report["torch"] = {
        "tensors": shapes,
        "modules": sorted(path for path, _, _ in snapshot.attrs),
        "params_before": params_before,
        "params_after": _params_count(module),
        "check": check,
    }
    return (module, report) if return_report else module


# --------------------------------------------------------------------------------------------
# Sparsity
# --------------------------------------------------------------------------------------------


def _masked_value(real_module: nn.Module, name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (value, mask) of the copy-name ``name`` on the real module (prune masks honoured)."""
    path, _, attr = name.rpartition(".")
    mod = real_module.get_submodule(path) if path else real_module
    mask = mod._buffers.get(attr + "_mask")
    orig = mod._parameters.get(attr + "_orig")
    if mask is not None and orig is not None:
        value = (orig * mask).detach()
        return value, mask.detach() != 0
    value = getattr(mod, attr).detach()
    return value, value != 0


def _direct_layers(module: nn.Module) -> List[Tuple[str, str, torch.Tensor]]:
    """``(name, module path, mask)`` of every Conv2d/Linear weight and every pruned tensor."""
    out = []
    seen = set()
    for path, mod in module.named_modules():
        names = [a[: -len("_mask")] for a in mod._buffers if a.endswith("_mask")]
        names = [a for a in names if a + "_orig" in mod._parameters]
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and "weight" not in names:
            if mod._parameters.get("weight") is not None:
                names.insert(0, "weight")
        for attr in names:
            name = _join(path, attr)
            if name in seen:
                continue
            seen.add(name)
            _, mask = _masked_value(module, name)
            out.append((name, path, mask))
    return out


def effective_sparsity(module: nn.Module, example_inputs=None) -> Dict[str, Any]:
    """Direct and effective sparsity of ``module``'s weights, per layer and over all of them.

    A weight is pruned when its ``torch.nn.utils.prune`` mask (the ``<name>_mask`` buffer beside
    ``<name>_orig``) is 0 or, without a mask, when it is exactly zero. Effective sparsity also
    counts the weights that lie on no input-to-output path of unpruned weights (Vysogorets &
    Kempe); shears computes it on the network imported from ``example_inputs`` (one input
    tensor, as for :func:`prune`). The module is not changed.

    Returns ``{"direct_sparsity", "effective_sparsity", "layers": [{"name", "module", "total",
    "direct_sparsity", "effective_sparsity", "tensor"}, ...]}`` (shears' whole report), the
    layers being the Conv2d and Linear weights shears sees: ``name`` is the torch name (e.g.
    ``"features.0.weight"``), ``module`` its module's path, ``tensor`` shears' name. Without
    ``example_inputs`` the network's paths are unknown: every ``effective_sparsity`` is ``None``
    and the layers are the Conv2d and Linear weights plus any other tensor with a prune mask.
    """
    if not isinstance(module, nn.Module):
        raise InvalidInput(f"module must be a torch.nn.Module, not {type(module).__name__}")
    if example_inputs is None:
        layers = []
        zeros = total = 0
        for name, path, mask in _direct_layers(module):
            n = int(mask.numel())
            z = n - int(mask.sum())
            zeros, total = zeros + z, total + n
            layers.append(
                {
                    "name": name,
                    "module": path,
                    "total": n,
                    "direct_sparsity": z / n if n else 0.0,
                    "effective_sparsity": None,
                }
            )
        return {
            "direct_sparsity": zeros / total if total else 0.0,
            "effective_sparsity": None,
            "layers": layers,
        }

    args = _as_args(example_inputs)
    imp = _import_mapped(module, args, name=type(module).__name__, prepare=_remove_prune_hooks)
    values: Dict[str, np.ndarray] = {}
    masks_t: Dict[str, np.ndarray] = {}
    for name in imp.copy_tensors:
        v, m = _masked_value(module, name)
        if v.is_floating_point():
            values[name] = v.cpu().float().numpy()
            masks_t[name] = m.cpu().float().numpy()
    _load_real(imp, values)
    masks: Dict[str, np.ndarray] = {}
    for node in imp.model.nodes():
        if node["op"].get("type") not in ("conv2d", "linear"):
            continue
        ir_name = f"{node['name']}.weight"
        m = imp.matches.get(ir_name)
        if m is None or m.value_fn == "broadcast":
            continue
        masks[ir_name] = m.to_ir(masks_t[m.torch_name], mask=True)
    result = dict(_ext().sparsity(imp.model, masks))
    layers = []
    for layer in result.get("layers", []):
        layer = dict(layer)
        m = imp.matches.get(layer.get("tensor"))
        if m is not None:
            layer["name"] = m.torch_name
            layer["module"] = m.torch_name.rpartition(".")[0]
        else:
            layer["name"] = layer.get("tensor")
            layer["module"] = None
        layers.append(layer)
    result["layers"] = layers
    return result
