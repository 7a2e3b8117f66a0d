"""Which torchvision classifiers shears can take from ONNX to a pruned, compacted ONNX model.

    /work/venv/bin/python scripts/torchvision_coverage.py [--models a,b,c] [--work DIR]
        [--shears PATH] [--out FILE] [--export-only] [--size 64] [--timeout 600] [--large]

Every model is built with weights=None (random init, seed 0; BatchNorm affine parameters
randomised and running statistics measured on random batches, so no BatchNorm is an identity;
zero-initialised layers, like ViT's head, given small random weights), in eval mode (googlenet
and inception_v3 without aux logits, vit_* with image_size=SIZE), and exported as the fixtures
are: opset 17, the TorchScript exporter (dynamo=False), a dynamic batch axis, BatchNorm kept as its
own node (training=PRESERVE, no constant folding). Each export runs in its own process, so a
crash or a hang (--timeout) costs one row only. Then, with the shears binary (--shears, default
$CARGO_TARGET_DIR/release/shears, else ~/.cache/shears/target/release/shears):

  import      shears import MODEL.onnx --out DIR/imported
  round trip  shears export DIR/imported DIR/rt.onnx; onnxruntime on rt.onnx equals onnxruntime
              on MODEL.onnx within 1e-4 (max abs; see tolerance(): scaled by max|output| when
              that is above 1, and at least twice the PyTorch-vs-onnxruntime difference of the
              same export, which deep random nets make larger) on a fixed random batch of 2
  l1-filter   shears prune --model MODEL.onnx --method l1-filter --macs-reduction 0.5
              --round-to 1 --finetune-epochs 0 --no-eval --no-latency --save-masked DIR/l1-masked
              --out DIR/l1 (--round-to 1: the exact counts, the hardest case for compaction)
              (no data needed: --no-eval skips accuracy; the latency is measured below instead)
  taylor      the same with --method taylor; Taylor scores need training data, so it reads a
              tiny image folder of random 64x64 PNGs (WORK/data, 2 classes: a model only needs
              at least as many outputs as the data has classes; the images are resized to the
              model's input) with --score-batches 1 --score-batch-size 8 --test-limit 4
  compacted = masked
              ("pass (gated)": the network has a LayerNorm over pruned channels, which a dense
              zeroed model cannot reproduce; prune's own check of the compacted network against
              the gated one, compaction_max_abs_diff in result.json, must be within 1e-4)
              prune saves the compacted model in OUT/pruned and, with --save-masked, the dense
              model with the removed channels zeroed at their source. prune itself compares the
              two only by accuracy on data (accuracy_after_pruning vs _gated in result.json,
              and only when it has data), so here both are exported and compared in onnxruntime
              on the fixed batch, within the same tolerance, for l1-filter and taylor
  onnxruntime the compacted exports run in onnxruntime (1 thread), output finite, [2, classes]
  latency     onnxruntime, batch 1, 1 thread, median of 50 runs after 5 warm-ups: dense (shears'
              own export of the imported model, rt.onnx, else MODEL.onnx) -> l1-filter compacted
  latency, default
              the same for shears prune's defaults (--round-to auto: the kept counts rounded to
              the multiple of 1..32 that prune timed fastest in onnxruntime), l1-filter to half
              the MACs; the chosen multiple in brackets

A column is pass, fail, or "-" when an earlier step it needs failed; the notes keep each
failure's first error line (and its innermost cause). The Markdown table goes to stdout and,
with --out, to that file. --export-only exports and checks the ONNX files only (onnxruntime
against PyTorch) and lists each model's ONNX op types, with a union over all models.
"""
import argparse, json, os, platform, re, shutil, struct, subprocess, sys, time, zlib
from pathlib import Path

# Named first, in this order; then the rest of torchvision's classification models.
CORE = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "densenet121",
        "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_s",
        "shufflenet_v2_x0_5", "squeezenet1_1", "googlenet", "mnasnet0_5", "regnet_y_400mf",
        "convnext_tiny"]
# Their classifiers need 224x224 (an adaptive pool to 6x6 / 7x7 that does not export from a
# smaller map); run only with --large, at 224.
LARGE = re.compile(r"^(vgg\d+(_bn)?|alexnet)$")
# Too big to build here at all (600M+ parameters).
HUGE = {"vit_h_14", "regnet_y_128gf"}
TOL = 1e-4

