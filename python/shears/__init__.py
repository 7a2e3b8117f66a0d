"""shears: prune neural networks and prove what the pruning bought.

The Python face of the shears library (Rust). The same front door as the ``shears`` CLI:

- :func:`load` a zoo model, a model directory, an ONNX file (or its bytes) as a :class:`Model`;
- :func:`prune` it in one shot with any registered method (:func:`methods`), getting the pruned
  model and the report as plain Python values;
- :func:`run` a method's whole pipeline from a config (a dict or a TOML path), :func:`sweep` a
  grid of them;
- ``shears.torch`` prunes a PyTorch module in place (imported only when you use it).

Long calls release the GIL, show progress (tqdm when installed, ``logging`` otherwise) and stop
cleanly on Ctrl-C between two training steps (``KeyboardInterrupt``; a run directory keeps its
last checkpoint and ``run(..., resume=True)`` continues it). Errors are :class:`Error` and its
subclasses, with the CLI's messages.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ._progress import display as _display
from .errors import Error, InvalidInput, NotFound, RunBusy
from . import _shears
from ._shears import Model

__all__ = [
    "Error",
    "InvalidInput",
    "NotFound",
    "RunBusy",
    "Model",
    "load",
    "prune",
    "run",
    "sweep",
    "methods",
    "zoo",
    "__version__",
]

__version__: str = _shears.__version__

PathLike = Union[str, "os.PathLike[str]"]


def load(
    source: Union[PathLike, bytes],
    *,
    input: Optional[str] = None,
    classes: Optional[int] = None,
    seed: int = 0,
    name: Optional[str] = None,
) -> Model:
    """Loads a model.

    ``source`` is a zoo name (``"resnet-20"``; fresh weights seeded by ``seed``, shaped by
    ``input`` such as ``"3x32x32"`` and ``classes``, default ``1x28x28`` and 10), a model
    directory saved by shears, an ONNX file, or the bytes of an ONNX file.
    """
    return Model.load(source, input=input, classes=classes, seed=seed, name=name)


def methods() -> List[Dict[str, Any]]:
    """Every registered method: ``name``, ``kind`` (unstructured, structured, dynamic),
    ``description``, and ``one_shot`` (whether :func:`prune` takes it)."""
    return _shears.methods()


def zoo() -> List[Tuple[str, str]]:
    """The zoo's model names with a one-line description each."""
    return _shears.zoo()


