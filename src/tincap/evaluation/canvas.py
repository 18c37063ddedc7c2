"""Pyplot-free matplotlib figures and their atomic PNG writes, importable without torch (report.py stays quick)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tincap.runtime.atomic import atomic_path


def new_figure(width: float, height: float) -> Figure:
    """A figure bound to an Agg canvas: no global pyplot state, so safe in threads and worker processes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def image_grid(images: np.ndarray | list[np.ndarray], cols: int, cell: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """A figure with one axis-free image per cell, `cols` per row; the caller titles the returned axes."""
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig = new_figure(cell[0] * cols, cell[1] * rows)
    axes = []
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[i])
        ax.set_axis_off()
        axes.append(ax)
    return fig, axes


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> None:
    """Render to a temp file and rename, so a crashed/killed job never leaves a truncated image."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)
