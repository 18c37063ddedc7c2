"""What predict.py and caption.py run, whichever backend (conf/backend/) opens the model: the protocols, and the
file handling both backends share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import lightning as L
import torch
from torch import Tensor

from tincap.data.cache import DecodedImages, decode_files


@dataclass(frozen=True)
class Predictions:
    """Class probabilities of the files that decoded, and the files that did not."""

    files: list[Path]
    probs: torch.Tensor  # (N, classes)
    skipped: list[Path]


class ClassPredictor(Protocol):
    """What predict.py runs: a classification checkpoint in PyTorch, or its export in ONNX Runtime."""

    class_names: list[str]
    source: str  # the checkpoint it is or was exported from, for the closing line

    def predict(self, files: list[Path], batch_size: int) -> Predictions: ...


class CaptionWriter(Protocol):
    """What caption.py runs: a captioning checkpoint in PyTorch, or its export in ONNX Runtime."""

    source: str  # the checkpoint it is or was exported from, for the closing line
    beam_size: int  # the checkpoint's task.beam_size, used when beam=null

    def caption(self, files: list[Path], beam: int, batch_size: int) -> list[tuple[Path, str]]: ...


class Backend(Protocol):
    """Opens the model of a predict.py or caption.py run (conf/backend/*.yaml)."""

    def predictor(self, tta: str | None, trainer: Callable[[], L.Trainer]) -> ClassPredictor:
        """`tta`: predict.py's override of the checkpoint's test-time augmentation (None keeps it)."""
        ...

    def caption_writer(self) -> CaptionWriter: ...


def predictions(files: list[Path], decoded: DecodedImages, index: Sequence[int], probs: torch.Tensor) -> Predictions:
    """Probabilities of decoded images `index` (positions in `decoded`), named by their files; the rest skipped."""
    kept = decoded.kept[list(index)].tolist()
    skipped = sorted(set(range(len(files))) - set(decoded.kept.tolist()))
    return Predictions([files[i] for i in kept], probs, [files[i] for i in skipped])


def caption_images(files: list[Path], image_size: int, write: Callable[[Tensor], list[str]],
                   batch_size: int = 64) -> list[tuple[Path, str]]:
    """(file, caption) for each readable file: decoded at `image_size`, then captioned by `write` from uint8 pixels
    (N, 3, H, W), `batch_size` images at a time."""
    decoded = decode_files(files, image_size)
    pixels = torch.from_numpy(decoded.images).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
    captions: list[str] = []
    for start in range(0, len(pixels), batch_size):
        captions += write(pixels[start : start + batch_size])
    return [(files[i], c) for i, c in zip(decoded.kept.tolist(), captions)]


def top_k_rows(result: Predictions, class_names: list[str], k: int) -> list[list[object]]:
    """predictions.csv rows: file, rank (1 = top), class, probability."""
    values, indices = result.probs.topk(min(k, result.probs.shape[1]), dim=1)
    return [[f.name, rank + 1, class_names[int(c)], f"{float(p):.6f}"]
            for f, ps, cs in zip(result.files, values, indices) for rank, (p, c) in enumerate(zip(ps, cs))]
