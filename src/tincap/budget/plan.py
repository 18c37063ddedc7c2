"""`budget=30m`: the run measures its speed on its first steps, then fixes the epochs (and, from `budget_sizes`, the
network's size) that end the whole run within the budget, and records them so a run without a budget repeats it.

The record is `budget.json` in the run directory. A resumed run, and every DDP process besides rank 0, applies that
record instead of measuring again, so all of them train the same count.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from tincap.budget.calibration import Speed, measure_speed
from tincap.data.datamodule import ImageDataModule
from tincap.runtime.atomic import atomic_write_text
from tincap.runtime.clock import machine, slurm_time_left
from tincap.runtime.errors import InvalidInput, MissingInput
from tincap.tasks.task import Task

log = logging.getLogger(__name__)

RECORD = "budget.json"
_ABSENT = object()
# a long fit's steps run slower than the short measuring fit's median: each also logs and draws the progress bar
# (LOOP_STEP_S), and a machine warmed up by minutes of work runs a little slower (STEP_ALLOWANCE); see
# docs/guides/budget.md
STEP_ALLOWANCE = 1.03
LOOP_STEP_S = 0.002
OUTPUTS_S = 3.0  # the figures and files written after the test
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?")

# builds what a run trains from a config: its datamodule, its task, and whether it has a validation split
Builder = Callable[[DictConfig], tuple[ImageDataModule, Task, bool]]


def parse_duration(value: Any, key: str = "budget") -> float:
    """Seconds in a duration such as 30m, 90s or 1h30m."""
    text = str(value).strip().lower().replace(" ", "")
    match = _DURATION.fullmatch(text)
    if isinstance(value, bool) or not text or match is None or not any(match.groups()):
        raise InvalidInput(f"{key}={value}: expected a duration with its unit, such as 30m, 90s or 1h30m")
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise InvalidInput(f"{key}={value}: expected a duration above zero, such as 30m, 90s or 1h30m")
    return total


def duration_text(seconds: float) -> str:
    """A duration as people read it: 1 h 2 min, 12 min 30 s, 45 s."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


@dataclass(frozen=True)
class Size:
    """One entry of `budget_sizes`: the config values of one network size and the epochs it needs to be worth it."""

    name: str
    settings: dict[str, Any]
    min_epochs: int = 1
    max_epochs: int | None = None


def budget_sizes(cfg: DictConfig) -> list[Size]:
    """`budget_sizes` in order (widest first), checked."""
    sizes = []
    for name, entry in (cfg.get("budget_sizes") or {}).items():
        where = f"budget_sizes.{name}"
        if not isinstance(entry, DictConfig) or set(entry) - {"min_epochs", "max_epochs", "set"}:
            raise InvalidInput(f"{where}: expected {{min_epochs: N, max_epochs: N or null, set: {{section: {{key: value}}}}}}")
        least, most = entry.get("min_epochs", 1), entry.get("max_epochs")
        if not (isinstance(least, int) and least >= 1) or not (most is None or (isinstance(most, int) and most >= least)):
            raise InvalidInput(f"{where}: min_epochs={least}, max_epochs={most}: expected whole numbers, "
                               "1 <= min_epochs <= max_epochs (max_epochs may be null)")
        values = entry.get("set")
        settings = _leaves(OmegaConf.to_container(values, resolve=True)) if values else {}
        sizes.append(Size(str(name), settings, least, most))
    return sizes


def _leaves(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping's values by dotted key (lists and empty mappings are values)."""
    leaves: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            leaves.update(_leaves(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def select_size(cfg: DictConfig, sizes: list[Size]) -> Size | None:
    """The size `budget_size` names; None (every size) when it is null or there are no sizes."""
    wanted = cfg.get("budget_size")
    if wanted is None or not sizes:
        if wanted is not None:
            raise InvalidInput(f"budget_size={wanted}, but budget_sizes is empty; set budget_size=null")
        return None
    for size in sizes:
        if size.name == str(wanted):
            return size
    raise InvalidInput(f"budget_size={wanted}: expected one of budget_sizes' names: {[s.name for s in sizes]}")


def command_line_keys() -> set[str]:
    """The config keys this run's command line sets values of (not its group choices such as model=resnet)."""
    if not HydraConfig.initialized():
        return set()
    hydra_cfg = HydraConfig.get()
    groups = set(hydra_cfg.runtime.choices)
    keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))}
    return keys - groups


