"""Median inference latency of ONNX files in onnxruntime, one thread, batch 1 and 64.

    python3 scripts/onnx_latency.py a.onnx b.onnx ...   (needs numpy and onnxruntime)
Prints one markdown row per file and batch: file, batch, median ms over 50 runs after 5 warm-ups.
"""
import sys, time
import numpy as np
import onnxruntime as ort

opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
print("| file | batch | onnxruntime median ms (1 thread) |")
print("|---|---|---|")
for path in sys.argv[1:]:
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d for d in inp.shape[1:]]
    for batch in (1, 64):
        x = np.random.default_rng(0).standard_normal([batch] + shape).astype(np.float32)
        for _ in range(5):
            sess.run(None, {inp.name: x})
        times = []
        for _ in range(50):
            t = time.perf_counter()
            sess.run(None, {inp.name: x})
            times.append((time.perf_counter() - t) * 1e3)
        print(f"| {path} | {batch} | {np.median(times):.3f} |")
