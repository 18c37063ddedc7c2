"""Every option of every config group composes, and what it describes can be instantiated."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import hydra
import pytest
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from omegaconf import DictConfig, OmegaConf, open_dict

from tincap.commands.train import instantiate_all
from tincap.models.initialisation import build_network
from tincap.runtime import resolvers
from tincap.runtime.errors import InvalidInput
from tincap.runtime.renames import RENAMED_OPTIONS
from tincap.budget.plan import apply_size, budget_sizes, select_size
from tincap.runtime.resolvers import by_precision
from tincap.runtime.trainers import make_trainer
from tincap.tasks.self_critical import ScstSettings

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf a config file sets; lists, null and empty dicts are leaves."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    found: dict[str, Any] = {}
    for key, value in node.items():
        found.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def file_settings(group: str, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The leaves a group option sets and the group options it picks, those of options it extends included
    (its own values win, as `_self_` comes last)."""
    path = CONF / group / f"{name}.yaml"
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    package = "" if "# @package _global_" in path.read_text() else group
    values: dict[str, Any] = {}
    choices: dict[str, str] = {}
    for entry in raw.pop("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            parent_values, parent_choices = file_settings(group, entry)
            values.update(parent_values)
            choices.update(parent_choices)
        elif isinstance(entry, dict):
            choices.update({key.removeprefix("override /"): option for key, option in entry.items()})
    for key, value in leaves(raw, package).items():
        values = {k: v for k, v in values.items() if not k.startswith(key + ".")}
        values[key] = value
    return values, choices


def at(container: dict[str, Any], dotted: str) -> Any:
    node: Any = container
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted} is not in the composed config"
        node = node[part]
    return node


def assert_sets(cfg: DictConfig, group: str, name: str) -> None:
    """Every value the option's file sets is in the composed config, and every group option it picks was chosen."""
    composed = OmegaConf.to_container(cfg, resolve=False)  # interpolations as written, as in the file
    values, choices = file_settings(group, name)
    assert values, f"{group}/{name}.yaml sets nothing"
    for key, value in values.items():
        assert at(composed, key) == value, f"{group}={name}: {key}"
    for sub, option in choices.items():
        assert cfg.hydra.runtime.choices[sub] == option, f"{group}={name}: {sub}"


def target_parameters(target: str) -> set[str] | None:
    """Keyword arguments a `_target_` takes (following **kwargs up the class hierarchy); None when it takes any."""
    obj = hydra.utils.get_object(target)
    names: set[str] = set()
    for owner in obj.__mro__ if inspect.isclass(obj) else [obj]:
        init = owner.__dict__.get("__init__") if inspect.isclass(obj) else owner
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return None


def unconsumed_keys(cfg: DictConfig) -> list[str]:
    """Keys under a `_target_` that its constructor does not take: set, but read by nothing (the model group included:
    it holds only what the network's constructor takes)."""
    dead: list[str] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        if "_target_" in node:
            taken = target_parameters(node["_target_"])
            dead.extend(f"{path}.{k}" for k in node if not k.startswith("_") and taken is not None and k not in taken)
        for key, value in node.items():
            walk(value, f"{path}.{key}" if path else key)

    walk({k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}, "")
    return dead


