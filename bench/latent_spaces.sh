#!/usr/bin/env bash
# Which latent space segments best (issue #21): GMS trained on BUSI with each tiny autoencoder under the
# cross-domain study's full-scale budget (bench/configs/busi-taesd-cpu.yaml with the epochs of study_schedule
# full in bench/lib.sh: 20 latent-only + 9 full-loss; selection on validation), tested on BUSI's test
# split and cross-domain on BUS (its 31 test images and all 163); then a mapping twice as wide (model.ch 64)
# for the one 16-channel space that validates better at the default width (part `wide`; a rule fixed before
# either ran). Resumable: each part leaves a `done` file; a training resumes from its last checkpoint. The
# TAESD part and the U-Net reference row are the cross-domain study's BUSI trainings (bench/cross_domain.sh,
# same config and budget): one run serves both tables.
#
#   bash bench/latent_spaces.sh                         # every part (~80 min each on the slow 2026-12 host)
#   PARTS="taesd3 taesd3-ch64" bash bench/latent_spaces.sh   # named parts; both wider ones can be asked for
#
# Writes $OUT/data (BUSI and BUS, as the cross-domain study prepares them), $OUT/<part>/{run,generalization},
# $OUT/ceiling/<ae> (bench/first_stage_ceiling.py), $OUT/inference.json and $OUT/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${OUT:-bench/results/latent_spaces}
CROSS=${CROSS:-bench/results/cross_domain/full}
CONFIG=${CONFIG:-bench/configs/busi-taesd-cpu.yaml}
PARTS=${PARTS:-ceilings taesd taesdxl taesd3 taef1 wide unet inference table}
mkdir -p "$OUT"
. bench/lib.sh
study_schedule full
# shellcheck disable=SC2207  # schedule prints separate words on purpose
GMS=($(schedule gms 1))
has_part() { [[ " $PARTS " == *" $1 "* ]]; }

OUT="$CROSS" PARTS=data bash bench/cross_domain.sh  # the prepared BUSI and BUS folders
DATA=$CROSS/data

# ceiling AUTOENCODER OUT_DIR ARGS...: bench/first_stage_ceiling.py once per OUT_DIR.
ceiling() {
  [ -f "$2/ceiling.json" ] || python bench/first_stage_ceiling.py --vae "$SHARED/weights/$1" --out "$2" "${@:3}"
}

if has_part ceilings; then
  for ae in taesd taesdxl taesd3 taef1; do
    ceiling "$ae" "$OUT/ceiling/$ae" --data "$SHARED/data/busi" --split "$SHARED/data/busi/busi_train_test_names.pkl"
    # all 163 BUS images: does the frozen first stage represent the other scanner's data as well as BUSI's?
    ceiling "$ae" "$OUT/ceiling-bus/$ae" --data "$DATA/bus"
  done
fi

# part NAME AUTOENCODER ARGS...: train (or resume) GMS on BUSI with that first stage, then score it.
part() {
  local name=$1 ae=$2 dir="$OUT/$1" run="$OUT/$1/run"; shift 2
  has_part "$name" || return 0
  [ -f "$dir/done" ] && { echo "$name: done (delete $dir/done to redo)"; return; }
  mkdir -p "$dir"
  train_or_resume "$run" "$dir/train.txt" --config "$CONFIG" "${GMS[@]}" "$@" --set "model.vae=$SHARED/weights/$ae" \
    --set "name=busi-$name" --set "data.root=$DATA/busi" --set "data.split=$DATA/busi/split.json"
  gmseg generalize --model "$run/checkpoints/best" --data "busi=$DATA/busi" --in-domain busi \
    --data "bus=$DATA/bus" --overwrite --out "$dir/generalization"
  touch "$dir/done"
}

# linked NAME CROSS_PART: the cross-domain study's part, trained (or resumed) there and linked, not trained twice.
linked() {
  has_part "$1" || return 0
  OUT="$CROSS" PARTS="$2" bash bench/cross_domain.sh
  ln -sfn "$(python -c 'import os, sys; print(os.path.relpath(*sys.argv[1:]))' "$CROSS/$2" "$OUT")" "$OUT/$1"  # moves with the tree
}

linked taesd gms-busi
part taesdxl taesdxl
part taesd3 taesd3
part taef1 taef1
if has_part wide; then PARTS="$PARTS $(python bench/latent_spaces_table.py --out "$OUT" --wider)"; fi
part taesd3-ch64 taesd3 --set model.ch=64
part taef1-ch64 taef1 --set model.ch=64
linked unet unet-busi
# every trained architecture timed side by side on a quiet machine (the scoring runs' own times depend on
# the load they met); run it when no training shares the machine.
if has_part inference; then python bench/latent_spaces_inference.py --out "$OUT"; fi
if has_part table; then python bench/latent_spaces_table.py --out "$OUT"; fi
