"""Callbacks tincap adds to Lightning's: throughput for the report, per-epoch reseeding for resume, a stop on a NaN loss,
the weights' moving average tested as it is validated, a last.ckpt that follows every epoch (a link when it is the
best checkpoint), and a short model summary."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from rich.console import Console
from rich.table import Table
from torch import Tensor

from tincap.runtime.checkpoint_io import checkpoint_epoch
from tincap.runtime.errors import InvalidInput, TrainingDiverged


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
    """Seed all RNGs from (seed, epoch, rank) as each training epoch starts, so dropout (and the caption datamodule's
    augmentation) of a resumed run repeat those of an uninterrupted one exactly. The batch order comes from the
    sampler's epoch, and classification batches are augmented from their own seed (`transforms.batch_seed`)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = int(np.random.SeedSequence([self.seed, trainer.current_epoch, trainer.global_rank]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


class StopOnNonFiniteLoss(L.Callback):
    """Stop at the first NaN/inf training loss (on the CPU before it reaches the weights; on an accelerator when its
    epoch ends, without a host sync per step) or validation loss (before the checkpoint callbacks, which run last,
    save the weights), so last.ckpt keeps the last good epoch. The error names the epoch, step and learning rate.
    Every process takes the same decision under DDP."""

    def __init__(self, check_each_step: bool | None = None) -> None:
        self.check_each_step = check_each_step  # None: on the CPU only
        self._bad: torch.Tensor | None = None  # deferred checks: a non-finite loss of this epoch, else 0

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        loss = loss.detach()
        each_step = self.check_each_step if self.check_each_step is not None else loss.device.type == "cpu"
        if each_step:
            self._check(trainer, "training loss", loss)
            return
        # on a GPU a check per step would make the host wait for the device every step: keep the epoch's first
        # non-finite loss on the device and look once, when the epoch ends (before the checkpoint callbacks)
        kept = torch.zeros_like(loss) if self._bad is None else self._bad
        self._bad = torch.where(torch.isfinite(kept) & ~torch.isfinite(loss), loss, kept)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bad is not None:
            bad, self._bad = self._bad, None
            self._check(trainer, "training loss", bad)

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


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with `save_last` writing last.ckpt after every epoch it checks, as a link to the
    best checkpoint when that was saved at the same step (one file on disk, not two copies of the same weights).

    Since Lightning 2.6 last.ckpt is rewritten only on the epochs that also save a new best, so after the best epoch
    it goes stale and `resume=` (and a requeued SLURM job) would fit again every epoch after the best one. Lightning's
    own `save_last="link"` links to the last file it saved, which after the best epoch holds older weights."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._catch_up_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._catch_up_last(trainer)

    def _catch_up_last(self, trainer: L.Trainer) -> None:
        # the skip check is also true when this step already saved (a new best wrote last.ckpt with it), and
        # _save_last_checkpoint itself does nothing without save_last
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        if not self.save_last:
            return
        path = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        if self._enable_version_counter:  # a last.ckpt this run did not write is kept, as Lightning keeps it
            version = self.STARTING_VERSION
            while self.file_exists(path, trainer) and path != self.last_model_path:
                path = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST, ver=version)
                version += 1
        same_step = (self._last_global_step_saved == trainer.global_step
                     and self._last_checkpoint_saved not in ("", path))
        previous, self.last_model_path = self.last_model_path, path
        if same_step:
            if trainer.is_global_zero:
                link_atomically(Path(self._last_checkpoint_saved), Path(path))
            trainer.strategy.barrier()
        else:
            self._save_checkpoint(trainer, path)
        if previous and self._should_remove_checkpoint(trainer, previous, path):
            self._remove_checkpoint(trainer, previous)


def link_atomically(target: Path, link: Path) -> None:
    """`link` becomes a relative symlink to `target` in one rename: a reader sees the old file or the new link."""
    temp = link.with_name(f".{link.name}.{os.getpid()}.link")
    temp.unlink(missing_ok=True)
    temp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(temp, link)


class NetworkSummary(ModelSummary):
    """Lightning's model summary as one short table, printed once before fitting: each module's type and parameters,
    and the totals (without the FLOPs column, which needs an example input, or the modules' train/eval modes)."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int, **kwargs: Any) -> None:
        columns = dict(summary_data)
        table = Table(title_justify="left", caption_justify="left",
                      caption=f"{get_human_readable_count(trainable_parameters).strip()} trainable of "
                              f"{get_human_readable_count(total_parameters).strip()} parameters, {model_size:.1f} MB")
        table.add_column("Name")
        table.add_column("Type")
        table.add_column("Params", justify="right")
        for row in zip(columns["Name"], columns["Type"], columns["Params"]):
            table.add_row(*row)
        Console().print(table)


class WeightEMA(WeightAveraging):
    """An exponential moving average of the weights (Lightning's WeightAveraging), updated after every optimizer step;
    the average is what is validated, checkpointed and tested.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as timm's ModelEmaV3), so a short run's
    average is not mostly its initial weights. Lightning's callback puts the raw weights (a checkpoint's
    `current_model_state`) back whenever a checkpoint is loaded, so `trainer.test(ckpt_path="best")` after fitting
    would test the raw weights; outside fitting, the checkpoint's state_dict (the average) stands."""

    def __init__(self, decay: float = 0.99) -> None:
        if not 0 <= decay < 1:
            raise InvalidInput(f"callbacks.ema.decay={decay}: expected a number in [0, 1), e.g. 0.99")

        def average(mean: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
            d = ((1 + updates) / (10 + updates)).clamp(max=decay).to(mean.dtype)
            return mean + (current - mean) * (1 - d)

        super().__init__(avg_fn=average)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class CompileNetwork(L.Callback):
    """`trainer.compile=true`: the task's network compiled in place (`nn.Module.compile`), so checkpoints keep their keys."""

    def __init__(self) -> None:
        self.compiled: set[int] = set()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if id(pl_module.net) not in self.compiled:  # once, though fit, validate and test each call setup
            pl_module.net.compile()
            self.compiled.add(id(pl_module.net))
