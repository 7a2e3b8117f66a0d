#!/usr/bin/env bash
# Reproduction of PAAM (Babaiee et al., "Pruning by Active Attention Manipulation") against
# L1-filter pruning, Network Slimming and MaskSparsity on Fashion-MNIST, at the same parameter
# count and the same epoch budget, with the `shears` binary only (docs/reproductions/paam.md).
#
# Every method gets BUDGET = BASE_EPOCHS + 4 training epochs in all, and the same params target:
#   paam          from scratch: BUDGET - 1 epochs of joint training (scores, penalty, budget
#                 cut ramping up from a quarter to three quarters of them) + 1 fine-tune
#   masksparsity  baseline + 1 epoch global sparsity training (the mask) + 2 MaskSparsity + 1 fine-tune
#   slimming      baseline + 3 epochs sparsity training (L1 on every BN scale)      + 1 fine-tune
#   l1-filter     baseline                                                           + 4 fine-tune
#   dense control baseline + 4 epochs, unpruned (what "accuracy gain" is measured against)
# The ablations (attention -> independent per-filter scores; leaky exponential -> sigmoid) run on
# the seeds in ABLATION_SEEDS_<model> (all seeds on resnet-20, seed 0 on vgg-11 by default, to fit
# the 2-hour budget).
#
# The lambdas of Slimming and MaskSparsity follow the drift rule of scripts/repro_masksparsity.sh
# (an L1 subgradient step moves a scale by about lr * lambda / (1 - momentum)): MaskSparsity D = 1.5
# on the masked scales, the mask D = 1.0, Slimming D = 0.5. PAAM's lambda (the weight of the mean
# score) and its other settings are the defaults of `[method] name = "paam"`.
#
# BatchNorm statistics are recomputed after every epoch of every phase (precise BN over
# PRECISE_BN training batches), for every method alike.
#
# Usage: scripts/repro_paam.sh   (finished runs are skipped, interrupted ones resume).
# Environment: SHEARS (binary), OUT (default runs/repro-paam), MODELS ("resnet-20 vgg-11"),
# SEEDS ("0 1 2"), TARGET (params removed, 0.5), TRAIN_LIMIT (2500 training images of the full
# set), TEST_LIMIT (2000), BASE_EPOCHS (3), PRECISE_BN (10), FMNIST_DIR (data directory).
# Then: cargo run --release -p shears --example paam_report -- runs/repro-paam docs/reproductions/paam
set -euo pipefail
cd "$(dirname "$0")/.."

SHEARS=${SHEARS:-${CARGO_TARGET_DIR:-target}/release/shears}
OUT=${OUT:-runs/repro-paam}
MODELS=${MODELS:-"resnet-20 vgg-11"}
SEEDS=${SEEDS:-"0 1 2"}
ABLATION_SEEDS_resnet_20=${ABLATION_SEEDS_resnet_20:-"0 1 2"}
ABLATION_SEEDS_vgg_11=${ABLATION_SEEDS_vgg_11:-"0"}
TARGET=${TARGET:-0.5}
TRAIN_LIMIT=${TRAIN_LIMIT:-2500}
TEST_LIMIT=${TEST_LIMIT:-2000}
BASE_EPOCHS=${BASE_EPOCHS:-3}
BUDGET=$((BASE_EPOCHS + 4))
BATCH=128
PRECISE_BN=${PRECISE_BN:-10}
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

phase() { # $1 = section, $2 = epochs, $3 = lr, $4 = schedule (TOML inline table)
  cat <<TOML
[$1]
epochs = $2
batch_size = $BATCH
lr = $3
train_limit = $TRAIN_LIMIT
test_limit = $TEST_LIMIT
precise_bn_batches = $PRECISE_BN
optimizer = { kind = "sgd", momentum = 0.9, nesterov = true, weight_decay = 5e-4 }
schedule = $4
TOML
}

config() { # $1 = name, $2 = arch (zoo name or model directory), $3 = seed, $4 = train epochs, $5 = fine-tune epochs
  cat <<TOML
name = "$1"
seed = $3
[model]
arch = "$2"
[data]
dataset = "fashion-mnist"
$DATA_DIR_LINE
TOML
  phase train "$4" 0.05 '{ kind = "cosine", min_lr = 0.0 }'
  phase finetune "$5" 0.005 '{ kind = "constant" }'
  cat <<TOML
[latency]
batches = [1, 64]
threads = [1]
warmup = 3
repeats = 10
rounds = 2
TOML
}

method() { # $1 = method
  case $1 in
    paam) printf '[method]\nname = "paam"\nparams_reduction = %s\n' "$TARGET" ;;
    paam-independent) printf '[method]\nname = "paam"\nparams_reduction = %s\nscorer = "independent"\n' "$TARGET" ;;
    paam-sigmoid) printf '[method]\nname = "paam"\nparams_reduction = %s\nactivation = "sigmoid"\n' "$TARGET" ;;
    masksparsity) printf '[method]\nname = "masksparsity"\nmask = "slimming"\nmask_epochs = 1\nmask_lambda = %s\nparams_reduction = %s\nlambda = %s\nsparsity_epochs = 2\ncut = "mask"\n' "$LAMBDA_MASK" "$TARGET" "$LAMBDA_MS" ;;
    slimming) printf '[method]\nname = "slimming"\nlambda = %s\nsparsity_epochs = 3\nparams_reduction = %s\n' "$LAMBDA_SLIM" "$TARGET" ;;
    l1-filter) printf '[method]\nname = "l1-filter"\nparams_reduction = %s\n' "$TARGET" ;;
  esac
}

one() { # $1 = model, $2 = method, $3 = seed, $4 = dense baseline directory
  local dir="$OUT/$1/$2-params$TARGET-s$3" cfg="$OUT/$1/$2-params$TARGET-s$3.toml"
  [ -f "$dir/result.json" ] && return 0
  mkdir -p "$dir"
  case $2 in
    paam*) { config "$2" "$1" "$3" $((BUDGET - 1)) 1; method "$2"; } > "$cfg" ;;
    l1-filter) { config "$2" "$4" "$3" 0 4; method "$2"; } > "$cfg" ;;
    *) { config "$2" "$4" "$3" 0 1; method "$2"; } > "$cfg" ;;
  esac
  local start
  start=$(date +%s)
  "$SHEARS" run --config "$cfg" --out "$dir" --resume --json > /dev/null
  echo "$1 $2 params$TARGET s$3: $(( $(date +%s) - start )) s" >&2
}

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
    control="$OUT/$model/dense-control-s$s"
    if [ ! -f "$control/result.json" ]; then
      start=$(date +%s)
      "$SHEARS" train --model "$dense" --dataset fashion-mnist ${FMNIST_DIR:+--data "$FMNIST_DIR"} \
        --epochs 4 --batch-size $BATCH --lr 0.05 --train-limit "$TRAIN_LIMIT" \
        --test-limit "$TEST_LIMIT" --seed "$s" --out "$control" --resume --json > /dev/null
      echo "$model dense control s$s: $(( $(date +%s) - start )) s" >&2
    fi
    for m in paam l1-filter slimming masksparsity; do
      one "$model" "$m" "$s" "$dense"
    done
    ablation_seeds="ABLATION_SEEDS_${model//-/_}"
    for a in ${!ablation_seeds:-}; do
      if [ "$a" = "$s" ]; then
        one "$model" paam-independent "$s" "$dense"
        one "$model" paam-sigmoid "$s" "$dense"
      fi
    done
  done
done
