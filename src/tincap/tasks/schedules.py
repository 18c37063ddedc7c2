"""Learning-rate schedules behind one signature, so configs choose them with `_target_` + `_partial_`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau, StepLR


def scale_group_lrs(optimizer: Optimizer) -> Optimizer:
    """Give each parameter group its `lr_scale` x the configured rate (before a schedule records its base rates)."""
    for group in optimizer.param_groups:
        group["lr"] *= group.pop("lr_scale", 1.0)
    return optimizer


def optimizer_config(trainer: L.Trainer, optimizer: Optimizer, scheduler: Callable[..., dict[str, Any]] | None) -> Any:
    """What configure_optimizers returns: the optimizer, with the schedule sized to this trainer's run."""
    if scheduler is None:
        return optimizer
    total = int(trainer.estimated_stepping_batches)
    per_epoch = max(1, total // max(1, trainer.max_epochs or 1))
    return {"optimizer": optimizer, "lr_scheduler": scheduler(optimizer, total_steps=total, steps_per_epoch=per_epoch)}


# Every factory takes (optimizer, *, total_steps, steps_per_epoch) and returns Lightning's scheduler dict.


def warmup_cosine(
    optimizer: Optimizer, *, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 1.0, min_lr_ratio: float = 0.01
) -> dict[str, Any]:
    """Linear warm-up, then cosine decay to min_lr_ratio x the base rate, updated every step."""
    warmup = max(1, int(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


def step(optimizer: Optimizer, *, total_steps: int, steps_per_epoch: int, step_epochs: int = 10, gamma: float = 0.1) -> dict[str, Any]:
    return {"scheduler": StepLR(optimizer, step_size=step_epochs, gamma=gamma), "interval": "epoch"}


def onecycle(
    optimizer: Optimizer, *, total_steps: int, steps_per_epoch: int, pct_start: float = 0.25, div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> dict[str, Any]:
    """One-cycle with the optimizer's configured lr as the peak, updated every step."""
    peak = [g["lr"] for g in optimizer.param_groups]
    sched = OneCycleLR(optimizer, max_lr=peak, total_steps=total_steps, pct_start=pct_start,
                       div_factor=div_factor, final_div_factor=final_div_factor)
    return {"scheduler": sched, "interval": "step"}


def plateau(
    optimizer: Optimizer, *, total_steps: int, steps_per_epoch: int, monitor: str = "val/loss", mode: str = "min",
    factor: float = 0.1, patience: int = 5,
) -> dict[str, Any]:
    sched = ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience)
    return {"scheduler": sched, "interval": "epoch", "monitor": monitor}
