"""The Lightning Trainer of every entry script, built from the `trainer` config group."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.plugins.environments import SLURMEnvironment

from tincap.callbacks import CompileNetwork


def make_trainer(compile: bool = False, callbacks: list[L.Callback] | None = None, plugins: list[Any] | None = None,
                 **settings: Any) -> L.Trainer:
    """`lightning.Trainer(**settings)`; `compile` (trainer.compile) also compiles the task's network with torch.compile.

    In a SLURM job, Lightning's own auto-requeue (a mid-epoch hpc checkpoint on SIGUSR1) is off: submitit's handler
    requeues and the job resumes from last.ckpt (hydra_plugins.tincap_slurm), so that only one mechanism acts.
    """
    plugins = [*(plugins or []), *([SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else [])]
    return L.Trainer(callbacks=[*(callbacks or []), *([CompileNetwork()] if compile else [])], plugins=plugins,
                     **settings)
