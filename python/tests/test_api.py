"""The Python API on the embedded Fashion-MNIST subset: every function, every one-shot method,
the pipelines, a sweep, bad inputs, progress, the GIL and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import shears

DATA = "fashion-mnist-subset"
# Small enough for CI's two cores: 512 training images, 200 test images, one epoch.
TRAIN = {"epochs": 1, "batch_size": 128, "lr": 0.05, "train_limit": 512, "test_limit": 200}


def small_config(name: str, method: dict, **extra) -> dict:
    cfg = {
        "name": name,
        "model": {"arch": "small-cnn"},
        "data": {"dataset": DATA},
        "train": dict(TRAIN),
        "finetune": dict(TRAIN),
        "latency": {"enabled": False},
        "method": method,
    }
    cfg.update(extra)
    return cfg


# --- models ----------------------------------------------------------------------------------


def test_load_inspect_save_and_reload(tmp_path):
    m = shears.load("small-cnn")
    assert isinstance(m, shears.Model)
    assert list(m.input_shape) == [1, 28, 28]
    table = m.inspect()
    assert table["params"] == m.params and table["macs"] == m.macs > 0
    assert [l["name"] for l in table["layers"]][:1] == [m.nodes()[0]["name"]]
    groups = m.groups()
    assert any(g["prunable"] for g in groups)
    assert all("producers" in g for g in groups)
    w = m.weights()
    assert all(a.dtype == np.float32 for a in w.values())
    m.save(tmp_path / "m")
    again = shears.load(tmp_path / "m")
    for k, v in w.items():
        np.testing.assert_array_equal(again.weights()[k], v)


def test_forward_matches_after_onnx_round_trip(tmp_path):
    m = shears.load("small-cnn", seed=3)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    y = m.forward(x)
    assert y.shape == (3, 10)
    m.to_onnx(tmp_path / "m.onnx")
    from_file = shears.load(tmp_path / "m.onnx")
    from_bytes = shears.load(m.to_onnx_bytes())
    for other in (from_file, from_bytes):
        np.testing.assert_allclose(other.forward(x), y, rtol=1e-4, atol=1e-4)


def test_set_weights_changes_outputs_and_checks_names_and_shapes():
    m = shears.load("small-cnn")
    x = np.ones((1, 1, 28, 28), np.float32)
    before = m.forward(x)
    w = m.weights()
    name = next(k for k in w if k.endswith(".weight") and w[k].ndim == 4)
    m.set_weights({name: np.zeros_like(w[name])})
    assert not np.allclose(m.forward(x), before)
    with pytest.raises(shears.InvalidInput, match="no tensor `nope`"):
        m.set_weights({"nope": w[name]})
    with pytest.raises(ValueError, match="shape"):
        m.set_weights({name: np.zeros((1, 2), np.float32)})
    with pytest.raises(shears.InvalidInput, match="NaN"):
        m.set_weights({name: np.full_like(w[name], np.nan)})


def test_methods_and_zoo_are_listed():
    names = {m["name"]: m for m in shears.methods()}
    assert {"magnitude", "l1-filter", "masksparsity", "paam", "ftwt"} <= set(names)
    assert names["l1-filter"]["one_shot"] and not names["paam"]["one_shot"]
    assert "small-cnn" in {n for n, _ in shears.zoo()}


# --- one-shot pruning ------------------------------------------------------------------------

ONE_SHOT_STRUCTURED = ["l1-filter", "l2-filter", "bn-scale", "random-filter", "taylor", "slimming"]
ONE_SHOT_UNSTRUCTURED = ["magnitude", "random", "lamp", "snip", "grasp", "synflow"]


@pytest.mark.parametrize("method", ONE_SHOT_STRUCTURED)
def test_every_structured_method_prunes_to_half_the_macs(method, tmp_path):
    dense = shears.load("small-cnn")
    data = DATA if method == "taylor" else None
    pruned, report = shears.prune(
        dense, method, macs_reduction=0.5, data=data, runs_dir=tmp_path, progress=False,
        score_batches=2,
    )
    assert 0.45 <= report["macs_reduction"] <= 0.6, report["macs_reduction"]
    assert pruned.macs < dense.macs and pruned.params < dense.params
    assert report["compaction_max_abs_diff"] <= 1e-4 * max(1.0, report["compaction_output_scale"])
    assert Path(report["run_dir"], "result.json").exists()


@pytest.mark.parametrize("method", ONE_SHOT_UNSTRUCTURED)
def test_every_unstructured_method_masks_to_the_sparsity(method, tmp_path):
    needs_data = method in ("snip", "grasp")
    pruned, report = shears.prune(
        "small-cnn", method, sparsity=0.8, data=DATA if needs_data else None,
        runs_dir=tmp_path, progress=False, score_batches=2,
    )
    assert report["direct_sparsity"] == pytest.approx(0.8, abs=0.01)
    assert report["pruned_at"] == "init"  # a zoo name: fresh weights
    assert report["effective_sparsity"] >= report["direct_sparsity"] - 1e-9
    masks = pruned.masks()
    assert masks and all(a.dtype == np.bool_ for a in masks.values())
    kept = sum(int(a.sum()) for a in masks.values())
    total = sum(a.size for a in masks.values())
    assert kept / total == pytest.approx(0.2, abs=0.01)


def test_a_loaded_model_is_pruned_as_saved_and_a_zoo_model_as_at_init(tmp_path):
    fresh = shears.load("small-cnn")
    _, report = shears.prune(fresh, "magnitude", sparsity=0.5, runs_dir=tmp_path, progress=False)
    assert report["pruned_at"] == "init"
    fresh.save(tmp_path / "saved")
    _, report = shears.prune(
        shears.load(tmp_path / "saved"), "magnitude", sparsity=0.5, runs_dir=tmp_path, progress=False
    )
    assert report["pruned_at"] == "saved"
    with pytest.raises(shears.InvalidInput, match="round_to"):
        shears.prune(fresh, "magnitude", sparsity=0.5, round_to=8)


def test_prune_measures_latency_within_its_budget_when_asked(tmp_path):
    _, report = shears.prune(
        "small-cnn", "l1-filter", macs_reduction=0.5, latency=True, latency_batches=[1, 64],
        latency_threads=[1], latency_budget=0.0005, runs_dir=tmp_path, progress=False,
    )
    rows = report["latency"]
    assert [r["batch"] for r in rows] == [1]  # batch 64 cannot fit half a millisecond
    assert (rows[0]["repeats"], rows[0]["rounds"]) == (3, 1)
    assert any("batch 64, 1 threads not measured" in n for n in report["latency_notes"])
    assert report["onnxruntime"]  # which library measured the ORT column, or why none did
    with pytest.raises(ValueError, match="latency budget"):
        shears.prune("small-cnn", "l1-filter", macs_reduction=0.5, latency=True, latency_budget=-1)


def test_round_to_auto_is_the_default_and_latency_can_be_the_target(tmp_path):
    _, report = shears.prune(
        "small-cnn", "l1-filter", macs_reduction=0.5, runs_dir=tmp_path, progress=False
    )
    assert report["spec"]["round_to"] == "auto"
    choice = report["rounding"]
    assert choice["runtime"] in ("onnxruntime", "shears")
    timed = {t["multiple"]: t["median_ms"] for t in choice["tried"] if "median_ms" in t}
    assert choice["chosen"] in timed
    assert all(
        g["kept"] % choice["chosen"] == 0 or g["kept"] == g["channels"]
        for g in report["pruned_groups"]
    )
    _, report = shears.prune(
        "small-cnn", "l1-filter", latency_reduction=0.3, latency_runtime="shears", round_to=4,
        runs_dir=tmp_path, progress=False,
    )
    search = report["latency_search"]
    assert search["runtime"] == "shears" and search["reduction"] >= 0.3
    assert "rounding" not in report and report["spec"]["round_to"] == 4
    with pytest.raises(shears.InvalidInput, match="round_to must be `auto` or a whole number"):
        shears.prune("small-cnn", "l1-filter", macs_reduction=0.5, round_to="eight")
    with pytest.raises(shears.InvalidInput, match="unknown latency runtime"):
        shears.prune("small-cnn", "l1-filter", latency_reduction=0.3, latency_runtime="trt")


def test_prune_with_data_evaluates_and_fine_tunes(tmp_path):
    pruned, report = shears.prune(
        "small-cnn", "l1-filter", channel_ratio=0.5, data=DATA, finetune_epochs=1,
        train_limit=512, test_limit=200, runs_dir=tmp_path, progress=False,
    )
    assert report["finetune_epochs"] == 1
    for k in ("accuracy_before_pruning", "accuracy_after_pruning", "accuracy_after_finetune"):
        assert 0.0 <= report[k] <= 1.0, k
    assert report["test_samples"] == 200


def test_methods_that_train_prune_through_their_pipeline(tmp_path):
    common = dict(
        data=DATA, train_limit=512, test_limit=200, runs_dir=tmp_path, progress=False
    )
    dense = shears.load("small-cnn")
    pruned, report = shears.prune(
        dense, "masksparsity", macs_reduction=0.5, sparsity_epochs=1, finetune_epochs=1, **common
    )
    assert 0.45 <= report["macs_reduction"] <= 0.6
    assert pruned.macs < dense.macs and report["masksparsity"]["sparsity_epochs"] == 1
    pruned, report = shears.prune(
        "small-cnn", "paam", params_reduction=0.5, train_epochs=2, finetune_epochs=1, **common
    )
    assert 0.45 <= report["params_reduction"] <= 0.6 and "paam" in report
    gated, report = shears.prune(dense, "ftwt", r=0.9, finetune_epochs=2, **common)
    assert gated.params == dense.params  # FTWT gates the network, it does not cut it
    assert 0.0 < report["achieved"]["paper_reduction"] < 1.0
    for method in ("masksparsity", "paam", "ftwt"):
        with pytest.raises(shears.InvalidInput, match="give data="):
            shears.prune(dense, method, macs_reduction=0.5, progress=False)


# --- pipelines and sweeps --------------------------------------------------------------------

PIPELINES = {
    "l1-filter": {"name": "l1-filter", "macs_reduction": 0.5},
    "magnitude": {"name": "magnitude", "sparsity": 0.5},
    "masksparsity": {"name": "masksparsity", "macs_reduction": 0.5, "sparsity_epochs": 1},
    "paam": {"name": "paam", "params_reduction": 0.5},
    "ftwt": {"name": "ftwt", "r": 0.9},
}


@pytest.mark.parametrize("method", sorted(PIPELINES))
def test_run_every_kind_of_pipeline_from_a_dict(method, tmp_path):
    cfg = small_config(f"py-{method}", PIPELINES[method])
    if method == "ftwt":  # its heads train in the fine-tuning epochs after the cooldown
        cfg["finetune"]["epochs"] = 2
    if method == "paam":  # one epoch learns scores before the first cut
        cfg["train"]["epochs"] = 2
    report = shears.run(cfg, runs_dir=tmp_path, progress=False)
    assert Path(report["run_dir"], "result.json").exists()
    if method == "ftwt":
        assert 0.0 <= report["accuracy_dynamic"] <= 1.0
    else:
        assert 0.0 <= report["accuracy_after_finetune"] <= 1.0
    if method in ("masksparsity", "paam"):
        assert method in report  # the method's own details, under its key


def tiny_toml(name: str, method: str) -> str:
    """A config file: the small CNN trained one epoch on 256 images, `method` its `[method]`."""
    template = textwrap.dedent(
        """
        name = "NAME"
        [model]
        arch = "small-cnn"
        [train]
        epochs = 1
        train_limit = 256
        test_limit = 100
        [finetune]
        epochs = 0
        test_limit = 100
        [latency]
        enabled = false
        [method]
        """
    )
    return template.replace("NAME", name) + method + "\n"


def test_run_from_a_toml_path_reuses_a_finished_run(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text(tiny_toml("py-toml", 'name = "l2-filter"\nchannel_ratio = 0.25'))
    first = shears.run(path, runs_dir=tmp_path / "runs", progress=False)
    again = shears.run(path, runs_dir=tmp_path / "runs", progress=False)
    assert again == first


def test_sweep_runs_the_grid_and_writes_the_table(tmp_path):
    sweep = tmp_path / "grid.toml"
    grid = '\n[sweep.grid]\n"method.macs_reduction" = [0.3, 0.6]\n'
    sweep.write_text(tiny_toml("py-grid", 'name = "l1-filter"\nmacs_reduction = 0.5') + grid)
    out = shears.sweep(sweep, runs_dir=tmp_path / "runs", progress=False)
    assert out["failed"] == 0 and len(out["runs"]) == 2
    assert all(r["state"] == "finished" for r in out["runs"])
    assert Path(out["csv"]).exists() and "0.3" in out["table"]
    again = shears.sweep(sweep, runs_dir=tmp_path / "runs", progress=False)
    assert all(r["state"] == "finished before" for r in again["runs"])


# --- bad input -------------------------------------------------------------------------------


def test_bad_inputs_raise_the_right_exceptions(tmp_path):
    with pytest.raises(FileNotFoundError):
        shears.load(tmp_path / "missing.onnx")
    with pytest.raises(shears.NotFound):
        shears.run(tmp_path / "missing.toml")
    with pytest.raises(shears.InvalidInput, match="unknown pruning method `pruneit`"):
        shears.prune("small-cnn", "pruneit", macs_reduction=0.5)
    with pytest.raises(ValueError, match=r"macs_reduction must be in \[0, 1\), got 1.5"):
        shears.prune("small-cnn", "l1-filter", macs_reduction=1.5, runs_dir=tmp_path)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        shears.prune("small-cnn", "magnitude", sparsity=1.5, runs_dir=tmp_path)
    with pytest.raises(shears.InvalidInput, match="sparsity= or compression="):
        shears.prune("small-cnn", "magnitude", macs_reduction=0.5)
    with pytest.raises(shears.InvalidInput, match="unknown field `macs_reductoin`"):
        shears.prune("small-cnn", "l1-filter", macs_reductoin=0.5)
    with pytest.raises(shears.InvalidInput, match="lr"):
        shears.run(small_config("bad", PIPELINES["l1-filter"], train={"lr": -1.0}), runs_dir=tmp_path)
    with pytest.raises(shears.InvalidInput):
        shears.load(b"not an onnx file")
    with pytest.raises(shears.InvalidInput, match="shape"):
        shears.load("small-cnn").forward(np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(shears.InvalidInput, match="NaN"):
        shears.load("small-cnn").forward(np.full((1, 1, 28, 28), np.nan, np.float32))
    with pytest.raises(shears.NotFound, match="cifar10"):  # the message lists the data sets
        shears.prune("small-cnn", "l1-filter", macs_reduction=0.5, data=str(tmp_path / "nowhere"))
    with pytest.raises(shears.InvalidInput, match="give the folder itself"):
        shears.prune("small-cnn", "l1-filter", macs_reduction=0.5, data="image-folder")
    # Every data set the CLI knows is one here too (where its files are missing, the error is
    # the loader's, not an unknown name).
    assert {"fashion-mnist-subset", "fashion-mnist", "mnist", "cifar10"} <= set(shears._shears.datasets())
    try:
        shears.prune("small-cnn", "l1-filter", macs_reduction=0.5, data="mnist", runs_dir=tmp_path, progress=False)
    except shears.Error as e:
        assert "neither a data set" not in str(e), e
    assert issubclass(shears.InvalidInput, shears.Error)
    assert issubclass(shears.NotFound, shears.Error)


# --- progress, the GIL and Ctrl-C ------------------------------------------------------------


def test_progress_reports_stages_and_steps_and_its_errors_stop_the_run(tmp_path):
    events = []
    shears.run(
        small_config("py-progress", PIPELINES["l1-filter"]),
        runs_dir=tmp_path,
        progress=lambda event, payload: events.append((event, payload)),
    )
    stages = [p for e, p in events if e == "stage"]
    steps = [p for e, p in events if e == "step"]
    assert any(s.startswith("training") for s in stages), stages
    assert steps and steps[-1][2] == steps[-1][3]  # the last step of an epoch is its last

    class Boom(Exception):
        pass

    def failing(event, payload):
        if event == "step":
            raise Boom("stop here")

    with pytest.raises(Boom):
        shears.run(small_config("py-boom", PIPELINES["l1-filter"]), runs_dir=tmp_path, progress=failing)


def test_long_calls_release_the_gil(tmp_path):
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.01)

    t = threading.Thread(target=tick)
    t.start()
    try:
        shears.run(small_config("py-gil", PIPELINES["magnitude"]), runs_dir=tmp_path, progress=False)
    finally:
        done.set()
        t.join()
    # The other thread ran all along: no gap of a second while Rust trained.
    gaps = np.diff(ticks)
    assert len(ticks) > 20 and gaps.max() < 1.0, (len(ticks), gaps.max())


CHILD = """
import sys, time, shears
cfg = {cfg}
started = []
def progress(event, payload):
    if event == "step" and not started:
        started.append(1)
        print("STARTED", flush=True)
