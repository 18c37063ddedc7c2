"""Callbacks tincap adds to Lightning's: throughput for the report, per-epoch reseeding for resume, a stop on a NaN loss."""

from __future__ import annotations

import random
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from tincap.checkpoints import checkpoint_epoch
from tincap.errors import TrainingDiverged


class Throughput(L.Callback):
    """Logs `train/img_per_s` each epoch (training steps only) and the fit's wall time in seconds."""

    def __init__(self) -> None:
        self.images = 0
        self.busy = 0.0
        self.fit_start = 0.0
        self.wall_s = 0.0
        self.img_per_s = 0.0
        self._step_start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.images, self.busy = 0, 0.0
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self.busy += now - self._step_start
        self.images += len(batch[0]) * trainer.world_size
        self._step_start = now

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.busy > 0:
            self.img_per_s = self.images / self.busy
            pl_module.log("train/img_per_s", self.img_per_s, on_epoch=True, sync_dist=False, rank_zero_only=True)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._paused = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step_start += time.perf_counter() - getattr(self, "_paused", time.perf_counter())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.wall_s = time.perf_counter() - self.fit_start


class ReseedEachEpoch(L.Callback):
    """Seed all RNGs from (seed, epoch, rank) as each training epoch starts, so augmentation, dropout and MixUp of a
    resumed run repeat those of an uninterrupted one exactly (the batch order comes from the sampler's epoch)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = int(np.random.SeedSequence([self.seed, trainer.current_epoch, trainer.global_rank]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


class StopOnNonFiniteLoss(L.Callback):
    """Stop at the first NaN/inf training loss (before it reaches the weights) or validation loss (before the
    checkpoint callbacks, which run last, save the weights), so last.ckpt keeps the last good epoch. The error names
    the epoch, step and learning rate. Every process takes the same decision under DDP."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._check(trainer, "training loss", loss.detach())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self._check(trainer, "validation loss", loss)

    def _check(self, trainer: L.Trainer, what: str, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss).all())
        if trainer.world_size > 1:
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        groups = [group for opt in trainer.optimizers for group in opt.param_groups]
        lr = max((group["lr"] for group in groups), default=float("nan"))
        base = max((group.get("initial_lr", group["lr"]) for group in groups), default=float("nan"))
        ckpt = trainer.checkpoint_callback
        last = Path(ckpt.dirpath) / "last.ckpt" if ckpt is not None and ckpt.dirpath else None
        kept = (f"The last good checkpoint is {last} (saved after epoch {checkpoint_epoch(last) - 1}); nothing after "
                "it was saved" if last is not None and last.is_file() else "No checkpoint had been saved yet")
        raise TrainingDiverged(
            f"training stopped: the {what} became {float(loss):g} at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step} (learning rate {lr:g}, from optimizer.lr={base:g}). Usually the learning rate is "
            f"too high for this model and batch size: try optimizer.lr={base / 10:g}, a warm-up (scheduler=onecycle), "
            f"or trainer.gradient_clip_val=1; otherwise check the input data for bad values. {kept}."
        )
