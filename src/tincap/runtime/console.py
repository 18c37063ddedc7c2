"""What a command prints: its config as one override per line, library lines once each and without tips or
advertisements, its results, and a last line saying where everything is."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from tincap.runtime.rundir import TREE_ORDER

# Lightning's log lines that tell a user nothing about their run: tips, advertisements, hardware it does not use,
# its own bookkeeping, and the checkpoint reload that validate and test each announce (the summary names the best)
SILENCED = re.compile("|".join([
    r"💡", r"\bTip:", r"litlogger", r"litmodels", r"LitLogger", r"LitModelCheckpoint",
    r"^(GPU|TPU|HPU|IPU) available:", r"Trainer already configured with model summary callbacks",
    r"Loading `train_dataloader` to estimate number of stepping batches",
    r"Restoring states from the checkpoint path at", r"Loaded model weights from the checkpoint at",
    r"`srun` command is available on your system",
]))
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")

# library warnings that say nothing actionable to a user
QUIET_WARNINGS = (
    r".*No positive samples in targets.*",
    r".*No negative samples in targets.*",
    r".*treespec, LeafSpec.*",
    r".*does not have many workers.*",
    r".*module\(s\) in eval mode at the start of training.*",  # a frozen encoder
    r".*`srun` command is available on your system but is not used.*",  # a machine with SLURM installed
    r".*GPU available but not used.*",
    r".*is smaller than the logging interval.*",  # a tiny run's epoch: nothing is lost, the epoch's means are logged
    r".*is not supported by the model summary.*",  # bf16: the summary's size is that of fp32 parameters
)


class _Silence(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not SILENCED.search(record.getMessage())


def quiet_console() -> None:
    """Print each library line once: Lightning's loggers lose their own stderr handler and pass their records to the
    handlers the command configured (Hydra's console and log file), without the lines in SILENCED."""
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    silence = _Silence()
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # the library's own console copy
                logger.removeHandler(handler)
        logger.propagate = True
        if not any(isinstance(f, _Silence) for f in logger.filters):
            logger.addFilter(silence)
    # records of child loggers reach the parents' handlers without the parents' filters: filter at the handlers too
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _Silence) for f in handler.filters):
            handler.addFilter(silence)


def config_leaves(cfg: DictConfig, sep: str = ".") -> dict[str, Any]:
    """Every leaf of the resolved config (Hydra's own node aside) by its joined key, groups first; lists and empty
    mappings are leaves."""
    keys = [k for k in TREE_ORDER if k in cfg] + [k for k in cfg if k not in TREE_ORDER and k != "hydra"]
    leaves: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{sep}{k}")
        else:
            leaves[prefix] = node

    for key in keys:
        value = cfg[key]
        walk(OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value,
             str(key))
    return leaves


def override_lines(cfg: DictConfig) -> list[str]:
    """The resolved config as `key=value` lines, one per leaf, groups first: each can go onto a command line."""
    return [f"{key}={_value(value)}" for key, value in config_leaves(cfg).items()]


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping) and not value:
        return "{}"
    if isinstance(value, list):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return str(value)


def print_config(cfg: DictConfig, saved_to: Path | None) -> None:
    """The run's config, one override per line (the tree is saved as config_tree.log beside config.yaml)."""
    where = f" (saved as {saved_to / 'config.yaml'})" if saved_to is not None else ""
    print(f"Config{where}:\n" + "\n".join(f"  {line}" for line in override_lines(cfg)), flush=True)


def metric_lines(metrics: Mapping[str, Any], prefixes: Iterable[str] = ("val/", "test/")) -> list[str]:
    """One line per split of the numeric metrics: `test: acc 0.7510 | acc_top5 0.9290 | ...`."""
    lines = []
    for prefix in prefixes:
        shown = [f"{k[len(prefix):]} {v:.4f}" for k, v in sorted(metrics.items())
                 if k.startswith(prefix) and isinstance(v, (int, float)) and not isinstance(v, bool)]
        if shown:
            lines.append(f"{prefix[:-1]}: " + " | ".join(shown))
    return lines


def closing_line(run_dir: Path, best_ckpt: str | None, tb_dir: Path | None, url: str | None = None) -> str:
    """The last line a run prints: where everything it produced is (a served page first)."""
    parts = [f"Demo: {url}"] if url else []
    parts.append(f"Run dir: {run_dir}")
    if best_ckpt:
        parts.append(f"best checkpoint: {best_ckpt}")
    if tb_dir is not None:
        parts.append(f"TensorBoard: tensorboard --logdir {tb_dir}")
    return " | ".join(parts)
