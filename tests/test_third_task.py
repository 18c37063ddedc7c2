"""A third kind of task, which no tincap module knows: train.py trains it and eval.py scores it through the task
contract alone (`tincap.tasks.task.Task`), its config in a folder of the user's own on Hydra's search path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from scripts import closing, run
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from tincap.data.classification import ClassificationDataModule
from tincap.data.shapes import COLOURS, SHAPES
from tincap.tasks.task import StageOutputs, Task

TESTS = Path(__file__).resolve().parent


class ColourTask(Task):
    """Which colour a generated shape has (its class is <colour>_<shape>), from the backbone's pooled features through
    a head of its own."""

    data_type = ClassificationDataModule

    def __init__(self, net: nn.Module, optimizer: Any, scheduler: Any = None, model_cfg: dict | None = None,
                 data_info: dict | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.colour_head = nn.Linear(net.feature_dim, len(COLOURS))
        self.optimizer_factory = optimizer
        self.accuracy = nn.ModuleDict({stage: MulticlassAccuracy(len(COLOURS)) for stage in ("val", "test")})

    def forward(self, x: Tensor) -> Tensor:
        return self.colour_head(self.net.forward_features(x).mean((2, 3)))  # (N, colours)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y // len(SHAPES))
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def _evaluate(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        self.accuracy[stage](self(x), y // len(SHAPES))
        self.log(f"{stage}/colour_acc", self.accuracy[stage], on_step=False, on_epoch=True, batch_size=len(x))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())

    def write_outputs(self, out_dir: Path, stage: str, datamodule: ClassificationDataModule) -> StageOutputs:
        (out_dir / f"colours_{stage}.txt").write_text("\n".join(COLOURS) + "\n")
        return StageOutputs(metrics={f"{stage}/colours": float(len(COLOURS))})


def test_a_task_no_tincap_module_knows_trains_with_train_py_and_scores_with_eval_py(tmp_path: Path) -> None:
    conf = tmp_path / "my_conf" / "task"
    conf.mkdir(parents=True)
    (conf / "colour.yaml").write_text("_target_: test_third_task.ColourTask\n")
    env = {"PYTHONPATH": str(TESTS)}
    common = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}",
              "trainer.precision=32-true"]
    trained = run("train.py", "task=colour", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "data=shapes",
                  "data.n_per_class=20", "model.widths=[16,32]", "optimizer.lr=0.05", "trainer.max_epochs=3",
                  "optimized_metric=val/colour_acc", *common, env_extra=env)
    best = Path(closing(trained)["best checkpoint"])
    run_dir = Path(closing(trained)["Run dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/colour_acc"] > 0.5  # 5 colours: chance is 0.2
    assert metrics["test/colours"] == 5
    assert (run_dir / "colours_test.txt").is_file() and (run_dir / "colours_val.txt").is_file()
    assert "test: colour_acc" in trained.stdout

    scored = run("eval.py", f"ckpt_path={best}", *common, env_extra=env)
    out = Path(closing(scored)["Run dir"])
    again = json.loads((out / "metrics.json").read_text())
    assert again["split"] == "test" and again["test/colour_acc"] == metrics["test/colour_acc"]  # the same weights, data
    assert (out / "colours_test.txt").is_file()