def tolerance(ref, floor):
    """The largest max-abs difference that passes: TOL, times the reference's largest magnitude
    when that is above 1, and at least twice `floor`, the difference between PyTorch and
    onnxruntime on the same export. Random-init deep nets amplify float32 rounding: resnet152's
    PyTorch float32 output differs from its float64 output by 1.4e-3 (outputs up to 2.7), and
    onnxruntime from PyTorch by 1.7e-3, so a different but exact summation order cannot be held
    to 1e-4 there."""
    return max(TOL * max(1.0, ref), 2.0 * floor)

# ----------------------------------------------------------------------------- export (child)

def export_one(name, size, path, max_params):
    """Builds, randomises BatchNorm, exports `name` to `path`; returns its metadata (without
    exporting when it has more than `max_params` parameters)."""
    import numpy as np
    import onnx, torch, torchvision
    import torch.nn as nn
    torch.set_num_threads(1)
    torch.manual_seed(0)
    kwargs = {}
    if name in ("googlenet", "inception_v3"):
        kwargs = {"aux_logits": False, "init_weights": False}
    if name.startswith("vit_"):
        kwargs = {"image_size": size}  # the position embedding is sized for the input
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    params = sum(p.numel() for p in model.parameters())
    if params > max_params:
        return {"params": params, "skipped": f"{params / 1e6:.0f}M parameters > --max-params"}
    # BatchNorm as after training, so none is an identity and deep nets stay finite: random
    # affine parameters, then running statistics measured on two random batches (cumulative
    # average). Uniform random statistics as in onnx_fixtures.py make resnet152's logits 1e10.
    torch.manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        # Layers initialised to zero (ViT's head) would make every output 0.
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and not m.weight.any():
                nn.init.normal_(m.weight, std=0.02)
            # Zero biases (transformers initialise them so) are Adds of zero, which onnx-ir
            # removes: the path of a bias through the import would go untested.
            if isinstance(m, nn.Linear) and m.bias is not None and not m.bias.any():
                nn.init.normal_(m.bias, std=0.02)
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5); bn.bias.uniform_(-0.2, 0.2)
            bn.reset_running_stats(); bn.momentum = None
        model.train()
        for _ in range(2):
            model(torch.randn(8, 3, size, size))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()
    x = torch.from_numpy(fixed_input(size))
    torch.onnx.export(model, x, path, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17,
                      dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=False)
    with torch.no_grad():
        y = model(x).numpy()
    g = onnx.load(path, load_external_data=False).graph
    meta = {"params": params, "nodes": len(g.node), "ops": sorted({n.op_type for n in g.node}),
            "bytes": os.path.getsize(path), "classes": int(y.shape[1])}
    got = ort_run(path, fixed_input(size))
    meta["torch_diff"] = float(np.abs(got - y).max())
    meta["torch_scale"] = float(np.abs(y).max())
    return meta

# ----------------------------------------------------------------------------- helpers

def fixed_input(size, batch=2):
    import numpy as np
    return np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)

def ort_session(path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

def ort_run(path, x):
    sess = ort_session(path)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]

def ort_latency_ms(path, size, warmup=5, runs=50):
    import numpy as np
    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    x = fixed_input(size, batch=1)
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))

def first_error(text):
    """The first error line of a command's output, with its innermost cause (anyhow's
    'Caused by:' list), on one line."""
    lines = [l.rstrip() for l in text.splitlines() if l.strip()]
    if not lines:
        return "no output"
    head = next((l for l in lines if l.lstrip().startswith(("Error", "error"))), None)
    panic = next((i for i, l in enumerate(lines) if "panicked at" in l), None)
    if head is None and panic is not None:  # the message is on the line after the location
        head = lines[panic] + " " + (lines[panic + 1] if panic + 1 < len(lines) else "")
    if head is None:
        head = next((l for l in lines if re.search(r"\b(error|panicked)\b", l, re.I)), lines[-1])
    causes = []
    if "Caused by:" in text:
        after = text.split("Caused by:", 1)[1]
        causes = [re.sub(r"^\s*\d+:\s*", "", l).strip() for l in after.splitlines() if l.strip()]
        causes = [c for c in causes if c and not c.startswith(("Stack backtrace", "Location"))]
    msg = head.strip()
    if causes and causes[-1] not in msg:
        msg += " :: " + causes[-1]
    return msg[:300]

