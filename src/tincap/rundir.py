"""What every run directory holds and prints: the config tree, metrics.json, and the closing line."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import rich
import rich.console
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

from tincap.atomic import atomic_write_text

TREE_ORDER = ("data", "model", "task", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths")


def print_config_tree(cfg: DictConfig, save_dir: str | Path | None = None) -> None:
    """Print the resolved config as a rich tree (main groups first) and save it as config_tree.log."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in TREE_ORDER if k in cfg] + [k for k in cfg if k not in TREE_ORDER and k != "hydra"]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    rich.print(tree)
    if save_dir is not None:
        console = rich.console.Console(record=True, width=120, file=io.StringIO())
        console.print(tree)
        atomic_write_text(Path(save_dir) / "config_tree.log", console.export_text())
        atomic_write_text(Path(save_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """One flat JSON object of final metrics (NaN written as null so any JSON reader accepts it)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in sorted(metrics.items())}
    atomic_write_text(path, json.dumps(clean, indent=2) + "\n")


def read_metrics(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def closing_line(run_dir: Path, best_ckpt: str | None, tb_dir: Path | None, url: str | None = None) -> str:
    """The last line a run prints: where everything it produced is (a served page first)."""
    parts = [f"Demo: {url}"] if url else []
    parts.append(f"Run dir: {run_dir}")
    if best_ckpt:
        parts.append(f"best checkpoint: {best_ckpt}")
    if tb_dir is not None:
        parts.append(f"TensorBoard: tensorboard --logdir {tb_dir}")
    return " | ".join(parts)


def quiet_known_warnings() -> None:
    """Silence library warnings that say nothing actionable to a user (one-class batches, Lightning internals)."""
    warnings.filterwarnings("ignore", message=".*No positive samples in targets.*")
    warnings.filterwarnings("ignore", message=".*No negative samples in targets.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")  # a frozen encoder
