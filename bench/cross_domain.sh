#!/usr/bin/env bash
# The paper's cross-domain study on real data: GMS-TAESD and MONAI's U-Net, each trained on BUSI and on BUS
# (validation carved from the training names), each tested in-domain and on the other dataset (its test split
# and all of its images). One command, resumable: every part leaves a `done` file and is skipped next time;
# an interrupted GMS training resumes from its last checkpoint, an interrupted U-Net restarts its part
# (the baseline trainer has no resume yet).
#
#   bash bench/cross_domain.sh                    # the full study (~5 h on 2 cores)
#   SCALE=quick bash bench/cross_domain.sh        # the same four trainings, shorter (< 60 min of training)
#   PARTS="gms-busi unet-busi" bash bench/cross_domain.sh   # some parts only; the table uses what is there
#   EXTRA="kvasir=path/to/prepared" ...           # also score every model on a dataset of your own
#
# Budget: each model gets a fixed number of epochs on both datasets (GMS: the schedule of
# src/gmseg/configs/busi-taesd-cpu.yaml; U-Net: the epochs that filled GMS's BUSI time on an idle machine), so
# the results do not depend on what else the machine runs; training minutes come from the run logs.
# Writes $OUT/data/{busi,bus}, $OUT/{gms,unet}-{busi,bus}/ (run folder, model, generalization table) and
# $OUT/table.md + table.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
SCALE=${SCALE:-full}
OUT=${OUT:-bench/results/cross_domain/$SCALE}
CONFIG=${CONFIG:-src/gmseg/configs/busi-taesd-cpu.yaml}
PARTS=${PARTS:-data gms-busi unet-busi gms-bus unet-bus table}
EXTRA=${EXTRA:-}
if [ "$SCALE" = quick ]; then
  GMS=(--set train.epochs=19 --set train.latent_epochs=16 --set train.warmup_epochs=3)
  UNET=(--set train.epochs=75 --set train.warmup_epochs=2 --set train.latent_epochs=0)
else
  GMS=()
  UNET=(--set train.epochs=450 --set train.warmup_epochs=2 --set train.latent_epochs=0)
fi
mkdir -p "$OUT"
has_part() { [[ " $PARTS " == *" $1 "* ]]; }

if has_part data; then
  [ -f "$OUT/data/busi/split.json" ] || gmseg prepare folders --images "$SHARED/data/busi/images" \
    --masks "$SHARED/data/busi/masks" --split "$SHARED/data/busi/busi_train_test_names.pkl" --out "$OUT/data/busi"
  [ -f "$OUT/data/bus/split.json" ] || gmseg prepare bus --raw "$SHARED/data/bus-udiat" \
    --split "$SHARED/data/bus-udiat/bus_train_test_names.pkl" --out "$OUT/data/bus"
fi

# score MODEL_DIR OUT_DIR TRAIN_DATASET: in-domain test split, the other dataset's test split and all of it.
score() {
  local other=bus; [ "$3" = bus ] && other=busi
  local extra=(); for item in $EXTRA; do extra+=(--data "$item"); done
  gmseg generalize --model "$1" --data "$3=$OUT/data/$3" --in-domain "$3" --data "$other=$OUT/data/$other" \
    "${extra[@]}" --overwrite --out "$2/generalization"
}

# train_gms DATASET
train_gms() {
  local part="$OUT/gms-$1" run="$OUT/gms-$1/run"
  [ -f "$part/done" ] && { echo "gms-$1: done (delete $part/done to redo)"; return; }
  mkdir -p "$part"
  if [ -d "$run/checkpoints/last" ]; then
    gmseg train --resume "$run" --no-progress | tee -a "$part/train.txt"
  else
    rm -rf "$run"
    gmseg train --config "$CONFIG" "${GMS[@]}" --set "name=gms-$1" --set "data.root=$OUT/data/$1" \
      --set "data.split=$OUT/data/$1/split.json" --set "model.vae=$SHARED/weights/taesd" --run-dir "$run" \
      --no-progress | tee "$part/train.txt"
  fi

  score "$run/checkpoints/best" "$part" "$1"
  touch "$part/done"
}

# train_unet DATASET
train_unet() {
  local part="$OUT/unet-$1"
  [ -f "$part/done" ] && { echo "unet-$1: done (delete $part/done to redo)"; return; }
  rm -rf "$part/run"; mkdir -p "$part"
  python -m gmseg.baseline --config "$CONFIG" "${UNET[@]}" --set "name=unet-$1" --set "data.root=$OUT/data/$1" \
    --set "data.split=$OUT/data/$1/split.json" --out "$part/run" --no-progress | tee "$part/train.txt"
  score "$part/run" "$part" "$1"
  touch "$part/done"
}

for dataset in busi bus; do
  has_part "gms-$dataset" && train_gms "$dataset"
  has_part "unet-$dataset" && train_unet "$dataset"
done
if has_part table; then python bench/cross_domain_table.py --out "$OUT"; fi
