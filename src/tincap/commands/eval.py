"""`python eval.py ckpt_path=...`: score a checkpoint on a dataset (metrics.json and the task's files) or, for an
unlabelled test split, write the task's predictions (a classifier's submission.csv)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf

from tincap.runtime.checkpoint_io import AtomicCheckpointIO
from tincap.runtime.entry import Outcome, hydra_entry, task_wrapper
from tincap.runtime.errors import InvalidInput
from tincap.runtime.rundir import write_metrics
from tincap.tasks.loading import datamodule_for, load_task

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.ckpt_path`; returns the metrics written to metrics.json."""
    out_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = load_task(Path(cfg.ckpt_path).expanduser())
    task.override_evaluation(OmegaConf.to_container(cfg.task, resolve=True) if cfg.get("task") else {})
    dm = datamodule_for(task, cfg.get("data"), cfg.seed, f"ckpt_path={cfg.ckpt_path}")
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=False, callbacks=[RichProgressBar()], plugins=[AtomicCheckpointIO()]
    )
    split = str(cfg.get("split", "auto"))
    dm.setup()
    if split not in ("auto", "val", "test"):
        raise InvalidInput(f"split={split}: eval.py scores split=val or split=test (split=auto: test when it is "
                           f"labelled, else val); {dm.where} has the splits {', '.join(sorted(dm.splits))}")
    if split == "auto":
        split = "test" if dm.has_labels("test") else "val"
    if split not in dm.splits:
        raise InvalidInput(f"split={split}: {dm.where} has no {split} split, only {', '.join(sorted(dm.splits))}; "
                           "choose split=val (or split=auto)")
    unlabelled_test = "test" in dm.splits and not dm.has_labels("test")
    metrics: dict[str, Any] = {}
    if split == "test" and unlabelled_test:
        # nothing to score it with but labels_csv: the test loop would fall back to the val split
        log.info("split=test: %s has no test labels; writing the task's predictions%s", dm.where,
                 "" if cfg.get("labels_csv") else " (add labels_csv=<Id,Category file> to score them)")
    else:
        evaluate_stage = trainer.test if split == "test" else trainer.validate
        (scores,) = evaluate_stage(task, datamodule=dm, verbose=False)
        metrics = {k: float(v) for k, v in scores.items()}
        if trainer.is_global_zero:
            metrics.update(task.write_outputs(out_dir, split, dm).metrics)
    if unlabelled_test:
        metrics.update(task.write_predictions(trainer, dm, out_dir, answer_key=cfg.get("labels_csv")))
    metrics["split"] = split
    if trainer.is_global_zero:  # under DDP every process gets the synced metrics; one writes them
        write_metrics(out_dir / "metrics.json", metrics)
    return metrics


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    metrics = evaluate(cfg)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float))
    return Outcome(lines=[shown], best_ckpt=str(cfg.ckpt_path), value=metrics)


main = hydra_entry("eval", run)
