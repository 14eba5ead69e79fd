#!/usr/bin/env bash
# Real segmentation quality on BUSI: GMS with the TAESD first stage, and MONAI's U-Net trained on the same
# split, augmentation and wall-clock budget; both scored on the 130 test images of the paper's split.
#
#   bash bench/busi_quality.sh                  # the full schedule (bench/configs/busi-taesd-cpu.yaml), ~105 min per model
#   SCALE=quick bash bench/busi_quality.sh      # GMS 30 latent + 6 full epochs (~35 min), U-Net 120 epochs
#   PARTS=gms bash bench/busi_quality.sh        # only one side (gms or unet); the table uses what is in $OUT
#
# Writes bench/results/busi/{gms,unet}/ (predictions, metrics.csv, summary.json) and busi_quality.json,
# and prints the table that BENCHMARKS.md quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${OUT:-bench/results/busi}
CONFIG=bench/configs/busi-taesd-cpu.yaml
SPLIT="$SHARED/data/busi/busi_train_test_names.pkl"
COMMON=(--set "data.root=$SHARED/data/busi" --set "data.split=$SPLIT" --set "train.output_dir=$OUT/runs")
UNET_MODEL=(--set model.name=unet --set trainer.name=default)
GMS=() UNET=(--set train.epochs=450 --set train.warmup_epochs=2)
if [ "${SCALE:-full}" = quick ]; then
  GMS=(--set train.epochs=36 --set trainer.latent_epochs=30 --set train.warmup_epochs=5)
  UNET=(--set train.epochs=120 --set train.warmup_epochs=2)
fi
PARTS=${PARTS:-gms unet}
mkdir -p "$OUT"

# part NAME ARGS...: train with the shared trainer into $OUT/NAME/run, then test on the 130 test images.
part() {
  local name=$1; shift
  rm -rf "$OUT/$name/run"; mkdir -p "$OUT/$name"
  local start; start=$(date +%s)
  gmseg train --config "$CONFIG" "${COMMON[@]}" "$@" --run-dir "$OUT/$name/run" --no-progress | tee "$OUT/${name}_train.txt"
  local minutes; minutes=$(python -c "print(round(($(date +%s) - $start) / 60, 2))")
  gmseg test --model "$OUT/$name/run" --data "$SHARED/data/busi" --split "$SPLIT" --stage test --overwrite \
    --out "$OUT/$name" | tee "$OUT/${name}_test.txt"
  printf '{"run": "%s", "training_minutes": %s}\n' "$OUT/$name/run" "$minutes" > "$OUT/${name}_run.json"
}

if [[ " $PARTS " == *" gms "* ]]; then
  part gms "${GMS[@]}" --set "model.vae=$SHARED/weights/taesd"
fi
if [[ " $PARTS " == *" unet "* ]]; then
  # The GMS training time is the U-Net's budget: its epochs (~15 s each on an idle 2-core machine) are planned
  # to fill it (450 x 15 s = 113 min against GMS's 105; 120 x 15 s = 30 of ~35 at SCALE=quick), and
  # train.max_minutes stops it when the budget is spent.
  gms_minutes=$(python -c "import json; print(json.load(open('$OUT/gms_run.json'))['training_minutes'])")
  part unet "${UNET_MODEL[@]}" "${UNET[@]}" --set "train.max_minutes=$gms_minutes"
fi

python bench/busi_table.py --out "$OUT"
