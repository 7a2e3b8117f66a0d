#!/usr/bin/env bash
# Reproduction of MaskSparsity (Jiang et al., "Pruning-aware Sparse Regularization for Network
# Pruning") against Network Slimming and L1-filter pruning on Fashion-MNIST, with the `shears`
# binary only (docs/reproductions/masksparsity.md).
#
# Per model and seed, one dense baseline (BASE_EPOCHS) is trained and shared; then every method
# gets the same epoch budget after it (3 epochs):
#   masksparsity  1 epoch global sparsity training (the mask) + 1 epoch MaskSparsity + 1 fine-tune
#   slimming      2 epochs sparsity training (L1 on every BN scale)              + 1 fine-tune
#   l1-filter     no sparsity training                                             3 fine-tune
# each cut to the same MACs reduction (TARGETS) with the same |gamma| ranking or filter norm.
#
# lambda: an L1 subgradient step moves a scale by about lr * lambda / (1 - momentum); with
# STEPS steps per epoch at lr 0.05 and momentum 0.9 one epoch moves it by 0.5 * STEPS * lambda.
# lambda is chosen so that the sparsity phase can move a scale of 1 by about 2 (to zero):
# for Slimming that is its authors' intent (most scales near zero before the cut), scaled to a
# short run; for MaskSparsity the same total drift on the masked channels only.
#
# Usage: scripts/repro_masksparsity.sh   (finished runs are skipped, interrupted ones resume).
# Environment: SHEARS (binary), OUT (default runs/repro-masksparsity), MODELS ("resnet-20 vgg-11"),
# SEEDS ("0 1 2"), TARGETS ("0.5 0.63"), TRAIN_LIMIT (5000 training images of the full set),
# TEST_LIMIT (5000), BASE_EPOCHS (3), FMNIST_DIR (data directory).
# Then: cargo run --release -p shears --example masksparsity_report -- \
#         runs/repro-masksparsity docs/reproductions/masksparsity
set -euo pipefail
cd "$(dirname "$0")/.."

SHEARS=${SHEARS:-${CARGO_TARGET_DIR:-target}/release/shears}
OUT=${OUT:-runs/repro-masksparsity}
MODELS=${MODELS:-"resnet-20 vgg-11"}
SEEDS=${SEEDS:-"0 1 2"}
TARGETS=${TARGETS:-"0.5 0.63"}
TRAIN_LIMIT=${TRAIN_LIMIT:-5000}
TEST_LIMIT=${TEST_LIMIT:-5000}
BASE_EPOCHS=${BASE_EPOCHS:-3}
BATCH=128
export SHEARS_LOG=${SHEARS_LOG:-warn}
DATA_DIR_LINE=""
if [ -n "${FMNIST_DIR:-}" ]; then DATA_DIR_LINE="dir = \"$FMNIST_DIR\""; fi

if [ ! -x "$SHEARS" ]; then cargo build --release -p shears; fi
STEPS=$(( (TRAIN_LIMIT + BATCH - 1) / BATCH ))
# lambda for a drift of about 2 in E epochs: 2 / (0.5 * STEPS * E) = 4 / (STEPS * E).
lam() { python3 -c "print(f'{4.0 / ($STEPS * $1):.4g}')"; }
LAMBDA_1=$(lam 1)
LAMBDA_2=$(lam 2)

common() { # $1 = arch (a model directory), $2 = seed
  cat <<TOML
seed = $2
[model]
arch = "$1"
[data]
dataset = "fashion-mnist"
$DATA_DIR_LINE
[train]
epochs = 0
batch_size = $BATCH
lr = 0.05
train_limit = $TRAIN_LIMIT
test_limit = $TEST_LIMIT
optimizer = { kind = "sgd", momentum = 0.9, nesterov = true, weight_decay = 5e-4 }
schedule = { kind = "cosine", min_lr = 0.0 }
[finetune]
epochs = FT_EPOCHS
batch_size = $BATCH
lr = 0.005
train_limit = $TRAIN_LIMIT
test_limit = $TEST_LIMIT
optimizer = { kind = "sgd", momentum = 0.9, nesterov = true, weight_decay = 5e-4 }
schedule = { kind = "constant" }
[latency]
batches = [1, 64]
threads = [1]
warmup = 3
repeats = 10
rounds = 2
TOML
}

method() { # $1 = method, $2 = target
  case $1 in
    masksparsity) printf '[method]\nname = "masksparsity"\nmask = "slimming"\nmask_epochs = 1\nmask_lambda = %s\nmacs_reduction = %s\nlambda = %s\nsparsity_epochs = 1\ncut = "mask"\n' "$LAMBDA_1" "$2" "$LAMBDA_1" ;;
    slimming) printf '[method]\nname = "slimming"\nlambda = %s\nsparsity_epochs = 2\nmacs_reduction = %s\n' "$LAMBDA_2" "$2" ;;
    l1-filter) printf '[method]\nname = "l1-filter"\nmacs_reduction = %s\n' "$2" ;;
  esac
}

ft_epochs() { case $1 in l1-filter) echo 3 ;; *) echo 1 ;; esac; }

for model in $MODELS; do
  for s in $SEEDS; do
    dense="$OUT/$model/dense-s$s"
    if [ ! -f "$dense/result.json" ]; then
      start=$(date +%s)
      "$SHEARS" train --model "$model" --dataset fashion-mnist ${FMNIST_DIR:+--data "$FMNIST_DIR"} \
        --epochs "$BASE_EPOCHS" --batch-size $BATCH --lr 0.05 --train-limit "$TRAIN_LIMIT" \
        --test-limit "$TEST_LIMIT" --seed "$s" --out "$dense" --resume --json > /dev/null
      echo "$model dense s$s: $(( $(date +%s) - start )) s" >&2
    fi
    for t in $TARGETS; do
      for m in masksparsity slimming l1-filter; do
        dir="$OUT/$model/$m-macs$t-s$s"
        [ -f "$dir/result.json" ] && continue
        mkdir -p "$dir"
        cfg="$OUT/$model/$m-macs$t-s$s.toml"
        { echo "name = \"$m\""; common "$dense" "$s" | sed "s/FT_EPOCHS/$(ft_epochs "$m")/"; method "$m" "$t"; } > "$cfg"
        start=$(date +%s)
        "$SHEARS" run --config "$cfg" --out "$dir" --resume --json > /dev/null
        echo "$model $m macs$t s$s: $(( $(date +%s) - start )) s" >&2
      done
    done
  done
done
