#!/usr/bin/env bash
# Reproduction of MaskSparsity (Jiang et al., "Pruning-aware Sparse Regularization for Network
# Pruning") against Network Slimming and L1-filter pruning on Fashion-MNIST, with the `shears`
# binary only (docs/reproductions/masksparsity.md).
#
# Per model and seed, one dense baseline (BASE_EPOCHS) is trained and shared; then every method
# gets the same epoch budget after it (4 epochs):
#   masksparsity  1 epoch global sparsity training (the mask) + 2 epochs MaskSparsity + 1 fine-tune
#   slimming      3 epochs sparsity training (L1 on every BN scale)                + 1 fine-tune
#   l1-filter     no sparsity training                                               4 fine-tune
# each cut to the same MACs reduction (TARGETS).
#
# lambda: an L1 subgradient step moves a scale by about lr * lambda / (1 - momentum), 0.5 * lambda
# at lr 0.05 and momentum 0.9; the per-epoch cosine schedule of a phase of E epochs averages
# about 1 (E = 1), 0.75 (E = 2), 0.67 (E = 3) of that. With STEPS steps per epoch, lambda is set
# for a total drift D of a scale over the phase:
#   MaskSparsity  D = 1.5 on the masked scales (they reach zero; the others are not penalised)
#   mask          D = 1.0 over its one epoch (only the ranking of |gamma| matters)
#   Slimming      D = 0.5 on every scale: the task loss can hold up the scales that matter while
#                 the rest sink; D = 2 sank every scale and the network with it (measured, see the
#                 page), D = 0.15 moved none below 0.01.
#
# BatchNorm statistics are recomputed exactly after every epoch of every phase (precise BN over
# PRECISE_BN training batches, as the official pycls-based code does): without it the network
# just after MaskSparsity training evaluated at 27 % on resnet-20 (train loss 0.49) because the
# moving averages lag the quickly moving scales; with it, 79.5 % (the baseline: 80.2 %).
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
PRECISE_BN=${PRECISE_BN:-64}
export SHEARS_LOG=${SHEARS_LOG:-warn}
DATA_DIR_LINE=""
if [ -n "${FMNIST_DIR:-}" ]; then DATA_DIR_LINE="dir = \"$FMNIST_DIR\""; fi

if [ ! -x "$SHEARS" ]; then cargo build --release -p shears; fi
STEPS=$(( (TRAIN_LIMIT + BATCH - 1) / BATCH ))
# lambda = D / (0.5 * schedule factor * STEPS * E)
lam() { python3 -c "print(f'{$1 / (0.5 * $2 * $STEPS * $3):.4g}')"; }
LAMBDA_MS=$(lam 1.5 0.75 2)
LAMBDA_MASK=$(lam 1.0 1.0 1)
LAMBDA_SLIM=$(lam 0.5 0.67 3)

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
precise_bn_batches = $PRECISE_BN
optimizer = { kind = "sgd", momentum = 0.9, nesterov = true, weight_decay = 5e-4 }
schedule = { kind = "cosine", min_lr = 0.0 }
[finetune]
epochs = FT_EPOCHS
batch_size = $BATCH
lr = 0.005
train_limit = $TRAIN_LIMIT
test_limit = $TEST_LIMIT
precise_bn_batches = $PRECISE_BN
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
    masksparsity) printf '[method]\nname = "masksparsity"\nmask = "slimming"\nmask_epochs = 1\nmask_lambda = %s\nmacs_reduction = %s\nlambda = %s\nsparsity_epochs = 2\ncut = "mask"\n' "$LAMBDA_MASK" "$2" "$LAMBDA_MS" ;;
    slimming) printf '[method]\nname = "slimming"\nlambda = %s\nsparsity_epochs = 3\nmacs_reduction = %s\n' "$LAMBDA_SLIM" "$2" ;;
    l1-filter) printf '[method]\nname = "l1-filter"\nmacs_reduction = %s\n' "$2" ;;
  esac
}

ft_epochs() { case $1 in l1-filter) echo 4 ;; *) echo 1 ;; esac; }

# Seed-major, so an interrupted reproduction has every model at its first seeds.
for s in $SEEDS; do
  for model in $MODELS; do
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
