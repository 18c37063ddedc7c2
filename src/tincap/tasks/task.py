"""The contract between a task and the commands: what every task offers, so that train.py and eval.py run a
classifier, a captioner or a task of your own without knowing which one it is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import lightning as L

from tincap.data.datamodule import ImageDataModule
from tincap.models import rebuild_network
from tincap.models.backbone import Backbone
from tincap.runtime.errors import InvalidInput

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# the key under which a checkpoint records the class of the task that wrote it ("package.module.ClassName")
TASK_CLASS_KEY = "tincap_task_class"

V = TypeVar("V")


@dataclass(frozen=True)
class FitStage:
    """One `trainer.fit` of a task's training: its name, how many epochs it adds, what the task does as it begins
    (given the best checkpoint of the stage before, or None), and the config key that sets its epochs (which a time
    budget rewrites)."""

    name: str
    epochs: int | None = None  # None: the trainer's own max_epochs (the first stage only)
    begin: Callable[[str | None], None] | None = None
    epochs_key: str = "trainer.max_epochs"


@dataclass(frozen=True)
class StageOutputs:
    """What a task wrote after one evaluated split: metrics for metrics.json, figures (already saved as
    <name>.png in the run directory) for TensorBoard and the trackers."""

    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)


class Task(L.LightningModule, ABC):
    """A LightningModule that keeps tincap's task contract.

    Subclasses are built by Hydra from `conf/task/*.yaml` with `net`, `optimizer`, `scheduler`, `model_cfg` and
    `data_info` (plus what their datamodule's `task_inputs()` gives), and save those configs as hyper-parameters, so
    `from_checkpoint` can rebuild them from the file alone.
    """

    # the datamodules the task trains and evaluates on
    data_type: ClassVar[type[ImageDataModule]] = ImageDataModule
    # the evaluated splits whose files (write_outputs) a training run writes
    output_stages: ClassVar[tuple[str, ...]] = ("val", "test")
    # the settings eval.py may override for one evaluation (`task.<name>=...`), set by `set_evaluation`
    evaluation_settings: ClassVar[tuple[str, ...]] = ()

    net: Backbone

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the task's class, which `tincap.tasks.loading.load_task` rebuilds the checkpoint with."""
        checkpoint[TASK_CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], path: Path, key: str = "ckpt_path") -> Task:
        """The task of a checkpoint, rebuilt from its hyper-parameters and loaded with its weights."""
        hparams = ckpt["hyper_parameters"]
        inputs = cls.checkpoint_inputs(ckpt, path, key)
        info = hparams.get("data_info") or {}
        if not hparams.get("model_cfg") or "num_classes" not in info:
            raise InvalidInput(f"{key}={path} is not a checkpoint of a python train.py run (no model_cfg or "
                               "data_info.num_classes inside); expected a checkpoints/*.ckpt file")
        task = cls(net=rebuild_network(hparams["model_cfg"], info["num_classes"]), optimizer=None, **inputs, **hparams)
        task.load_state_dict(ckpt["state_dict"])
        return task

    @classmethod
    def checkpoint_inputs(cls, ckpt: dict[str, Any], path: Path, key: str) -> dict[str, Any]:
        """What the task is built with besides its hyper-parameters, read from the checkpoint (none by default)."""
        return {}

    def fit_stages(self) -> list[FitStage]:
        """The fits of one training run, in order; most tasks have one."""
        return [FitStage("fit")]

    @property
    def data_info(self) -> dict[str, Any]:
        """What the datamodule said about the data when the task was built (datamodule.describe())."""
        return dict(self.hparams.get("data_info") or {})

    def data_settings(self) -> dict[str, Any]:
        """The data.* values that evaluating on other data must keep: the preprocessing the network was trained with."""
        info = self.data_info
        return {"image_size": info["image_size"], "mean": info["mean"], "std": info["std"]}

    def adopt_data(self, datamodule: ImageDataModule, source: str) -> None:
        """Check (and set up) a datamodule this trained task is to be evaluated on; refuse one it cannot read.
        `source` names the checkpoint in messages (ckpt_path=...)."""

    def override_evaluation(self, settings: Mapping[str, Any]) -> None:
        """eval.py's `task.<name>=value` overrides: each must be one of `evaluation_settings` (None keeps the
        checkpoint's value)."""
        for name, value in settings.items():
            if value is None:
                continue
            if name not in self.evaluation_settings:
                kind = type(self).__name__
                known = ", ".join(f"task.{k}" for k in self.evaluation_settings) or "none"
                raise InvalidInput(f"task.{name}={value}: a {kind} checkpoint has no such evaluation setting (it has "
                                   f"{known}); drop task.{name}")
            self.set_evaluation(name, value)

    def set_evaluation(self, name: str, value: Any) -> None:
        """Set one of `evaluation_settings`; tasks that declare settings override this."""
        raise NotImplementedError(f"{type(self).__name__} declares the evaluation setting {name} but does not set it")

    @abstractmethod
    def write_outputs(self, out_dir: Path, stage: str, datamodule: ImageDataModule) -> StageOutputs:
        """Write the files of the split `stage` just evaluated (validate or test); rank 0 only."""

    def write_predictions(self, trainer: L.Trainer, datamodule: ImageDataModule, out_dir: Path,
                          ckpt_path: str | None = None, answer_key: str | None = None) -> dict[str, float]:
        """Outputs of an unlabelled test split (a Kaggle submission, say), scored against `answer_key` when given;
        returns their metrics. The default: the task writes none."""
        return {}


def for_task(registry: Mapping[type[Task], V], task: Task) -> V | None:
    """What a registry keyed by task classes (export's graphs, demo's pages) holds for `task`: its own class's entry,
    else the nearest base class's; None for a kind of task the registry does not know."""
    return next((registry[cls] for cls in type(task).__mro__ if cls in registry), None)
