"""`python train.py`: build the datamodule, the network and its task from the config, fit the task's stages,
re-validate and test the best checkpoint, and write metrics.json."""

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
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from tincap.budget.deadline import BudgetDeadline
from tincap.budget.plan import plan_budget
from tincap.data.datamodule import ImageDataModule
from tincap.models import construct_network, plain_config
from tincap.models.initialisation import Initialisation
from tincap.runtime.callbacks import ReseedEachEpoch, StopOnNonFiniteLoss, Throughput
from tincap.runtime.checkpoint_io import AtomicCheckpointIO, checkpoint_epoch
from tincap.runtime.clock import machine, run_started
from tincap.runtime.console import config_leaves, metric_lines
from tincap.runtime.entry import Outcome, hydra_entry, task_wrapper
from tincap.runtime.errors import InvalidInput, MissingInput
from tincap.runtime.rundir import save_config, write_metrics
from tincap.runtime.trackers import RunTracker
from tincap.tasks.stages import best_checkpoint, fit_stages
from tincap.tasks.task import Task

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Every `_target_` entry of a callbacks/logger group (entries set to null are switched off)."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def flat_config(cfg: DictConfig, sep: str = "/") -> dict[str, Any]:
    """Scalar leaves of the config as 'a/b/c' keys, for TensorBoard's hyper-parameter table ('a.b.c' for trackers)."""
    return {key: hyper_parameter(value) for key, value in config_leaves(cfg, sep).items() if value != {}}


def hyper_parameter(value: Any) -> Any:
    """A config leaf as a logger takes it: scalars as they are, null as "null", anything else as text."""
    if isinstance(value, (int, float, str, bool)):
        return value
    if value is None:
        return "null"
    if isinstance(value, list) and all(isinstance(v, (int, float, str, bool)) for v in value):
        return ", ".join(map(str, value))  # e.g. tags, shown as the report shows them
    return str(value)


def build_trainer(
    cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Logger], validate: bool = True
) -> L.Trainer:
    """The configured trainer; without a validation split (`validate=False`) its validation loop is switched off."""
    no_val = {} if validate else {"limit_val_batches": 0}  # which also skips Lightning's sanity check
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                   plugins=[AtomicCheckpointIO()], **no_val)


def has_validation(cfg: DictConfig, datamodule: ImageDataModule) -> bool:
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


def build_task(cfg: DictConfig, datamodule: ImageDataModule) -> tuple[Task, str]:
    """The task around a new, initialised network, with the datamodule set to feed it; and the weights' origin."""
    task_class = hydra.utils.get_class(cfg.task._target_)
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise InvalidInput(f"task._target_={cfg.task._target_} is not a tincap.tasks.task.Task")
    if not isinstance(datamodule, task_class.data_type):
        raise InvalidInput(f"{task_class.__name__} trains on {task_class.data_type.__name__} data, but data is "
                           f"{type(datamodule).__name__}; choose data that fits the task (or another task)")
    model_cfg = plain_config(cfg.model)
    net = construct_network(model_cfg, datamodule.num_classes)
    init: Initialisation = hydra.utils.instantiate(cfg.init)
    origin = init.apply(net, model_cfg, datamodule)
    scheduler = hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") and "_target_" in cfg.scheduler else None
    task = hydra.utils.instantiate(
        cfg.task,
        net=net,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=scheduler,
        model_cfg=model_cfg,
        data_info={**datamodule.describe(), "data_cfg": OmegaConf.to_container(cfg.data, resolve=True)},
        **datamodule.task_inputs(),
        _recursive_=False,
    )
    return task, origin


def build_run(cfg: DictConfig) -> tuple[ImageDataModule, Task, str, bool]:
    """What a config trains: its datamodule, its task around a new network, the weights' origin, and whether there is
    a validation split."""
    datamodule: ImageDataModule = hydra.utils.instantiate(cfg.data, seed=cfg.seed)
    task, init = build_task(cfg, datamodule)
    return datamodule, task, init, has_validation(cfg, datamodule)


def measured_run(cfg: DictConfig) -> tuple[ImageDataModule, Task, bool]:
    """build_run for a time budget's measuring fit."""
    datamodule, task, _, validate = build_run(cfg)
    return datamodule, task, validate


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
    log.info("resuming from %s, after epoch %d", ckpt, checkpoint_epoch(ckpt))
    return str(ckpt)