try:
    shears.run(cfg, runs_dir={runs!r}, progress=progress)
    print("FINISHED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
"""


def test_ctrl_c_stops_between_steps_and_the_run_resumes(tmp_path):
    cfg = small_config("py-ctrl-c", PIPELINES["l1-filter"])
    cfg["train"] = dict(TRAIN, epochs=3, train_limit=2048)
    runs = str(tmp_path / "runs")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(cfg=repr(cfg), runs=runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = child.stdout.readline().strip()
    assert line == "STARTED", (line, child.stderr.read())
    sent = time.perf_counter()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    stopped_in = time.perf_counter() - sent
    assert "INTERRUPTED" in out, (out, err)
    assert stopped_in < 10, stopped_in
    run_dirs = [d for d in Path(runs).iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(run_dirs) == 1 and not (run_dirs[0] / "result.json").exists()
    # The interrupted run resumes to the end.
    report = shears.run(cfg, runs_dir=runs, resume=True, progress=False)
    assert (run_dirs[0] / "result.json").exists()
    assert Path(report["run_dir"]).resolve() == run_dirs[0].resolve()


NESTED = """
import shears
cfg = {cfg}
inner = []
def progress(event, payload):
    # A callback runs on shears' own thread; a run it starts runs right there.
    if event == "step" and not inner:
        inner.append(shears.prune("lenet-5", "magnitude", sparsity=0.5, runs_dir={runs!r},
                                  progress=False))
shears.run(cfg, runs_dir={runs!r}, progress=progress)
print("FINISHED", len(inner), flush=True)
"""


def test_a_progress_callback_can_start_another_run_on_one_thread(tmp_path):
    # One thread: the pool's only thread is the one running the outer call, so a job queued for
    # the inner call would wait for it forever. In a process of its own (one pool per process).
    cfg = small_config("py-nested", PIPELINES["l1-filter"], threads=1)
    runs = str(tmp_path / "runs")
    child = subprocess.run(
        [sys.executable, "-c", NESTED.format(cfg=repr(cfg), runs=runs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "FINISHED 1" in child.stdout, (child.stdout, child.stderr)


def test_zero_threads_is_invalid_input(tmp_path):
    cfg = small_config("py-zero-threads", PIPELINES["l1-filter"], threads=0)
    with pytest.raises(shears.InvalidInput, match="threads"):
        shears.run(cfg, runs_dir=tmp_path, progress=False)


def test_a_vision_transformer_prunes_heads_and_mlp_channels_from_python(tmp_path):
    dense = shears.load("vit-tiny")
    assert dense.macs > 100e6
    pruned, report = shears.prune(
        dense, "l1-filter", macs_reduction=0.5, ignore=["position_embedding"], round_to=1,
        runs_dir=tmp_path, progress=False,
    )
    assert report["macs_reduction"] >= 0.5
    assert report["compaction_max_abs_diff"] <= 1e-4 * max(1.0, report["compaction_output_scale"])
    kept = {g["producers"][0]: g["kept"] for g in report["pruned_groups"]}
    assert all(1 <= kept.get(f"block{i}_qkv", 3) <= 3 for i in range(6))
    _, report = shears.prune("vit-tiny", "magnitude", sparsity=0.9, runs_dir=tmp_path,
                             progress=False)
    assert report["effective_sparsity"] >= report["direct_sparsity"] == pytest.approx(0.9)


def test_a_swin_transformer_prunes_whole_heads_and_keeps_their_position_tables(tmp_path):
    dense = shears.load("swin-tiny")
    pruned, report = shears.prune(dense, "l1-filter", macs_reduction=0.4, round_to=1,
                                  runs_dir=tmp_path, progress=False)
    assert report["macs_reduction"] >= 0.4
    assert report["compaction_max_abs_diff"] <= 1e-4 * max(1.0, report["compaction_output_scale"])
    assert pruned.macs < dense.macs
    # A window attention keeps whole heads, and its table keeps one column per head.
    kept = {g["producers"][0]: g["kept"] for g in report["pruned_groups"]}
    heads = {"stage0": 3, "stage1": 6, "stage2": 12}
    for stage, total in heads.items():
        for b in range(2):
            heads_kept = kept.get(f"{stage}_block{b}_qkv", total)
            assert 1 <= heads_kept <= total
            table = pruned.weights()[f"{stage}_block{b}_attn.bias_table"]
            assert table.shape == (169, heads_kept)
