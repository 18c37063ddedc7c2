"""What every run directory holds besides the checkpoints: config.yaml, config_tree.log and metrics.json."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import rich.console
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

from tincap.runtime.atomic import atomic_write_text

TREE_ORDER = ("data", "model", "init", "task", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths")


def save_config(cfg: DictConfig, save_dir: str | Path, header: str | None = None) -> None:
    """Save the resolved config as config.yaml, and as a rich tree (main groups first) in config_tree.log; `header`
    heads both as a comment (what a time budget chose, and from what speed)."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in TREE_ORDER if k in cfg] + [k for k in cfg if k not in TREE_ORDER and k != "hydra"]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    console = rich.console.Console(record=True, width=120, file=io.StringIO())
    console.print(tree)
    comment = "".join(f"# {line}\n" for line in (header or "").splitlines())
    atomic_write_text(Path(save_dir) / "config_tree.log", comment + console.export_text())
    run_config = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # Hydra's own node is .hydra/'s
    atomic_write_text(Path(save_dir) / "config.yaml", comment + OmegaConf.to_yaml(run_config, resolve=True))


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """One flat JSON object of final metrics (NaN written as null so any JSON reader accepts it)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in sorted(metrics.items())}
    atomic_write_text(path, json.dumps(clean, indent=2) + "\n")


def read_metrics(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
