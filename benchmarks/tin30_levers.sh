#!/usr/bin/env bash
# The lever study behind experiment=tin30_cnn: each row adds one lever to the row before, with its epochs set so that
# every row costs about the same 8 minutes on a 2-core CPU (a 32 px epoch costs ~1/4 of a 64 px one, a half-width
# network ~1/4 of the full one); then one report over all rows. Every row runs flip TTA, so val/acc_no_tta gives the
# same row without it. Validation split only; the test images are never looked at.
#   bash benchmarks/tin30_levers.sh [/path/to/tinyimagenet30]      -> outputs/tin30_levers/report.md
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
ROOT=${1:-${TINCAP_SHARED_DATA:-../shared/data}/tinyimagenet30}
OUT=outputs/tin30_levers
HALF='model.widths=[32,64,128,256]'
PROG='data.progressive={min_size:32,ramp_start:0.3,ramp_end:0.8}'
row() { name=$1; shift; "$PY" train.py experiment=tin30_cnn data.root="$ROOT" task.tta=flip hydra.run.dir="$OUT/$name" \
  'model.widths=[64,128,256,512]' data.progressive=null 'callbacks=[default]' data.val_ratio=0.2 "$@"; }
row r0_wide_64px trainer.max_epochs=2
row r1_half_width trainer.max_epochs=7 "$HALF"
row r2_progressive trainer.max_epochs=13 "$HALF" "$PROG"
row r3_ema trainer.max_epochs=13 "$HALF" "$PROG" 'callbacks=[default,ema]'
"$PY" report.py "$OUT"
