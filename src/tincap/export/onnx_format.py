"""format=onnx: each graph through torch's TorchScript-based ONNX exporter, every batch axis dynamic.

That exporter (torch.onnx.export(dynamo=False)), not the torch.export-based one, because it needs no further package
(the other needs onnxscript), exists in every torch tincap supports, traces these fixed-shape graphs in seconds, and
names an operator it cannot convert in its error, which tincap passes on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch.onnx.errors import OnnxExporterError

from tincap.export.graph import BATCH, Graph
from tincap.export.quiet import quiet_exporter
from tincap.runtime.atomic import atomic_path
from tincap.runtime.errors import InvalidInput, UserError


class OnnxFormat:
    """Writes `<graph>.onnx` files at ONNX opset `opset`."""

    name = "onnx"
    suffix = ".onnx"

    def __init__(self, opset: int = 17) -> None:
        self.opset = int(opset)

    def describe(self) -> dict[str, Any]:
        """What model.json records of the format."""
        return {"format": self.name, "opset": self.opset, "exporter": "torch.onnx.export(dynamo=False)"}

    def write(self, graph: Graph, path: Path, model: str) -> list[str]:
        """Export `graph` to `path` and return the inputs the file takes (the exporter drops those the graph does not
        read: a recurrent decoder's step ignores the image). A network the exporter cannot convert is a user error
        naming the operator."""
        onnx = onnx_package()
        try:
            with atomic_path(path) as tmp, quiet_exporter(), torch.no_grad():
                torch.onnx.export(graph.module, graph.inputs, str(tmp), dynamo=False, opset_version=self.opset,
                                  input_names=graph.input_names, output_names=graph.output_names,
                                  dynamic_axes={n: {axis: BATCH} for n, axis in graph.batch_axes.items()})
                written = onnx.load(str(tmp))
                onnx.checker.check_model(written)
        except OnnxExporterError as exc:
            raise InvalidInput(unsupported_message(exc, model, self.opset)) from None
        return [i.name for i in written.graph.input]


def onnx_package() -> Any:
    """The onnx module, or a user error saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise UserError("format=onnx needs the onnx package, which is not installed: pip install -e '.[export]'") \
            from None
    return onnx


def unsupported_message(exc: Exception, model: str, opset: int) -> str:
    """What the exporter refused, in one paragraph: the operator, the model, and the way out."""
    text = str(exc).split("\n", 1)[0]
    op = re.search(r"operator '([^']+)'|ONNX export of ([\w:.]+)", text)
    if op is None:
        return f"{model} cannot be exported to ONNX at opset {opset}: {text}"
    name = op[1] or op[2]
    later = re.search(r"added in version (\d+)|try opset version (\d+)", text)
    if later:
        needed = later[1] or later[2]
        return (f"{model} cannot be exported to ONNX at opset {opset}: its graph uses the operator {name}, which "
                f"needs opset {needed}. Export with format.opset={needed}")
    return (f"{model} cannot be exported to ONNX: its graph uses the operator {name}, which torch {torch.__version__} "
            f"cannot write at ONNX opset {opset}. Export with format=torchscript, or train a model without it")
