#!/usr/bin/env bash
# Real segmentation quality on BUSI: GMS with the TAESD first stage, and MONAI's U-Net trained on the same
# split, augmentation and wall-clock budget; both scored on the 130 test images of the paper's split.
#
#   bash bench/busi_quality.sh                  # the full schedule (configs/busi-taesd-cpu.yaml), ~150 min on 2 cores
#   SCALE=quick bash bench/busi_quality.sh      # 14 latent + 1 full epochs, ~80 min: what fits beside other work
#
# Writes bench/results/busi/{gms,unet}/ (predictions, metrics.csv, summary.json) and busi_quality.json,
# and prints the table that BENCHMARKS.md quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${OUT:-bench/results/busi}
CONFIG=configs/busi-taesd-cpu.yaml
SPLIT="$SHARED/data/busi/busi_train_test_names.pkl"
COMMON=(--set "data.root=$SHARED/data/busi" --set "data.split=$SPLIT" --set "train.output_dir=$OUT/runs")
GMS=() UNET=(--set train.epochs=60 --set train.warmup_epochs=2 --set train.latent_epochs=0)
if [ "${SCALE:-full}" = quick ]; then
  GMS=(--set train.epochs=15 --set train.latent_epochs=14)
  UNET=(--set train.epochs=30 --set train.warmup_epochs=2 --set train.latent_epochs=0)
fi
mkdir -p "$OUT"

start=$(date +%s)
gmseg train --config "$CONFIG" "${COMMON[@]}" "${GMS[@]}" --set "model.vae=$SHARED/weights/taesd" --no-progress | tee "$OUT/gms_train.txt"
gms_minutes=$(python -c "print(round(($(date +%s) - $start) / 60, 2))")
run_dir=$(sed -n 's/^Run folder: //p' "$OUT/gms_train.txt")

t0=$(date +%s.%N)
gmseg test --model "$run_dir/checkpoints/best" --data "$SHARED/data/busi" --split "$SPLIT" --stage test \
  --out "$OUT/gms" | tee "$OUT/gms_test.txt"
gms_test_seconds=$(python -c "print($(date +%s.%N) - $t0)")

# The U-Net plans its cosine over more epochs than it may reach: the GMS training time is its budget.
python -m gmseg.baseline --config "$CONFIG" "${COMMON[@]}" "${UNET[@]}" --max-minutes "$gms_minutes" \
  --out "$OUT/unet" --predict-test --no-progress | tee "$OUT/unet.txt"

python bench/busi_table.py --out "$OUT" --gms-run "$run_dir" --gms-minutes "$gms_minutes" \
  --gms-test-seconds "$gms_test_seconds"
