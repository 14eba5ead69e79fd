#!/usr/bin/env bash
# The paper's cross-domain study on real data: GMS-TAESD and MONAI's U-Net, each trained on BUSI and on BUS
# (validation carved from the training names), each tested in-domain and on the other dataset (its test split
# and all of its images). One command, resumable: every part leaves a `done` file and is skipped next time;
# an interrupted training (either model: they share one trainer) resumes from its last checkpoint.
#
#   bash bench/cross_domain.sh                    # the full study (~5 h on 2 cores)
#   SCALE=quick bash bench/cross_domain.sh        # the same four trainings, shorter (< 60 min of training)
#   PARTS="gms-busi unet-busi" bash bench/cross_domain.sh   # some parts only; the table uses what is there
#   EXTRA="kvasir=path/to/prepared" ...           # also score every model on a dataset of your own
#
# Budget: each model gets a fixed number of epochs on both datasets (GMS: the schedule of
# bench/configs/busi-taesd-cpu.yaml; U-Net: the epochs that filled GMS's BUSI time on an idle machine), so
# the results do not depend on what else the machine runs; training minutes come from the run logs.
# Writes $OUT/data/{busi,bus}, $OUT/{gms,unet}-{busi,bus}/ (run folder, model, generalization table) and
# $OUT/table.md + table.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
SCALE=${SCALE:-full}
OUT=${OUT:-bench/results/cross_domain/$SCALE}
CONFIG=${CONFIG:-bench/configs/busi-taesd-cpu.yaml}
PARTS=${PARTS:-data gms-busi unet-busi gms-bus unet-bus table}
EXTRA=${EXTRA:-}
UNET_MODEL=(--set model.name=unet --set trainer.name=default)
if [ "$SCALE" = quick ]; then
  GMS=(--set train.epochs=19 --set trainer.latent_epochs=16 --set train.warmup_epochs=3)
  UNET=("${UNET_MODEL[@]}" --set train.epochs=75 --set train.warmup_epochs=2)
else
  GMS=()
  UNET=("${UNET_MODEL[@]}" --set train.epochs=450 --set train.warmup_epochs=2)
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

# train_part MODEL DATASET ARGS...: train (or resume) $OUT/MODEL-DATASET/run, then score it.
train_part() {
  local model=$1 dataset=$2; shift 2
  local part="$OUT/$model-$dataset" run="$OUT/$model-$dataset/run"
  [ -f "$part/done" ] && { echo "$model-$dataset: done (delete $part/done to redo)"; return; }
  mkdir -p "$part"
  if [ -d "$run/checkpoints/last" ]; then
    gmseg train --resume "$run" --no-progress | tee -a "$part/train.txt"
  else
    rm -rf "$run"
    gmseg train --config "$CONFIG" "$@" --set "name=$model-$dataset" --set "data.root=$OUT/data/$dataset" \
      --set "data.split=$OUT/data/$dataset/split.json" --run-dir "$run" --no-progress | tee "$part/train.txt"
  fi
  score "$run/checkpoints/best" "$part" "$dataset"
  touch "$part/done"
}

for dataset in busi bus; do
  if has_part "gms-$dataset"; then train_part gms "$dataset" "${GMS[@]}" --set "model.vae=$SHARED/weights/taesd"; fi
  if has_part "unet-$dataset"; then train_part unet "$dataset" "${UNET[@]}"; fi
done
if has_part table; then python bench/cross_domain_table.py --out "$OUT"; fi
