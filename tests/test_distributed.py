"""Multi-process runs on the CPU (gloo): DDP training and evaluation, ddp_spawn in a sweep, submitit_local sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scripts import closing, run

# 2 processes on the CPU; tiny images so the time goes into starting processes, not into compute
DDP = ("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu")
VAL_SIZES = [3, 2, 2]  # 7 validation images: not divisible by 2, so a padding sampler would count one twice


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real image-folder dataset of 3 faintly tinted noise classes: 24 train, 7 val and 7 test PNGs."""
    root = tmp_path_factory.mktemp("odd_folder")
    rng = np.random.default_rng(0)
    tints = [(128, 112, 112), (112, 128, 112), (112, 112, 128)]
    for split, sizes in {"train": [8, 8, 8], "val": VAL_SIZES, "test": [3, 3, 1]}.items():
        for c, n in enumerate(sizes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                image = np.clip(rng.normal(tints[c], 60, (16, 16, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{i}.png"), image)
    return root


def data_args(root: Path, tmp_path: Path) -> tuple[str, ...]:
    return ("data=imagefolder", f"data.root={root}", "data.image_size=16", "data.batch_size=8",
            f"paths.cache_dir={tmp_path / 'cache'}")


def metrics_of(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def test_ddp_cpu_trains_and_evaluates_like_one_process(odd_folder: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    args = (*data_args(odd_folder, tmp_path), "model=mlp", "trainer.max_epochs=2")
    trained = closing(run("train.py", *args, *DDP, f"paths.log_dir={logs}"))
    run_dir, best = Path(trained["Run dir"]), trained["best checkpoint"]
    # one run directory; the second process logged into it and wrote nothing anywhere else
    assert [p.relative_to(logs) for p in logs.rglob("*") if run_dir not in (p, *p.parents)] == [
        Path("train"), Path("train/runs")]
    assert (run_dir / "train_ddp_process_1.log").is_file()
    trained_metrics = metrics_of(run_dir)
    assert trained_metrics["epochs"] == 2 and "test/acc" in trained_metrics

    one = metrics_of(closing(run("eval.py", f"ckpt_path={best}", "split=val", f"paths.log_dir={tmp_path / 'e1'}"))["Run dir"])
    two = metrics_of(closing(run("eval.py", f"ckpt_path={best}", "split=val", *DDP,
                                 f"paths.log_dir={tmp_path / 'e2'}"))["Run dir"])
    # k/7 can only equal a count over 8 (one image repeated) at 0 or 1, so these must be strictly between
    assert 0 < one["val/acc"] < 1
    assert two["val/acc"] == one["val/acc"]
    assert two["val/loss"] == pytest.approx(one["val/loss"], abs=1e-5)  # image-weighted across unequal shares
    assert two["val/auroc"] == pytest.approx(one["val/auroc"], abs=1e-6)
    assert trained_metrics["val/acc"] == one["val/acc"]  # the all-reduced re-validation of the DDP run itself


@pytest.mark.slow
def test_ddp_spawn_inside_a_multirun_completes_every_job(odd_folder: Path, tmp_path: Path) -> None:
    run("train.py", "-m", "trainer=ddp_spawn", "trainer.devices=2", "trainer.accelerator=cpu", "model=cnn,mlp",
        *data_args(odd_folder, tmp_path), "trainer.max_epochs=1", f"paths.log_dir={tmp_path}")
    jobs = sorted((tmp_path / "train" / "multiruns").glob("*/*/metrics.json"))
    assert [p.parent.name for p in jobs] == ["0", "1"]
    for job in jobs:
        metrics = json.loads(job.read_text())
        assert metrics["epochs"] == 1  # came back from the spawned processes
        assert 0 <= metrics["test/acc"] <= 1 and 0 <= metrics["val/acc"] <= 1  # the test step ran


def test_submitit_local_runs_a_sweep_as_separate_processes(odd_folder: Path, tmp_path: Path) -> None:
    run("train.py", "-m", "hydra/launcher=submitit_local", "model=mlp", "optimizer.lr=0.1,0.01",
        *data_args(odd_folder, tmp_path), "trainer.max_epochs=1", f"paths.log_dir={tmp_path}")
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0", "1"]
    assert len({json.loads((sweep / j / "metrics.json").read_text())["val/loss"] for j in jobs}) == 2
    # each job ran in its own submitit process, which left its log in the sweep directory
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2
