"""`python predict.py ckpt_path=... images=...`: the top-k classes of any image files, from a classification
checkpoint alone (or its ONNX export, backend=onnx), printed and in predictions.csv."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import hydra
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig

from tincap.data.image_files import image_paths, log_skipped
from tincap.inference.backend import Backend, top_k_rows
from tincap.runtime.atomic import atomic_write_csv
from tincap.runtime.entry import Outcome, hydra_entry, task_wrapper
from tincap.runtime.errors import InvalidInput

log = logging.getLogger(__name__)


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    if cfg.top_k < 1:
        raise InvalidInput(f"top_k={cfg.top_k}: expected a positive number of classes per image")
    backend: Backend = hydra.utils.instantiate(cfg.backend)
    trainer = functools.partial(hydra.utils.instantiate, cfg.trainer, logger=False, callbacks=[RichProgressBar()])
    model = backend.predictor(cfg.get("tta"), trainer)
    result = model.predict(image_paths(cfg.images), cfg.batch_size)
    skipped = log_skipped(cfg.images, result.skipped)
    rows = top_k_rows(result, model.class_names, cfg.top_k)
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(cfg.paths.output_dir) / "predictions.csv"
    atomic_write_csv(out, ["file", "rank", "class", "probability"], rows)
    log.info("classified %d image(s), skipped %d file(s) -> %s", len(result.files), skipped, out)
    return Outcome(lines=["\t".join(map(str, row)) for row in rows], best_ckpt=model.source, value=result)


main = hydra_entry("predict", run)
