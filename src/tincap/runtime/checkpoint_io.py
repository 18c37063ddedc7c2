"""Checkpoint and weights files as tincap reads and writes them: read without running code, written atomically.

Files are read with `torch.load(weights_only=True)`: tensors and plain containers only, so a `.pth` downloaded from
the internet cannot run code when it is loaded. Checkpoints are written with plain-container hyper-parameters, so
they read back the same way. Checkpoints of earlier tincap versions pickled OmegaConf containers; those data classes
(and nothing callable) are allow-listed so they still load.
"""

from __future__ import annotations

import collections
import pickle
import typing
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode

from tincap.runtime.atomic import atomic_path
from tincap.runtime.errors import InvalidInput, MissingInput

# what the hyper-parameters of checkpoints written before plain-container saving pickle (data holders only)
LEGACY_HPARAM_GLOBALS = [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, typing.Any,
                         collections.defaultdict, dict, list, int]



def read_file(path: str | Path, expected: str, key: str | None = None, mmap: bool = False) -> Any:
    """The contents of a torch file, loaded without unpickling code; errors name the key, the file and what it
    should be. `mmap`: tensors are mapped, not read, until used (a zip-format file, as torch.save writes)."""
    path = Path(path).expanduser()
    named = f"{key}={path}" if key else str(path)
    if not path.is_file():
        raise MissingInput(f"{named}: file not found; expected {expected}")
    try:
        with torch.serialization.safe_globals(LEGACY_HPARAM_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        foreign = _foreign_globals(path)
        if foreign is None and "GLOBAL" in str(exc):  # a legacy-format file names its globals only when unpickled
            foreign = "a legacy pickle"
        if not foreign:
            raise InvalidInput(f"{named} is not a readable torch file ({type(exc).__name__}); expected {expected}") \
                from None
        raise InvalidInput(
            f"{named} holds Python objects besides tensors and plain containers ({foreign}). tincap "
            "refuses to unpickle it, because loading such a file can run any code it carries. Expected "
            f"{expected}. If you trust the file's source, save just its tensors once (torch.save(model.state_dict(), "
            "'clean.pth')) and pass that file instead"
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip, struct and EOF errors of a damaged or foreign file all mean this
        raise InvalidInput(f"{named} is not a readable torch file ({exc}); expected {expected}") from None


def _foreign_globals(path: Path) -> str | None:
    """The Python objects a torch file names beyond the allow-list (read without unpickling; None: cannot tell)."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in LEGACY_HPARAM_GLOBALS}
    try:
        names = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - allowed)
    except Exception:  # noqa: BLE001 - a legacy (non-zip) file cannot be inspected without unpickling it
        return None
    return ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A tincap (Lightning) checkpoint, its hyper-parameters as plain containers."""
    path = Path(path).expanduser()
    obj = read_file(path, "a checkpoints/*.ckpt file of a python train.py run", key)
    if not isinstance(obj, dict) or "hyper_parameters" not in obj or "state_dict" not in obj:
        raise InvalidInput(f"{key}={path} is not a tincap checkpoint (no hyper_parameters/state_dict inside); expected a "
                           "checkpoints/*.ckpt file of a python train.py run")
    return {**obj, "hyper_parameters": plain(obj["hyper_parameters"])}


def read_state_dict(path: str | Path, key: str = "init.weights_path") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A network state dict and the hyper-parameters it came with (empty for a bare timm/torchvision .pth)."""
    path = Path(path).expanduser()
    obj = read_file(path, "a tincap .ckpt or a state-dict .pth of tensors", key)
    if isinstance(obj, dict) and "state_dict" in obj:
        hparams = plain(obj.get("hyper_parameters", {}))
        state = {k[len("net."):]: v for k, v in obj["state_dict"].items() if k.startswith("net.")}
        if not state:
            raise InvalidInput(f"{key}={path} is a Lightning checkpoint without a 'net.' network inside; expected a tincap "
                               ".ckpt or a state dict")
        return state, hparams
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise InvalidInput(f"{key}={path} holds a {type(obj).__name__}; expected a tincap .ckpt or a state dict of tensors")


def plain(value: Any) -> Any:
    """OmegaConf containers (anywhere inside) as dicts and lists, which `weights_only` loading accepts."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader and writer: plain hyper-parameters, temp file + rename, weights-only reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if "hyper_parameters" in checkpoint:
            checkpoint = {**checkpoint, "hyper_parameters": plain(checkpoint["hyper_parameters"])}
        # through a Python file object: a full disk is then an OSError (ENOSPC), not torch's opaque RuntimeError
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(checkpoint, fh)

    def load_checkpoint(self, path: str | Path, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return read_file(path, "a checkpoint written by this run")


def checkpoint_epoch(path: str | Path) -> int:
    """The epochs a checkpoint had completed when it was written (its weights are mapped, not read)."""
    return int(read_file(path, "a checkpoint written by this run", mmap=True)["epoch"]) + 1