def prune(
    model: Union[Model, PathLike],
    method: str,
    *,
    macs_reduction: Optional[float] = None,
    params_reduction: Optional[float] = None,
    channel_ratio: Optional[float] = None,
    percentile: Optional[float] = None,
    sparsity: Optional[float] = None,
    compression: Optional[float] = None,
    data: Optional[PathLike] = None,
    finetune_epochs: int = 0,
    progress: Any = True,
    **options: Any,
) -> Tuple[Model, Dict[str, Any]]:
    """Prunes ``model`` in one shot with ``method`` and returns ``(pruned_model, report)``.

    Structured methods (``l1-filter``, ``l2-filter``, ``bn-scale``, ``random-filter``,
    ``taylor``, ``slimming``) take one of ``macs_reduction``, ``params_reduction``,
    ``channel_ratio``, ``latency_reduction`` (batch-1 latency, measured in ``latency_runtime``:
    ``"onnxruntime"``, the default where it is installed, or ``"shears"``) or ``percentile``;
    kept channel counts are rounded to the multiple that runs fastest there (``round_to="auto"``,
    the default; or a whole number). The pruned model is compacted (really smaller), and the
    report has params, MACs, the compacted-equals-gated check and, with data, accuracy before and
    after. Unstructured methods (``magnitude``, ``random``, ``lamp``, ``snip``, ``grasp``,
    ``synflow``) take ``sparsity`` or ``compression``; the pruned model carries masks, and the
    report has direct and effective sparsity per layer.

    ``data`` names a data set (``"fashion-mnist-subset"``, the embedded one; ``"fashion-mnist"``,
    ``"mnist"``, ``"cifar10"``, ``"cifar100"`` where their files are installed) or a folder of images (``train/CLASS/*.png``, ``test/...``); without it nothing is evaluated
    or fine-tuned. ``finetune_epochs`` fine-tunes the compacted model on ``data``. Further
    keywords are those of ``shears prune``: ``round_to``, ``latency_runtime``, ``scope``, ``normalize``,
    ``importance``, ``ignore``, ``max_layer_ratio``, ``convention``, ``quota``, ``target_kind``,
    ``apply_effective``, ``seed``, ``latency`` (measure latency), ``out``, ``runs_dir``, ...
    ``progress`` is ``True`` (a bar), ``False``, or a callable ``(event, payload)``; the work runs
    on a thread of shears' own, and so does the callable (not on the calling thread).

    The methods that train before they cut (``masksparsity``, ``paam``) and ``ftwt`` run their
    pipeline (as :func:`run` does) from ``model``: they need ``data``; ``train_epochs`` trains
    the model first (0 by default: the given model is the baseline; PAAM trains its scores with
    the network, so it needs at least 2), the method's own keys (``lambda``, ``sparsity_epochs``,
    ``r``, ``scorer``, ...) pass through, and ``finetune_epochs`` is the fine-tuning (FTWT trains
    its gate heads there). For ``ftwt`` the returned model is the network the gates run on.

    Every call writes a run directory (``report["run_dir"]``) as ``shears prune`` does.
    """
    targets = dict(
        macs_reduction=macs_reduction,
        params_reduction=params_reduction,
        channel_ratio=channel_ratio,
        percentile=percentile,
        sparsity=sparsity,
        compression=compression,
    )
    kind = {m["name"]: m for m in methods()}.get(method)
    if kind is not None and not kind["one_shot"]:
        return _prune_by_pipeline(model, method, targets, data, finetune_epochs, progress, options)
    kwargs: Dict[str, Any] = dict(options, data=data, **targets)
    if finetune_epochs:
        if data is None:
            raise InvalidInput("finetune_epochs needs data= to train and evaluate on")
        kwargs["finetune_epochs"] = finetune_epochs
    return _shears.prune(model, method, kwargs, _display(progress))


# Keyword arguments of `prune` that belong to the experiment config's other sections when a
# method runs its pipeline.
_TRAIN_KEYS = ("batch_size", "lr", "train_limit", "test_limit")


def _safe_name(name: str) -> str:
    """A model's name as one path component: its last part, with only safe characters."""
    base = os.path.basename(os.fspath(name).rstrip("/\\")) or "model"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in base).lstrip(".") or "model"


