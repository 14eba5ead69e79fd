#!/usr/bin/env bash
# Real segmentation quality on BUSI: GMS with the TAESD first stage, and MONAI's U-Net trained on the same
# split, augmentation and wall-clock budget; both scored on the 130 test images of the paper's split.
#
#   bash bench/busi_quality.sh                  # the full schedule (src/gmseg/configs/busi-taesd-cpu.yaml), ~105 min per model
#   SCALE=quick bash bench/busi_quality.sh      # GMS 30 latent + 6 full epochs (~35 min), U-Net 120 epochs
#   PARTS=gms bash bench/busi_quality.sh        # only one side (gms or unet); the table uses what is in $OUT
#
# Writes bench/results/busi/{gms,unet}/ (predictions, metrics.csv, summary.json) and busi_quality.json,
# and prints the table that BENCHMARKS.md quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${OUT:-bench/results/busi}
CONFIG=src/gmseg/configs/busi-taesd-cpu.yaml
SPLIT="$SHARED/data/busi/busi_train_test_names.pkl"
COMMON=(--set "data.root=$SHARED/data/busi" --set "data.split=$SPLIT" --set "train.output_dir=$OUT/runs")
GMS=() UNET=(--set train.epochs=450 --set train.warmup_epochs=2 --set train.latent_epochs=0)
if [ "${SCALE:-full}" = quick ]; then
  GMS=(--set train.epochs=36 --set train.latent_epochs=30 --set train.warmup_epochs=5)
  UNET=(--set train.epochs=120 --set train.warmup_epochs=2 --set train.latent_epochs=0)
fi
PARTS=${PARTS:-gms unet}
mkdir -p "$OUT"

if [[ " $PARTS " == *" gms "* ]]; then
  start=$(date +%s)
  gmseg train --config "$CONFIG" "${COMMON[@]}" "${GMS[@]}" --set "model.vae=$SHARED/weights/taesd" --no-progress | tee "$OUT/gms_train.txt"
  gms_minutes=$(python -c "print(round(($(date +%s) - $start) / 60, 2))")
  run_dir=$(sed -n 's/^Run folder: //p' "$OUT/gms_train.txt")

  t0=$(date +%s.%N)
  gmseg test --model "$run_dir/checkpoints/best" --data "$SHARED/data/busi" --split "$SPLIT" --stage test \
    --out "$OUT/gms" | tee "$OUT/gms_test.txt"
  gms_test_seconds=$(python -c "print($(date +%s.%N) - $t0)")
  printf '{"run": "%s", "training_minutes": %s, "test_seconds": %s}\n' "$run_dir" "$gms_minutes" "$gms_test_seconds" \
    > "$OUT/gms_run.json"
fi

if [[ " $PARTS " == *" unet "* ]]; then
  # The GMS training time is the U-Net's budget: its epochs (~15 s each on an idle 2-core machine) are planned
  # to fill it (450 x 15 s = 113 min against GMS's 105; 120 x 15 s = 30 of ~35 at SCALE=quick), and
  # --max-minutes stops it when the budget is spent.
  gms_minutes=$(python -c "import json; print(json.load(open('$OUT/gms_run.json'))['training_minutes'])")
  python -m gmseg.baseline --config "$CONFIG" "${COMMON[@]}" "${UNET[@]}" --max-minutes "$gms_minutes" \
    --out "$OUT/unet" --predict-test --no-progress | tee "$OUT/unet.txt"
fi

python bench/busi_table.py --out "$OUT"
