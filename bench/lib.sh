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
