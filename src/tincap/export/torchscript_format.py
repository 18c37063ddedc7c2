"""format=torchscript: each graph traced with torch.jit.trace and saved, loadable by torch.jit.load (Python or C++)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tincap.export.graph import Graph
from tincap.export.quiet import quiet_exporter
from tincap.runtime.atomic import atomic_path


class TorchScriptFormat:
    """Writes `<graph>.pt` files; traced, so any batch size runs (no operation of these graphs branches on shapes)."""

    name = "torchscript"
    suffix = ".pt"

    def describe(self) -> dict[str, Any]:
        """What model.json records of the format."""
        return {"format": self.name, "exporter": "torch.jit.trace"}

    def write(self, graph: Graph, path: Path, model: str) -> list[str]:
        """Trace `graph` into `path`; the traced module takes every input, in order."""
        with atomic_path(path) as tmp, quiet_exporter(), torch.no_grad():
            traced = torch.jit.trace(graph.module, graph.inputs, check_trace=False)
            torch.jit.save(traced, str(tmp))
        return graph.input_names
