#!/usr/bin/env bash
# Multi-class BUSI (issue #22): background / benign lesion / malignant lesion, the paper's split, validation
# carved from the training names. GMS-TAESD with each mask encoding and MONAI's U-Net, each under the
# budget of the binary BUSI study (bench/cross_domain.sh, same SCALE), tested on the 130 test images.
# Resumable: each part leaves a `done` file; an interrupted training resumes from its last checkpoint.
#
#   bash bench/multiclass.sh                  # the budget of bench/configs/busi-taesd-cpu.yaml (224 px)
#   SCALE=quick bash bench/multiclass.sh      # the quick scale of the cross-domain study (128 px)
#
# Decision rule, fixed before any run: the default model.mask_encoding is the encoding with the higher best
# validation Dice (mean over the foreground classes present, per image); within 0.01 of each other, the
# cheaper one (colour: one latent, one decoder pass). Test scores never enter the choice.
# Writes $OUT/data/busi3, $OUT/{gms-colour,gms-one_vs_rest,unet}/{run,test}, $OUT/table.md + table.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
SCALE=${SCALE:-full}
OUT=${OUT:-bench/results/multiclass/$SCALE}
CONFIG=${CONFIG:-bench/configs/busi-taesd-cpu.yaml}
BINARY=${BINARY:-bench/results/cross_domain/$SCALE}  # the binary study whose BUSI models the table compares
PARTS=${PARTS:-data gms-colour gms-one_vs_rest unet table}
. bench/lib.sh
study_schedule "$SCALE"  # the binary study's budgets
# shellcheck disable=SC2207  # schedule prints separate words on purpose
GMS=($(schedule gms 1)) UNET=($(schedule unet 1))
DATA=$OUT/data/busi3
mkdir -p "$OUT"
has_part() { [[ " $PARTS " == *" $1 "* ]]; }

if has_part data && [ ! -f "$DATA/split.json" ]; then
  gmseg prepare busi --raw "$SHARED/data/busi" --labels pathology \
    --split "$SHARED/data/busi/busi_train_test_names.pkl" --out "$DATA"
fi

# part NAME ARGS...: train (or resume) $OUT/NAME/run, then test its best checkpoint on the test split.
part() {
  local name=$1 dir="$OUT/$1" run="$OUT/$1/run"; shift
  has_part "$name" || return 0
  [ -f "$dir/done" ] && { echo "$name: done (delete $dir/done to redo)"; return; }
  mkdir -p "$dir"
  train_or_resume "$run" "$dir/train.txt" --config "$CONFIG" "$@" "${SIZE[@]}" --set "name=busi3-$name" \
    --set "data.root=$DATA" --set "data.split=$DATA/split.json"
  gmseg test --model "$run/checkpoints/best" --data "$DATA" --split "$DATA/split.json" --stage test \
    --overwrite --out "$dir/test"
  touch "$dir/done"
}

part gms-colour "${GMS[@]}" --set "model.vae=$SHARED/weights/taesd" --set model.mask_encoding=colour
part gms-one_vs_rest "${GMS[@]}" --set "model.vae=$SHARED/weights/taesd" --set model.mask_encoding=one_vs_rest
part unet "${UNET[@]}"
if has_part table; then python bench/multiclass_table.py --out "$OUT" --binary "$BINARY"; fi