def test_groups_exist() -> None:
    for group in ("data", "model", "init", "task", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths",
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
    assert {type(c).__name__ for c in callbacks} >= {"BestAndLastCheckpoint", "EarlyStopping", "RichProgressBar"}


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose_to_what_they_set(compose_train, experiment: str) -> None:
    cfg = compose_train(f"experiment={experiment}")
    assert cfg.task_name == experiment  # its runs go to outputs/<experiment>/
    assert cfg.hydra.runtime.choices.experiment == experiment
    assert "_target_" in cfg.data and "_target_" in cfg.model
    assert_sets(cfg, "experiment", experiment)
    assert experiment.split("_")[0] in cfg.tags  # the dataset is a tag, so report.py tables can be filtered by it
    assert unconsumed_keys(cfg) == []


# <data>_<model>[_<init>][_<variant>]: what it trains on, the network (a captioner's decoder), where its weights
# start when not from scratch, and what sets it apart from the experiment it extends
EXPERIMENT_NAME = re.compile(r"(shapes|tin30|cifar10|flickr8k|imagefolder)_(cnn|mlp|alexnet|resnet18|effnet|lstm|"
                             r"attention|transformer)(_(tin30|imagenet))?(_(aug|full|probe|scst))?")


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_names_follow_one_grammar(experiment: str) -> None:
    assert EXPERIMENT_NAME.fullmatch(experiment), f"{experiment} is not <data>_<model>[_<init>][_<variant>]"


def test_renamed_options_point_at_options_that_exist() -> None:
    for group, renamed in RENAMED_OPTIONS.items():
        for old, new in renamed.items():
            assert not (CONF / group / f"{old}.yaml").exists() and (CONF / group / f"{new}.yaml").is_file(), old


def test_experiment_deltas_reach_the_built_objects(compose_train) -> None:
    """Spot checks that the composed values are what gets built, not only what the config holds."""
    cfg = compose_train("experiment=tin30_cnn_aug", "budget_size=half")
    apply_size(cfg, select_size(cfg, budget_sizes(cfg)))
    assert cfg.data.augment == {"crop_padding": 4, "flip": True, "color_jitter": 0.0, "trivial_augment": True,
                                "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_prob": 0.5}  # tin30 + tin30_cnn + own + size
    assert cfg.model.dropout == 0.3 and list(cfg.model.widths) == [32, 64, 128, 256]
    net = build_network(cfg.model, num_classes=30)
    opt = hydra.utils.instantiate(cfg.optimizer)(net.parameters())
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["lr"] == 0.1 and opt.defaults["weight_decay"] == 5.0e-4 and opt.defaults["nesterov"]
    assert cfg.scheduler._target_.endswith("onecycle") and cfg.scheduler.pct_start == 0.25
    cfg = compose_train("experiment=cifar10_cnn")
    assert cfg.init.weights_path is None  # the control of cifar10_cnn_tin30: from scratch
    assert cfg.data._target_ == "tincap.data.cifar10.CIFAR10" and cfg.data.image_size == 32
    cfg = compose_train("experiment=flickr8k_attention_imagenet_scst", "task.scst.init_from=xe.ckpt")
    assert ScstSettings(**OmegaConf.to_container(cfg.task.scst, resolve=True)) == ScstSettings(
        epochs=2, init_from="xe.ckpt", temperature=0.5, baseline="mean", lr=5.0e-5, ce_weight=0.05)
    assert cfg.data.batch_size == 8 and cfg.init.weights_path.endswith("tf_efficientnet_lite0_imagenet.pth")


@pytest.mark.parametrize(("size", "precision", "widths", "mix_prob", "decay"),
                         [("half", "32-true", [32, 64, 128, 256], 0.5, 5.0e-4),
                          ("wide", "bf16-mixed", [48, 96, 192, 384], 1.0, 1.0e-3)])
def test_tin30_cnn_sizes_build_what_they_name(compose_train, size: str, precision: str, widths: list[int],
                                              mix_prob: float, decay: float) -> None:
    """experiment=tin30_cnn's budget_sizes: each sets the network's widths, its mixing and its weight decay; the
    experiments that load its weights build the same network as the size each precision usually buys (model=cnn_scaled)."""
    cfg = compose_train("experiment=tin30_cnn", f"budget_size={size}", f"trainer.precision={precision}")
    assert cfg.budget == "30m" and [s.name for s in budget_sizes(cfg)] == ["wide", "half"]
    apply_size(cfg, select_size(cfg, budget_sizes(cfg)))
    assert hydra.utils.instantiate(cfg.data).augment["mix_prob"] == mix_prob
    net = build_network(cfg.model, num_classes=30)
    assert hydra.utils.instantiate(cfg.optimizer)(net.parameters()).defaults["weight_decay"] == decay
    assert list(cfg.model.widths) == widths and net.head.in_features == widths[-1]
    for experiment in ("cifar10_cnn_tin30", "flickr8k_lstm_tin30"):
        loading = compose_train(f"experiment={experiment}", f"trainer.precision={precision}", "init.weights_path=null")
        assert list(OmegaConf.to_container(loading.model, resolve=True)["widths"]) == widths


def test_by_precision_tells_16_bit_from_32_bit_floats() -> None:
    picked = [by_precision(p, "full", "half") for p in ("32-true", "32", 32, "64-true", "bf16-mixed", "bf16", "16-mixed")]
    assert picked == ["full"] * 4 + ["half"] * 3
    with pytest.raises(InvalidInput, match=r"trainer.precision=fp8: expected a Lightning precision"):
        by_precision("fp8", 36, 50)


@pytest.mark.parametrize(("precision", "native", "warned"),
                         [("bf16-mixed", False, True), ("bf16-mixed", True, False), ("32-true", False, False)])
def test_trainer_warns_of_bf16_emulated_on_the_cpu(monkeypatch, caplog, precision: str, native: bool,
                                                  warned: bool) -> None:
    """A user who forces bf16 on a CPU that emulates it is told why every step is slow and that the recipe grew."""
    monkeypatch.setattr(resolvers, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level("WARNING", logger="tincap.runtime.trainers"):
        make_trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_progress_bar=False)
    said = [r.getMessage() for r in caplog.records if r.name == "tincap.runtime.trainers"]
    assert bool(said) == warned
    assert not said or said[0].startswith(f"trainer.precision={precision} on a CPU without native bf16")


DEBUG_SETS = {  # what each debug option must leave in the composed config, stated again so a no-op merge fails
    "fdr": {"trainer.fast_dev_run": True, "trainer.max_epochs": 1, "trainer.precision": 32, "logger": None,
            "callbacks.model_checkpoint": None, "callbacks.early_stopping": None, "callbacks.lr_monitor": None},
    "limit": {"trainer.max_epochs": 2, "trainer.limit_train_batches": 5, "trainer.limit_val_batches": 3,
              "trainer.limit_test_batches": 3},
    "overfit": {"trainer.max_epochs": 30, "trainer.overfit_batches": 3, "data.augment": None,
                "callbacks.early_stopping": None},
}


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_options_compose_to_what_they_set(compose_train, debug: str) -> None:
    assert set(DEBUG_SETS) == set(options("debug"))
    # on top of an experiment: debug comes last in the defaults list, so it wins over the experiment's values
    cfg = compose_train("experiment=tin30_cnn_aug", f"debug={debug}")
    assert cfg.task_name == "debug"
    assert_sets(cfg, "debug", debug)
    composed = OmegaConf.to_container(cfg, resolve=False)
    for key, value in DEBUG_SETS[debug].items():
        assert at(composed, key) == value, key
    callbacks = {type(c) for c in instantiate_all(cfg.callbacks)}
    if debug in ("fdr", "overfit"):
        assert EarlyStopping not in callbacks
    if debug == "fdr":
        assert not callbacks & {ModelCheckpoint, LearningRateMonitor} and instantiate_all(cfg.logger) == []
    assert unconsumed_keys(cfg) == []


@pytest.mark.parametrize("debug", [None, "overfit"])
def test_overfit_batches_are_not_augmented(compose_train, debug: str | None) -> None:
    """The training batches of tin30_cnn_aug (crop, flip, TrivialAugment, MixUp/CutMix on every batch) on tiny
    generated shapes: augmented without a debug option, exactly the evaluation batches with debug=overfit."""
    cfg = compose_train("experiment=tin30_cnn_aug", "data=shapes", "data.n_per_class=4", "data.image_size=16",
                        *([f"debug={debug}"] if debug else []))
    dm = hydra.utils.instantiate(cfg.data)
    first = list(range(16))
    x_train, y_train = dm.dataset("train", train=True).__getitems__(first)
    x_eval, y_eval = dm.dataset("train", train=False).__getitems__(first)
    if debug is None:
        assert y_train.ndim == 2 and not torch.equal(x_train, x_eval)  # the check below can fail
    else:
        assert torch.equal(x_train, x_eval) and torch.equal(y_train, y_eval)


@pytest.mark.parametrize(
    ("trainer", "gpus"),
    [
        (["trainer=cpu"], None),
        (["trainer=default"], None),
        (["trainer=gpu", "trainer.devices=2"], 2),
        (["trainer=ddp", "trainer.accelerator=cuda", "trainer.devices=4", "trainer.num_nodes=2"], 4),
        (["trainer=ddp"], 2),  # accelerator auto: ask for the GPUs, auto then uses them
        (["trainer=ddp", "trainer.accelerator=cpu"], None),
    ],
)
def test_slurm_asks_for_gpus_only_for_a_gpu_trainer(compose_train, trainer: list[str], gpus: int | None) -> None:
    """`python train.py -m hydra/launcher=slurm trainer=...`: a CPU trainer asks SLURM for no GPU at all
    (null: submitit writes no --gpus-per-node line), a GPU trainer for trainer.devices per node."""
    cfg = compose_train("hydra/launcher=slurm", *trainer)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == gpus
    assert launcher.tasks_per_node == cfg.trainer.devices  # one task per device, as Lightning expects under SLURM
    assert launcher.nodes == cfg.trainer.get("num_nodes", 1)


def test_slurm_refuses_a_gpu_trainer_without_a_device_count(compose_train) -> None:
    cfg = compose_train("hydra/launcher=slurm", "trainer=gpu", "trainer.devices=auto")
    with pytest.raises(Exception, match=r"trainer.devices=auto is not a count"):
        _ = cfg.hydra.launcher.gpus_per_node


def test_data_options_compose(compose_train) -> None:
    for name in options("data"):
        cfg = compose_train(f"data={name}")
        assert cfg.data._target_.startswith("tincap.data.")
        assert_sets(cfg, "data", name)
        assert unconsumed_keys(cfg) == []
