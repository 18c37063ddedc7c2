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
from tincap.data.base import ArrayDataset, image_paths, keep_batch
from tincap.data.cache import decode_files
from tincap.data.transforms import BatchTransform
from tincap.models.pretrained import read_hparams
from tincap.rundir import closing_line, print_config_tree, quiet_known_warnings
from tincap.tasks.classifier import Classifier, load_classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictions:
    """Class probabilities of the files that decoded, and the files that did not."""

    files: list[Path]
    probs: torch.Tensor  # (N, classes)
    skipped: list[Path]


def load_predictor(ckpt_path: str | Path) -> Classifier:
    """The checkpoint's classifier; a captioner checkpoint is pointed to caption.py."""
    if "vocab" in (read_hparams(ckpt_path).get("data_info") or {}):
        raise ValueError(f"{ckpt_path} is a captioner checkpoint; predict.py classifies. Caption images with "
                         f"python caption.py ckpt_path={ckpt_path} images=...")
    return load_classifier(ckpt_path)


def predict_files(task: Classifier, files: list[Path], trainer: L.Trainer, batch_size: int = 64) -> Predictions:
    """Decode and normalise files as the checkpoint's training data was, then classify them in batches."""
    info = task.hparams.data_info
    decoded = decode_files(files, info["image_size"])
    transform = BatchTransform(train=False, mean=tuple(info["mean"]), std=tuple(info["std"]))
    loader = DataLoader(ArrayDataset(decoded.images, None, transform), batch_size=batch_size, collate_fn=keep_batch)
    probs = torch.cat(trainer.predict(task, dataloaders=loader))
    kept = decoded.kept.tolist()
    skipped = sorted(set(range(len(files))) - set(kept))
    return Predictions([files[i] for i in kept], probs, [files[i] for i in skipped])


def top_k_rows(result: Predictions, class_names: list[str], k: int) -> list[list[object]]:
    """predictions.csv rows: file, rank (1 = top), class, probability."""
    values, indices = result.probs.topk(min(k, result.probs.shape[1]), dim=1)
    return [[f.name, rank + 1, class_names[int(c)], f"{float(p):.6f}"]
            for f, ps, cs in zip(result.files, values, indices) for rank, (p, c) in enumerate(zip(ps, cs))]


def run(cfg: DictConfig) -> Predictions:
    quiet_known_warnings()
    print_config_tree(cfg, save_dir=cfg.paths.output_dir)
    if cfg.top_k < 1:
        raise ValueError(f"top_k={cfg.top_k}: expected a positive number of classes per image")
    task = load_predictor(Path(cfg.ckpt_path).expanduser())
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[RichProgressBar()])
    result = predict_files(task, image_paths(cfg.images), trainer, cfg.batch_size)
    for path in result.skipped:
        log.warning("skipped unreadable image %s", path)
    rows = top_k_rows(result, task.class_names, cfg.top_k)
    for name, rank, label, prob in rows:
        print(f"{name}\t{rank}\t{label}\t{prob}")
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(cfg.paths.output_dir) / "predictions.csv"
    atomic_write_csv(out, ["file", "rank", "class", "probability"], rows)
    log.info("classified %d image(s), skipped %d unreadable -> %s", len(result.files), len(result.skipped), out)
    print(closing_line(Path(cfg.paths.output_dir), str(cfg.ckpt_path), None), flush=True)
    return result
