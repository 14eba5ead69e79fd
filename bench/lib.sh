# Shared by the study scripts (bench/cross_domain.sh, bench/multiclass.sh, bench/latent_spaces.sh): source it.

# train_or_resume RUN LOG ARGS...: resume the run folder RUN from its last checkpoint, or (none yet) train
# it afresh with `gmseg train ARGS...`; the output goes to the screen and LOG.
train_or_resume() {
  local run=$1 log=$2
  shift 2
  if [ -d "$run/checkpoints/last" ]; then
    gmseg train --resume "$run" --no-progress | tee -a "$log"
  else
    rm -rf "$run"
    gmseg train "$@" --run-dir "$run" --no-progress | tee "$log"
  fi
}

# study_schedule SCALE: the training budgets of the study scripts, kept in one place. Sets SIZE (--set of the
# image size) and the epochs on BUSI. long: GMS the schedule of bench/configs/busi-taesd-cpu.yaml, the U-Net
# the epochs that fill GMS-BUSI's minutes on an idle machine (BENCHMARKS.md). full: every epoch count of long
# divided by 3, so that four trainings fit the ~5 h the study is allowed on the 2-core machine. quick: 128 px,
# shortened further (< 1 h for four trainings).
study_schedule() {
  case $1 in
    quick) SIZE=(--set data.image_size=128)
      gms_epochs=19 gms_latent=16 gms_warmup=3 unet_epochs=44 unet_warmup=2 ;;
    full) SIZE=()
      gms_epochs=29 gms_latent=20 gms_warmup=3 unet_epochs=150 unet_warmup=1 ;;
    long) SIZE=()
      gms_epochs=88 gms_latent=60 gms_warmup=10 unet_epochs=450 unet_warmup=2 ;;
    *) echo "unknown SCALE '$1': use quick, full or long" >&2; return 2 ;;
  esac
}

# schedule MODEL FACTOR: the --set arguments of MODEL's (gms | unet) schedule with its epochs times FACTOR
# (call study_schedule first).
schedule() {
  local f=$2
  if [ "$1" = gms ]; then
    echo --set train.epochs=$((gms_epochs * f)) --set trainer.latent_epochs=$((gms_latent * f)) \
      --set train.warmup_epochs=$((gms_warmup * f))
  else
    echo --set model.name=unet --set trainer.name=default --set train.epochs=$((unet_epochs * f)) \
      --set train.warmup_epochs=$((unet_warmup * f))
  fi
}
