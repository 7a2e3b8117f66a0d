#!/usr/bin/env python3
"""Write the Fashion-MNIST subset that shears embeds as its offline default dataset.

Takes the FIRST 10,000 training and FIRST 2,000 test images (file order, no shuffling, so the
subset is reproducible from the published files alone) and writes them as gzip-compressed IDX
files (level 9) with the standard names. Prints the class balance of each split.

Usage: python3 data/make_subset.py [SOURCE_DIR] [OUT_DIR]
  SOURCE_DIR defaults to /usr/share/datasets/fashion-mnist (Debian: dataset-fashion-mnist)
  OUT_DIR    defaults to data/fashion-mnist-subset next to this script
"""

import collections
import gzip
import os
import struct
import sys

TRAIN_N = 10_000
TEST_N = 2_000
CLASSES = 10


def read_idx(path):
    """Return (dims, payload bytes) of an IDX file, gzip or raw (detected by magic bytes)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        sys.exit(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    payload = raw[4 + 4 * ndim :]
    expected = 1
    for d in dims:
        expected *= d
    if len(payload) != expected:
        sys.exit(f"{path}: payload is {len(payload)} bytes, header says {expected}")
    return dims, payload


def write_idx_gz(path, dims, payload):
    header = bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    # mtime=0 keeps the output byte-identical across runs.
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            gz.write(header + payload)


def subset(src, out, prefix, n):
    img_dims, imgs = read_idx(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz"))
    lbl_dims, lbls = read_idx(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz"))
    if img_dims[0] != lbl_dims[0] or img_dims[0] < n:
        sys.exit(f"{prefix}: {img_dims[0]} images, {lbl_dims[0]} labels, need {n}")
    per_image = img_dims[1] * img_dims[2]
    write_idx_gz(
        os.path.join(out, f"{prefix}-images-idx3-ubyte.gz"),
        (n, img_dims[1], img_dims[2]),
        imgs[: n * per_image],
    )
    write_idx_gz(os.path.join(out, f"{prefix}-labels-idx1-ubyte.gz"), (n,), lbls[:n])
    counts = collections.Counter(lbls[:n])
    balance = [counts.get(c, 0) for c in range(CLASSES)]
    print(f"{prefix}: {n} samples, per class {balance} (min {min(balance)}, max {max(balance)})")
    # Roughly even: every class within 20% of the uniform share.
    uniform = n / CLASSES
    if min(balance) < 0.8 * uniform or max(balance) > 1.2 * uniform:
        sys.exit(f"{prefix}: class balance is not roughly even: {balance}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "fashion-mnist-subset")
    os.makedirs(out, exist_ok=True)
    subset(src, out, "train", TRAIN_N)
    subset(src, out, "t10k", TEST_N)


if __name__ == "__main__":
    main()
