"""model.json, the sidecar of every export: what the graphs are, how to feed them, and how to read their outputs.

An export folder holds model.json and the graph files it names. Commands find it from the folder, model.json, one of
its graph files, or the training run directory it was written into (`<run>/export/<format>/`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tincap.runtime.atomic import atomic_write_text
from tincap.runtime.errors import InvalidInput, MissingInput

SIDECAR = "model.json"
SIDECAR_VERSION = 1
EXPORT_DIR = "export"  # inside a training run directory: export/<format>/


def checkpoint_run_dir(ckpt: Path) -> Path:
    """The training run directory of a checkpoint (<run>/checkpoints/x.ckpt), else the folder the file is in."""
    ckpt = ckpt.expanduser().resolve()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def input_description(info: dict[str, Any]) -> dict[str, Any]:
    """How to feed the graph's `image` input, so a user outside tincap can: decode, resize, lay out as uint8."""
    size = int(info["image_size"])
    return {"name": "image", "shape": ["batch", 3, size, size], "dtype": "uint8", "channels": "RGB",
            "size": size, "resize": "Pillow bilinear to size x size (no crop)",
            "mean": list(info["mean"]), "std": list(info["std"]),
            "normalisation": "inside the graph: (pixels / 255 - mean) / std"}


def write_sidecar(folder: Path, meta: dict[str, Any]) -> Path:
    """Write model.json last, so a folder with one holds a complete export."""
    path = folder / SIDECAR
    atomic_write_text(path, json.dumps({"tincap_export": SIDECAR_VERSION, "torch": torch.__version__, **meta},
                                       indent=2) + "\n")
    return path


@dataclass(frozen=True)
class Export:
    """A read export: its folder and model.json's contents."""

    folder: Path
    meta: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def image_size(self) -> int:
        return int(self.meta["input"]["size"])

    def graph_file(self, name: str, key: str) -> Path:
        """The file of graph `name`, which must be there."""
        entry = self.meta["graphs"].get(name)
        if entry is None:
            raise InvalidInput(f"{key}={self.folder}: its {SIDECAR} names no '{name}' graph; expected an export of a "
                               f"{self.kind} written by python export.py")
        path = self.folder / entry["file"]
        if not path.is_file():
            raise MissingInput(f"{key}={self.folder}: {entry['file']} is missing (its {SIDECAR} names it); export the "
                               "checkpoint again with python export.py")
        return path


def find_sidecar(path: str | Path, fmt: str, key: str) -> Path:
    """model.json of the export at `path`: the file itself, one beside a graph file, in a folder, or in a training run
    directory's export/<fmt>/."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingInput(f"{key}={path}: no such file or folder; expected an export folder written by python "
                           "export.py (or its model.json, or the training run directory it was written into)")
    folder = path.parent if path.is_file() else path
    for candidate in (folder / SIDECAR, folder / EXPORT_DIR / fmt / SIDECAR):
        if candidate.is_file():
            return candidate
    raise InvalidInput(f"{key}={path}: no {SIDECAR} there nor in {EXPORT_DIR}/{fmt}/ under it; expected an export "
                       f"written by python export.py ckpt_path=<.ckpt> format={fmt}")


def read_export(path: str | Path, fmt: str, kind: str, key: str) -> Export:
    """The export at `path`, refused unless it is a `fmt` export of a `kind`."""
    sidecar = find_sidecar(path, fmt, key)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{key}={path}: {sidecar} is not readable JSON ({exc}); export the checkpoint again") \
            from None
    if not isinstance(meta, dict) or meta.get("tincap_export") != SIDECAR_VERSION or "graphs" not in meta:
        raise InvalidInput(f"{key}={path}: {sidecar} is not a tincap export sidecar (version {SIDECAR_VERSION}); "
                           "export the checkpoint again with python export.py")
    if meta.get("format") != fmt:
        raise InvalidInput(f"{key}={path}: {sidecar} describes a {meta.get('format')} export; expected {fmt}. Export "
                           f"with python export.py ckpt_path=<.ckpt> format={fmt}")
    if meta.get("kind") != kind:
        use = "caption.py" if meta.get("kind") == "captioner" else "predict.py"
        raise InvalidInput(f"{key}={path} is an export of a {meta.get('kind')}, but this command needs a {kind}; "
                           f"use it with {use}")
    return Export(sidecar.parent, meta)
