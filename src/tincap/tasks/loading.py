"""Rebuilding a trained task from its checkpoint alone: the checkpoint names the task's class, and that class rebuilds
itself (`Task.from_checkpoint`)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import hydra
from omegaconf import OmegaConf

from tincap.data.datamodule import ImageDataModule
from tincap.runtime.checkpoint_io import read_checkpoint
from tincap.runtime.errors import InvalidInput
from tincap.tasks.task import TASK_CLASS_KEY, Task

T = TypeVar("T", bound=Task)

# model-config keys that checkpoints written before the `init` group kept beside the constructor's
_LEGACY_INIT_KEYS = ("name", "weights_path", "freeze_backbone", "whiten_stem")
# what commands say to use a checkpoint of each kind with, when it is given to one that needs another kind
USES = {"Classifier": "eval.py, predict.py, explain.py, export.py or demo.py",
        "Captioner": "caption.py (captions), eval.py (scores), export.py or demo.py"}


def task_class(ckpt: dict[str, Any], path: Path, key: str) -> type[Task]:
    """The class that wrote a checkpoint: the one it records, imported; a tincap Task subclass or refused."""
    name = ckpt.get(TASK_CLASS_KEY) or _legacy_task_class(ckpt["hyper_parameters"])
    module_name, _, class_name = str(name).rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InvalidInput(f"{key}={path} was written by the task {name}, which cannot be imported here ({exc}); "
                           "install or put on PYTHONPATH the package that defines it") from None
    if not (isinstance(found, type) and issubclass(found, Task)):
        raise InvalidInput(f"{key}={path} names {name} as its task, which is not a tincap.tasks.task.Task")
    return found


def _legacy_task_class(hparams: dict[str, Any]) -> str:
    """Checkpoints written before the task class was recorded: a captioner's carries its decoder's config."""
    kind = "captioner.Captioner" if "decoder" in hparams else "classifier.Classifier"
    return f"tincap.tasks.{kind}"


def upgrade_legacy(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of an earlier tincap in today's layout: init keys out of the model config, the class count in
    data_info."""
    hparams = dict(ckpt["hyper_parameters"])
    if isinstance(hparams.get("model_cfg"), dict):
        hparams["model_cfg"] = {k: v for k, v in hparams["model_cfg"].items() if k not in _LEGACY_INIT_KEYS}
    info = hparams.get("data_info")
    if isinstance(info, dict) and "num_classes" not in info and info.get("class_names"):
        hparams["data_info"] = {**info, "num_classes": len(info["class_names"])}
    return {**ckpt, "hyper_parameters": hparams}


def load_task(path: str | Path, expected: type[T] = Task, key: str = "ckpt_path") -> T:
    """Rebuild the task of a checkpoint from the file alone; `expected` refuses a task of another kind."""
    path = Path(path).expanduser()
    ckpt = upgrade_legacy(read_checkpoint(path, key))
    cls = task_class(ckpt, path, key)
    if not issubclass(cls, expected):
        use = USES.get(cls.__name__, "the commands that take it")
        raise InvalidInput(f"{key}={path} is a {cls.__name__.lower()} checkpoint, but this command needs a "
                           f"{expected.__name__.lower()} checkpoint; use it with {use}")
    return cls.from_checkpoint(ckpt, path, key)


def datamodule_for(task: Task, data: Mapping[str, Any] | None, seed: int, source: str) -> ImageDataModule:
    """The data a trained task is evaluated on: `data` when it names a datamodule (`_target_`), else the dataset the
    checkpoint records with `data`'s values on top; preprocessed as the network was trained (the task's
    data_settings) and adopted by the task (its label set checked, its vocabulary loaded). `source` names the
    checkpoint in messages."""
    given = OmegaConf.to_container(OmegaConf.create(dict(data or {})), resolve=True)
    if "_target_" in given:
        data_cfg = given
    else:
        saved = task.data_info.get("data_cfg")
        if not saved:
            raise InvalidInput(f"{source} does not record its dataset; add data=tin30 (or cifar10, imagefolder, "
                               "shapes, captions) and data.root=...")
        data_cfg = OmegaConf.to_container(OmegaConf.merge(
            OmegaConf.create(saved), {k: v for k, v in given.items() if v is not None}), resolve=True)
    data_cfg = {**data_cfg, **task.data_settings()}
    datamodule = hydra.utils.instantiate(data_cfg, seed=seed)
    if not isinstance(datamodule, task.data_type):
        raise InvalidInput(f"{source} is a {type(task).__name__.lower()} checkpoint, which reads "
                           f"{task.data_type.__name__} data, but data is {data_cfg['_target_']}; choose a dataset of "
                           "that kind")
    task.adopt_data(datamodule, source)
    return datamodule
