"""A checkpoint as graph files and their model.json (what export.py writes): the graphs of each kind of task, in the
format of conf/format/."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tincap.export.captioner_graphs import captioner_graphs, captioner_sidecar
from tincap.export.classifier_graph import classifier_graphs, classifier_sidecar
from tincap.export.graph import Graph
from tincap.export.sidecar import SIDECAR, input_description, write_sidecar
from tincap.models import network_name
from tincap.runtime.errors import InvalidInput
from tincap.tasks.captioner import Captioner
from tincap.tasks.classifier import Classifier
from tincap.tasks.task import Task, for_task

log = logging.getLogger(__name__)

# each kind of task that can be exported: its graphs, and what its model.json says besides the input and the files
EXPORTERS: dict[type[Task], tuple[Callable[[Any], list[Graph]], Callable[[Any], dict[str, Any]]]] = {
    Classifier: (classifier_graphs, classifier_sidecar),
    Captioner: (captioner_graphs, captioner_sidecar),
}


class ExportFormat(Protocol):
    """A file format for graphs (conf/format/*.yaml)."""

    name: str
    suffix: str

    def describe(self) -> dict[str, Any]: ...

    def write(self, graph: Graph, path: Path, model: str) -> list[str]:
        """Write `graph` to `path`; return the names of the inputs the written file takes."""
        ...


def model_label(task: Task, ckpt: Path) -> str:
    """How errors name the network: its architecture, and the checkpoint."""
    cfg = task.hparams.get("model_cfg")
    return f"model {network_name(cfg) if cfg else type(task.net).__name__} (ckpt_path={ckpt})"


def exporter(task: Task, ckpt: Path) -> tuple[Callable[[Any], list[Graph]], Callable[[Any], dict[str, Any]]]:
    """The graphs and sidecar of the task's kind (its class or the nearest base that has them)."""
    found = for_task(EXPORTERS, task)
    if found is not None:
        return found
    kinds = ", ".join(cls.__name__ for cls in EXPORTERS)
    raise InvalidInput(f"ckpt_path={ckpt} is a {type(task).__name__} checkpoint; export.py writes the graphs of "
                       f"{kinds} tasks only")


def export_task(task: Task, out: Path, fmt: ExportFormat, ckpt: Path) -> list[Path]:
    """Write the graphs of a task, then model.json; returns the files written."""
    info = task.data_info
    if not info.get("image_size"):
        raise InvalidInput(f"ckpt_path={ckpt}: the checkpoint records no image size (data_info.image_size); expected "
                           "a checkpoint of a python train.py run")
    task.eval()
    graphs_of, sidecar_of = exporter(task, ckpt)
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
