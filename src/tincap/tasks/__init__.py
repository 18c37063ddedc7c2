"""LightningModules: they own losses, metrics and optimisers around the plain networks of tincap.models."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from tincap.models.pretrained import read_hparams


def load_task(ckpt_path: str | Path) -> L.LightningModule:
    """A classifier or a captioner, whichever the checkpoint holds (a captioner's carries its vocabulary)."""
    from tincap.tasks.captioner import load_captioner
    from tincap.tasks.classifier import load_classifier

    is_captioner = "vocab" in (read_hparams(ckpt_path).get("data_info") or {})
    return load_captioner(ckpt_path) if is_captioner else load_classifier(ckpt_path)
