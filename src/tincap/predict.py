"""Classify image files with a trained checkpoint alone: top-k classes per image, printed and in predictions.csv."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from tincap.atomic import atomic_write_csv
from tincap.checkpoints import load_classifier
from tincap.data.base import ArrayDataset, keep_batch
from tincap.data.cache import decode_files
from tincap.data.image_files import image_paths
from tincap.data.transforms import BatchTransform
from tincap.entry import Outcome, task_wrapper
from tincap.errors import InvalidInput
from tincap.tasks.classifier import Classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictions:
    """Class probabilities of the files that decoded, and the files that did not."""

    files: list[Path]
    probs: torch.Tensor  # (N, classes)
    skipped: list[Path]


def predict_files(task: Classifier, files: list[Path], trainer: L.Trainer, batch_size: int = 64) -> Predictions:
    """Decode and normalise files as the checkpoint's training data was, then classify them in batches."""
    info = task.hparams.data_info
    decoded = decode_files(files, info["image_size"])
    transform = BatchTransform(train=False, mean=tuple(info["mean"]), std=tuple(info["std"]))
    loader = DataLoader(ArrayDataset(decoded.images, None, transform), batch_size=batch_size, collate_fn=keep_batch)
    index, probs = task.predict_in_order(trainer, dataloaders=loader)  # every process's share, once each
    kept = decoded.kept[index].tolist()
    skipped = sorted(set(range(len(files))) - set(decoded.kept.tolist()))
    return Predictions([files[i] for i in kept], probs, [files[i] for i in skipped])


def top_k_rows(result: Predictions, class_names: list[str], k: int) -> list[list[object]]:
    """predictions.csv rows: file, rank (1 = top), class, probability."""
    values, indices = result.probs.topk(min(k, result.probs.shape[1]), dim=1)
    return [[f.name, rank + 1, class_names[int(c)], f"{float(p):.6f}"]
            for f, ps, cs in zip(result.files, values, indices) for rank, (p, c) in enumerate(zip(ps, cs))]


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    if cfg.top_k < 1:
        raise InvalidInput(f"top_k={cfg.top_k}: expected a positive number of classes per image")
    task = load_classifier(cfg.ckpt_path)
    task.use_tta(cfg.get("tta"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[RichProgressBar()])
    result = predict_files(task, image_paths(cfg.images), trainer, cfg.batch_size)
    for path in result.skipped:
        log.warning("skipped unreadable image %s", path)
    rows = top_k_rows(result, task.class_names, cfg.top_k)
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(cfg.paths.output_dir) / "predictions.csv"
    atomic_write_csv(out, ["file", "rank", "class", "probability"], rows)
    log.info("classified %d image(s), skipped %d unreadable -> %s", len(result.files), len(result.skipped), out)
    return Outcome(lines=["\t".join(map(str, row)) for row in rows], best_ckpt=str(cfg.ckpt_path), value=result)