def exc_line(e):
    """An exception's type and the first line of its message."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]

def run_cmd(cmd, timeout):
    """(ok, stdout, first error line)."""
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "", f"timed out after {timeout} s"
    except OSError as e:
        return False, "", f"cannot run {cmd[0]}: {e}"
    if p.returncode != 0:
        return False, p.stdout, f"exit {p.returncode}: " + first_error(p.stderr + "\n" + p.stdout)
    return True, p.stdout, ""

def png(path, rgb):
    """Writes an 8-bit RGB PNG (numpy uint8 [H, W, 3]) with zlib only."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    Path(path).write_bytes(data)

def make_image_folder(root, size=64, per_class=(4, 2)):
    """root/{train,test}/{c0,c1}/*.png of random pixels (seeded)."""
    import numpy as np
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for c in ("c0", "c1"):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                png(d / f"{i}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root

def md(s):
    return str(s).replace("|", "\\|").replace("\n", " ")

def default_shears():
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        return Path(target) / "release" / "shears"
    return Path.home() / ".cache/shears/target/release/shears"

def header(args, shears):
    import numpy as np
    import onnx, onnxruntime, torch, torchvision
    cpu = platform.processor() or "unknown CPU"
    flags = []
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                have = line.split(":", 1)[1].split()
                flags = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni") if f in have]
    except OSError:
        pass
    if flags:
        cpu += ", " + " ".join(flags)
    version = "not run"
    if not args.export_only:
        ok, out, err = run_cmd([shears, "--version"], 30)
        version = out.strip() if ok else f"unavailable ({err})"
    return (f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnx "
            f"{onnx.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}; "
            f"CPU: {cpu} ({os.cpu_count()} logical cores); shears: {version}; "
            f"input 3x{args.size}x{args.size} (vgg/alexnet 224 with --large), weights=None, "
            f"seed 0, BatchNorm randomised and calibrated; ONNX opset 17, TorchScript exporter, BatchNorm "
            f"unfolded; {time.strftime('%Y-%m-%d')}")

# ----------------------------------------------------------------------------- one model

def export_step(name, size, mdir, timeout, max_params):
    """Exports in a child process; (meta or None, error)."""
    onnx_path = mdir / f"{name}.onnx"
    meta_path = mdir / "export.json"
    for p in (onnx_path, meta_path):
        if p.exists():
            p.unlink()
    ok, _, err = run_cmd([sys.executable, "-W", "ignore", __file__, "--_export-one", name,
                          "--size", str(size), "--work", str(mdir),
                          "--max-params", str(max_params)], timeout)
    if not ok or not meta_path.exists():
        return None, err or "the export wrote no metadata"
    meta = json.loads(meta_path.read_text())
    if "error" in meta:
        return None, meta["error"]
    return meta, ""

def coverage_row(name, size, mdir, shears, data_dir, timeout, meta):
    import numpy as np
    onnx_path = mdir / f"{name}.onnx"
    col, notes = {}, []
    def fail(key, err):
        col[key] = "fail"
        notes.append(f"{key}: {err}")
    sh = [shears, "-q"]
    x = fixed_input(size)
    try:
        y0 = ort_run(onnx_path, x)
    except Exception as e:
        y0 = None
        notes.append(f"onnxruntime on the PyTorch export: {exc_line(e)}")

    # 1. import
    imported = mdir / "imported"
    shutil.rmtree(imported, ignore_errors=True)
    ok, _, err = run_cmd(sh + ["import", onnx_path, "--out", imported], timeout)
    col["import"] = "pass" if ok else None
    if not ok:
        fail("import", err)

    # 2. round trip
    rt = mdir / "rt.onnx"
    if rt.exists():
        rt.unlink()
    if col["import"] == "pass":
        ok, _, err = run_cmd(sh + ["export", imported, rt], timeout)
        if not ok:
            fail("round trip", err)
        elif y0 is None:
            fail("round trip", "no onnxruntime reference from the PyTorch export")
        else:
            try:
                d = float(np.abs(ort_run(rt, x) - y0).max())
                tol = tolerance(float(np.abs(y0).max()), meta["torch_diff"])
                col["round trip"] = "pass" if d <= tol else "fail"
                notes.append(f"round trip: max abs diff {d:.2g} (tolerance {tol:.2g})")
            except Exception as e:
                fail("round trip", "onnxruntime: " + exc_line(e))
    else:
        col["round trip"] = "-"

    # 3-4. prune
    pruned, reports = {}, {}
    for method, key in (("l1-filter", "l1"), ("taylor", "taylor")):
        out, masked = mdir / key, mdir / f"{key}-masked"
        for d in (out, masked):
            shutil.rmtree(d, ignore_errors=True)
        cmd = sh + ["prune", "--model", onnx_path, "--method", method, "--macs-reduction", "0.5",
                    "--round-to", "1", "--finetune-epochs", "0", "--no-eval", "--no-latency", "--save-masked", masked,
                    "--out", out, "--json"]
        if method == "taylor":
            cmd += ["--dataset", "image-folder", "--data", data_dir, "--score-batches", "1",
                    "--score-batch-size", "8", "--test-limit", "4"]
        ok, stdout, err = run_cmd(cmd, timeout)
        if ok and (out / "pruned").is_dir():
            col[method] = "pass"
            pruned[key] = (out / "pruned", masked if masked.is_dir() else None)
            try:
                rep = json.loads(stdout) if stdout.strip().startswith("{") else \
                    json.loads((out / "result.json").read_text())
                reports[key] = rep
                s = rep.get("sizes", rep)  # the report flattens its sizes
                notes.append(f"{method}: MACs -{100 * s['macs_reduction']:.1f}%, params "
                             f"-{100 * s['params_reduction']:.1f}%, {s['prunable_groups']}/"
                             f"{s['groups']} groups prunable")
            except Exception:
                pass
        else:
            fail(method, err or "no OUT/pruned directory")

    # 5-6. compacted vs masked, compacted in onnxruntime
    eq, rt_ok, compact_onnx, gated_only = [], [], {}, []
    for key, (compact_dir, masked_dir) in pruned.items():
        c_onnx, m_onnx = mdir / f"{key}_compacted.onnx", mdir / f"{key}_masked.onnx"
        ok, _, err = run_cmd(sh + ["export", compact_dir, c_onnx], timeout)
        if not ok:
            notes.append(f"export {key} compacted: {err}")
            eq.append(False); rt_ok.append(False)
            continue
        compact_onnx[key] = c_onnx
        try:
            yc = ort_run(c_onnx, x)
            fine = bool(np.isfinite(yc).all()) and yc.shape == (2, meta["classes"])
            rt_ok.append(fine)
            if not fine:
                notes.append(f"onnxruntime {key}: output {yc.shape}, finite {np.isfinite(yc).all()}")
        except Exception as e:
            yc = None
            rt_ok.append(False)
            notes.append(f"onnxruntime {key}: {exc_line(e)}")
        rep = reports.get(key, {})
        if rep.get("masked_model_equivalent") is False:
            # A LayerNorm over pruned channels: zeroed channels still count in its statistics,
            # so no dense ONNX model equals the compacted one. prune itself checks the compacted
            # network against the gated dense one (statistics over the kept channels) in its
            # reference interpreter; that is the check reported here.
            d = float(rep.get("compaction_max_abs_diff", float("inf")))
            scale = float(rep.get("compaction_output_scale", 1.0))
            eq.append(d <= TOL * max(1.0, scale))
            gated_only.append(key)
            notes.append(f"{key} compacted vs gated (LayerNorm: no dense masked model is "
                         f"equivalent; shears' reference check): max abs diff {d:.2g}")
            continue
        if masked_dir is None:
            eq.append(False); notes.append(f"{key}: prune wrote no --save-masked model")
            continue
        ok, _, err = run_cmd(sh + ["export", masked_dir, m_onnx], timeout)
        if not ok:
            eq.append(False); notes.append(f"export {key} masked: {err}")
            continue
        try:
            if yc is None:
                raise RuntimeError("no compacted output")
            ym = ort_run(m_onnx, x)
            d = float(np.abs(yc - ym).max())
            tol = tolerance(float(np.abs(ym).max()), meta["torch_diff"])
            eq.append(d <= tol)
            notes.append(f"{key} compacted vs masked: max abs diff {d:.2g} (tolerance {tol:.2g})")
        except Exception as e:
            eq.append(False); notes.append(f"{key} compacted vs masked: {exc_line(e)}")
    col["compacted = masked"] = "-" if not eq else (
        ("pass (gated)" if gated_only else "pass") if all(eq) else "fail")
    col["onnxruntime"] = "-" if not rt_ok else ("pass" if all(rt_ok) else "fail")

    # 7. latency
    col["latency b1 ms"] = "-"
    if "l1" in compact_onnx:
        dense = rt if rt.exists() else onnx_path
        try:
            a = ort_latency_ms(dense, size)
            b = ort_latency_ms(compact_onnx["l1"], size)
            col["latency b1 ms"] = f"{a:.2f} → {b:.2f} ({a / b:.2f}x)"
        except Exception as e:
            col["latency b1 ms"] = "fail"
            notes.append(f"latency: {exc_line(e)}")
    # 8. latency with prune's defaults (round_to auto)
    col["latency b1 ms, default"] = "-"
    if "l1" in compact_onnx:
        out = mdir / "auto"
        shutil.rmtree(out, ignore_errors=True)
        ok, stdout, err = run_cmd(sh + ["prune", "--model", onnx_path, "--method", "l1-filter",
                                        "--macs-reduction", "0.5", "--no-eval", "--no-latency",
                                        "--out", out, "--json"], timeout)
        a_onnx = mdir / "auto_compacted.onnx"
        if ok:
            ok, _, err = run_cmd(sh + ["export", out / "pruned", a_onnx], timeout)
        if ok:
            try:
                rep = json.loads((out / "result.json").read_text())
                chosen = (rep.get("rounding") or {}).get("chosen", "?")
                a = ort_latency_ms(rt if rt.exists() else onnx_path, size)
                b = ort_latency_ms(a_onnx, size)
                col["latency b1 ms, default"] = f"{a:.2f} → {b:.2f} ({a / b:.2f}x) [{chosen}]"
                notes.append(f"default prune: MACs -{100 * rep['macs_reduction']:.1f}%, "
                             f"round_to auto chose {chosen}")
            except Exception as e:
                col["latency b1 ms, default"] = "fail"
                notes.append(f"latency, default: {exc_line(e)}")
        else:
            col["latency b1 ms, default"] = "fail"
            notes.append(f"default prune: {err}")
    for k in ("import", "round trip", "l1-filter", "taylor"):
        col[k] = col.get(k) or "fail"
    return col, notes

# ----------------------------------------------------------------------------- main

COLUMNS = ["import", "round trip", "l1-filter", "taylor", "compacted = masked", "onnxruntime",
           "latency b1 ms", "latency b1 ms, default"]

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", help="comma-separated torchvision model names (default: all)")
    ap.add_argument("--work", default="/tmp/shears-coverage", type=Path)
    ap.add_argument("--shears", type=Path, default=None)
    ap.add_argument("--out", type=Path, help="also write the Markdown here")
    ap.add_argument("--export-only", action="store_true",
                    help="export and check the ONNX files, list their op types; no shears")
    ap.add_argument("--size", type=int, default=64, help="input height and width")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per command")
    ap.add_argument("--large", action="store_true", help="also vgg*/alexnet, at 224x224")
    ap.add_argument("--max-params", type=float, default=100e6,
                    help="skip models with more parameters than this")
    ap.add_argument("--_export-one", dest="export_one", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.export_one:  # child process: one export, metadata in WORK/export.json
        args.work.mkdir(parents=True, exist_ok=True)
        try:
            meta = export_one(args.export_one, args.size,
                              str(args.work / f"{args.export_one}.onnx"), args.max_params)
        except Exception as e:
            meta = {"error": exc_line(e)}
        (args.work / "export.json").write_text(json.dumps(meta))
        return

    import torchvision
    everything = torchvision.models.list_models(module=torchvision.models)
    if args.models:
        names = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in names if m not in everything]
        if unknown:
            sys.exit(f"unknown torchvision models: {', '.join(unknown)}")
    else:
        names = CORE + [m for m in everything if m not in CORE]
    shears = args.shears or default_shears()
    if not args.export_only and not Path(shears).is_file():
        sys.exit(f"no shears binary at {shears} (build it with cargo build --release, or pass "
                 "--shears PATH; --export-only needs none)")
    args.work.mkdir(parents=True, exist_ok=True)
    data_dir = None if args.export_only else make_image_folder(args.work / "data")

    head = header(args, shears)
    print(head, flush=True)
    rows, notes_all, op_union = [], {}, {}
    for name in names:
        mdir = args.work / name
        mdir.mkdir(parents=True, exist_ok=True)
        large = bool(LARGE.match(name))
        size = 224 if large else args.size
        t0 = time.time()
        if name in HUGE or (large and not args.large):
            why = ("600M+ parameters, not built" if name in HUGE else
                   "needs 224x224 (adaptive pool to 6x6/7x7); pass --large")
            rows.append((name, "-", "-", f"not exported: {why}", {}, []))
            print(f"{name}: skipped ({why})", flush=True)
            continue
        meta, err = export_step(name, size, mdir, args.timeout, args.max_params)
        if meta is None:
            rows.append((name, size, "-", f"not exported: {err}", {}, []))
            print(f"{name}: export failed: {err}", flush=True)
            continue
        if "skipped" in meta:
            rows.append((name, size, meta["params"], f"skipped: {meta['skipped']}", {}, []))
            print(f"{name}: skipped ({meta['skipped']})", flush=True)
            continue
        for op in meta["ops"]:
            op_union.setdefault(op, []).append(name)
        exported = (f"ok ({meta['nodes']} nodes, {meta['bytes'] / 1e6:.1f} MB; onnxruntime vs "
                    f"PyTorch {meta['torch_diff']:.2g} of {meta['torch_scale']:.3g})")
        if args.export_only:
            rows.append((name, size, meta["params"], exported, {}, meta["ops"]))
            print(f"{name}: {exported} [{time.time() - t0:.0f} s]\n  ops: {' '.join(meta['ops'])}",
                  flush=True)
            continue
        col, notes = coverage_row(name, size, mdir, shears, data_dir, args.timeout, meta)
        rows.append((name, size, meta["params"], exported, col, meta["ops"]))
        notes_all[name] = notes
        print(f"{name}: " + ", ".join(f"{k} {col[k]}" for k in COLUMNS) +
              f" [{time.time() - t0:.0f} s]", flush=True)
        for n in notes:
            print(f"  {n}", flush=True)

    lines = [f"# shears on torchvision classifiers", "", head, ""]
    if args.export_only:
        lines += ["| model | input | params | export | op types |", "|---|---|---|---|---|"]
        for name, size, params, exported, _, ops in rows:
            p = f"{params / 1e6:.1f}M" if isinstance(params, int) else params
            lines.append(f"| {name} | {size} | {p} | {md(exported)} | {md(' '.join(ops))} |")
        lines += ["", "Op types over all exported models (models using each):", ""]
        for op in sorted(op_union):
            lines.append(f"- {op}: {len(op_union[op])}")
    else:
        lines += ["| model | input | params | " + " | ".join(COLUMNS) + " | notes |",
                  "|---|---|---|" + "---|" * len(COLUMNS) + "---|"]
        for name, size, params, exported, col, _ in rows:
            p = f"{params / 1e6:.1f}M" if isinstance(params, int) else params
            if not col:
                lines.append(f"| {name} | {size} | {p} | " + " | ".join("-" for _ in COLUMNS)
                             + f" | {md(exported)} |")
                continue
            lines.append(f"| {name} | {size} | {p} | " + " | ".join(md(col[k]) for k in COLUMNS)
                         + f" | {md('; '.join(notes_all.get(name, [])))} |")
        lines += ["", "Op types per exported model:", ""]
        for name, _, _, _, col, ops in rows:
            if ops:
                lines.append(f"- {name}: {' '.join(ops)}")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)

if __name__ == "__main__":
    main()
