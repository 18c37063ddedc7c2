"""Score a checkpoint on a dataset: metrics.json, figures, per-class table and, for unlabelled test sets, submission.csv."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

from tincap.checkpoints import AtomicCheckpointIO, load_task
from tincap.data.caption_datamodule import CaptionData
from tincap.entry import Outcome, task_wrapper
from tincap.errors import InvalidInput
from tincap.evaluation.submission import read_id_category_csv, write_submission
from tincap.rundir import write_metrics
from tincap.tasks.captioner import Captioner
from tincap.tasks.classifier import Classifier

log = logging.getLogger(__name__)


def data_config(cfg: DictConfig, task: L.LightningModule) -> DictConfig:
    """The user's `data=` choice, else the checkpoint's own data config with the user's `data.*` values on top."""
    user = cfg.get("data") or {}
    if "_target_" in user:
        return user
    saved = (task.hparams.data_info or {}).get("data_cfg")
    if not saved:
        raise InvalidInput(f"ckpt_path={cfg.ckpt_path} does not record its dataset; add data=tin30 (or cifar10, imagefolder, "
                         "shapes, captions) and data.root=...")
    given = {k: v for k, v in OmegaConf.to_container(user, resolve=True).items() if v is not None}
    return OmegaConf.merge(OmegaConf.create(saved), given)


def datamodule_for(cfg: DictConfig, task: L.LightningModule) -> L.LightningDataModule:
    """The dataset, preprocessed exactly as the checkpoint was trained (size, mean, std; a captioner's vocabulary)."""
    info = task.hparams.data_info
    data_cfg = data_config(cfg, task)
    captioner = isinstance(task, Captioner)
    with open_dict(data_cfg):
        data_cfg.image_size = info["image_size"]
        data_cfg.mean = info["mean"]
        data_cfg.std = info["std"]
        if captioner:
            data_cfg.max_len = info["max_len"]
    dm = hydra.utils.instantiate(data_cfg)
    if captioner != isinstance(dm, CaptionData):
        kind = "captioner" if captioner else "classifier"
        raise InvalidInput(f"ckpt_path={cfg.ckpt_path} is a {kind} checkpoint but data is {data_cfg._target_}; "
                         f"choose a {'caption' if captioner else 'classification'} dataset")
    if captioner:
        dm.load_state_dict({"vocab": task.vocab.state_dict()})
    elif dm.class_names != list(info["class_names"]):
        raise InvalidInput(
            f"ckpt_path={cfg.ckpt_path} was trained on {len(info['class_names'])} classes {info['class_names'][:3]}..., "
            f"but {dm.root} has {dm.num_classes} classes {dm.class_names[:3]}...; evaluate on the same label set"
        )
    return dm


def submit_test_split(task: Classifier, trainer: L.Trainer, dm: L.LightningDataModule, path: Path,
                      **predict_kwargs: Any) -> torch.Tensor | None:
    """Predict the unlabelled test split with every process and write submission.csv once; returns the probabilities
    in test-id order, or None when only part of the split was predicted (fast_dev_run, limit_predict_batches)."""
    index, probs = task.predict_in_order(trainer, datamodule=dm, **predict_kwargs)
    ids = dm.splits["test"].ids
    if len(index) < len(ids):
        log.warning("predicted %d of %d test images: no %s", len(index), len(ids), path.name)
        return None
    if trainer.is_global_zero:
        write_submission(path, ids, probs.argmax(1).numpy())
    return probs


def score_against_key(ids: list[str], probs: torch.Tensor, labels_csv: str | Path) -> dict[str, float]:
    """Top-1/top-5 of test predictions against an 'Id,Category' answer key."""
    key = read_id_category_csv(labels_csv)
    missing = [i for i in ids if i not in key]
    if missing:
        raise InvalidInput(f"labels_csv={labels_csv} has no label for {len(missing)} test images, e.g. {missing[:3]}")
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
    task = load_task(ckpt)
    if isinstance(task, Captioner):
        if cfg.get("beam") is not None:
            task.hparams.beam_size = task.hparams.val_beam_size = int(cfg.beam)
        if cfg.get("length_penalty") is not None:
            task.hparams.length_penalty = float(cfg.length_penalty)
    if isinstance(task, Classifier):
        task.use_tta(cfg.get("tta"))
    dm = datamodule_for(cfg, task)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=False, callbacks=[RichProgressBar()], plugins=[AtomicCheckpointIO()]
    )
    split = str(cfg.get("split", "auto"))
    dm.setup()
    where = f"{dm.name} at {dm.root}" if dm.root else dm.name  # generated caption shapes have no folder
    if split not in ("auto", "val", "test"):
        raise InvalidInput(f"split={split}: eval.py scores split=val or split=test (split=auto: test when it is "
                           f"labelled, else val); {where} has the splits {', '.join(sorted(dm.splits))}")
    if split == "auto":
        split = "test" if dm.has_labels("test") else "val"
    if split not in dm.splits:
        raise InvalidInput(f"split={split}: {where} has no {split} split, only {', '.join(sorted(dm.splits))}; "
                           "choose split=val (or split=auto)")
    unlabelled_test = "test" in dm.splits and not dm.has_labels("test")
    metrics: dict[str, Any] = {}
    if split == "test" and unlabelled_test:
        # nothing to score it with but labels_csv: the test loop would fall back to the val split
        log.info("split=test: %s has no test labels; writing submission.csv%s", where,
                 "" if cfg.get("labels_csv") else " (add labels_csv=<Id,Category file> to score it)")
    else:
        evaluate_stage = trainer.test if split == "test" else trainer.validate
        (scores,) = evaluate_stage(task, datamodule=dm, verbose=False)
        metrics = {k: float(v) for k, v in scores.items()}
        if trainer.is_global_zero:
            metrics.update(task.write_outputs(out_dir, split, dm)[0])
    if unlabelled_test:
        probs = submit_test_split(task, trainer, dm, out_dir / "submission.csv")
        if probs is not None and cfg.get("labels_csv"):
            metrics.update(score_against_key(dm.splits["test"].ids, probs, cfg.labels_csv))
    metrics["split"] = split
    if trainer.is_global_zero:  # under DDP every process gets the synced metrics; one writes them
        write_metrics(out_dir / "metrics.json", metrics)
    return metrics


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    metrics = evaluate(cfg)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float))
    return Outcome(lines=[shown], best_ckpt=str(cfg.ckpt_path), value=metrics)
