"""backend=torch: the checkpoint `ckpt_path`, rebuilt in PyTorch, classifying or captioning image files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from tincap.data.arrays import ArrayDataset
from tincap.data.cache import decode_files
from tincap.data.sampling import keep_batch
from tincap.data.transforms import BatchTransform
from tincap.inference.backend import Predictions, caption_images, predictions
from tincap.tasks.captioner import Captioner
from tincap.tasks.classifier import Classifier
from tincap.tasks.loading import load_task


def predict_files(task: Classifier, files: list[Path], trainer: L.Trainer, batch_size: int = 64) -> Predictions:
    """Decode and normalise files as the checkpoint's training data was, then classify them in batches."""
    info = task.data_info
    decoded = decode_files(files, info["image_size"])
    transform = BatchTransform(train=False, mean=tuple(info["mean"]), std=tuple(info["std"]))
    loader = DataLoader(ArrayDataset(decoded.images, None, transform), batch_size=batch_size, collate_fn=keep_batch)
    index, probs = task.predict_in_order(trainer, dataloaders=loader)  # every process's share, once each
    return predictions(files, decoded, index, probs)


def caption_files(task: Captioner, files: list[Path], beam: int, batch_size: int = 64) -> list[tuple[Path, str]]:
    """(file, caption) for each readable file, decoded and normalised as the checkpoint's training data was."""
    info = task.data_info
    transform = BatchTransform(train=False, mean=tuple(info["mean"]), std=tuple(info["std"]))
    task.eval()
    with torch.inference_mode():
        return caption_images(files, info["image_size"], lambda pixels: task.captions(transform(pixels), beam),
                              batch_size)


@dataclass
class CheckpointPredictor:
    """A classification checkpoint, predicting through a Lightning trainer."""

    task: Classifier
    trainer: L.Trainer
    source: str

    @property
    def class_names(self) -> list[str]:
        return self.task.class_names

    def predict(self, files: list[Path], batch_size: int) -> Predictions:
        return predict_files(self.task, files, self.trainer, batch_size)


@dataclass
class CheckpointCaptionWriter:
    """A captioning checkpoint."""

    task: Captioner
    source: str

    @property
    def beam_size(self) -> int:
        return int(self.task.hparams.beam_size)

    def caption(self, files: list[Path], beam: int, batch_size: int) -> list[tuple[Path, str]]:
        return caption_files(self.task, files, beam, batch_size)


class TorchBackend:
    """backend=torch: the checkpoint `ckpt_path`, rebuilt in PyTorch."""

    def __init__(self, ckpt_path: str) -> None:
        self.ckpt_path = ckpt_path

    def predictor(self, tta: str | None, trainer: Callable[[], L.Trainer]) -> CheckpointPredictor:
        task = load_task(self.ckpt_path, Classifier)
        task.use_tta(tta)
        return CheckpointPredictor(task, trainer(), str(self.ckpt_path))

    def caption_writer(self) -> CheckpointCaptionWriter:
        return CheckpointCaptionWriter(load_task(self.ckpt_path, Captioner), str(self.ckpt_path))
