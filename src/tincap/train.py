"""Turn a composed Hydra config into a training run: loggers (a missing tracker package fails first), datamodule,
model, callbacks, trainer, in that order."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.strategies.launchers.multiprocessing import (
    _MultiProcessingLauncher,
)
from omegaconf import DictConfig, OmegaConf

from tincap.callbacks import ReseedEachEpoch, StopOnNonFiniteLoss, Throughput
from tincap.checkpoint_eval import submit_test_split
from tincap.checkpoints import AtomicCheckpointIO, checkpoint_epoch
from tincap.data.base import ClassificationDataModule
from tincap.entry import Outcome, task_wrapper
from tincap.errors import InvalidInput, MissingInput
from tincap.models import construct_network, initialise_network, whiten_stem
from tincap.rundir import write_metrics
from tincap.tasks.captioner import Captioner
from tincap.trackers import RunTracker

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Every `_target_` entry of a callbacks/logger group (entries set to null are switched off)."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def flat_config(cfg: DictConfig, sep: str = "/") -> dict[str, Any]:
    """Scalar leaves of the config as 'a/b/c' keys, for TensorBoard's hyper-parameter table ('a.b.c' for trackers)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{sep}{k}" if prefix else str(k))
        elif isinstance(node, (int, float, str, bool)) or node is None:
            flat[prefix] = "null" if node is None else node
        elif isinstance(node, list) and all(isinstance(v, (int, float, str, bool)) for v in node):
            flat[prefix] = ", ".join(map(str, node))  # e.g. tags, shown as the report shows them
        else:
            flat[prefix] = str(node)

    for key in cfg:
        if key != "hydra":
            value = cfg[key]
            walk(OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value, str(key))
    return flat


def build_trainer(
    cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Logger], validate: bool = True
) -> L.Trainer:
    """The configured trainer; without a validation split (`validate=False`) its validation loop is switched off."""
    no_val = {} if validate else {"limit_val_batches": 0}  # which also skips Lightning's sanity check
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                   plugins=[AtomicCheckpointIO()], **no_val)


def has_validation(cfg: DictConfig, datamodule: L.LightningDataModule) -> bool:
    """False for a final fit on every labelled image (data.val_ratio=0), which then monitors nothing: checkpoints keep
    the last epoch and the test scores its weights. A monitored metric without a validation split is refused."""
    if datamodule.has_labels("val"):
        return True
    metric = cfg.get("optimized_metric")
    if metric or (cfg.get("callbacks") and cfg.callbacks.get("early_stopping")):
        refused = f"optimized_metric={metric} cannot be monitored" if metric else "callbacks.early_stopping cannot run"
        raise InvalidInput(
            f"data.val_ratio={cfg.data.get('val_ratio')} leaves {type(datamodule).__name__} no validation images, so "
            f"{refused}. For a final fit on every labelled image also set optimized_metric=null "
            "callbacks.early_stopping=null (the last epoch's weights are kept and tested); otherwise set "
            "data.val_ratio=0.1")
    return False


