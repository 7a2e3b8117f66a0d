#!/usr/bin/env bash
# Reproduces the "Structured pruning and compaction" latency table of BENCHMARKS.md: ResNet-56 and
# VGG-16 (3x32x32 inputs, 10 classes) pruned with L1 filter norms to a 50% MACs reduction
# (conv+linear convention), then the dense and the compacted model are timed at batch 1 and 64,
# 1 and 2 threads (inference, warm-up 3, median of REPEATS runs, best of ROUNDS alternating rounds).
# Latency does not depend on the weight values, so freshly initialised zoo weights are used (no data).
#
# Usage: scripts/bench_structured.sh [OUT_DIR]
#   SHEARS=path/to/shears   (default: target/release/shears, else `shears` on PATH)
#   REPEATS=10 ROUNDS=3     timed runs per round and rounds
#   EXTRA="--round-to 8"    extra `shears prune` options (e.g. --scope per-layer)
set -euo pipefail

out="${1:-bench-structured}"
repeats="${REPEATS:-10}"
rounds="${ROUNDS:-3}"
if [[ -n "${SHEARS:-}" ]]; then
    shears="$SHEARS"
elif [[ -x "${CARGO_TARGET_DIR:-target}/release/shears" ]]; then
    shears="${CARGO_TARGET_DIR:-target}/release/shears"
else
    shears="shears"
fi
if ! command -v "$shears" >/dev/null 2>&1; then
    echo "error: no shears binary at \`$shears\` (build it with \`cargo build --release -p shears\`, or set SHEARS)" >&2
    exit 1
fi
mkdir -p "$out"
echo "# $("$shears" --version), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for model in resnet-56 vgg-16; do
    echo
    # shellcheck disable=SC2086
    "$shears" -q prune --model "$model" --input 3x32x32 --classes 10 \
        --method l1-filter --macs-reduction 0.5 --no-eval \
        --latency-batches 1,64 --latency-threads 1,2 \
        --latency-warmup 3 --latency-repeats "$repeats" --latency-rounds "$rounds" \
        ${EXTRA:-} --out "$out/$model"
done
echo
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# JSON reports: $out/<model>/result.json (field \"latency\")"
