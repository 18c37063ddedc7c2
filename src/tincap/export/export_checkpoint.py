"""python export.py ckpt_path=<.ckpt> format=onnx|torchscript: a checkpoint as graph files and their model.json."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import hydra
import lightning as L
from omegaconf import DictConfig

from tincap.checkpoints import load_task, task_kind
from tincap.entry import Outcome, task_wrapper
from tincap.errors import InvalidInput
from tincap.export.captioner_graphs import captioner_graphs, captioner_sidecar
from tincap.export.classifier_graph import classifier_graphs, classifier_sidecar
from tincap.export.graph import Graph
from tincap.export.sidecar import (
    EXPORT_DIR,
    SIDECAR,
    checkpoint_run_dir,
    input_description,
    write_sidecar,
)

log = logging.getLogger(__name__)

# each kind of task: its graphs, and what its model.json says besides the input and the files
KINDS: dict[str, tuple[Callable[[Any], list[Graph]], Callable[[Any], dict[str, Any]]]] = {
    "classifier": (classifier_graphs, classifier_sidecar),
    "captioner": (captioner_graphs, captioner_sidecar),
}


class ExportFormat(Protocol):
    """A file format for graphs (conf/format/*.yaml)."""

    name: str
    suffix: str

    def describe(self) -> dict[str, Any]: ...

    def write(self, graph: Graph, path: Path, model: str) -> list[str]:
        """Write `graph` to `path`; return the names of the inputs the written file takes."""
        ...


def model_label(task: L.LightningModule, ckpt: Path) -> str:
    """How errors name the network: its model config's name and architecture, and the checkpoint."""
    cfg = task.hparams.get("model_cfg") or {}
    name = " ".join(str(cfg[k]) for k in ("name", "arch") if cfg.get(k)) or type(task.net).__name__
    return f"model {name} (ckpt_path={ckpt})"


def export_task(task: L.LightningModule, out: Path, fmt: ExportFormat, ckpt: Path) -> list[Path]:
    """Write the graphs of a classifier or captioner, then model.json; returns the files written."""
    info = task.hparams.get("data_info") or {}
    if not info.get("image_size"):
        raise InvalidInput(f"ckpt_path={ckpt}: the checkpoint records no image size (data_info.image_size); expected "
                           "a checkpoint of a python train.py run")
    task.eval()
    graphs_of, sidecar_of = KINDS[task_kind(task.hparams)]
    graphs, meta = graphs_of(task), sidecar_of(task)
    out.mkdir(parents=True, exist_ok=True)
    (out / SIDECAR).unlink(missing_ok=True)  # an interrupted export leaves no sidecar that describes other graphs
    written, described = [], {}
    for graph in graphs:
        path = out / f"{graph.name}{fmt.suffix}"
        start = time.perf_counter()
        inputs = fmt.write(graph, path, model_label(task, ckpt))
        log.info("wrote %s (%.1f MB) in %.1f s", path, path.stat().st_size / 1e6, time.perf_counter() - start)
        written.append(path)
        described[graph.name] = {"file": path.name, "inputs": inputs, "outputs": graph.output_names}
    sidecar = write_sidecar(out, {**fmt.describe(), **meta, "checkpoint": str(ckpt.resolve()),
                                  "input": input_description(info), "graphs": described})
    return [*written, sidecar]


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    fmt: ExportFormat = hydra.utils.instantiate(cfg.format)
    ckpt = Path(cfg.ckpt_path).expanduser()
    task = load_task(ckpt)
    out = Path(cfg.out).expanduser() if cfg.get("out") else checkpoint_run_dir(ckpt) / EXPORT_DIR / fmt.name
    files = export_task(task, out, fmt, ckpt)
    lines = [f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)" for path in files]
    return Outcome(lines=[*lines, f"export: {out}"], best_ckpt=str(ckpt), value=out)
