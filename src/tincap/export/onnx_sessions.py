"""ONNX Runtime sessions on the graphs of an export, refused with a clear message when a file is not what model.json
says it is."""

from __future__ import annotations

from typing import Any

from tincap.export.sidecar import SIDECAR, Export
from tincap.runtime.errors import InvalidInput, UserError

INSTALL_HINT = "pip install -e '.[export]' (onnx and onnxruntime)"


def onnxruntime() -> Any:
    """The onnxruntime module, or a user error saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"backend=onnx needs ONNX Runtime, which is not installed: {INSTALL_HINT}") from None
    return onnxruntime


def open_session(export: Export, graph: str, threads: int, key: str) -> Any:
    """An ONNX Runtime CPU session on graph `graph` of `export`, its inputs and outputs checked against model.json."""
    ort = onnxruntime()
    path = export.graph_file(graph, key)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # errors only: its warnings are about graph rewrites, not about the user's input
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's load errors (protobuf, graph, opset) mean "not usable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"{key}={export.folder}: ONNX Runtime cannot load {path.name} ({first[:300]}); expected "
                           "a graph written by python export.py. Export the checkpoint again") from None
    expected = export.meta["graphs"][graph]
    found = {"inputs": [i.name for i in session.get_inputs()], "outputs": [o.name for o in session.get_outputs()]}
    for side in ("outputs", "inputs"):
        names, wanted = found[side], expected[side]
        if names != wanted:
            raise InvalidInput(f"{key}={export.folder}: {path.name} does not match its {SIDECAR}: its {side} are "
                               f"{names}, {SIDECAR} says {wanted}. The file was replaced or belongs to another export; "
                               "export the checkpoint again")
    if graph in ("model", "encoder"):
        _check_image_input(session, export, path.name, key)
    return session


def _check_image_input(session: Any, export: Export, name: str, key: str) -> None:
    """The image input must be uint8 (batch, 3, size, size) at the size model.json gives."""
    image = next(i for i in session.get_inputs() if i.name == "image")
    size = export.image_size
    if image.type != "tensor(uint8)" or list(image.shape[1:]) != [3, size, size]:
        raise InvalidInput(f"{key}={export.folder}: {name} takes {image.type} {image.shape}, but its {SIDECAR} says "
                           f"uint8 images (batch, 3, {size}, {size}); export the checkpoint again")
