#!/usr/bin/env bash
# The unpruned control of the MaskSparsity reproduction: each seed's dense baseline trained for
# the 4 epochs every method gets after it (lr 0.05, cosine), so "no accuracy loss" compares the
# pruned networks with a dense one of the same total epoch budget. Same environment as
# scripts/repro_masksparsity.sh; run it after that one (it reads the baselines). Resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
SHEARS=${SHEARS:-${CARGO_TARGET_DIR:-target}/release/shears}
OUT=${OUT:-runs/repro-masksparsity}
MODELS=${MODELS:-"resnet-20 vgg-11"}
SEEDS=${SEEDS:-"0 1 2"}
TRAIN_LIMIT=${TRAIN_LIMIT:-5000}
TEST_LIMIT=${TEST_LIMIT:-5000}
export SHEARS_LOG=${SHEARS_LOG:-warn}
for s in $SEEDS; do
  for model in $MODELS; do
    dense="$OUT/$model/dense-s$s"
    dir="$OUT/$model/dense-control-s$s"
    [ -f "$dense/result.json" ] || continue
    [ -f "$dir/result.json" ] && continue
    start=$(date +%s)
    "$SHEARS" train --model "$dense" --dataset fashion-mnist ${FMNIST_DIR:+--data "$FMNIST_DIR"} \
      --epochs 4 --batch-size 128 --lr 0.05 --train-limit "$TRAIN_LIMIT" --test-limit "$TEST_LIMIT" \
      --seed "$s" --out "$dir" --resume --json > /dev/null
    echo "$model dense control s$s: $(( $(date +%s) - start )) s" >&2
  done
done
