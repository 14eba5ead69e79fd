#!/usr/bin/env bash
# The GPU check (issue #43): everything that needs a GPU to be known, in one run of under 8 minutes on one GPU.
#
#   bash bench/gpu_check.sh                    # CUDA: batch 8 at 224 px, the paper's configuration
#   bash bench/gpu_check.sh --device cpu       # tiny sizes: proves the script works (tests/test_gpu_check.py)
#   bash bench/gpu_check.sh --out DIR          # where the results go (default bench/results/gpu_check)
#
# 1. the device tests on the device (tests/test_gpu_check.py with GMSEG_TEST_DEVICE): release parity to 1e-4,
#    a training step, an exact resume;
# 2. bench/inference.py: the SD-VAE architecture and TAESD, release loop vs gmseg in fp32, bf16, channels-last
#    and torch.compile, batch 1 and 8, peak memory (inference.py does not time the U-Net: part 4 does);
# 3. bench/training.py: the same first stages, release step vs gmseg in fp32, bf16 and torch.compile;
# 4. bench/backends.py: GMS-TAESD and the U-Net on torch (fp32, bf16, channels-last, compile) and ONNX Runtime;
# then the three tables for BENCHMARKS.md, from the JSON results. Each part writes its log beside its JSON.
set -euo pipefail

DEVICE=cuda
OUT=bench/results/gpu_check
while [ $# -gt 0 ]; do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (use --device cuda|cpu, --out DIR)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"

# Variants: fp32 (and the release), bf16, channels-last and torch.compile. On a CPU the tiny check leaves out
# channels-last and compile (compile builds C++ kernels with gcc: many minutes on two shared cores, for numbers
# that mean nothing at 32 px); the GPU run has them all.
if [ "$DEVICE" = cpu ]; then  # tiny: the numbers mean nothing, the wiring of every part is checked
  STAGES=(tiny-kl) MODELS=(gms-tiny-kl unet) SIZE=32 BATCHES=(2) BATCH=2 IMAGES=2 ROUNDS=1 STEPS=2 VAL=2
  EXTRA=()
else
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA device is visible to torch; run with --device cpu for the tiny check" >&2
    exit 2
  fi
  STAGES=(sd-vae taesd) MODELS=(gms-taesd unet) SIZE=224 BATCHES=(1 8) BATCH=8 IMAGES=32 ROUNDS=3 STEPS=5 VAL=16
  EXTRA=(compile channels_last)
fi
has() { [[ " ${EXTRA[*]} " == *" $1 "* ]]; }
INFERENCE=(release gmseg gmseg+bf16) TRAINING=(release gmseg gmseg+bf16) BACKENDS=("torch fp32" "torch bf16")
if has channels_last; then INFERENCE+=(gmseg+channels_last) BACKENDS+=("torch channels_last"); fi
if has compile; then INFERENCE+=(gmseg+compile) TRAINING+=(gmseg+compile) BACKENDS+=("torch compile"); fi

part() { echo; echo "== $1 ($(date +%H:%M:%S))"; }
started=$(date +%s)

part "device tests on $DEVICE"
GMSEG_TEST_DEVICE=$DEVICE "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_check.py -k on_device 2>&1 \
  | tee "$OUT/tests.log"

part "inference: ${STAGES[*]} at $SIZE px"
"$PY" bench/inference.py --device "$DEVICE" --first-stages "${STAGES[@]}" --batch-sizes "${BATCHES[@]}" --size "$SIZE" \
  --images "$IMAGES" --rounds "$ROUNDS" --variants "${INFERENCE[@]}" \
  --out "$OUT/inference.json" > "$OUT/inference.log" 2>&1 || { tail -30 "$OUT/inference.log"; exit 1; }

part "training: ${STAGES[*]}, batch $BATCH at $SIZE px"
"$PY" bench/training.py --device "$DEVICE" --first-stages "${STAGES[@]}" --batch "$BATCH" --size "$SIZE" \
  --steps "$STEPS" --val-images "$VAL" --variants "${TRAINING[@]}" \
  --out "$OUT/training.json" > "$OUT/training.log" 2>&1 || { tail -30 "$OUT/training.log"; exit 1; }

part "backends: ${MODELS[*]} at $SIZE px"
# ONNX Runtime on a GPU needs its GPU build; the CPU build is skipped there rather than timed on the CPU.
if [ "$DEVICE" = cpu ] || "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; then
  BACKENDS+=("onnxruntime fp32")
fi
"$PY" bench/backends.py --device "$DEVICE" --models "${MODELS[@]}" --size "$SIZE" --batch "$BATCH" \
  --images "$IMAGES" --rounds "$ROUNDS" --variants "${BACKENDS[@]}" \
  --out "$OUT/backends.json" > "$OUT/backends.log" 2>&1 || { tail -30 "$OUT/backends.log"; exit 1; }

part "tables for BENCHMARKS.md"
"$PY" - "$OUT" "$(( $(date +%s) - started ))" <<'PYEOF'
import json, sys
from pathlib import Path

sys.path.insert(0, "bench")
from common import format_table

out, seconds = Path(sys.argv[1]), int(sys.argv[2])
inference = json.loads((out / "inference.json").read_text())
training = json.loads((out / "training.json").read_text())
backends = json.loads((out / "backends.json").read_text())
machine = inference["machine"]
print(f"GPU check on {machine.get('gpu', machine['cpu'])} ({machine['device']}), torch {machine['torch']}, "
      f"{inference['date']}, {seconds} s in all; results in {out}")
print(f"\n### Inference ({inference['size']} px; x release = against the release's valid.py loop)\n")
print(format_table(inference["rows"], [("first_stage", "first stage"), ("variant", "variant"), ("batch", "batch"),
      ("images_per_s", "images/s"), ("speedup_vs_release", "x release"), ("max_dprob", "max abs dprob"),
      ("peak_mb", "peak MB")]))
rows = [row for result in training["results"] for row in result["rows"]]
print("\n### Training (x release = against the release's train.py step)\n")
print(format_table(rows, [("first_stage", "first stage"), ("variant", "variant"), ("batch", "batch"), ("size", "px"),
      ("samples_per_s", "samples/s"), ("step_speedup_vs_release", "x release"),
      ("grad_rel_diff_vs_release", "grad rel diff"), ("peak_mb", "peak MB")]))
print(f"\n### Backends ({backends['size']} px; x torch fp32 and max abs dprob against torch fp32)\n")
print(format_table(backends["rows"], [("model", "model"), ("variant", "backend, precision"),
      ("images_per_s", "images/s"), ("x_release", "x release loop"), ("x_torch_fp32", "x torch fp32"),
      ("max_dprob", "max abs dprob"),
      ("peak_mb", "peak MB")]))
PYEOF
