"""The guard of a budgeted fit: where the machine slows down after the speed was measured, fitting stops early enough
that the evaluation after it still ends within the budget."""

from __future__ import annotations

import logging
import time

import lightning as L

from tincap.budget.plan import duration_text

log = logging.getLogger(__name__)


class BudgetDeadline(L.Callback):
    """Stops the fit once the time left cannot hold the evaluation planned after it; `cut_at_epoch` says where. A
    single process checks after every step; DDP processes agree once per epoch (any one late stops them all)."""

    def __init__(self, deadline: float, end_s: float) -> None:
        self.deadline = deadline  # seconds since the epoch
        self.end_s = end_s
        self.cut_at_epoch: int | None = None

    def _late(self) -> bool:
        return time.time() + self.end_s > self.deadline

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.cut_at_epoch is not None:  # a later fit stage after a cut: nothing more fits
            trainer.should_stop = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.world_size == 1 and self._late():
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        late = self._late()
        if trainer.world_size > 1:
            late = trainer.strategy.reduce_boolean_decision(late, all=False)
        if late:
            self._stop(trainer)

    def _stop(self, trainer: L.Trainer) -> None:
        if trainer.should_stop:
            return
        trainer.should_stop = True
        self.cut_at_epoch = trainer.current_epoch
        log.warning("the budget runs out: fitting stops in epoch %d of %d, %s before the deadline, to leave the "
                    "evaluation its time. The machine ran slower than it measured at the start (other work on it?); "
                    "the learning-rate schedule did not reach its end", trainer.current_epoch + 1,
                    trainer.max_epochs, duration_text(self.deadline - time.time()))
