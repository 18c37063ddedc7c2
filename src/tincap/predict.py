"""Classify image files with a trained checkpoint alone (or its ONNX export, backend=onnx): top-k classes per image,
printed and in predictions.csv."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from tincap.atomic import atomic_write_csv
from tincap.data.base import ArrayDataset, keep_batch
from tincap.data.cache import DecodedImages, decode_files
from tincap.data.image_files import image_paths
from tincap.data.transforms import BatchTransform
from tincap.entry import Outcome, task_wrapper
from tincap.errors import InvalidInput
from tincap.tasks.classifier import Classifier

if TYPE_CHECKING:
    from tincap.backends import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictions:
    """Class probabilities of the files that decoded, and the files that did not."""

    files: list[Path]
    probs: torch.Tensor  # (N, classes)
    skipped: list[Path]


class ImageClassifier(Protocol):
    """What predict.py runs: a checkpoint in PyTorch, or its export in ONNX Runtime (conf/backend/)."""

    class_names: list[str]
    source: str  # the checkpoint it is or was exported from, for the closing line

    def predict(self, files: list[Path], batch_size: int) -> Predictions: ...


def predictions(files: list[Path], decoded: DecodedImages, index: Sequence[int], probs: torch.Tensor) -> Predictions:
    """Probabilities of decoded images `index` (positions in `decoded`), named by their files; the rest skipped."""
    kept = decoded.kept[list(index)].tolist()
    skipped = sorted(set(range(len(files))) - set(decoded.kept.tolist()))
    return Predictions([files[i] for i in kept], probs, [files[i] for i in skipped])


def predict_files(task: Classifier, files: list[Path], trainer: L.Trainer, batch_size: int = 64) -> Predictions:
    """Decode and normalise files as the checkpoint's training data was, then classify them in batches."""
    info = task.hparams.data_info
    decoded = decode_files(files, info["image_size"])
    transform = BatchTransform(train=False, mean=tuple(info["mean"]), std=tuple(info["std"]))
    loader = DataLoader(ArrayDataset(decoded.images, None, transform), batch_size=batch_size, collate_fn=keep_batch)
    index, probs = task.predict_in_order(trainer, dataloaders=loader)  # every process's share, once each
    return predictions(files, decoded, index, probs)


@dataclass
class CheckpointClassifier:
    """backend=torch: the checkpoint's classifier, predicting through a Lightning trainer."""

    task: Classifier
    trainer: L.Trainer
    source: str

    @property
    def class_names(self) -> list[str]:
        return self.task.class_names

    def predict(self, files: list[Path], batch_size: int) -> Predictions:
        return predict_files(self.task, files, self.trainer, batch_size)


def top_k_rows(result: Predictions, class_names: list[str], k: int) -> list[list[object]]:
    """predictions.csv rows: file, rank (1 = top), class, probability."""
    values, indices = result.probs.topk(min(k, result.probs.shape[1]), dim=1)
    return [[f.name, rank + 1, class_names[int(c)], f"{float(p):.6f}"]
            for f, ps, cs in zip(result.files, values, indices) for rank, (p, c) in enumerate(zip(ps, cs))]


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    if cfg.top_k < 1:
        raise InvalidInput(f"top_k={cfg.top_k}: expected a positive number of classes per image")
    backend: Backend = hydra.utils.instantiate(cfg.backend)
    trainer = functools.partial(hydra.utils.instantiate, cfg.trainer, logger=False, callbacks=[RichProgressBar()])
    model = backend.classifier(cfg.get("tta"), trainer)
    result = model.predict(image_paths(cfg.images), cfg.batch_size)
    for path in result.skipped:
        log.warning("skipped unreadable image %s", path)
    rows = top_k_rows(result, model.class_names, cfg.top_k)
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(cfg.paths.output_dir) / "predictions.csv"
    atomic_write_csv(out, ["file", "rank", "class", "probability"], rows)
    log.info("classified %d image(s), skipped %d unreadable -> %s", len(result.files), len(result.skipped), out)
    return Outcome(lines=["\t".join(map(str, row)) for row in rows], best_ckpt=model.source, value=result)
