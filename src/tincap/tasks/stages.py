"""Fitting a task's stages in one trainer (cross-entropy then SCST, for a captioner), for train.py and for the short
fit that measures a time budget's speed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning as L

from tincap.tasks.task import Task

log = logging.getLogger(__name__)


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint so far (None under fast_dev_run or without checkpointing)."""
    callback = trainer.checkpoint_callback
    return None if trainer.fast_dev_run or callback is None else callback.best_model_path or None


def fit_stages(trainer: L.Trainer, task: Task, datamodule: L.LightningDataModule, ckpt_path: str | None,
               epochs: Sequence[int] | None = None) -> None:
    """Fit the task's stages in one trainer: each later stage begins from the best checkpoint so far, adds its epochs
    to the count, and reads its dataloaders again (a stage may change what the datamodule serves). The epoch count,
    TensorBoard steps and best-checkpoint choice carry on across stages. `epochs` replaces each stage's own count."""
    for number, stage in enumerate(task.fit_stages()):
        count = stage.epochs if epochs is None else epochs[number]
        if number == 0:
            if count is not None:
                trainer.fit_loop.max_epochs = count
        else:
            if stage.begin is not None:
                stage.begin(best_checkpoint(trainer))
            trainer.fit_loop.max_epochs = trainer.current_epoch + int(count or 0)
            trainer.should_stop = False
            trainer.reload_dataloaders_every_n_epochs = 1
            log.info("fit stage %d: %s, %d epochs", number + 1, stage.name, count or 0)
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path if number == 0 else None)
