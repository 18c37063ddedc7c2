"""Evaluation figures (confusion matrix, ROC) and per-class metric tables.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas, never pyplot,
so they can be produced from worker threads/processes without touching global GUI state.
"""

from __future__ import annotations

import csv
import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torchmetrics.functional.classification import binary_auroc, binary_roc

from tincap.evaluation.canvas import image_grid, new_figure, save_figure
from tincap.runtime.atomic import atomic_write_text

__all__ = [
    "caption_grid_figure",
    "confusion_matrix_figure",
    "per_class_rows",
    "roc_auc_summary",
    "roc_figure",
    "save_figure",
    "write_per_class_csv",
]

_ANNOTATE_MAX_CLASSES = 15
_ROC_LEGEND_MAX_CLASSES = 10


def _check_cm(cm: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Validate a square confusion matrix whose size matches the class names."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C); got shape {cm.shape}")
    if cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix is {cm.shape[0]}x{cm.shape[1]} but {len(class_names)} class names given")
    if np.any(cm < 0):
        raise ValueError("confusion matrix has negative counts")
    return cm.astype(np.float64)


def _check_probs_targets(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, C) scores and (N,) integer targets in [0, C)."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, C); got {probs.shape}")
    if targets.shape != (probs.shape[0],):
        raise ValueError(f"targets must have shape ({probs.shape[0]},); got {targets.shape}")
    if targets.size and not np.issubdtype(targets.dtype, np.integer):
        if not np.all(np.mod(targets, 1) == 0):
            raise ValueError("targets must be integer class indices")
    targets = targets.astype(np.int64)
    if targets.size and (targets.min() < 0 or targets.max() >= probs.shape[1]):
        raise ValueError(f"targets must lie in [0, {probs.shape[1]}); got range [{targets.min()}, {targets.max()}]")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contain NaN or inf")
    return probs, targets


# --------------------------------------------------------------------------- confusion matrix


