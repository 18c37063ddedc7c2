"""Compare finished runs: one table row per run, validation curves and metric-vs-size from their saved outputs.

A run directory is any directory holding both `metrics.json` and `config.yaml` (what `train.py` writes).
The "overrides" column lists the command-line overrides (`.hydra/overrides.yaml`) whose values differ
between the runs: that is what the user varied, in the words they typed (`model=cnn`), whereas a diff of
the flattened configs would also list every key an experiment config or a path changes. The "tags" column is
the run's `tags` (train.yaml's, or its experiment's), comma-joined.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tincap.evaluation.canvas import new_figure, save_figure
from tincap.models import network_name
from tincap.runtime.atomic import atomic_write_csv, atomic_write_text

__all__ = ["Run", "find_runs", "load_run", "matching_test_key", "read_curve", "report_rows", "write_report"]

FIXED_COLUMNS = ("model", "init", "params")
TAIL_COLUMNS = ("epochs", "fit_s", "train/img_per_s")
# captioning runs also show their scores and how varied their captions are (counts, then shares and lengths)
CAPTION_COLUMNS = ("test/bleu4", "test/cider", "test/distinct_captions", "test/vocab_used", "test/novel_ratio",
                   "test/mean_length")
TTA_COLUMNS = ("val/acc_no_tta",)
# runs trained to a time budget: the budget, the epochs it chose, the whole run's wall time, and the machine
BUDGET_COLUMNS = ("budget", "budget/epochs", "wall_s")
TEXT_COLUMNS = ("budget", "machine")
COUNT_COLUMNS = ("test/distinct_captions", "test/vocab_used", "val/distinct_captions", "val/vocab_used")


@dataclass
class Run:
    """One finished run as saved on disk."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    overrides: dict[str, str] = field(default_factory=dict)
    label: str = ""
    varied: str = ""  # the overrides that differ from the other runs compared with it

    @property
    def legend(self) -> str:
        return f"{self.label}: {self.varied}" if self.varied else self.label


