"""The files a classification evaluation leaves behind: confusion matrix, ROC curves, per-class table."""

from __future__ import annotations

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


def classification_figures(result: dict[str, Any], class_names: list[str]) -> dict[str, Figure]:
    """Confusion matrix and one-vs-rest ROC figures of one evaluated split."""
    return {
        "confusion_matrix": confusion_matrix_figure(result["confusion"].numpy(), class_names),
        "roc": roc_figure(result["probs"].numpy(), result["targets"].numpy(), class_names),
    }


def write_classification_files(out_dir: str | Path, result: dict[str, Any], class_names: list[str]) -> dict[str, Figure]:
    """Write confusion_matrix.png, roc.png and per_class.csv; return the figures for TensorBoard."""
    out_dir = Path(out_dir)
    figures = classification_figures(result, class_names)
    for name, fig in figures.items():
        save_figure(fig, out_dir / f"{name}.png")
    rows = per_class_rows(result["confusion"].numpy(), class_names, result["probs"].numpy(), result["targets"].numpy())
    write_per_class_csv(out_dir / "per_class.csv", rows)
    return figures