def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str], normalize: bool = True) -> Figure:
    """Plot a confusion matrix (rows = true, cols = predicted) that stays legible from 3 to 30+ classes."""
    counts = _check_cm(cm, class_names)
    n = counts.shape[0]
    total = counts.sum()
    accuracy = float(np.trace(counts) / total) if total > 0 else float("nan")

    if normalize:
        row_sums = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
        vmax = 1.0
    else:
        values = counts
        vmax = max(float(values.max()), 1.0)

    side = float(np.clip(2.5 + 0.32 * n, 4.5, 16.0))
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
    cbar = fig.colorbar(im, ax=ax, shrink=0.85, aspect=30)
    cbar.set_label("fraction of true class" if normalize else "count")

    label_size = float(np.clip(11 - 0.15 * n, 6, 10))
    ticks = np.arange(n)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([str(c) for c in class_names], rotation=45 if n <= 10 else 90,
                       ha="right" if n <= 10 else "center", rotation_mode="anchor" if n <= 10 else "default",
                       fontsize=label_size)
    ax.set_yticklabels([str(c) for c in class_names], fontsize=label_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")

    if n <= _ANNOTATE_MAX_CLASSES:
        threshold = 0.5 * vmax
        annot_size = float(np.clip(12 - 0.4 * n, 6, 10))
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                text = f"{v:.2f}" if normalize else f"{int(round(v))}"
                ax.text(j, i, text, ha="center", va="center", fontsize=annot_size,
                        color="white" if v > threshold else "black")

    acc_text = "n/a" if math.isnan(accuracy) else f"{100 * accuracy:.2f}%"
    kind = "normalized by true class" if normalize else "counts"
    ax.set_title(f"Confusion matrix ({kind})\naccuracy {acc_text}, n = {int(total)}")
    return fig


# --------------------------------------------------------------------------- ROC


def _class_has_both(binary: np.ndarray) -> bool:
    """ROC/AUC is only defined when a one-vs-rest split has positives and negatives."""
    pos = int(binary.sum())
    return 0 < pos < binary.size


def roc_auc_summary(probs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """One-vs-rest AUCs: macro = mean of defined per-class AUCs, micro = AUC of the flattened one-hot problem."""
    probs, targets = _check_probs_targets(probs, targets)
    n_classes = probs.shape[1]
    onehot = np.eye(n_classes, dtype=np.int64)[targets] if targets.size else np.zeros((0, n_classes), np.int64)
    scores = torch.from_numpy(probs)
    labels = torch.from_numpy(onehot)

    per_class: list[float] = []
    for c in range(n_classes):
        if _class_has_both(onehot[:, c]):
            per_class.append(float(binary_auroc(scores[:, c], labels[:, c])))
        else:
            per_class.append(float("nan"))
    defined = [a for a in per_class if not math.isnan(a)]
    macro = float(np.mean(defined)) if defined else float("nan")
    flat = onehot.reshape(-1)
    micro = float(binary_auroc(scores.reshape(-1), labels.reshape(-1))) if _class_has_both(flat) else float("nan")
    return {"macro": macro, "micro": micro, "per_class": per_class, "n_defined": len(defined)}


def _roc_curves(probs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Exact (threshold-free) ROC curves per class, micro-average and macro-average (mean TPR on a shared FPR grid)."""
    n_classes = probs.shape[1]
    onehot = np.eye(n_classes, dtype=np.int64)[targets]
    scores = torch.from_numpy(probs)
    labels = torch.from_numpy(onehot)

    per_class: list[tuple[np.ndarray, np.ndarray] | None] = []
    for c in range(n_classes):
        if _class_has_both(onehot[:, c]):
            fpr, tpr, _ = binary_roc(scores[:, c], labels[:, c])
            per_class.append((fpr.numpy(), tpr.numpy()))
        else:
            per_class.append(None)

    micro = None
    if _class_has_both(onehot.reshape(-1)):
        fpr, tpr, _ = binary_roc(scores.reshape(-1), labels.reshape(-1))
        micro = (fpr.numpy(), tpr.numpy())

    defined = [c for c in per_class if c is not None]
    macro = None
    if defined:
        grid = np.unique(np.concatenate([f for f, _ in defined] + [np.linspace(0.0, 1.0, 101)]))
        mean_tpr = np.mean([np.interp(grid, f, t) for f, t in defined], axis=0)
        mean_tpr[0], mean_tpr[-1] = 0.0, 1.0
        macro = (grid, mean_tpr)
    return {"per_class": per_class, "micro": micro, "macro": macro}


def roc_figure(probs: np.ndarray, targets: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Plot one-vs-rest ROC curves (thin per class, thick macro, dashed micro) with AUCs from roc_auc_summary."""
    probs, targets = _check_probs_targets(probs, targets)
    n = probs.shape[1]
    if len(class_names) != n:
        raise ValueError(f"probs have {n} classes but {len(class_names)} class names given")
    summary = roc_auc_summary(probs, targets)
    curves = _roc_curves(probs, targets)

    fig = new_figure(7.5 if n <= _ROC_LEGEND_MAX_CLASSES else 6.5, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    colors = colormaps["tab10" if n <= 10 else "turbo"](np.linspace(0, 1, n) if n > 10 else np.arange(n))
    show_per_class = n <= _ROC_LEGEND_MAX_CLASSES
    for c, curve in enumerate(curves["per_class"]):
        if curve is None:
            continue
        fpr, tpr = curve
        label = f"{class_names[c]} (AUC {summary['per_class'][c]:.3f})" if show_per_class else None
        ax.plot(fpr, tpr, lw=0.9, alpha=0.6 if show_per_class else 0.35, color=colors[c], label=label)
    if not show_per_class and summary["n_defined"]:
        ax.plot([], [], lw=0.9, alpha=0.6, color="grey", label=f"per-class ({summary['n_defined']} classes)")

    if curves["macro"] is not None:
        ax.plot(*curves["macro"], lw=3.0, color="black", label=f"macro-average (AUC {summary['macro']:.3f})")
    if curves["micro"] is not None:
        ax.plot(*curves["micro"], lw=2.0, ls="--", color="crimson", label=f"micro-average (AUC {summary['micro']:.3f})")
    ax.plot([0, 1], [0, 1], lw=0.8, ls=":", color="grey", label="chance")

    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"One-vs-rest ROC ({n} classes, n = {len(targets)})")
    ax.grid(True, lw=0.4, alpha=0.5)
    ax.legend(loc="lower right", fontsize=7 if show_per_class else 8, framealpha=0.85)
    return fig


# --------------------------------------------------------------------------- saving / tables


def _safe_div(num: float, den: float) -> float:
    """Ratio that is NaN (undefined) rather than 0 or an error when the denominator is 0."""
    return float(num) / float(den) if den > 0 else float("nan")


def per_class_rows(
    cm: np.ndarray,
    class_names: Sequence[str],
    probs: np.ndarray | None = None,
    targets: np.ndarray | None = None,
) -> list[dict]:
    """Per-class support/precision/recall/F1 (and one-vs-rest AUROC when scores are given) for tables.

    Undefined precision/recall (no predictions / no support) are NaN; F1 is NaN only for a class that is
    neither present nor predicted, and 0 for one that is present or predicted but never right.
    """
    counts = _check_cm(cm, class_names)
    auroc: list[float] | None = None
    if (probs is None) != (targets is None):
        raise ValueError("per_class_rows needs both probs and targets, or neither")
    if probs is not None:
        probs_arr, targets_arr = _check_probs_targets(probs, targets)
        if probs_arr.shape[1] != counts.shape[0]:
            raise ValueError(f"probs have {probs_arr.shape[1]} classes but confusion matrix has {counts.shape[0]}")
        auroc = roc_auc_summary(probs_arr, targets_arr)["per_class"]

    rows: list[dict] = []
    for c, name in enumerate(class_names):
        tp = counts[c, c]
        support = counts[c, :].sum()
        predicted = counts[:, c].sum()
        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        if support == 0 and predicted == 0:
            f1 = float("nan")
        elif tp == 0:
            f1 = 0.0  # present or predicted but never right: a failure, as torchmetrics' macro F1 counts it
        else:
            f1 = _safe_div(2 * precision * recall, precision + recall) if precision + recall > 0 else 0.0
        row: dict[str, Any] = {
            "index": c,
            "class": str(name),
            "support": int(support),
            "correct": int(tp),
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
        if auroc is not None:
            row["auroc"] = auroc[c]
        rows.append(row)
    return rows


def write_per_class_csv(path: str | Path, rows: list[dict]) -> None:
    """Write per-class rows as CSV atomically; header comes from the first row's keys."""
    if not rows:
        raise ValueError(f"{path}: no rows to write; expected at least one per-class row")
    fields = list(rows[0].keys())
    for i, row in enumerate(rows):
        if list(row.keys()) != fields:
            raise ValueError(f"{path}: row {i} has keys {list(row.keys())}; expected {fields}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def caption_grid_figure(images: np.ndarray, generated: Sequence[str], references: Sequence[str], cols: int = 4) -> Figure:
    """Images (N, H, W, 3) uint8 titled with the generated caption (bold) over a reference caption."""
    fig, axes = image_grid(images, cols, (3.2, 3.6))
    for i, ax in enumerate(axes):
        ax.set_title(f"{textwrap.fill(generated[i], 38)}\n", fontsize=7, fontweight="bold", loc="left")
        ax.text(0, -0.02, textwrap.fill(references[i], 42), transform=ax.transAxes, fontsize=6, va="top",
                color="dimgray")
    return fig