def _prune_by_pipeline(
    model: Union[Model, PathLike],
    method: str,
    targets: Dict[str, Any],
    data: Optional[PathLike],
    finetune_epochs: int,
    progress: Any,
    options: Dict[str, Any],
) -> Tuple[Model, Dict[str, Any]]:
    """`prune` for a method that trains: its pipeline from `model`, as `run` runs it."""
    if data is None:
        raise InvalidInput(
            f"`{method}` trains before it cuts (or, ftwt, trains gates): give data= "
            f"({', '.join(_shears.datasets())}, or a folder of images)"
        )
    opts = dict(options)
    runs_dir = os.fspath(opts.pop("runs_dir", "runs"))
    out = opts.pop("out", None)
    seed = int(opts.pop("seed", 0))
    train_epochs = int(opts.pop("train_epochs", 0))
    latency = bool(opts.pop("latency", False))
    phase = {k: opts.pop(k) for k in _TRAIN_KEYS if k in opts}
    finetune = dict(phase, epochs=finetune_epochs)
    if "finetune_lr" in opts:
        finetune["lr"] = opts.pop("finetune_lr")
    model_section: Dict[str, Any] = {}
    for k in ("input", "classes"):
        if k in opts:
            model_section[k] = opts.pop(k)
    if isinstance(model, Model):
        label = _safe_name(model.name)
        # The config names its model by path: the given one is saved under the runs directory,
        # by the hash of its graph, weights and masks, so the same model is saved once.
        digest = hashlib.sha256(json.dumps(model.nodes(), sort_keys=True).encode())
        for tensors in (model.weights(), model.masks()):
            for name, w in sorted(tensors.items()):
                digest.update(name.encode())
                digest.update(w.tobytes())
        path = os.path.join(runs_dir, ".models", f"{label}-{digest.hexdigest()[:12]}")
        if not os.path.exists(os.path.join(path, "graph.json")):
            model.save(path)
        arch = os.path.abspath(path)
    else:
        arch = os.fspath(model)
        label = _safe_name(arch)
    dataset = os.fspath(data)
    data_section = (
        {"dataset": dataset}
        if dataset in _shears.datasets()
        else {"dataset": "image-folder", "dir": os.path.abspath(dataset)}
    )
    if data_section["dataset"] == "image-folder" and not os.path.isdir(dataset):
        raise NotFound(f"data = {dataset!r} is neither a data set nor a folder of images")
    config = {
        "name": f"{label}-prune",
        "seed": seed,
        "model": {"arch": arch, **model_section},
        "data": data_section,
        "train": {"epochs": train_epochs, **phase},
        "finetune": finetune,
        "latency": {"enabled": latency},
        "method": {"name": method, **{k: v for k, v in targets.items() if v is not None}, **opts},
    }
    report = run(config, runs_dir=runs_dir, out=out, force=True, progress=progress)
    run_dir = report["run_dir"]
    name = model.name if isinstance(model, Model) else arch
    if os.path.exists(os.path.join(run_dir, "graph.json")):
        pruned = load(run_dir, name=name)
    else:  # FTWT keeps the network (its gates are the heads beside it)
        pruned = load(os.path.join(run_dir, "dense"), name=name)
    return pruned, report


def run(
    config: Union[Mapping[str, Any], PathLike],
    *,
    runs_dir: PathLike = "runs",
    out: Optional[PathLike] = None,
    resume: bool = False,
    force: bool = False,
    progress: Any = True,
) -> Dict[str, Any]:
    """Runs a method's whole pipeline (train, prune, fine-tune, measure) as ``shears run`` does,
    and returns its report.

    ``config`` is a dict with the sections of a TOML config (``{"model": {"arch": ...},
    "train": {...}, "method": {"name": "l1-filter", "macs_reduction": 0.5}}``) or the path of a
    TOML file. The run directory is named from the config under ``runs_dir`` (or is ``out``); a
    finished run is not run again (its saved report comes back) unless ``force``; ``resume``
    continues an interrupted one from its checkpoints. ``progress`` is as for :func:`prune`:
    the run, and a progress callable, work on a thread of shears' own; Ctrl-C stops the run at
    its next step.
    """
    if isinstance(config, Mapping):
        text, is_path = json.dumps(config), False
    else:
        text, is_path = os.fspath(config), True
        if not os.path.exists(text):
            raise NotFound(f"no config file at {text}")
    return _shears.run(
        text,
        os.fspath(runs_dir),
        None if out is None else os.fspath(out),
        resume,
        force,
        _display(progress),
        is_path,
    )


def sweep(
    path: PathLike, *, runs_dir: Optional[PathLike] = None, progress: Any = True
) -> Dict[str, Any]:
    """Runs every point of a sweep file (methods x targets x seeds x any config key) in this
    process, one after another; finished runs are kept and interrupted ones resume. Writes the
    results table next to the runs (CSV and markdown) and returns ``{"runs": [...], "failed": n,
    "table": markdown, "csv": path, "markdown_path": path}``. (``shears sweep`` runs the same
    file with several worker processes or on Slurm.)"""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise NotFound(f"no sweep file at {p}")
    return _shears.sweep(p, None if runs_dir is None else os.fspath(runs_dir), _display(progress))