def fitted_epochs(trainer: L.Trainer) -> int:
    """Epochs fitted. Under ddp_spawn the loops ran in the spawned processes, so their count comes from last.ckpt."""
    ckpt = trainer.checkpoint_callback
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher) and ckpt is not None:
        last = Path(ckpt.dirpath) / "last.ckpt"
        if last.is_file():
            return checkpoint_epoch(last)
    return trainer.current_epoch


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit, re-validate the best checkpoint, test it, and write metrics.json; returns (metrics, objects)."""
    run_dir = Path(cfg.paths.output_dir)
    started = run_started()
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    plan = plan_budget(cfg, run_dir, started, measured_run)
    if plan is not None:
        L.seed_everything(cfg.seed, workers=True)  # the measuring fit drew random numbers: start as without a budget
    if rank_zero_only.rank == 0 and (plan is not None or cfg.get("budget_sizes")):
        save_config(cfg, run_dir, header=plan.summary() if plan is not None else None)  # the size and epochs chosen

    loggers = instantiate_all(cfg.get("logger"))
    datamodule, task, init, validate = build_run(cfg)
    deadline = BudgetDeadline(plan.deadline, plan.end_s) if plan is not None and not cfg.get("resume") else None
    # the guard first: under DDP its per-epoch agreement must come before the progress bar, which gathers metrics on
    # rank 0 only, so that every process calls the collectives in the same order
    callbacks = [*([deadline] if deadline else []), *instantiate_all(cfg.get("callbacks")), ReseedEachEpoch(cfg.seed),
                 StopOnNonFiniteLoss()]
    trainer = build_trainer(cfg, callbacks, loggers, validate)
    trackers = [lg for lg in trainer.loggers if isinstance(lg, RunTracker)]  # none under fast_dev_run
    params = flat_config(cfg, sep=".") if trackers else {}  # dotted as on the command line: optimizer.lr
    for tracker in trackers:
        tracker.log_config(params)

    fit_started = time.perf_counter()
    fit_stages(trainer, task, datamodule, resume_checkpoint(cfg))
    fit_s = time.perf_counter() - fit_started
    best = best_checkpoint(trainer)
    if best:
        log.info("scoring the best checkpoint, %s", Path(best).name)
    metrics: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    if validate:
        (val,) = trainer.validate(task, datamodule=datamodule, ckpt_path=best, verbose=False)
        metrics.update(val)
        if trainer.is_global_zero and "val" in task.output_stages:
            outputs = task.write_outputs(run_dir, "val", datamodule)
            metrics.update(outputs.metrics)
            figures = outputs.figures
    if cfg.get("test"):
        if datamodule.has_labels("test"):
            (test,) = trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)
            metrics.update(test)
            if trainer.is_global_zero and "test" in task.output_stages:
                metrics.update(task.write_outputs(run_dir, "test", datamodule).metrics)
        elif "test" in datamodule.splits:
            metrics.update(task.write_predictions(trainer, datamodule, run_dir, ckpt_path=best))

    throughput = next((c for c in callbacks if isinstance(c, Throughput)), None)
    metrics.update(
        {
            "init": init,
            "epochs": fitted_epochs(trainer),
            "fit_s": round(fit_s, 2),
            "params": sum(p.numel() for p in task.net.parameters()),
            "train/img_per_s": round(throughput.img_per_s, 1) if throughput else None,
            "machine": machine(str(cfg.trainer.get("accelerator", "cpu"))),
            **(plan.metrics() if plan is not None else {}),
            **({"budget/cut_at_epoch": deadline.cut_at_epoch} if deadline is not None else {}),
        }
    )
    metrics = {k: float(v) if isinstance(v, (torch.Tensor, np.floating)) else v for k, v in metrics.items()}

    tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if trainer.is_global_zero:
        metrics["wall_s"] = round(time.time() - started, 1)  # from launch (a sweep job: from its start)
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
    """Train; print the scores; hand the swept metric back to Hydra's sweeper."""
    metrics, objects = train(cfg)
    value = metrics.get(cfg.get("optimized_metric"))
    return Outcome(lines=metric_lines(metrics), best_ckpt=objects["best_ckpt"], tb_dir=objects["tb_dir"],
                   value=None if value is None else float(value))


main = hydra_entry("train", run)
