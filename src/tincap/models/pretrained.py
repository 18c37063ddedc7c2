"""Initialising networks from local files (tincap checkpoints, torchvision state dicts) or, online, torchvision."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def torchvision_weights(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """torchvision's published weights (e.g. weights=DEFAULT); needs the network, so fail clearly without it."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
        entry = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
        return entry.get_state_dict(progress=False)
    except KeyError:
        raise ValueError(f"unknown torchvision weights {weights!r} for {arch}; try DEFAULT") from None
    except Exception as exc:  # noqa: BLE001 - urllib, socket and hub errors all mean "could not download"
        raise RuntimeError(
            f"could not download torchvision weights {arch}/{weights} ({exc}). Offline, download the .pth file "
            "elsewhere and pass it as model.weights_path=/path/to/file.pth with model.weights=null"
        ) from exc


def _load(path: Path, expected: str) -> Any:
    """torch.load with errors that name the file and what it should have been."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected {expected}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable torch file ({exc}); expected {expected}") from exc


def read_hparams(path: str | Path) -> dict[str, Any]:
    """The hyper-parameters saved in a tincap (Lightning) checkpoint, with errors that name the file."""
    path = Path(path).expanduser()
    obj = _load(path, "a .ckpt written by python train.py")
    if not isinstance(obj, dict) or "hyper_parameters" not in obj:
        raise ValueError(f"{path} is not a tincap checkpoint (no hyper_parameters inside); expected a train.py .ckpt")
    return dict(obj["hyper_parameters"])


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A network state dict and the hyper-parameters it came with (empty for a bare torchvision .pth)."""
    path = Path(path).expanduser()
    obj = _load(path, "a tincap .ckpt or a torch state-dict .pth")
    if isinstance(obj, dict) and "state_dict" in obj:
        hparams = dict(obj.get("hyper_parameters", {}))
        state = {k[len("net."):]: v for k, v in obj["state_dict"].items() if k.startswith("net.")}
        if not state:
            raise ValueError(f"{path} is a Lightning checkpoint without a 'net.' network inside")
        return state, hparams
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise ValueError(f"{path} holds a {type(obj).__name__}; expected a tincap .ckpt or a state dict of tensors")


def load_weights(net: nn.Module, path: str | Path, model_name: str | None = None) -> None:
    """Copy weights into `net`; a head with another class count (or a replaced stem) is left freshly initialised."""
    state, hparams = read_state_dict(path)
    saved_name = hparams.get("model_cfg", {}).get("name")
    if model_name and saved_name and saved_name != model_name:
        raise ValueError(f"{path} is a checkpoint of model '{saved_name}', but this run builds model '{model_name}'")
    own = net.state_dict()
    head_name = next((n for n, m in net.named_modules() if m is getattr(net, "head", None)), None)
    head_keys = {k for k in own if head_name and k.startswith(head_name + ".")}
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if unexpected or len(missing) > len(head_keys):
        raise ValueError(
            f"{path} does not fit this network (a checkpoint from another model?): "
            f"{len(unexpected)} unexpected keys e.g. {unexpected[:3]}, {len(missing)} missing e.g. {missing[:3]}"
        )
    skipped = []
    for key, value in state.items():
        if own[key].shape != value.shape:
            if key not in head_keys and not key.startswith("conv1."):
                raise ValueError(
                    f"{path}: '{key}' has shape {tuple(value.shape)}, this network expects {tuple(own[key].shape)} "
                    "(a checkpoint from another model or width?)"
                )
            skipped.append(key)
            continue
        own[key] = value
    net.load_state_dict(own)
    if skipped:
        log.info("loaded %s; re-initialised %s (shape differs: new head or stem)", path, skipped)
    else:
        log.info("loaded %s", path)


def freeze_backbone(net: nn.Module) -> None:
    """Train only the classification head (linear probing / frozen fine-tuning)."""
    for p in net.parameters():
        p.requires_grad_(False)
    for p in net.head.parameters():
        p.requires_grad_(True)
