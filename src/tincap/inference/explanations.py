"""A classifier's predictions explained: Grad-CAM overlays sorted into correct/, wrong/ (or unlabelled/), and a grid
for TensorBoard (what explain.py writes)."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, open_dict
from torch.utils.tensorboard import SummaryWriter

from tincap.data.cache import decode_files
from tincap.data.image_files import find_images
from tincap.data.transforms import BatchTransform
from tincap.evaluation.gradcam import (
    cam_layer,
    figure_pixels,
    grad_cams,
    overlay,
    overlay_folder,
    overlay_grid_figure,
    overlay_name,
    write_png,
)
from tincap.models import network_name
from tincap.runtime.atomic import atomic_write_bytes, atomic_write_csv
from tincap.runtime.errors import InvalidInput
from tincap.tasks.classifier import Classifier
from tincap.tasks.loading import datamodule_for, load_task

log = logging.getLogger(__name__)

GRID_TAG = "gradcam/grid"


@dataclass
class Images:
    """The images to explain as the model sees them (before normalisation), with labels when known."""

    pixels: np.ndarray  # (N, H, W, 3) uint8
    targets: np.ndarray | None  # (N,) class indices
    ids: list[str]  # file name / path of each image
    index: list[int]  # position in the split, or in the list of files found


def load_explainable(ckpt_path: str | Path) -> Classifier:
    """The checkpoint's classifier; clear errors for a captioner or a network with no convolutional layer."""
    task = load_task(ckpt_path, Classifier)
    try:
        cam_layer(task.net)
    except ValueError as exc:
        name = network_name(task.hparams.get("model_cfg") or {})
        raise InvalidInput(f"ckpt_path={ckpt_path}: model {name} cannot be explained with Grad-CAM: {exc}") from None
    return task


def images_from_files(path: str | Path, task: Classifier) -> Images:
    """Decode `images=` at the checkpoint's input size (unreadable files are skipped with a warning)."""
    files, labels = find_images(path, task.class_names)
    decoded = decode_files(files, task.data_info["image_size"])
    kept = decoded.kept.tolist()
    root = Path(path).expanduser()
    ids = [str(files[i].relative_to(root)) if root.is_dir() else files[i].name for i in kept]
    targets = None if labels is None else np.asarray([labels[i] for i in kept], dtype=np.int64)
    return Images(decoded.images, targets, ids, kept)


def images_from_split(cfg: DictConfig, task: Classifier) -> Images:
    """`n` images (seeded sample, split order) of a split of the checkpoint's dataset, `data.*` applied on top."""
    if cfg.n is not None and cfg.n < 1:
        raise InvalidInput(f"n={cfg.n}: expected a positive number of images, or n=null for the whole split")
    with open_dict(cfg):
        name = cfg.data.pop("split", None) or cfg.split  # `data.split=val` reads as naturally as `split=val`
    dm = datamodule_for(task, cfg.data, cfg.seed, f"ckpt_path={cfg.ckpt_path}")
    dm.setup()
    if name not in dm.splits:
        raise InvalidInput(f"split={name}: {dm.where} has splits {sorted(dm.splits)}; choose one of them")
    split = dm.splits[name]
    total = len(split.images)
    chosen = np.arange(total)
    if cfg.n is not None and cfg.n < total:
        chosen = np.sort(np.random.default_rng(cfg.seed).choice(total, int(cfg.n), replace=False))
    targets = None if split.targets is None else np.asarray(split.targets)[chosen]
    ids = [split.ids[i] if split.ids else str(i) for i in chosen]
    return Images(split.images[chosen], targets, ids, chosen.tolist())


def explain(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Write the overlays, explanations.csv, gradcam.npz, gradcam_grid.png and the TensorBoard grid of explain.py's
    config `cfg` into `out`; returns how many images fell in each folder."""
    ckpt = Path(cfg.ckpt_path).expanduser()
    task = load_explainable(ckpt)
    images = images_from_files(cfg.images, task) if cfg.get("images") else images_from_split(cfg, task)
    info = task.data_info
    transform = BatchTransform(train=False, mean=tuple(info["mean"]), std=tuple(info["std"]))
    inputs = transform(torch.from_numpy(images.pixels).permute(0, 3, 1, 2).contiguous())
    result = grad_cams(task, cam_layer(task.net), inputs, cfg.batch_size)

    names = task.class_names
    rows, grid = [], []
    for pos in range(len(images.ids)):
        pred = int(result.preds[pos])
        true = None if images.targets is None else int(images.targets[pos])
        rel = Path(overlay_folder(pred, true)) / overlay_name(pos, names[pred], None if true is None else names[true])
        picture = overlay(images.pixels[pos], result.cams[pos], cfg.overlay_size, cfg.image_weight)
        write_png(out / rel, picture)
        confidence = float(result.probs[pos, pred])
        rows.append([rel.as_posix(), images.index[pos], images.ids[pos], names[pred],
                     "" if true is None else names[true], f"{confidence:.4f}", "" if true is None else int(pred == true)])
        if len(grid) < cfg.grid_max:
            grid.append((picture, names[pred], None if true is None else names[true], confidence))
    atomic_write_csv(out / "explanations.csv", ["file", "index", "id", "pred", "true", "confidence", "correct"], rows)
    atomic_write_bytes(out / "gradcam.npz", _npz(cams=result.cams.astype(np.float16), probs=result.probs,
                                                 files=np.asarray([r[0] for r in rows])))

    if grid:
        grid_pixels = figure_pixels(overlay_grid_figure(*map(list, zip(*grid))))
        write_png(out / "gradcam_grid.png", grid_pixels)
        with SummaryWriter(log_dir=str(out / "tensorboard")) as writer:
            writer.add_image(GRID_TAG, grid_pixels, global_step=0, dataformats="HWC")

    flat = int(sum(float(c.max() - c.min()) < 1e-6 for c in result.cams))
    if flat:
        log.warning("%d of %d heatmaps are flat: the predicted class has no positive gradient-weighted evidence "
                    "at the chosen layer", flat, len(rows))
    counts = {k: sum(1 for r in rows if r[0].startswith(k + "/")) for k in ("correct", "wrong", "unlabelled")}
    return {"n": len(rows), **counts, "flat": flat}


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
