"""Every option of every config group composes, and what it describes can be instantiated."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import open_dict

from tincap.models import build_network
from tincap.train import instantiate_all

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_exist() -> None:
    for group in ("data", "model", "task", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths",
                  "hydra", "experiment", "debug"):
        assert options(group), f"config group {group} has no options"


@pytest.mark.parametrize("name", options("model"))
def test_model_options_build(compose_train, name: str) -> None:
    cfg = compose_train(f"model={name}")
    net = build_network(cfg.model, num_classes=7)
    out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)
    assert net.head.out_features == 7


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizer_and_scheduler_options(compose_train, optimizer: str, scheduler: str) -> None:
    cfg = compose_train(f"optimizer={optimizer}", f"scheduler={scheduler}")
    net = build_network(cfg.model, num_classes=3)
    opt = hydra.utils.instantiate(cfg.optimizer)(net.parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    if not cfg.get("scheduler"):
        assert scheduler == "none"
        return
    sched = hydra.utils.instantiate(cfg.scheduler)(opt, total_steps=30, steps_per_epoch=10)
    assert sched["interval"] in ("step", "epoch")
    for _ in range(5):
        opt.step()
        sched["scheduler"].step(*([1.0] if "monitor" in sched else []))
    assert all(g["lr"] > 0 for g in opt.param_groups)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options(compose_train, trainer: str) -> None:
    cfg = compose_train(f"trainer={trainer}")
    with open_dict(cfg):
        if trainer in ("gpu",) and not torch.cuda.is_available():
            cfg.trainer.accelerator = "cpu"
        if trainer == "ddp":
            cfg.trainer.devices = 1
            cfg.trainer.strategy = "auto"
    t = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert t.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_and_callbacks(compose_train, logger: str) -> None:
    cfg = compose_train(f"logger={logger}")
    loggers = instantiate_all(cfg.logger)
    callbacks = instantiate_all(cfg.callbacks)
    assert loggers and callbacks
    assert {type(c).__name__ for c in callbacks} >= {"ModelCheckpoint", "EarlyStopping", "RichProgressBar"}


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(compose_train, experiment: str) -> None:
    cfg = compose_train(f"experiment={experiment}")
    assert cfg.task_name != "train"
    assert "_target_" in cfg.data and "_target_" in cfg.model


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_options_compose(compose_train, debug: str) -> None:
    cfg = compose_train(f"debug={debug}")
    assert cfg.task_name == "debug"


def test_data_options_compose(compose_train) -> None:
    for name in options("data"):
        cfg = compose_train(f"data={name}")
        assert cfg.data._target_.startswith("tincap.data.")
