#!/usr/bin/env bash
# Reproduction of FTWT (Elkerdawy et al., "Fire Together Wire Together") on Fashion-MNIST with
# the `shears` binary only (docs/reproductions/ftwt.md): per model, one dense baseline; then, for
# every r and mode, FTWT's dynamic training from that baseline, its report (accuracy, MACs in
# both conventions, the estimate before training, per-layer mask accuracy) and the measured
# latency of dynamic inference against the dense baseline at batch 1 and 64 on one thread.
#
# Dynamic phase: EPOCHS epochs at lr 0.01 (cosine), the mask loss on for the first half
# (cooldown 0.5), heads on SGD lr 0.1 momentum 0.9 without schedule (the official defaults).
#
# Usage: scripts/repro_ftwt.sh   (finished runs are skipped, interrupted ones resume).
# Environment: SHEARS (binary), OUT (default runs/repro-ftwt), MODELS ("resnet-20 vgg-11"),
# RS ("1.0 0.95 0.9"), MODES ("decoupled joint"), EPOCHS (2), TRAIN_LIMIT (5000), TEST_LIMIT
# (2000), BASE_EPOCHS (3), SEED (0), HEAD_SOFTMAX (unset: the paper's softmax), BENCH (1; 0
# trains only, so the latency can be measured later on a quiet machine), FMNIST_DIR. A baseline of the MaskSparsity reproduction
# with the same settings (runs/repro-masksparsity/<model>/dense-s<seed>) is reused if present.
# Then: cargo run --release -p shears --example ftwt_report -- runs/repro-ftwt docs/reproductions/ftwt
set -euo pipefail
cd "$(dirname "$0")/.."

SHEARS=${SHEARS:-${CARGO_TARGET_DIR:-target}/release/shears}
OUT=${OUT:-runs/repro-ftwt}
MODELS=${MODELS:-"resnet-20 vgg-11"}
RS=${RS:-"1.0 0.95 0.9"}
MODES=${MODES:-"decoupled joint"}
EPOCHS=${EPOCHS:-2}
TRAIN_LIMIT=${TRAIN_LIMIT:-5000}
TEST_LIMIT=${TEST_LIMIT:-2000}
BASE_EPOCHS=${BASE_EPOCHS:-3}
SEED=${SEED:-0}
BATCH=128
export SHEARS_LOG=${SHEARS_LOG:-warn}
DATA_DIR_LINE=""
# HEAD_SOFTMAX=false feeds the heads the raw channel means (the paper's softmax is the default).
SOFTMAX_LINE=""
if [ -n "${HEAD_SOFTMAX:-}" ]; then SOFTMAX_LINE="softmax = $HEAD_SOFTMAX"; fi
if [ -n "${FMNIST_DIR:-}" ]; then DATA_DIR_LINE="dir = \"$FMNIST_DIR\""; fi
if [ ! -x "$SHEARS" ]; then cargo build --release -p shears; fi

for model in $MODELS; do
  dense="$OUT/$model/dense-s$SEED"
  shared="runs/repro-masksparsity/$model/dense-s$SEED"
  if [ ! -f "$dense/result.json" ]; then
    if [ -f "$shared/result.json" ] && [ "$TRAIN_LIMIT" = 5000 ] && [ "$BASE_EPOCHS" = 3 ]; then
      mkdir -p "$OUT/$model" && cp -r "$shared" "$dense"
    else
      "$SHEARS" train --model "$model" --dataset fashion-mnist ${FMNIST_DIR:+--data "$FMNIST_DIR"} \
        --epochs "$BASE_EPOCHS" --batch-size $BATCH --lr 0.05 --train-limit "$TRAIN_LIMIT" \
        --test-limit "$TEST_LIMIT" --seed "$SEED" --out "$dense" --resume --json > /dev/null
    fi
  fi
  for r in $RS; do
    for mode in $MODES; do
      dir="$OUT/$model/ftwt-$mode-r$r-s$SEED"
      cfg="$dir.toml"
      if [ ! -f "$dir/result.json" ]; then
        mkdir -p "$dir"
        cat > "$cfg" <<TOML
name = "ftwt"
seed = $SEED
[model]
arch = "$dense"
[data]
dataset = "fashion-mnist"
$DATA_DIR_LINE
[train]
epochs = 0
batch_size = $BATCH
train_limit = $TRAIN_LIMIT
test_limit = $TEST_LIMIT
[method]
name = "ftwt"
r = $r
mode = "$mode"
cooldown = 0.5
head_lr = 0.1
head_momentum = 0.9
$SOFTMAX_LINE
[finetune]
epochs = $EPOCHS
batch_size = $BATCH
lr = 0.01
train_limit = $TRAIN_LIMIT
test_limit = $TEST_LIMIT
optimizer = { kind = "sgd", momentum = 0.9, nesterov = true, weight_decay = 5e-4 }
schedule = { kind = "cosine", min_lr = 0.0 }
TOML
        start=$(date +%s)
        "$SHEARS" run --config "$cfg" --out "$dir" --resume --json > /dev/null
        echo "$model $mode r$r: $(( $(date +%s) - start )) s" >&2
      fi
      if [ "${BENCH:-1}" != 0 ] && [ ! -f "$dir/bench.json" ]; then
        "$SHEARS" bench --dynamic "$dir" --batch 1,64 --threads 1 --warmup 3 --repeats 30 --json > "$dir/bench.json.tmp"
        mv "$dir/bench.json.tmp" "$dir/bench.json"
      fi
    done
  done
done
