"""Initialising networks from local weights files (tincap checkpoints, timm or torchvision state dicts) or, online, torchvision."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tincap.data.input_spec import InputSpec
from tincap.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tincap.models import network_name
from tincap.models.backbone import Backbone, module_name
from tincap.runtime.checkpoint_io import read_state_dict
from tincap.runtime.errors import InvalidInput, UserError

log = logging.getLogger(__name__)


def torchvision_weights(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """torchvision's published weights (e.g. weights=DEFAULT); needs the network, so fail clearly without it."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
        entry = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
        return entry.get_state_dict(progress=False, weights_only=True)
    except KeyError:
        raise InvalidInput(f"model.weights={weights}: unknown torchvision weights for {arch}; try model.weights=DEFAULT") from None
    except Exception as exc:  # noqa: BLE001 - urllib, socket and hub errors all mean "could not download"
        raise UserError(
            f"could not download torchvision weights {arch}/{weights} ({exc}). Offline, download the .pth file "
            "elsewhere and pass it as init.weights_path=/path/to/file.pth with model.weights=null"
        ) from exc


@dataclass(frozen=True)
class WeightsFile:
    """What a weights file gave a network: a one-line provenance, and the preprocessing it was trained with."""

    label: str  # e.g. "ImageNet-1k weights (resnet18.pth)" or "tin30 checkpoint (epoch_012.ckpt)"
    input_spec: InputSpec | None  # a tincap checkpoint's own size/mean/std; None for a bare state dict


def align_prefix(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A library's state dict for the network a tincap wrapper holds (timm's keys into `model.`): add the prefix
    under which most of the file's keys exist in the network, if that beats none."""
    def hits(prefix: str) -> int:
        return sum(prefix + k in own for k in state)

    candidates = {key[: -len(k)] for k in list(state)[:50] for key in own if key.endswith("." + k)}
    best = max(sorted(candidates), key=hits, default="")
    return {best + k: v for k, v in state.items()} if hits(best) > hits("") else state


def _listed(keys: list[str], limit: int = 12) -> str:
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_weights(net: Backbone, path: str | Path, model_cfg: dict[str, Any] | None = None) -> WeightsFile:
    """Copy every tensor of a weights file into `net`; only a head with another class count may be left new.

    Any other missing, unexpected or mis-shaped key is an error that lists them: never a silent partial load.
    """
    path = Path(path).expanduser()
    state, hparams = read_state_dict(path)
    model_name = network_name(model_cfg) if model_cfg else type(net).__name__
    saved = hparams.get("model_cfg") or {}
    if model_cfg and saved.get("_target_") and network_name(saved) != model_name:
        raise InvalidInput(f"init.weights_path={path} is a checkpoint of a {network_name(saved)} network, but this run "
                           f"builds a {model_name}; choose the model that checkpoint was trained with, or another "
                           "weights file")
    own = net.state_dict()
    state = align_prefix(state, own)
    head = module_name(net, net.head)
    head_keys = {f"{head}.{k}" for k in net.head.state_dict()}
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state and k not in head_keys and not k.endswith("num_batches_tracked"))
    reshaped = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
                      if k in own and k not in head_keys and state[k].shape != own[k].shape)
    if unexpected or missing or reshaped:
        problems = [f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}" if unexpected else "",
                    f"{len(missing)} missing key(s): {_listed(missing)}" if missing else "",
                    f"{len(reshaped)} key(s) of another shape (file vs network): {_listed(reshaped)}" if reshaped else ""]
        raise InvalidInput(f"init.weights_path={path} does not fit model {model_name} (weights of another "
                         f"architecture, width or input stem?): " + "; ".join(p for p in problems if p))
    new_head = [k for k in head_keys if k not in state or state[k].shape != own[k].shape]
    file_classes = state[f"{head}.weight"].shape[0] if f"{head}.weight" in state else None
    own.update({k: v for k, v in state.items() if k not in new_head})
    net.load_state_dict(own)
    if new_head:
        # a zero head starts from uniform predictions, so early steps do not push random errors into the
        # pretrained features (the head initialisation of BiT's transfer recipe)
        nn.init.zeros_(net.head.weight)
        if net.head.bias is not None:
            nn.init.zeros_(net.head.bias)
        log.info("loaded %s; replaced its head (%s classes) by a new zero-initialised %d-class head", path,
                 file_classes or "no", net.head.out_features)
    else:
        log.info("loaded %s (all %d tensors)", path, len(state))
    info = hparams.get("data_info") or {}
    if hparams:
        spec = InputSpec(size=info.get("image_size"), mean=tuple(info.get("mean") or IMAGENET_MEAN),
                         std=tuple(info.get("std") or IMAGENET_STD), fixed_size=net.input_spec.fixed_size)
        return WeightsFile(f"{info.get('dataset', 'tincap')} checkpoint ({path.name})", spec)
    what = "ImageNet-1k weights" if file_classes == 1000 else "weights"
    return WeightsFile(f"{what} ({path.name})", None)
