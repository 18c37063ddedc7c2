"""A short fit that measures how fast this machine trains and evaluates a task: the speed a time budget is sized from.

The fit is the run's own training loop (its datamodule, network, precision and device) on a copy that is thrown away,
so the real fit afterwards starts exactly as it would without a budget.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.plugins.environments import LightningEnvironment
from omegaconf import DictConfig

from tincap.data.datamodule import ImageDataModule
from tincap.tasks.stages import fit_stages
from tincap.tasks.task import Task

WARMUP_STEPS = 2  # steps left out of each timing: the first ones build kernels and caches for a new image size
TIMED_STEPS = 6
VAL_BATCHES = 3


@dataclass(frozen=True)
class Speed:
    """What the short fit measured: seconds per training step of each fit stage, at each image side it trained (None:
    the batches have no side that changes), seconds per evaluation batch, and the cost of starting a fit."""

    step_s: dict[int, dict[int | None, float]]  # stage -> side -> median seconds per step
    steps_per_epoch: dict[int, int]  # stage -> training batches of an epoch on one device
    eval_batch_s: float
    fit_start_s: float
    checkpoint_s: float  # saving one checkpoint, which a fit does after every epoch
    epoch_gap_s: float  # Lightning's loops between one epoch's last step and the next epoch's start
    images_per_step: int

    def step(self, stage: int, side: int | None) -> float:
        """Seconds per step of `stage` at `side`: measured, or a + b * side^2 fitted through the sides measured."""
        sides = self.step_s[stage]
        if side in sides or len(sides) == 1:
            return sides.get(side, next(iter(sides.values())))
        (s0, t0), (s1, t1) = sorted(sides.items())[0], sorted(sides.items())[-1]
        slope = (t1 - t0) / (s1 * s1 - s0 * s0)
        return max(t0 + slope * (side * side - s0 * s0), min(t0, t1))

    def img_per_s(self) -> float:
        """Training images a second at the largest side of the first stage."""
        sides = self.step_s[0]
        return self.images_per_step / sides[max(sides, key=lambda s: -1 if s is None else s)]


class SpeedProbe(L.Callback):
    """Times each stage's training steps by image side (stopping an epoch once its side is timed) and the evaluation
    batches, from one batch's end to the next's so that loading and augmenting count."""

    def __init__(self, datamodule: ImageDataModule, sides: set[int | None]) -> None:
        self.datamodule = datamodule
        self.sides = sides  # those of the first stage worth timing: the smallest and the full one
        self.steps: dict[int, dict[int | None, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.eval_s: list[float] = []
        self.steps_per_epoch: dict[int, int] = {}
        self.fit_start_s: list[float] = []
        self.images_per_step = 0
        self.stage = -1
        self._last = self._fit_called = 0.0
        self._side: int | None = None
        self._batches: int | float = 0
        self.gaps: list[float] = []
        self._epoch_ended: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stage += 1
        self._fit_called = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start_s.append(time.perf_counter() - self._fit_called)
        self.steps_per_epoch[self.stage] = len(self.datamodule.train_dataloader())
        self._batches = trainer.fit_loop.max_batches

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_ended = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_ended is not None:
            self.gaps.append(time.perf_counter() - self._epoch_ended)
        self._side = self.datamodule.training_side(trainer.current_epoch, trainer.max_epochs)
        timed = len(self.steps[self.stage][self._side]) >= WARMUP_STEPS + TIMED_STEPS
        # a side timed already, or one between the two timed: a single step
        skip = timed or (self.stage == 0 and self._side not in self.sides)
        trainer.fit_loop.max_batches = 1 if skip else self._batches
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        lap = self._lap(pl_module)
        if trainer.num_training_batches > 1:
            self.steps[self.stage][self._side].append(lap)
        self.images_per_step = max(self.images_per_step, len(batch[0]))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self.eval_s.append(self._lap(pl_module))

    def _lap(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        lap, self._last = now - self._last, now
        return lap

    def speed(self, checkpoint_s: float) -> Speed:
        timed = {stage: {side: statistics.median(laps[WARMUP_STEPS:] or laps) for side, laps in by_side.items() if laps}
                 for stage, by_side in self.steps.items()}
        evals = self.eval_s[1:] or self.eval_s
        return Speed(step_s=timed, steps_per_epoch=dict(self.steps_per_epoch),
                     eval_batch_s=statistics.median(evals) if evals else 0.0,
                     fit_start_s=max(self.fit_start_s, default=0.0), checkpoint_s=checkpoint_s,
                     epoch_gap_s=statistics.median(self.gaps) if self.gaps else 0.0,
                     images_per_step=self.images_per_step)


def calibration_epochs(datamodule: ImageDataModule, longest: int = 200) -> tuple[int, set[int | None]]:
    """The fewest epochs whose image sides include both the smallest and the full one that a long run trains at
    (progressive resizing), and those two sides; 1 epoch where every epoch trains at one side."""
    ends = {datamodule.training_side(0, longest), datamodule.training_side(longest - 1, longest)}
    for epochs in range(1, longest + 1):
        if ends <= {datamodule.training_side(e, epochs) for e in range(epochs)}:
            return epochs, ends
    return longest, ends


def measure_speed(trainer_cfg: DictConfig, task: Task, datamodule: ImageDataModule, validate: bool) -> Speed:
    """Fit `task` briefly on one device with the run's trainer settings (in one process, even inside a SLURM job of
    several tasks), and return what the probe measured; without a validation split (`validate=False`) no evaluation
    batch is timed. Every later fit stage (SCST after cross-entropy) is timed for one short epoch of its own."""
    epochs, sides = calibration_epochs(datamodule)
    probe = SpeedProbe(datamodule, sides)
    trainer = hydra.utils.instantiate(
        trainer_cfg, callbacks=[probe], plugins=[LightningEnvironment()], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, devices=1, num_nodes=1, strategy="auto",
        max_epochs=epochs, min_epochs=None, max_steps=-1, max_time=None, num_sanity_val_steps=0,
        limit_train_batches=WARMUP_STEPS + TIMED_STEPS, limit_val_batches=VAL_BATCHES if validate else 0,
        limit_test_batches=None, check_val_every_n_epoch=epochs, val_check_interval=None)
    stages = task.fit_stages()
    fit_stages(trainer, task, datamodule, None, epochs=[epochs, *[1] * (len(stages) - 1)])
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        trainer.save_checkpoint(Path(folder) / "measure.ckpt")
        checkpoint_s = time.perf_counter() - started
    return probe.speed(checkpoint_s)
