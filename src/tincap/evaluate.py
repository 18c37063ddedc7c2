"""Score a checkpoint on a dataset: metrics.json, figures, per-class table and, for unlabelled test sets, submission.csv."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, open_dict

from tincap.checkpoint_io import AtomicCheckpointIO
from tincap.evaluation.classification import write_classification_files
from tincap.evaluation.submission import read_id_category_csv, write_submission
from tincap.rundir import closing_line, print_config_tree, write_metrics
from tincap.tasks.classifier import Classifier, load_classifier

log = logging.getLogger(__name__)


def datamodule_for(cfg: DictConfig, task: Classifier) -> L.LightningDataModule:
    """The user's data config, preprocessed exactly as the checkpoint was trained (size, mean, std)."""
    if not cfg.get("data"):
        raise ValueError("eval.py needs a dataset: add data=tin30 (or cifar10, imagefolder, shapes) and data.root=...")
    info = task.hparams.data_info
    with open_dict(cfg):
        cfg.data.image_size = info["image_size"]
        cfg.data.mean = info["mean"]
        cfg.data.std = info["std"]
    dm = hydra.utils.instantiate(cfg.data)
    if dm.class_names != list(info["class_names"]):
        raise ValueError(
            f"{cfg.ckpt_path} was trained on {len(info['class_names'])} classes {info['class_names'][:3]}..., "
            f"but {dm.root} has {dm.num_classes} classes {dm.class_names[:3]}...; evaluate on the same label set"
        )
    return dm


def score_against_key(ids: list[str], probs: torch.Tensor, labels_csv: str | Path) -> dict[str, float]:
    """Top-1/top-5 of test predictions against an 'Id,Category' answer key."""
    key = read_id_category_csv(labels_csv)
    missing = [i for i in ids if i not in key]
    if missing:
        raise ValueError(f"{labels_csv} has no label for {len(missing)} test images, e.g. {missing[:3]}")
    targets = torch.tensor([key[i] for i in ids])
    top5 = probs.topk(min(5, probs.shape[1]), dim=1).indices
    return {
        "test/acc": float((probs.argmax(1) == targets).float().mean()),  # exactly what submission.csv holds
        "test/acc_top5": float((top5 == targets[:, None]).any(1).float().mean()),
    }


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.ckpt_path`; returns the metrics written to metrics.json."""
    out_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    ckpt = Path(cfg.ckpt_path).expanduser()
    task = load_classifier(ckpt)
    dm = datamodule_for(cfg, task)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=False, callbacks=[RichProgressBar()], plugins=[AtomicCheckpointIO()]
    )
    split = cfg.get("split", "auto")
    if split == "auto":
        split = "test" if dm.has_labels("test") else "val"
    if split == "test":
        (metrics,) = trainer.test(task, datamodule=dm, verbose=False)
    else:
        (metrics,) = trainer.validate(task, datamodule=dm, verbose=False)
    metrics = {k: float(v) for k, v in metrics.items()}
    if trainer.is_global_zero:
        write_classification_files(out_dir, task.results[split], task.class_names)
    if "test" in dm.splits and not dm.has_labels("test"):
        probs = torch.cat(trainer.predict(task, dataloaders=dm.predict_dataloader()))
        ids = dm.splits["test"].ids
        write_submission(out_dir / "submission.csv", ids, probs.argmax(1).numpy())
        if cfg.get("labels_csv"):
            metrics.update(score_against_key(ids, probs, cfg.labels_csv))
    metrics["split"] = split
    write_metrics(out_dir / "metrics.json", metrics)
    return metrics


def run(cfg: DictConfig) -> dict[str, Any]:
    from tincap.train import quiet_known_warnings

    quiet_known_warnings()
    print_config_tree(cfg, save_dir=cfg.paths.output_dir)
    metrics = evaluate(cfg)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float))
    print(shown)
    print(closing_line(Path(cfg.paths.output_dir), str(cfg.ckpt_path), None), flush=True)
    return metrics