def apply_size(cfg: DictConfig, size: Size) -> dict[str, Any]:
    """Put a size's values into the config and name it in `budget_size`; returns the values applied. A value the
    command line set is kept, and a key the config lacks (another model chosen: `model=resnet` has no widths) is
    left out, each with a log line."""
    given = command_line_keys()
    applied = {}
    for key, value in size.settings.items():
        if any(key == name or key.startswith(f"{name}.") for name in given):
            log.info("budget_size=%s sets %s, but the command line's value is kept", size.name, key)
        elif OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            log.warning("budget_size=%s sets %s, which this config does not have: left out", size.name, key)
        else:
            applied[key] = value
    set_values(cfg, {**applied, "budget_size": size.name})
    return applied


def set_values(cfg: DictConfig, values: dict[str, Any]) -> None:
    """Dotted keys set in the config."""
    with open_dict(cfg):
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, merge=False)


@dataclass(frozen=True)
class Workload:
    """What one run of a task does besides choosing its epochs: steps and evaluation batches, per device."""

    steps_per_epoch: list[int]  # one per fit stage
    val_batches: int  # each validated epoch's
    val_every: int
    end_batches: int  # re-validating the best checkpoint and testing it


def _limited(count: int, limit: Any) -> int:
    """Lightning's limit_*_batches applied to a count of batches."""
    if limit is None:
        return count
    return min(count, int(limit)) if isinstance(limit, int) else int(count * float(limit))


def world_size(trainer_cfg: DictConfig) -> int:
    """Processes the fit runs in (DDP strategies only: any other trains on one device)."""
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1) or 1
    distributed = "ddp" in str(trainer_cfg.get("strategy", ""))
    return int(devices) * int(nodes) if distributed and isinstance(devices, int) and devices > 0 else 1


def workload(cfg: DictConfig, datamodule: ImageDataModule, speed: Speed, validate: bool) -> Workload:
    """The batches a run of this config computes on each device, from the datamodule's loaders."""
    world, trainer_cfg = world_size(cfg.trainer), cfg.trainer
    steps = [_limited(math.ceil(n / world), trainer_cfg.get("limit_train_batches"))
             for _, n in sorted(speed.steps_per_epoch.items())]
    val = _limited(math.ceil(len(datamodule.val_dataloader()) / world), trainer_cfg.get("limit_val_batches")) \
        if validate else 0
    test = 0
    if cfg.get("test") and "test" in datamodule.splits:  # scored when labelled, else predicted for submission.csv
        loader = datamodule.test_dataloader() if datamodule.has_labels("test") else datamodule.predict_dataloader()
        test = _limited(math.ceil(len(loader) / world), trainer_cfg.get("limit_test_batches"))
    return Workload(steps, val, int(trainer_cfg.get("check_val_every_n_epoch") or 1), val + test)


def predict(speed: Speed, work: Workload, side: Callable[[int, int], int | None], epochs: list[int]
            ) -> tuple[float, float]:
    """Seconds to fit `epochs` (one count per stage) and seconds of evaluation and outputs after the fit."""
    fit_s, done = 0.0, 0
    for stage, count in enumerate(epochs):
        if count <= 0:
            continue
        fit_s += speed.fit_start_s + speed.eval_batch_s * min(1, work.val_batches)  # Lightning's sanity check
        end = done + count
        for epoch in range(done, end):
            steps_s = work.steps_per_epoch[stage] * (speed.step(stage, side(epoch, end)) * STEP_ALLOWANCE + LOOP_STEP_S)
            fit_s += steps_s + speed.checkpoint_s + speed.epoch_gap_s
            if (epoch + 1) % work.val_every == 0:
                fit_s += work.val_batches * speed.eval_batch_s
        done = end
    return fit_s, work.end_batches * speed.eval_batch_s + OUTPUTS_S


