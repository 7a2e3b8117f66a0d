#!/usr/bin/env bash
# Reproduction of Vysogorets & Kempe, "Connectivity Matters" on LeNet-300-100 / Fashion-MNIST,
# with the `shears` binary only (docs/reproductions/effective-sparsity.md).
#
#   (a) no training: masks at direct compressions 10, 100, 1000, 10000 -> effective compression;
#   (b) training: prune at effective compressions 10..1000 (effective target, effective masks
#       applied), train, test accuracy; 3 seeds each.
#
# Usage: scripts/repro_effective_sparsity.sh [a|b|b-masks|all]   (default all; finished runs are skipped,
# so an interrupted run continues). Environment: SHEARS (binary, default
# target/release/shears, built if missing), OUT (runs, default runs/repro-effective-sparsity),
# EPOCHS (default 10), SEEDS (default "0 1 2"), THREADS (default 1), WORKERS (part b's sweep
# workers, default 2), FMNIST_DIR (data directory;
# default: shears' search path, e.g. /usr/share/datasets/fashion-mnist).
# Then: cargo run --release -p shears --example effective_sparsity_plots -- \
#         runs/repro-effective-sparsity docs/reproductions/effective-sparsity
set -euo pipefail
cd "$(dirname "$0")/.."

PART=${1:-all}
SHEARS=${SHEARS:-${CARGO_TARGET_DIR:-target}/release/shears}
OUT=${OUT:-runs/repro-effective-sparsity}
EPOCHS=${EPOCHS:-10}
SEEDS=${SEEDS:-"0 1 2"}
THREADS=${THREADS:-1}
export RAYON_NUM_THREADS=$THREADS SHEARS_LOG=${SHEARS_LOG:-warn}
DATA=(--dataset fashion-mnist)
if [ -n "${FMNIST_DIR:-}" ]; then DATA+=(--data "$FMNIST_DIR"); fi

if [ ! -x "$SHEARS" ]; then cargo build --release -p shears; fi
mkdir -p "$OUT/a" "$OUT/b"

# name -> `shears prune` options (pruning at initialisation)
declare -A PRUNER=(
  [random-uniform]="--method random --quota uniform"
  [random-erk]="--method random --quota erk"
  [random-igq]="--method random --quota igq"
  [snip]="--method snip"
  [synflow]="--method synflow"
  [magnitude-init]="--method magnitude"
)
ORDER="random-uniform random-erk random-igq snip synflow magnitude-init"

# Dense training per seed: the baseline accuracy, and the trained weights of magnitude-trained.
dense() {
  local s=$1 dir="$OUT/dense-s$1"
  [ -f "$dir/result.json" ] || "$SHEARS" train --model lenet-300-100 "${DATA[@]}" --epochs "$EPOCHS" \
    --batch-size 100 --lr 0.1 --seed "$s" --threads "$THREADS" --out "$dir" --resume --json > /dev/null
}

part_a() {
  for s in $SEEDS; do
    dense "$s"
    for c in 10 100 1000 10000; do
      for p in $ORDER; do
        local dir="$OUT/a/$p-c$c-s$s"
        [ -f "$dir/result.json" ] && continue
        # shellcheck disable=SC2086
        "$SHEARS" prune --model lenet-300-100 ${PRUNER[$p]} "${DATA[@]}" --compression "$c" \
          --seed "$s" --out "$dir" --json > /dev/null
      done
      local dir="$OUT/a/magnitude-trained-c$c-s$s"
      [ -f "$dir/result.json" ] || "$SHEARS" prune --model "$OUT/dense-s$s" --method magnitude \
        --compression "$c" --seed "$s" --out "$dir" --json > /dev/null
    done
  done
}

# Part (b) is one sweep (configs/sweeps/effective-sparsity.toml): one `shears run` per (pruner,
# effective compression, seed), pruning to the effective target with the effective masks applied
# and then training; magnitude-trained trains dense, prunes the trained weights and rewinds to the
# initial ones (lottery ticket, as ES's magnitude baseline). Finished runs are skipped.
part_b() {
  local sweep=configs/sweeps/effective-sparsity.toml
  if [ -n "${FMNIST_DIR:-}" ] || [ "$EPOCHS" != 10 ] || [ "$SEEDS" != "0 1 2" ]; then
    # The committed sweep is the published setting; other settings get a copy.
    sweep="$OUT/effective-sparsity.toml"
    local seeds data_dir=""
    seeds=$(echo "$SEEDS" | sed 's/ /, /g')
    if [ -n "${FMNIST_DIR:-}" ]; then data_dir="dir = \"$FMNIST_DIR\""; fi
    sed -e "s/^epochs = 10$/epochs = $EPOCHS/" -e "s/^seed = \[0, 1, 2\]$/seed = [$seeds]/" \
      -e "s|^dataset = \"fashion-mnist\"$|dataset = \"fashion-mnist\"\n$data_dir|" \
      configs/sweeps/effective-sparsity.toml > "$sweep"
  fi
  "$SHEARS" sweep "$sweep" --runs-dir "$OUT/b" --workers "${WORKERS:-2}"
}

# The masks of part (b) alone (same seeds, so the same masks as inside `shears run`), without
# the effective correction: their direct compression is what each pruner needed to reach the
# effective target.
part_b_masks() {
  mkdir -p "$OUT/b-masks"
  for s in $SEEDS; do
    dense "$s"
    for c in 10 30 100 300 1000; do
      for p in $ORDER magnitude-trained; do
        local dir="$OUT/b-masks/$p-c$c-s$s"
        [ -f "$dir/result.json" ] && continue
        local model=lenet-300-100 args
        if [ "$p" = magnitude-trained ]; then
          model="$OUT/dense-s$s"; args="--method magnitude"
        else
          args=${PRUNER[$p]}
        fi
        # shellcheck disable=SC2086
        "$SHEARS" prune --model "$model" $args "${DATA[@]}" --compression "$c" \
          --target-kind effective --score-batch-size 100 --seed "$s" --out "$dir" --json > /dev/null
      done
    done
  done
}

case $PART in
  a) part_a ;;
  b) part_b; part_b_masks ;;
  b-masks) part_b_masks ;;
  all) part_a; part_b; part_b_masks ;;
  *) echo "usage: $0 [a|b|b-masks|all]" >&2; exit 2 ;;
esac
echo "done: results under $OUT" >&2
