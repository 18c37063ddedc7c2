"""The Lightning Trainer of every entry script, built from the `trainer` config group."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.plugins.environments import ClusterEnvironment, SLURMEnvironment

from tincap.runtime import resolvers
from tincap.runtime.callbacks import CompileNetwork

log = logging.getLogger(__name__)


def make_trainer(compile: bool = False, callbacks: list[L.Callback] | None = None, plugins: list[Any] | None = None,
                 **settings: Any) -> L.Trainer:
    """`lightning.Trainer(**settings)`; `compile` (trainer.compile) also compiles the task's network with torch.compile.

    In a SLURM job, Lightning's own auto-requeue (a mid-epoch hpc checkpoint on SIGUSR1) is off: submitit's handler
    requeues and the job resumes from last.ckpt (hydra_plugins.tincap_slurm), so that only one mechanism acts. A
    cluster environment among `plugins` (a time budget's one-process measuring fit) replaces SLURM's.
    """
    precision = str(settings.get("precision", "32-true"))
    if settings.get("accelerator") == "cpu" and precision.startswith("bf16") and not resolvers.cpu_has_native_bf16():
        log.warning("trainer.precision=%s on a CPU without native bf16 (AVX512-BF16 or AMX): every step is emulated, "
                    "about 10x slower than trainer.precision=32-true, and recipes sized by precision "
                    "(tincap.by_precision, e.g. experiment=tin30_cnn) choose their bf16 size", precision)
    given = any(isinstance(plugin, ClusterEnvironment) for plugin in plugins or [])
    slurm = SLURMEnvironment.detect() and not given
    plugins = [*(plugins or []), *([SLURMEnvironment(auto_requeue=False)] if slurm else [])]
    return L.Trainer(callbacks=[*(callbacks or []), *([CompileNetwork()] if compile else [])], plugins=plugins,
                     **settings)
