"""`make bench` prints the promised JSON records, and nothing else, on stdout (a smoke run with tiny step counts;
timings are not judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_prints_json_records(tin30_small: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"  # 240 real training images: the rows' code, not the full set's decode and eval
    shared.mkdir()
    (shared / "tinyimagenet30").symlink_to(tin30_small)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "TINCAP_SHARED_DATA": str(shared)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # stdout is JSON lines alone: `| jq` works
    by_name = {r["name"]: r for r in records}
    for name in ("loader/hdf5", "loader/imagefolder", "fit/tincap", "fit/plain_loop", "step/fp32",
                 "step/bf16_channels_last", "step/cnn_64px", "step/timm_tf_efficientnet_lite0_64px",
                 "step/timm_tf_efficientnet_lite0_128px", "step/timm_tf_efficientnet_lite0_224px"):
        assert by_name[name]["img_per_s"] > 0, name
    assert by_name["fit/tin30_epoch"] == {"name": "fit/tin30_epoch", "skipped": "--quick"}
    assert by_name["eval/tta_flip"]["cost_vs_plain"] > 1.2  # two forward passes per image instead of one
    assert by_name["step/compiled"] == {"name": "step/compiled", "skipped": "--quick"}
    for name in ("decode/attention_lstm_beam3", "decode/attention_lstm_greedy", "decode/transformer_beam3",
                 "decode/transformer_greedy", "decode/transformer_greedy_recomputing_prefix"):
        assert by_name[name]["captions_per_s"] > 0 and by_name[name]["batch"] == 2, name


@pytest.mark.slow  # compiles the CNN twice on the CPU (~3 min on 2 cores)
def test_device_rows_run_on_the_cpu(tin30_root: Path) -> None:
    """The GPU rows' code, run with the CPU standing in for the device (`--device-rows-on-cpu`)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--loader-batches", "3",
                           "--fit-steps", "2", "--lever-steps", "1", "--epoch-steps", "2", "--timm-batch-size", "2",
                           "--device-rows-on-cpu"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    loaders = {r["mode"]: r for r in records if r["name"] == "cpu_as_device/loader"}
    assert set(loaders) == {"host_augment", "device_augment", "data_on_device"}
    assert all(r["img_per_s"] > 0 for r in loaders.values())
    compiled = next(r for r in records if r["name"] == "cpu_as_device/step/compiled")
    assert compiled["img_per_s"] > 0 and compiled["first_step_s"] > 0 and compiled["precision"] == "bf16"
    step = next(r for r in records if r["name"] == "step/compiled")
    assert step["precision"] == "fp32" and step["speedup_vs_eager"] > 0
    epoch = next(r for r in records if r["name"] == "fit/tin30_epoch")
    assert epoch["steps"] == 2 < epoch["steps_per_epoch"] and epoch["train_seconds"] > 0  # extrapolated to an epoch


@pytest.mark.slow  # trains 2 epochs of experiment=tin30_cnn on 240 images (~16 s)
def test_gpu_check_script_runs_end_to_end_with_the_cpu_standing_in(tin30_small: Path, tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh as a GPU machine runs it, its trainer pointed at the CPU by extra overrides."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "tinyimagenet30").symlink_to(tin30_small)
    env = {**os.environ, "TINCAP_SHARED_DATA": str(shared), "RUN_DIR": str(tmp_path / "run"), "PY": sys.executable,
           "PATH": os.environ["PATH"]}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "trainer.accelerator=cpu",
                           "trainer.precision=32-true", "trainer.compile=false", "trainer.max_epochs=2",
                           "data.batch_size=16", f"paths.cache_dir={tmp_path / 'cache'}"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["name"] == "gpu/time_to_accuracy" and result["target"] == 0.72
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val/acc"] - 1e-6 <= result["best"] <= 1  # the best epoch, read from the run's own events
    assert result["total_seconds"] > 0
    assert (result["seconds"] is None) == (result["best"] < 0.72)