def build_task(cfg: DictConfig, datamodule: L.LightningDataModule) -> tuple[L.LightningModule, str]:
    """The task around a new network, with the datamodule set to feed it as its weights expect; and the weights' origin."""
    net = construct_network(cfg.model, datamodule.num_classes)
    init = initialise_network(net, cfg.model)
    datamodule.feed(net.input_spec, cfg.model.name)
    if cfg.model.get("whiten_stem"):
        if not isinstance(datamodule, ClassificationDataModule):
            raise InvalidInput(f"model.whiten_stem=true measures classification training images; {datamodule.name} "
                               "is a caption dataset. Set model.whiten_stem=false")
        init = whiten_stem(net, cfg.model.name, datamodule.first_epoch_pixels(), init)
    scheduler = hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") and "_target_" in cfg.scheduler else None
    return hydra.utils.instantiate(
        cfg.task,
        net=net,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=scheduler,
        model_cfg=OmegaConf.to_container(cfg.model, resolve=True),
        data_info={**datamodule.describe(), "data_cfg": OmegaConf.to_container(cfg.data, resolve=True)},
        **datamodule.task_inputs(),
        _recursive_=False,
    ), init


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The `last.ckpt` that `resume=<run_dir>` continues from (None for a fresh run)."""
    if not cfg.get("resume"):
        return None
    if Path(cfg.resume).resolve() != Path(cfg.paths.output_dir).resolve():
        raise RuntimeError(f"resume={cfg.resume} but the run writes to {cfg.paths.output_dir}: the ResumeInPlace "
                           "Hydra callback of conf/train.yaml (hydra.callbacks.resume) did not run")
    ckpt = Path(cfg.resume) / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise MissingInput(f"resume={cfg.resume}: {ckpt} not found; expected the directory of a run that saved "
                           "checkpoints/last.ckpt (a run stopped before its first epoch ended has none: start it anew)")
    return str(ckpt)


def fitted_epochs(trainer: L.Trainer) -> int:
    """Epochs fitted. Under ddp_spawn the loops ran in the spawned processes, so their count comes from last.ckpt."""
    ckpt = trainer.checkpoint_callback
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher) and ckpt is not None:
        last = Path(ckpt.dirpath) / "last.ckpt"
        if last.is_file():
            return checkpoint_epoch(last)
    return trainer.current_epoch


def self_critical_stage(trainer: L.Trainer, task: Captioner, datamodule: L.LightningDataModule,
                        xe_best: str | None) -> None:
    """task.scst.epochs of SCST after cross-entropy, in the same trainer: from the best cross-entropy checkpoint, with
    the epoch count, TensorBoard steps and best-checkpoint choice (the same validation metric) carried on."""
    task.begin_self_critical(xe_best)
    trainer.fit_loop.max_epochs = trainer.current_epoch + task.scst.epochs
    trainer.should_stop = False
    trainer.reload_dataloaders_every_n_epochs = 1  # the stage trains on image batches, not caption pairs
    trainer.fit(task, datamodule=datamodule)


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit, re-validate the best checkpoint, test it, and write metrics.json; returns (metrics, objects)."""
    run_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    loggers = instantiate_all(cfg.get("logger"))
    datamodule = hydra.utils.instantiate(cfg.data)
    task, init = build_task(cfg, datamodule)
    validate = has_validation(cfg, datamodule)
    callbacks = instantiate_all(cfg.get("callbacks")) + [ReseedEachEpoch(cfg.seed), StopOnNonFiniteLoss()]
    trainer = build_trainer(cfg, callbacks, loggers, validate)
    trackers = [lg for lg in trainer.loggers if isinstance(lg, RunTracker)]  # none under fast_dev_run
    params = flat_config(cfg, sep=".") if trackers else {}  # dotted as on the command line: optimizer.lr
    for tracker in trackers:
        tracker.log_config(params)

    scst_only = isinstance(task, Captioner) and task.self_critical  # task.scst.init_from: SCST from the start
    if scst_only:
        trainer.fit_loop.max_epochs = task.scst.epochs
    started = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg))
    fast = bool(cfg.trainer.get("fast_dev_run"))

    def best_checkpoint() -> str | None:
        return None if fast or trainer.checkpoint_callback is None else trainer.checkpoint_callback.best_model_path or None

    if isinstance(task, Captioner) and task.scst.epochs and not scst_only:
        self_critical_stage(trainer, task, datamodule, best_checkpoint())
    fit_s = time.perf_counter() - started
    best = best_checkpoint()
    metrics: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    if validate:
        (val,) = trainer.validate(task, datamodule=datamodule, ckpt_path=best, verbose=False)
        metrics.update(val)
        if trainer.is_global_zero:
            figures = task.write_outputs(run_dir, "val", datamodule)[1]
    if cfg.get("test"):
        if datamodule.has_labels("test"):
            (test,) = trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)
            metrics.update(test)
            if trainer.is_global_zero and "test" in task.output_stages:
                metrics.update(task.write_outputs(run_dir, "test", datamodule)[0])
        elif "test" in datamodule.splits:
            submit_test_split(task, trainer, datamodule, run_dir / "submission.csv", ckpt_path=best)

    throughput = next((c for c in callbacks if isinstance(c, Throughput)), None)
    metrics.update(
        {
            "init": init,
            "epochs": fitted_epochs(trainer),
            "fit_s": round(fit_s, 2),
            "params": sum(p.numel() for p in task.net.parameters()),
            "train/img_per_s": round(throughput.img_per_s, 1) if throughput else None,
        }
    )
    metrics = {k: float(v) if isinstance(v, (torch.Tensor, np.floating)) else v for k, v in metrics.items()}

    tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if trainer.is_global_zero:
        write_metrics(run_dir / "metrics.json", metrics)
        saved = [run_dir / f"{name}.png" for name in figures]  # as write_outputs saved them
        files = [p for p in (run_dir / "metrics.json", run_dir / "config.yaml") if p.is_file()]  # config: the wrapper's
        for tracker in trackers:
            tracker.finish([p for p in saved if p.is_file()], best, files)
        if tb is not None:
            for name, fig in figures.items():
                tb.experiment.add_figure(f"val/{name}", fig, global_step=trainer.global_step)
            numeric = {f"hp/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
            tb.log_hyperparams(flat_config(cfg), metrics=numeric)
            tb.experiment.flush()
    objects = {"datamodule": datamodule, "task": task, "trainer": trainer, "best_ckpt": best,
               "tb_dir": Path(tb.log_dir) if tb else None}
    return metrics, objects


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    """Train; hand the swept metric back to Hydra's sweeper."""
    metrics, objects = train(cfg)
    value = metrics.get(cfg.get("optimized_metric"))
    return Outcome(best_ckpt=objects["best_ckpt"], tb_dir=objects["tb_dir"],
                   value=None if value is None else float(value))
