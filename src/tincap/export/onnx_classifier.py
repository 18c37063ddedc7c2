"""predict.py backend=onnx: an exported classifier run by ONNX Runtime, giving what the PyTorch path gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tincap.data.cache import decode_files
from tincap.export.sidecar import Export
from tincap.inference.backend import Predictions, predictions


class OnnxClassifier:
    """model.onnx in an ONNX Runtime session; flip TTA averages the logits of the image and its mirror, as
    `Classifier.predict_logits` does."""

    def __init__(self, export: Export, session: Any, tta: str) -> None:
        self.export = export
        self.session = session
        self.tta = tta
        self.class_names: list[str] = list(export.meta["classes"])
        self.source = str(export.meta.get("checkpoint") or export.folder)

    def logits(self, pixels: np.ndarray) -> torch.Tensor:
        """Logits (N, classes) of uint8 images (N, 3, H, W)."""
        logits = torch.from_numpy(self.session.run(["logits"], {"image": pixels})[0])
        if self.tta == "flip":
            mirrored = np.ascontiguousarray(pixels[..., ::-1])
            logits = (logits + torch.from_numpy(self.session.run(["logits"], {"image": mirrored})[0])) / 2
        return logits

    def predict(self, files: list[Path], batch_size: int) -> Predictions:
        decoded = decode_files(files, self.export.image_size)
        pixels = np.ascontiguousarray(decoded.images.transpose(0, 3, 1, 2))  # (N, 3, H, W) uint8
        batches = range(0, len(pixels), batch_size)
        probs = torch.cat([self.logits(pixels[start : start + batch_size]).softmax(1) for start in batches])
        return predictions(files, decoded, range(len(pixels)), probs)  # (N, classes)