def stage_epochs(first: int, bases: list[int]) -> list[int]:
    """Every stage's epochs when the first has `first`: the later ones keep their configured share of it."""
    return [first, *[max(1, round(first * b / bases[0])) if b else 0 for b in bases[1:]]]


def most_epochs(fits: Callable[[int], bool], cap: int = 100_000) -> int:
    """The largest first-stage count for which `fits` holds (0 when even one epoch does not)."""
    if not fits(1):
        return 0
    low, high = 1, 2
    while high < cap and fits(high):
        low, high = high, high * 2
    high = min(high, cap)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return high if fits(high) else low


@dataclass(frozen=True)
class BudgetPlan:
    """What a budget chose and from what: written to budget.json, metrics.json and the head of config.yaml."""

    budget: str
    budget_s: float
    started: float  # when the run began, seconds since the epoch
    size: str | None
    settings: dict[str, Any]  # what the size set in the config (dotted keys)
    epochs: dict[str, int]  # config key -> epochs (trainer.max_epochs; task.scst.epochs)
    img_per_s: float
    end_s: float  # evaluation and outputs after fitting, as predicted
    predicted_s: float  # the whole run, as predicted
    measured_at_s: float  # seconds from the run's start until the plan was made (start-up and measuring)
    machine: str

    @property
    def deadline(self) -> float:
        return self.started + self.budget_s

    def apply(self, cfg: DictConfig) -> None:
        """Set the chosen size's values and the epochs in the config."""
        set_values(cfg, {**self.settings, **({"budget_size": self.size} if self.size else {}), **self.epochs})

    def summary(self) -> str:
        """One line for the log and the saved config."""
        counts = ", ".join(f"{key}={value}" for key, value in self.epochs.items())
        size = f" budget_size={self.size}" if self.size else ""
        return (f"budget={self.budget} chose {counts}{size}: {self.img_per_s:.0f} training images/s measured on "
                f"{self.machine}; the run is predicted to take {duration_text(self.predicted_s)}. The same command with "
                f"budget=null {counts}{size} repeats it")

    def metrics(self) -> dict[str, Any]:
        return {"budget": self.budget, "budget/s": self.budget_s, "budget/size": self.size,
                "budget/epochs": next(iter(self.epochs.values())), "budget/img_per_s": round(self.img_per_s, 1),
                "budget/predicted_s": round(self.predicted_s, 1), "budget/measured_at_s": round(self.measured_at_s, 1)}

    def write(self, run_dir: Path) -> None:
        atomic_write_text(run_dir / RECORD, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, run_dir: Path, wait_s: float = 0.0) -> BudgetPlan:
        """The run's record; waits up to `wait_s` for rank 0 to write it."""
        path = run_dir / RECORD
        give_up = time.monotonic() + wait_s
        while not path.is_file() and time.monotonic() < give_up:
            time.sleep(0.5)
        if not path.is_file():
            raise MissingInput(f"{path} not found: a run with a budget records its choice there before fitting, and "
                               "a resumed run or a DDP process besides rank 0 repeats it")
        return cls(**json.loads(path.read_text()))


def plan_budget(cfg: DictConfig, run_dir: Path, started: float, build: Builder) -> BudgetPlan | None:
    """Apply `budget_size` (or the first size) without a budget. With one, measure, choose, record and apply the size
    and epochs; a resumed run or a DDP process besides rank 0 applies the recorded choice. Returns the plan."""
    sizes = budget_sizes(cfg)
    wanted = select_size(cfg, sizes)
    if not budgeted(cfg, run_dir):
        if sizes:
            apply_size(cfg, wanted or sizes[0])
        return None
    budget_s = parse_duration(cfg.budget)
    if cfg.get("resume") or rank_zero_only.rank != 0:
        plan = BudgetPlan.read(run_dir, wait_s=0.0 if cfg.get("resume") else budget_s)
        log.info("%s (recorded in %s)", plan.summary(), run_dir / RECORD)
    else:
        check_slurm_limit(str(cfg.budget), budget_s)
        plan = choose(cfg, [wanted] if wanted else sizes or [None], budget_s, started, build)
        plan.write(run_dir)
        log.info(plan.summary())
    plan.apply(cfg)
    return plan


