#!/usr/bin/env bash
# The volume study: MSD Task04 Hippocampus (../shared/data/msd-hippocampus, 200 labelled T2 MRI volumes, read in
# place), GMS-TAESD and MONAI's U-Net trained on slices at one CPU budget, scored per case in 3D on a held-out
# test set. One command, resumable: every part leaves a `done` file and is skipped next time; an interrupted
# training resumes from its last checkpoint.
#
#   bash bench/volumes.sh                      # the study (2 cores: ~3 h, see the budget below)
#   SCALE=quick bash bench/volumes.sh          # the same parts, a quarter of the epochs (~45 min)
#   PARTS="split gms table" bash bench/volumes.sh   # some parts only; the table uses what is there
#   SHARED=... OUT=... CASES=12 ...            # another shared folder, output folder; only the first CASES cases
#
# Protocol: a seeded split by case (seed 2333): 40 test cases (20 %), and of the other 160, 16 validation
# cases (10 %) for model selection and 144 for training; no case has slices in two sets. Slices along
# gmseg's rule (the axis of largest spacing; these volumes are isotropic, so the first array axis), resized to
# 64 px (a slice is ~35 x 50 voxels: nothing is down-sampled, and TAESD gets an 8 x 8 latent; the `ceiling`
# part measures what TAESD keeps of these labels at 64, 96 and 128 px). A quarter of the training slices have
# no foreground (data.empty_slice_fraction). Intensities: z-score per volume (MRI), clipped to +-3 and mapped
# to the autoencoder's [-1, 1].
# Budget (full): GMS 25 latent-only epochs on 2 cached views + 15 full-loss epochs; the U-Net 40 epochs;
# each capped at MAX_MINUTES (75) of training, so the study stays near 3 h even on a slow host; the table
# says how many epochs each run trained. Training minutes come from the run logs, seconds per volume from
# `gmseg test` (timing.json).
# Writes $OUT/split.json, $OUT/ceiling/, $OUT/{gms,unet}/{run,test}/, $OUT/predict/ and $OUT/table.md + .json.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
SCALE=${SCALE:-full}
OUT=${OUT:-bench/results/volumes/$SCALE}
CONFIG=${CONFIG:-bench/configs/hippocampus-cpu.yaml}
DATA=${DATA:-$SHARED/data/msd-hippocampus}
PARTS=${PARTS:-split ceiling gms unet predict table}
CASES=${CASES:-0}
MAX_MINUTES=${MAX_MINUTES:-75}
SIZES=${SIZES:-64 96 128}
PREDICT_SHAPE=${PREDICT_SHAPE:-300 512 512}
PREDICT_SIZE=${PREDICT_SIZE:-224}
mkdir -p "$OUT"
. bench/lib.sh
has_part() { [[ " $PARTS " == *" $1 "* ]]; }

case $SCALE in
  full) gms_epochs=40 gms_latent=25 unet_epochs=40 warmup=2 ;;
  quick) gms_epochs=10 gms_latent=6 unet_epochs=10 warmup=1 ;;
  tiny) gms_epochs=2 gms_latent=1 unet_epochs=2 warmup=0 ;;  # the tests' scale: seconds, numbers meaningless
  *) echo "unknown SCALE '$SCALE': use full, quick or tiny" >&2; exit 2 ;;
esac

if has_part split && [ ! -f "$OUT/split.json" ]; then
  python - "$DATA" "$OUT/split.json" "$CASES" <<'PY'
import sys
from gmseg.data.layouts import open_layout
from gmseg.data.splits import random_split, save_split, with_validation

layout = open_layout(sys.argv[1])
names = sorted(c.name for c in layout.cases())
names = names[: int(sys.argv[3])] if int(sys.argv[3]) else names  # CASES: a small study (tests)
# What layout.split does for a dataset without a split file, on these names: 20 % test, 10 % of the rest val.
split = with_validation(random_split(names, test_fraction=0.2, seed=2333), fraction=0.1, seed=2333)
save_split(split, sys.argv[2])
print({k: len(v) for k, v in split.items()})
PY
fi

if has_part ceiling && [ ! -f "$OUT/ceiling/done" ]; then
  # shellcheck disable=SC2086  # SIZES holds separate words on purpose
  python bench/volume_ceiling.py --vae "$SHARED/weights/taesd" --data "$DATA" --split "$OUT/split.json" \
    --sizes $SIZES --out "$OUT/ceiling" | tee "$OUT/ceiling.txt"
  touch "$OUT/ceiling/done"
fi

# train_part MODEL ARGS...: train (or resume) $OUT/MODEL/run on the split, then test it on the 40 test cases.
train_part() {
  local model=$1; shift
  local part="$OUT/$model" run="$OUT/$model/run"
  [ -f "$part/done" ] && { echo "$model: done (delete $part/done to redo)"; return; }
  mkdir -p "$part"
  train_or_resume "$run" "$part/train.txt" --config "$CONFIG" "$@" --set "name=$model-hippocampus" \
    --set "data.root=$DATA" --set "data.split=$OUT/split.json" --set "train.max_minutes=$MAX_MINUTES" \
    --set "train.warmup_epochs=$warmup"
  gmseg test --model "$run/checkpoints/best" --data "$DATA" --split "$OUT/split.json" --out "$part/test" \
    --overwrite | tee "$part/test.txt"
  touch "$part/done"
}

if has_part gms; then
  train_part gms --set train.epochs=$gms_epochs --set trainer.latent_epochs=$gms_latent \
    --set "model.vae=$SHARED/weights/taesd"
fi
if has_part unet; then
  train_part unet --set model.name=unet --set trainer.name=default --set train.epochs=$unet_epochs
fi
if has_part predict && [ ! -f "$OUT/predict/done" ]; then
  # shellcheck disable=SC2086
  python bench/volume_predict.py --vae "$SHARED/weights/taesd" --shape $PREDICT_SHAPE --size "$PREDICT_SIZE" \
    --out "$OUT/predict" \
    | tee "$OUT/predict.txt"
  touch "$OUT/predict/done"
fi
if has_part table; then python bench/volumes_table.py --out "$OUT"; fi