def find_runs(directory: str | Path) -> list[Path]:
    """Every run directory at or below `directory`, sorted by path (job numbers in numeric order)."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"report: {root} is not a directory; expected a run or sweep directory")
    found = {p.parent for p in root.rglob("metrics.json") if (p.parent / "config.yaml").is_file()}
    if (root / "metrics.json").is_file() and (root / "config.yaml").is_file():
        found.add(root)
    return sorted(found, key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in p.parts])


def _read_yaml(path: Path, expected: type) -> Any:
    try:
        value = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"report: {path} is not valid YAML ({err})") from err
    if not isinstance(value, expected):
        raise ValueError(f"report: {path} should hold a YAML {expected.__name__}, found {type(value).__name__}")
    return value


def _parse_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def load_run(path: str | Path) -> Run:
    """Read a run's config.yaml, metrics.json and (when present) .hydra/overrides.yaml."""
    path = Path(path)
    try:
        metrics = json.loads((path / "metrics.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"report: {path / 'metrics.json'} is not valid JSON ({err})") from err
    if not isinstance(metrics, dict):
        raise ValueError(f"report: {path / 'metrics.json'} should hold one JSON object of metrics")
    config = _read_yaml(path / "config.yaml", dict)
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = _read_yaml(overrides_file, list) if overrides_file.is_file() else []
    return Run(path=path, config=config, metrics=metrics, overrides=dict(_parse_override(str(o)) for o in overrides))


def _config_value(config: dict[str, Any], dotted: str) -> str:
    """A run's own value for an override key it did not set (a scalar in its config), else '-' for the default."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return "-"
        node = node[part]
    return "-" if isinstance(node, (dict, list)) else str(node)


def differing_overrides(runs: list[Run]) -> list[str]:
    """Override keys whose value is not the same in every run, in first-seen order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    values = {k: {r.overrides.get(k, _config_value(r.config, k)) for r in runs} for k in keys}
    return [k for k in keys if len(values[k]) > 1]


def choose_metric(runs: list[Run], metric: str | None) -> tuple[str, bool]:
    """The metric to rank by (the runs' `optimized_metric` unless given) and whether higher is better."""
    if metric is None:
        counts = Counter(str(r.config.get("optimized_metric") or "val/acc") for r in runs)  # null: a refit
        if len(counts) > 1:
            found = ", ".join(f"{m} in {n} run(s)" for m, n in counts.most_common())
            raise ValueError(f"report: the runs optimise different metrics ({found}); pass --metric to pick one")
        metric = next(iter(counts))
    modes = {str(r.config.get("optimized_mode", "max")) for r in runs if r.config.get("optimized_metric") == metric}
    return metric, modes != {"min"}


def matching_test_key(metric: str) -> str | None:
    """The test-split twin of a validation metric (val/acc -> test/acc)."""
    return "test/" + metric.split("/", 1)[1] if metric.startswith("val/") else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if isinstance(value, float) and not math.isfinite(value) else value


def report_rows(runs: list[Run], metric: str, higher_is_better: bool) -> tuple[list[str], list[list[Any]]]:
    """Header and rows (best run first; runs without the metric last); numbers exactly as in metrics.json."""
    test = matching_test_key(metric)
    captioning = any("test/distinct_captions" in r.metrics for r in runs)
    extra = [c for c in CAPTION_COLUMNS if captioning and c not in (metric, test)]
    # runs with test-time augmentation also say what it bought
    extra += [c for c in TTA_COLUMNS if c != metric and any(c in r.metrics for r in runs)]
    tail = [*TAIL_COLUMNS, *(BUDGET_COLUMNS if any("budget" in r.metrics for r in runs) else ()),
            *(["machine"] if any("machine" in r.metrics for r in runs) else [])]
    header = ["run", "overrides", "tags", *FIXED_COLUMNS, metric, *([test] if test else []), *extra, *tail]

    def rank(r: Run) -> tuple[bool, float]:
        value = _number(r.metrics.get(metric))
        return value is None, 0.0 if value is None else (-value if higher_is_better else value)

    rows = []
    for r in sorted(runs, key=rank):
        keys = ("params", metric, *([test] if test else []), *extra, *tail)
        rows.append([r.label, r.varied, tags_label(r.config), model_label(r.config), init_label(r.metrics),
                     *[r.metrics.get(k) if k in TEXT_COLUMNS else _number(r.metrics.get(k)) for k in keys]])
    return header, rows


def tags_label(config: dict[str, Any]) -> str:
    """The run's `tags` (train.yaml, each experiment's), comma-joined, so runs can be grouped and filtered by them."""
    tags = config.get("tags")
    if tags is None:
        return ""
    return ", ".join(str(t) for t in tags) if isinstance(tags, list) else str(tags)


def model_label(config: dict[str, Any]) -> str:
    """The network's name: its timm architecture (`tf_efficientnet_lite0`), else its class (`CNN`)."""
    model = config.get("model")
    return network_name(model) if isinstance(model, dict) else ""


def init_label(metrics: dict[str, Any]) -> str:
    """Where the run's weights started: 'from scratch', or the pretrained weights it was initialised from."""
    init = str(metrics.get("init") or "")
    if is_imagenet_pretrained(init):
        return f"ImageNet-pretrained: {init}"
    return init or "-"


def is_imagenet_pretrained(init: str) -> bool:
    return "ImageNet" in init or "pretrained weights" in init


def _label(runs: list[Run]) -> None:
    """Name each run by its path below the runs' common directory (a lone run by its own name) and what it varied."""
    paths = [r.path.resolve() for r in runs]
    base = Path(os.path.commonpath(paths))
    if len(runs) == 1:
        base = base.parent
    for r, p in zip(runs, paths):
        r.label = str(p.relative_to(base))
    keys = differing_overrides(runs)
    for r in runs:
        r.varied = " ".join(f"{k}={r.overrides.get(k, _config_value(r.config, k))}" for k in keys)


def read_curve(run: Run, tag: str) -> list[tuple[int, float]] | None:
    """(epoch, value) of a scalar logged once per training epoch, from the run's TensorBoard events; None if absent.

    Lightning logs an `epoch` scalar at the same step as every metric, which maps steps to epochs; the
    re-validation of the best checkpoint after fitting is logged at epoch == epochs and is left out.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = sorted({p.parent for p in run.path.rglob("events.out.tfevents.*")})
    by_epoch: dict[int, float] = {}
    for directory in event_dirs:
        acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        acc.Reload()
        tags = acc.Tags().get("scalars", [])
        if tag not in tags:
            continue
        epoch_at = {e.step: int(e.value) for e in acc.Scalars("epoch")} if "epoch" in tags else {}
        for event in sorted(acc.Scalars(tag), key=lambda e: e.wall_time):
            by_epoch[epoch_at.get(event.step, event.step)] = float(event.value)
    if not by_epoch:
        return None
    done = run.metrics.get("epochs")
    return [(e + 1, v) for e, v in sorted(by_epoch.items()) if not isinstance(done, int) or e < done]


def curves_figure(curves: dict[str, dict[str, list[tuple[int, float]]]], metric: str, loss_tag: str) -> Figure:
    """Validation metric (left) and training loss (right) against epoch, one line per run."""
    fig = new_figure(11, 4.5)
    axes = fig.subplots(1, 2)
    for ax, tag in zip(axes, (metric, loss_tag)):
        for label, series in curves.items():
            points = series.get(tag)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, lw=1.2, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(tag)
        ax.set_title(f"{tag} per epoch")
        ax.grid(True, lw=0.4, alpha=0.5)
    if curves:
        axes[0].legend(fontsize=7, loc="best")
    return fig


def params_figure(points: list[tuple[str, float, float]], metric: str) -> Figure:
    """Best validation metric against parameter count, each point labelled with its run."""
    fig = new_figure(7, 5)
    ax = fig.subplots()
    for label, params, value in points:
        ax.scatter(params, value, s=30)
        ax.annotate(label, (params, value), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if points and min(p[1] for p in points) > 0:
        ax.set_xscale("log")
    ax.margins(x=0.3, y=0.1)
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"best {metric}")
    ax.set_title(f"best {metric} against model size ({len(points)} runs)")
    ax.grid(True, lw=0.4, alpha=0.5)
    return fig


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if column == "params":
        return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value:,}"
    if column in COUNT_COLUMNS:
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.4f}" if column.startswith(("val/", "test/")) else f"{value:g}"
    return str(value).replace("|", "\\|") or "-"


def _first_line(path: Path) -> str:
    return (path.read_text(errors="replace").strip().splitlines() or [""])[0][:200]


def markdown(header: list[str], rows: list[list[Any]], metric: str, notes: list[str], figures: list[str]) -> str:
    lines = [f"# Report: {len(rows)} run(s), sorted by {metric}", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v, c) for v, c in zip(row, header)) + " |" for row in rows]
    lines += ["", *[f"![{Path(f).stem}]({f})" for f in figures]]
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def write_report(directories: list[str | Path], out: str | Path | None = None,
                 metric: str | None = None) -> tuple[Path, list[str]]:
    """Write report.md, report.csv, curves.png and accuracy_vs_params.png for every run under `directories`.

    Returns the directory written to and the notes (runs without the metric or without curves)."""
    if not directories:
        raise ValueError("report: give at least one run or sweep directory")
    paths: dict[Path, Path] = {}
    failed: set[Path] = set()
    for d in directories:
        failed |= {p.parent.resolve() for p in Path(d).rglob("FAILED")}  # written by tincap.runtime.entry on a stopped run
        found = find_runs(d)
        if not found:
            raise FileNotFoundError(f"report: no runs found under {d} "
                                    "(expected directories holding metrics.json and config.yaml)")
        paths.update({p.resolve(): p for p in found})
    runs = [load_run(p) for p in paths.values()]
    _label(runs)
    metric, higher = choose_metric(runs, metric)
    header, rows = report_rows(runs, metric, higher)
    out_dir = Path(out) if out is not None else Path(directories[0])
    out_dir.mkdir(parents=True, exist_ok=True)

    notes = [f"{r.label}: no {metric} in metrics.json" for r in runs if _number(r.metrics.get(metric)) is None]
    notes += [f"{p}: the run stopped early and is not in the table ({_first_line(p / 'FAILED')})"
              for p in sorted(failed - set(paths))]
    pretrained = [r.label for r in runs if is_imagenet_pretrained(str(r.metrics.get("init") or ""))]
    if pretrained and len(pretrained) < len(runs):
        notes.append(f"{len(pretrained)} run(s) started from ImageNet-pretrained weights (init column): they have "
                     "seen ImageNet's images, so read them beside the from-scratch rows, not in place of them")
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    loss_tag = "train/loss"
    for r in sorted(runs, key=lambda r: r.label):
        series = {tag: read_curve(r, tag) for tag in (metric, loss_tag)}
        if series[metric] is None:
            notes.append(f"{r.label}: no TensorBoard events with {metric}; left out of curves.png")
            continue
        curves[r.legend] = {k: v for k, v in series.items() if v}
    save_figure(curves_figure(curves, metric, loss_tag), out_dir / "curves.png")

    scatter = [(r.legend, _number(r.metrics.get("params")), _number(r.metrics.get(metric))) for r in runs]
    save_figure(params_figure([p for p in scatter if p[1] is not None and p[2] is not None], metric),
                out_dir / "accuracy_vs_params.png")

    atomic_write_csv(out_dir / "report.csv", header, [["" if v is None else v for v in row] for row in rows])
    figures = ["curves.png", "accuracy_vs_params.png"]
    atomic_write_text(out_dir / "report.md", markdown(header, rows, metric, notes, figures))
    return out_dir, notes
