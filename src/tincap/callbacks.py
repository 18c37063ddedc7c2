"""Callbacks tincap adds to Lightning's: throughput and wall time for the cross-run report, per-epoch reseeding for resume."""

from __future__ import annotations

import random
import time

import lightning as L
import numpy as np
import torch


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
