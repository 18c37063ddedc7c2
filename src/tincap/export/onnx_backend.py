"""backend=onnx: predict.py and caption.py on an ONNX export (python export.py ... format=onnx) in ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L

from tincap.export.onnx_captioner import OnnxCaptioner
from tincap.export.onnx_classifier import OnnxClassifier
from tincap.export.onnx_sessions import open_session
from tincap.export.sidecar import read_export
from tincap.tasks.classifier import check_tta

KEY = "backend.model"


class OnnxBackend:
    """The export at `model` (its folder, model.json, a graph file, or the training run directory it was written
    into), run with `threads` threads per session (0: ONNX Runtime's choice, one per core)."""

    def __init__(self, model: str, threads: int = 0) -> None:
        self.model = model
        self.threads = threads

    def predictor(self, tta: str | None, trainer: Callable[[], L.Trainer]) -> OnnxClassifier:
        """`trainer` is PyTorch's and goes unused: ONNX Runtime runs in this process."""
        export = read_export(self.model, "onnx", "classifier", KEY)
        mode = check_tta(str(tta), "tta") if tta is not None else export.meta["tta"]
        return OnnxClassifier(export, open_session(export, "model", self.threads, KEY), mode)

    def caption_writer(self) -> OnnxCaptioner:
        export = read_export(self.model, "onnx", "captioner", KEY)
        return OnnxCaptioner(export, open_session(export, "encoder", self.threads, KEY),
                             open_session(export, "decoder_step", self.threads, KEY))
