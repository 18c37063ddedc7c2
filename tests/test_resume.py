"""`python train.py resume=<run_dir>` after a real SIGKILL reproduces the uninterrupted run, in the same directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from scripts import REPO, closing, finish, run, start, stop

TESTS = Path(__file__).resolve().parent
# tiny but real: 30 classes x 6 generated images (120 train, 30 val, 30 test), crop+flip augmentation, dropout
CONFIG = ("data=shapes", "data.n_per_class=6", "data.image_size=32", "data.batch_size=16", "model=mlp",
          "model.hidden=[64]", "trainer.max_epochs=3", "callbacks.early_stopping=null")
COMPARED = ("val/acc", "val/loss", "test/acc", "test/loss", "epochs", "params")


class KillMidEpoch(L.Callback):
    """SIGKILLs the process in the middle of epoch `epoch` (never in a resumed fit): a crash, not a clean stop."""

    def __init__(self, epoch: int, batch: int = 2) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.ckpt_path is None and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def tb_scalars(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


# data.on_device=true: each split held once as a uint8 tensor, batches gathered by index and augmented by the hook
# the second case also resumes the moving average of the weights (raw and averaged weights both restored)
LEVERS = ("data.augment_on=device", "data.on_device=true", "callbacks=[default,ema]")


# the host case is `slow`: its batches equal the device path's (tests/test_device_augment.py), whose resume runs here
@pytest.mark.parametrize("placement", [pytest.param((), marks=pytest.mark.slow), LEVERS], ids=["host", "on_device_ema"])
def test_resume_after_kill_equals_uninterrupted(tmp_path: Path, placement: tuple[str, ...]) -> None:
    config = (*CONFIG, *placement)
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    # the uninterrupted run and the one killed mid-run side by side (separate caches: neither waits on the other's)
    running = start("train.py", *config, f"paths.log_dir={tmp_path / 'whole'}", f"paths.cache_dir={tmp_path / 'c2'}")
    try:
        killed = subprocess.run(
            [sys.executable, str(REPO / "train.py"), *config, f"paths.log_dir={tmp_path / 'killed'}", cache,
             f"+callbacks.kill._target_={__name__}.KillMidEpoch", "+callbacks.kill.epoch=1"],
            cwd=REPO, capture_output=True, text=True, env={**os.environ, **env}, timeout=600, check=False,
        )
        whole = closing(finish(running))["Run dir"]
    finally:
        stop(running)
    expected = json.loads((Path(whole) / "metrics.json").read_text())
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    (run_dir,) = (tmp_path / "killed" / "train" / "runs").iterdir()
    assert not (run_dir / "metrics.json").exists()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 0  # the last completed epoch before the kill

    resumed = run("train.py", f"resume={run_dir}", env_extra=env)
    assert Path(closing(resumed)["Run dir"]) == run_dir
    assert list((tmp_path / "killed" / "train" / "runs").iterdir()) == [run_dir]  # no new run directory
    got = json.loads((run_dir / "metrics.json").read_text())
    for key in COMPARED:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key

    # the original record is kept; the resumed invocation is recorded beside it
    assert "model=mlp" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    (record,) = (run_dir / ".hydra").glob("resumed_*/overrides.yaml")
    assert "resume=" in record.read_text()
    # one TensorBoard run holding all three epochs, exactly as the uninterrupted run logged them
    assert tb_scalars(run_dir / "tensorboard", "val/acc") == tb_scalars(Path(whole) / "tensorboard", "val/acc")

    with pytest.raises(AssertionError, match="would change it"):
        run("train.py", f"resume={run_dir}", "model=cnn", "trainer.max_epochs=3", env_extra=env)


def test_last_checkpoint_follows_every_epoch(tmp_path: Path) -> None:
    """last.ckpt, what resume= continues from, is the last epoch's even after the best epoch (Lightning 2.6 alone
    rewrites it only with a new best): with optimizer.lr=0 val/acc never improves on epoch 0."""
    proc = run("train.py", *CONFIG, "optimizer.lr=0", f"paths.log_dir={tmp_path / 'logs'}",
               f"paths.cache_dir={tmp_path / 'cache'}")
    checkpoints = Path(closing(proc)["Run dir"]) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    best, last = (torch.load(checkpoints / name, map_location="cpu", weights_only=False)
                  for name in ("epoch_000.ckpt", "last.ckpt"))
    assert (last["epoch"], last["global_step"]) == (2, 3 * best["global_step"])
