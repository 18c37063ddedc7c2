"""Classification as a task: loss, metrics, optimiser and the best epoch's figures around a plain network."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies.launchers.multiprocessing import (
    _MultiProcessingLauncher,
)
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from tincap.data.classification import ClassificationDataModule
from tincap.evaluation.classification import write_classification_files
from tincap.evaluation.submission import read_id_category_csv, write_submission
from tincap.models.backbone import Backbone
from tincap.models.freezing import keep_frozen_norms_in_eval
from tincap.runtime.errors import InvalidInput
from tincap.tasks.gathering import gather_by_index
from tincap.tasks.schedules import optimizer_config, scale_group_lrs
from tincap.tasks.task import StageOutputs, Task

log = logging.getLogger(__name__)


def eval_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes, average="macro"),
        },
        # shared-state groups would merge top-5 accuracy with F1 (same state shapes, different top_k)
        compute_groups=False,
    )


def param_groups(net: Backbone, weight_decay_norm_bias: bool, backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only (unless asked to decay norms and biases too); the backbone (all but
    the head) learns at `backbone_lr_scale` x the optimizer's rate, as fine-tuning a pretrained network wants."""
    head = {id(p) for p in net.head.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in net.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in head, p.ndim > 1 or weight_decay_norm_bias), []).append(p)
    return [
        {"params": params, "lr_scale": 1.0 if is_head else backbone_lr_scale, **({} if decay else {"weight_decay": 0.0})}
        for (is_head, decay), params in sorted(groups.items())
    ]


def score_against_key(ids: list[str], probs: Tensor, labels_csv: str | Path) -> dict[str, float]:
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


TTA_MODES = ("none", "flip")


def check_tta(mode: str, key: str) -> str:
    """A test-time augmentation mode, refused with the key that set it when unknown."""
    if mode not in TTA_MODES:
        raise InvalidInput(f"{key}={mode}: expected one of {', '.join(TTA_MODES)}")
    return mode


