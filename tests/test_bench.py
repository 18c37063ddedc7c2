"""`make bench` prints the promised JSON records (a smoke run with tiny step counts; timings are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_prints_json_records(tin30_root: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    by_name = {r["name"]: r for r in records}
    for name in ("loader/hdf5", "loader/imagefolder", "fit/tincap", "fit/plain_loop", "step/fp32",
                 "step/bf16_channels_last", "step/cnn_64px", "step/timm_tf_efficientnet_lite0_64px",
                 "step/timm_tf_efficientnet_lite0_128px", "step/timm_tf_efficientnet_lite0_224px"):
        assert by_name[name]["img_per_s"] > 0, name
