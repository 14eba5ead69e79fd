#!/usr/bin/env bash
# The paper's cross-domain study on real data: GMS-TAESD and MONAI's U-Net, each trained on BUSI and on BUS
# (validation carved from the training names), each tested in-domain and on the other dataset (its test split
# and all of its images). One command, resumable: every part leaves a `done` file and is skipped next time;
# an interrupted training (either model: they share one trainer) resumes from its last checkpoint.
#
#   bash bench/cross_domain.sh                    # the full study (2 cores: ~5 h on the slow 2026-12 host)
#   SCALE=long bash bench/cross_domain.sh         # 3x the epochs of full (~15 h on the 2026-12 host)
#   SCALE=quick bash bench/cross_domain.sh        # the same four trainings at 128 px, shorter (< 60 min)
#   PARTS="gms-busi unet-busi" bash bench/cross_domain.sh   # some parts only; the table uses what is there
#   EXTRA="kvasir=path/to/prepared" ...           # also score every model on a dataset of your own
#   PARTS="data gms-kvasir unet-kvasir table" ...  # Kvasir-SEG in-domain (seeded 880/118 split), both models
#   PARTS=data ...; then OMP_NUM_THREADS=1 PARTS=gms-busi ... & OMP_NUM_THREADS=1 PARTS=unet-busi ...
#                                                 # two parts side by side: 1.15-1.45x the throughput on 2 cores
#
# Budget: each model gets a fixed number of optimizer steps (SCALE=long: GMS the schedule of
# bench/configs/busi-taesd-cpu.yaml, the U-Net the epochs that filled GMS's BUSI time on an idle machine; full:
# a third of those epochs, see study_schedule in bench/lib.sh), so the results do not depend on what else the
# machine runs; training minutes come from the run logs.
# BUS has 119 training images after validation (15 steps of 8) against BUSI's 465 (59 steps): its
# trainings get BUS_EPOCH_FACTOR = 4 times the epochs, i.e. the same number of steps as on BUSI (with
# equal epochs GMS stopped far from converged on BUS: validation Dice 0.33 at the quick scale).
# SCALE=quick trains at 128 px instead of 224 (a third of the time per step) to stay under an hour.
# Kvasir-SEG (no official split: 118 of its 998 pairs held out, seed 2333) trains with BUSI's epochs (792
# training images: 1.7 times BUSI's steps, for both models) and is tested in-domain only.
# Writes $OUT/data/{busi,bus,kvasir}, $OUT/{gms,unet}-{busi,bus,kvasir}/ (run folder, model, generalization table) and
# $OUT/table.md + table.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
SCALE=${SCALE:-full}
OUT=${OUT:-bench/results/cross_domain/$SCALE}
CONFIG=${CONFIG:-bench/configs/busi-taesd-cpu.yaml}
PARTS=${PARTS:-data gms-busi unet-busi gms-bus unet-bus table}
EXTRA=${EXTRA:-}
BUS_EPOCH_FACTOR=4
mkdir -p "$OUT"
. bench/lib.sh
study_schedule "$SCALE"
has_part() { [[ " $PARTS " == *" $1 "* ]]; }

if has_part data; then
  [ -f "$OUT/data/busi/split.json" ] || gmseg prepare folders --images "$SHARED/data/busi/images" \
    --masks "$SHARED/data/busi/masks" --split "$SHARED/data/busi/busi_train_test_names.pkl" --out "$OUT/data/busi"
  [ -f "$OUT/data/bus/split.json" ] || gmseg prepare bus --raw "$SHARED/data/bus-udiat" \
    --split "$SHARED/data/bus-udiat/bus_train_test_names.pkl" --out "$OUT/data/bus"
  if has_part gms-kvasir || has_part unet-kvasir; then
    [ -f "$OUT/data/kvasir/split.json" ] || gmseg prepare folders --images "$SHARED/data/kvasir-seg-256/images" \
      --masks "$SHARED/data/kvasir-seg-256/masks" --test-fraction 0.1182 --seed 2333 --out "$OUT/data/kvasir"
  fi
fi

# score MODEL_DIR OUT_DIR TRAIN_DATASET: in-domain test split, the other dataset's test split and all of it
# (Kvasir: in-domain only, it has no partner).
score() {
  local other=(); case $3 in busi) other=(--data "bus=$OUT/data/bus") ;; bus) other=(--data "busi=$OUT/data/busi") ;; esac
  local extra=(); for item in $EXTRA; do extra+=(--data "$item"); done
  gmseg generalize --model "$1" --data "$3=$OUT/data/$3" --in-domain "$3" "${other[@]}" \
    "${extra[@]}" --overwrite --out "$2/generalization"
}

# train_part MODEL DATASET ARGS...: train (or resume) $OUT/MODEL-DATASET/run, then score it.
train_part() {
  local model=$1 dataset=$2; shift 2
  local part="$OUT/$model-$dataset" run="$OUT/$model-$dataset/run"
  [ -f "$part/done" ] && { echo "$model-$dataset: done (delete $part/done to redo)"; return; }
  mkdir -p "$part"
  train_or_resume "$run" "$part/train.txt" --config "$CONFIG" "$@" --set "name=$model-$dataset" \
    --set "data.root=$OUT/data/$dataset" --set "data.split=$OUT/data/$dataset/split.json"
  score "$run/checkpoints/best" "$part" "$dataset"
  touch "$part/done"
}

for dataset in busi bus kvasir; do
  factor=1; [ "$dataset" = bus ] && factor=$BUS_EPOCH_FACTOR
  # shellcheck disable=SC2046  # schedule prints separate words on purpose
  if has_part "gms-$dataset"; then
    train_part gms "$dataset" $(schedule gms $factor) "${SIZE[@]}" --set "model.vae=$SHARED/weights/taesd"
  fi
  # shellcheck disable=SC2046
  if has_part "unet-$dataset"; then train_part unet "$dataset" $(schedule unet $factor) "${SIZE[@]}"; fi
done
if has_part table; then python bench/cross_domain_table.py --out "$OUT"; fi