class Classifier(Task):
    """Owns cross-entropy, torchmetrics, optimiser/scheduler; the network stays a plain nn.Module (`self.net`)."""

    data_type = ClassificationDataModule
    output_stages: ClassVar[tuple[str, ...]] = ("val",)  # figures of the validation split; eval.py writes any split's
    evaluation_settings: ClassVar[tuple[str, ...]] = ("tta",)

    def __init__(
        self,
        net: Backbone,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        scheduler: Callable[..., dict[str, Any]] | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = True,
        weight_decay_norm_bias: bool = False,
        backbone_lr_scale: float = 1.0,
        tta: str = "none",
        model_cfg: dict[str, Any] | None = None,
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = net.head.out_features
        self.tta = check_tta(tta, "task.tta")
        self.train_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_metrics = eval_metrics(self.num_classes).clone(prefix="val/")
        self.test_metrics = eval_metrics(self.num_classes).clone(prefix="test/")
        self.val_acc_no_tta = MulticlassAccuracy(self.num_classes, average="micro")
        self.test_acc_no_tta = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_confusion = MulticlassConfusionMatrix(self.num_classes)
        self.test_confusion = MulticlassConfusionMatrix(self.num_classes)
        # image-weighted and gathered across processes, so DDP shares of unequal size average like one process
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self._outputs: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": [], "predict": []}
        # last run of each stage, every process's images in dataset order: values, confusion, index, probs, targets
        self.results: dict[str, dict[str, Any]] = {}
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    @property
    def class_names(self) -> list[str]:
        info = self.hparams.get("data_info") or {}
        return list(info.get("class_names") or [str(i) for i in range(self.num_classes)])

    def train(self, mode: bool = True) -> Classifier:
        """A frozen backbone's BatchNorm layers stay in eval mode, so their running statistics never change."""
        super().train(mode)
        keep_frozen_norms_in_eval(self.net)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def use_tta(self, mode: str | None, key: str = "tta") -> None:
        """An entry script's test-time augmentation override; None keeps the checkpoint's task.tta."""
        if mode is not None:
            self.tta = check_tta(str(mode), key)

    def set_evaluation(self, name: str, value: Any) -> None:
        self.use_tta(value, f"task.{name}")

    def adopt_data(self, datamodule: ClassificationDataModule, source: str) -> None:
        """Refuse data of another label set: the head's outputs are the checkpoint's classes, in its order."""
        names = self.class_names
        if datamodule.class_names != names:
            raise InvalidInput(
                f"{source} was trained on {len(names)} classes {names[:3]}..., but {datamodule.root} has "
                f"{datamodule.num_classes} classes {datamodule.class_names[:3]}...; evaluate on the same label set")

    def predict_logits(self, x: Tensor, plain: Tensor | None = None) -> Tensor:
        """Logits for evaluation and prediction: with `tta=flip`, the mean of the image's (`plain`, when already
        computed) and its mirror's."""
        logits = self(x).float() if plain is None else plain
        if self.tta == "flip":
            logits = (logits + self(x.flip(-1)).float()) / 2
        return logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        hard = y.argmax(1) if y.ndim == 2 else y  # mixup/cutmix give soft targets
        self.train_acc(logits.detach(), hard)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def _eval_step(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        plain = self(x).float()
        logits = self.predict_logits(x, plain)
        if self.tta != "none":  # what the augmentation bought, at no extra cost
            plain_acc = self.val_acc_no_tta if stage == "val" else self.test_acc_no_tta
            plain_acc(plain, y)
            self.log(f"{stage}/acc_no_tta", plain_acc, on_step=False, on_epoch=True, batch_size=len(x))
        loss = F.cross_entropy(logits, y)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        confusion = self.val_confusion if stage == "val" else self.test_confusion
        metrics.update(logits, y)
        confusion.update(logits, y)
        self._outputs[stage].append((logits.softmax(1).cpu(), y.cpu()))
        mean_loss = self.val_loss if stage == "val" else self.test_loss
        mean_loss.update(loss, weight=len(x))
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _local_index(self, stage: str, n: int) -> Tensor:
        """The dataset index of each of this process's first `n` images of `stage`, in the order its sampler gave them."""
        loaders = getattr(self.trainer, f"{stage}_dataloaders")
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        # the batch sampler, not `loader.sampler`: to predict, Lightning moves the distributed sampler into it
        batches = loader.batch_sampler if loader.batch_sampler is not None else ([i] for i in loader.sampler)
        return torch.as_tensor([i for batch in batches for i in batch], dtype=torch.long)[:n]

    def _gathered(self, stage: str) -> dict[str, Tensor]:
        """The epoch's probabilities and targets of every process, in dataset order, each image once."""
        outputs, self._outputs[stage] = self._outputs[stage], []
        probs = torch.cat([o[0] for o in outputs]) if outputs else torch.empty(0, self.num_classes)
        targets = torch.cat([o[1] for o in outputs]) if outputs else torch.empty(0, dtype=torch.long)
        index, probs, targets = gather_by_index(self._local_index(stage, len(probs)), probs, targets)
        return {"index": index, "probs": probs, "targets": targets}

    def _collect(self, stage: str) -> dict[str, Any]:
        """Compute and log the epoch's metrics; return them with the confusion matrix and every process's probabilities."""
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        confusion = self.val_confusion if stage == "val" else self.test_confusion
        values = metrics.compute()
        self.log_dict(values, prog_bar=stage == "val")
        cm = confusion.compute().cpu()
        metrics.reset()
        confusion.reset()
        return {"values": {k: float(v) for k, v in values.items()}, "confusion": cm, **self._gathered(stage)}

    def on_validation_epoch_end(self) -> None:
        self.results["val"] = self._collect("val")

    def on_test_epoch_end(self) -> None:
        self.results["test"] = self._collect("test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        probs = self.predict_logits(x).softmax(1)
        self._outputs["predict"].append((probs.cpu(), y.cpu()))  # y is -1 for unlabelled images
        return probs

    def on_predict_epoch_end(self) -> None:
        self.results["predict"] = self._gathered("predict")

    def predict_in_order(self, trainer: L.Trainer, **predict_kwargs: Any) -> tuple[list[int], Tensor]:
        """Dataset indices and probabilities of every image `trainer.predict` sees, once each, from every process.

        Spawned processes cannot hand their results back, so under ddp_spawn the prediction runs here in one process."""
        if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
            trainer = L.Trainer(accelerator=trainer.accelerator, devices=1, precision=trainer.precision, logger=False,
                                enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
        trainer.predict(self, return_predictions=False, **predict_kwargs)
        result = self.results.pop("predict")
        return result["index"].tolist(), result["probs"]

    def write_outputs(self, out_dir: Path, stage: str, datamodule: ClassificationDataModule) -> StageOutputs:
        """confusion_matrix.png, roc.png and per_class.csv of an evaluated stage; the figures go to TensorBoard."""
        result = self.results.get(stage) or {}
        if "confusion" not in result or not len(result["targets"]):
            return StageOutputs()
        return StageOutputs(figures=write_classification_files(out_dir, result, self.class_names))

    def write_predictions(self, trainer: L.Trainer, datamodule: ClassificationDataModule, out_dir: Path,
                          ckpt_path: str | None = None, answer_key: str | None = None) -> dict[str, float]:
        """submission.csv of an unlabelled test split ("Id,Category", Kaggle's format), written once by rank 0; with
        `answer_key` (an "Id,Category" file), the top-1/top-5 accuracy of those predictions."""
        index, probs = self.predict_in_order(trainer, datamodule=datamodule, ckpt_path=ckpt_path)
        ids = datamodule.splits["test"].ids
        path = Path(out_dir) / "submission.csv"
        if len(index) < len(ids):  # fast_dev_run, limit_predict_batches
            log.warning("predicted %d of %d test images: no %s", len(index), len(ids), path.name)
            return {}
        if trainer.is_global_zero:
            write_submission(path, ids, probs.argmax(1).numpy())
        return score_against_key(ids, probs, answer_key) if answer_key else {}

    def configure_optimizers(self) -> Any:
        groups = param_groups(self.net, self.hparams.weight_decay_norm_bias, self.hparams.backbone_lr_scale)
        optimizer = scale_group_lrs(self.optimizer_factory(groups))
        return optimizer_config(self.trainer, optimizer, self.scheduler_factory)

