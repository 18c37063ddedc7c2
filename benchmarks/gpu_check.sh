#!/usr/bin/env bash
# One command for a GPU machine: train experiment=tin30_cnn on the GPU to completion (data and augmentation on the
# device), then print the card and, as JSON, the seconds from launch until val top-1 first reached 0.72, end to end
# (start-up, decoding, every epoch).
#   bash benchmarks/gpu_check.sh                       # TinyImageNet30 from $TINCAP_SHARED_DATA or ../shared/data
#   bash benchmarks/gpu_check.sh trainer.compile=true  # any train.py override is passed on (compile: 0.98x on an H200)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
ROOT=${TINCAP_SHARED_DATA:-../shared/data}/tinyimagenet30
[ -d "$ROOT" ] || { echo "gpu_check: no TinyImageNet30 at $ROOT (set TINCAP_SHARED_DATA)" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "gpu_check: nvidia-smi not found"
RUN=${RUN_DIR:-outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}
START=$(date +%s.%N)
"$PY" train.py experiment=tin30_cnn trainer=gpu data.root="$ROOT" data.augment_on=device data.on_device=true \
  hydra.run.dir="$RUN" "$@"
"$PY" benchmarks/time_to_accuracy.py "$RUN" --start "$START" --target 0.72