def budgeted(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether this run trains to its budget: one is set, the command line does not name trainer.max_epochs instead
    (which turns an experiment's budget off; both on the command line are refused), and a resumed run had one."""
    if cfg.get("budget") is None:
        return False
    given = command_line_keys()
    if "trainer.max_epochs" in given:
        if "budget" in given:
            raise InvalidInput(f"budget={cfg.budget} and trainer.max_epochs={cfg.trainer.max_epochs} are both on the "
                               "command line: a budget chooses the epochs; drop one of them")
        log.info("trainer.max_epochs=%s on the command line: budget=%s is not used", cfg.trainer.max_epochs,
                 cfg.budget)
        return False
    if cfg.get("resume"):
        return (run_dir / RECORD).is_file()  # a run that trained a count of its own has no record
    return True


def check_slurm_limit(text: str, budget_s: float) -> None:
    """Refuse a budget that the SLURM job's time limit would cut."""
    left = slurm_time_left()
    if left is not None and budget_s > left[1]:
        raise InvalidInput(f"budget={text} is longer than the {duration_text(left[1])} left of SLURM job {left[0]}'s "
                           f"time limit; ask for budget={int(left[1] // 60)}m or less, or a longer job "
                           "(hydra.launcher.timeout_min)")


def choose(cfg: DictConfig, sizes: list[Size | None], budget_s: float, started: float, build: Builder) -> BudgetPlan:
    """Measure each size in turn, widest first, and take the first whose affordable epochs reach its min_epochs (the
    last one with whatever it affords); refuse a budget that holds not even one epoch and the evaluation after it."""
    margin = max(5.0, 0.03 * budget_s)  # for what the measurement cannot see: other work on the machine, noise
    where = machine(str(cfg.trainer.get("accelerator", "cpu")))
    # Lightning's DDP launcher starts the other processes as this one started: their start-up is paid once more
    relaunch_s = time.time() - started if world_size(cfg.trainer) > 1 and cfg.trainer.get("strategy") == "ddp" else 0.0
    for number, size in enumerate(sizes):
        trial = cfg.copy()
        settings = apply_size(trial, size) if size is not None else {}
        datamodule, task, validate = build(trial)
        stages = task.fit_stages()
        bases = [int(stage.epochs if stage.epochs is not None else trial.trainer.max_epochs or 1) for stage in stages]
        speed = measure_speed(trial.trainer, task, datamodule, validate)
        work = workload(trial, datamodule, speed, validate)
        elapsed = time.time() - started

        def cost(first: int) -> tuple[float, float]:
            return predict(speed, work, datamodule.training_side, stage_epochs(first, bases))

        def fits(first: int) -> bool:
            return elapsed + relaunch_s + sum(cost(first)) + margin <= budget_s

        first = most_epochs(fits)
        if size is not None and size.max_epochs is not None:
            first = min(first, size.max_epochs)
        label = f"budget_size={size.name}" if size is not None else "the network"
        log.info("budget=%s: %s affords %d epochs (%.0f training images/s, measured after %s)", cfg.budget, label,
                 first, speed.img_per_s(), duration_text(elapsed))
        last = number == len(sizes) - 1
        if first >= (size.min_epochs if size is not None and not last else 1):
            fit_s, end_s = cost(first)
            return BudgetPlan(
                budget=str(cfg.budget), budget_s=budget_s, started=started, size=None if size is None else size.name,
                settings=settings,
                epochs={stage.epochs_key: n for stage, n in zip(stages, stage_epochs(first, bases))},
                img_per_s=speed.img_per_s(), end_s=end_s,
                predicted_s=elapsed + relaunch_s + fit_s + end_s, measured_at_s=elapsed, machine=where)
        if last:
            one, end = cost(1)
            raise InvalidInput(
                f"budget={cfg.budget} cannot hold one epoch plus the evaluation after it: here ({where}) one epoch of "
                f"{label} takes {duration_text(one)} and the evaluation {duration_text(end)}, and "
                f"{duration_text(elapsed)} went on starting and measuring; ask for "
                f"budget={math.ceil((elapsed + relaunch_s + one + end + margin) / 60)}m or more")
    raise AssertionError("no size to measure")
