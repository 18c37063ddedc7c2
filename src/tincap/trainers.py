"""The Lightning Trainer of every entry script, built from the `trainer` config group."""

from __future__ import annotations

from typing import Any

import lightning as L

from tincap.callbacks import CompileNetwork


def make_trainer(compile: bool = False, callbacks: list[L.Callback] | None = None, **settings: Any) -> L.Trainer:
    """`lightning.Trainer(**settings)`; `compile` (trainer.compile) also compiles the task's network with torch.compile."""
    return L.Trainer(callbacks=[*(callbacks or []), *([CompileNetwork()] if compile else [])], **settings)
