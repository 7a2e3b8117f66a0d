#!/usr/bin/env bash
# The README's ONNX round trip, measured: a PyTorch ResNet (crates/shears-onnx/tests/fixtures,
# from scripts/onnx_fixtures.py) pruned by shears to half its MACs, fine-tuned one epoch on the
# embedded Fashion-MNIST subset, exported back to ONNX; then both ONNX files timed in
# onnxruntime (scripts/onnx_latency.py) next to shears' own latency of the same two networks.
# Usage: scripts/onnx_round_trip.sh   (PYTHON: a python with numpy and onnxruntime)
set -euo pipefail
cd "$(dirname "$0")/.."
SHEARS=${SHEARS:-${CARGO_TARGET_DIR:-target}/release/shears}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-runs/onnx-round-trip}
FIXTURE=crates/shears-onnx/tests/fixtures/resnet.onnx
if [ ! -x "$SHEARS" ]; then cargo build --release -p shears; fi
rm -rf "$OUT" && mkdir -p "$(dirname "$OUT")"
"$SHEARS" prune --model "$FIXTURE" --method l1-filter --macs-reduction 0.5 --finetune-epochs 1 \
  --latency-batches 1,64 --latency-threads 1 --latency-repeats 50 --out "$OUT" 2>/dev/null
"$SHEARS" export "$OUT" "$OUT/pruned.onnx" > /dev/null 2>&1
"$PYTHON" scripts/onnx_latency.py "$FIXTURE" "$OUT/pruned.onnx"
