"""The files a classification evaluation leaves behind: confusion matrix, ROC curves, per-class table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from tincap.evaluation.figures import (
    confusion_matrix_figure,
    per_class_rows,
    roc_figure,
    save_figure,
    write_per_class_csv,
)

log = logging.getLogger(__name__)


def classification_figures(result: dict[str, Any], class_names: list[str]) -> dict[str, Figure]:
    """Confusion matrix and one-vs-rest ROC figures of one evaluated split."""
    return {
        "confusion_matrix": confusion_matrix_figure(result["confusion"].numpy(), class_names),
        "roc": roc_figure(result["probs"].numpy(), result["targets"].numpy(), class_names),
    }


def write_classification_files(out_dir: str | Path, result: dict[str, Any], class_names: list[str]) -> dict[str, Figure]:
    """Write confusion_matrix.png, roc.png and per_class.csv; return the figures for TensorBoard."""
    out_dir = Path(out_dir)
    counted, scored = int(result["confusion"].sum()), len(result["targets"])
    if counted != scored:  # e.g. a padding sampler's repeats: the matrix counts them, the gathered scores do not
        log.warning("%s: the confusion matrix counts %d images but ROC curves and per-class AUROC score %d",
                    out_dir, counted, scored)
    figures = classification_figures(result, class_names)
    for name, fig in figures.items():
        save_figure(fig, out_dir / f"{name}.png")
    rows = per_class_rows(result["confusion"].numpy(), class_names, result["probs"].numpy(), result["targets"].numpy())
    write_per_class_csv(out_dir / "per_class.csv", rows)
    return figures
