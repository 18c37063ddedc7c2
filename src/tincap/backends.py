"""What runs the model behind predict.py and caption.py (conf/backend/): PyTorch on the checkpoint, or ONNX Runtime on
its export (tincap.export.onnx_backend)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import lightning as L

from tincap.caption import CheckpointCaptioner, ImageCaptioner
from tincap.checkpoints import load_captioner, load_classifier
from tincap.predict import CheckpointClassifier, ImageClassifier


class Backend(Protocol):
    """Opens the model of a predict.py or caption.py run."""

    def classifier(self, tta: str | None, trainer: Callable[[], L.Trainer]) -> ImageClassifier:
        """`tta`: predict.py's override of the checkpoint's test-time augmentation (None keeps it)."""
        ...

    def captioner(self) -> ImageCaptioner: ...


class TorchBackend:
    """backend=torch: the checkpoint `ckpt_path`, rebuilt in PyTorch."""

    def __init__(self, ckpt_path: str) -> None:
        self.ckpt_path = ckpt_path

    def classifier(self, tta: str | None, trainer: Callable[[], L.Trainer]) -> ImageClassifier:
        task = load_classifier(self.ckpt_path)
        task.use_tta(tta)
        return CheckpointClassifier(task, trainer(), str(self.ckpt_path))

    def captioner(self) -> ImageCaptioner:
        return CheckpointCaptioner(load_captioner(self.ckpt_path), str(self.ckpt_path))
