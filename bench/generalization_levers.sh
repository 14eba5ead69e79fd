#!/usr/bin/env bash
# What lifts GMS-TAESD's transfer from BUSI to BUS (issue #18, item 4), measured on validation only.
# GMS-TAESD trained on BUSI at the cross-domain study's quick scale (bench/cross_domain.sh SCALE=quick), with
# one lever each; every model is scored on BUSI's validation names (in-domain) and on BUS's 132 *training*
# names (the cross-domain validation set: BUS's 31 test images are never looked at here).
#
# Decision rule, fixed before any run: a lever is recommended for cross-domain use when its Dice on the BUS
# training names beats the baseline's by more than two standard errors of the per-image paired difference,
# and its best BUSI validation Dice is no more than 0.01 below the baseline's. Only then are test scores
# computed (bench/cross_domain.sh with the lever's --set keys).
#
#   bash bench/generalization_levers.sh          # resumable; PARTS="noise" for one lever
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
CROSS=${CROSS:-bench/results/cross_domain/quick}
OUT=${OUT:-bench/results/generalization_levers}
CONFIG=${CONFIG:-bench/configs/busi-taesd-cpu.yaml}
PARTS=${PARTS:-baseline intensity noise clahe equalize table}
AUGMENT=(--set "data.augmentations=[hflip,vflip,rot90,color_jitter,shift_scale_rotate,gamma,speckle]")
mkdir -p "$OUT"
. bench/lib.sh
study_schedule quick
# shellcheck disable=SC2207  # schedule prints separate words on purpose
QUICK=("${SIZE[@]}" $(schedule gms 1))
has_part() { [[ " $PARTS " == *" $1 "* ]]; }
OUT="$CROSS" SCALE=quick PARTS=data bash bench/cross_domain.sh

# lever NAME ARGS...: train GMS-TAESD on BUSI with ARGS, score it on BUS's training names.
lever() {
  local name=$1 dir="$OUT/$1"; shift
  has_part "$name" || return 0
  [ -f "$dir/done" ] && { echo "$name: done"; return; }
  mkdir -p "$dir"
  if [ "$name" = baseline ]; then  # the cross-domain study's quick GMS-BUSI model, not trained twice
    OUT="$CROSS" SCALE=quick PARTS=gms-busi bash bench/cross_domain.sh
    ln -sfn "$(cd "$CROSS/gms-busi/run" && pwd)" "$dir/run"
  else
    train_or_resume "$dir/run" "$dir/train.txt" --config "$CONFIG" "${QUICK[@]}" "$@" \
      --set "model.vae=$SHARED/weights/taesd" --set "name=levers-$name" --set "data.root=$CROSS/data/busi" \
      --set "data.split=$CROSS/data/busi/split.json"
  fi
  gmseg test --model "$dir/run/checkpoints/best" --data "$CROSS/data/bus" --split "$CROSS/data/bus/split.json" \
    --stage train --overwrite --out "$dir/bus-train"
  touch "$dir/done"
}

lever baseline
lever intensity "${AUGMENT[@]}"
lever noise --set model.latent_noise_std=0.1  # about an eighth of TAESD latents' spread on BUSI (std 0.76)
lever clahe --set data.intensity=clahe        # histogram standardisation, in training and at inference
lever equalize --set data.intensity=equalize
if has_part table; then python bench/generalization_levers_table.py --out "$OUT"; fi
