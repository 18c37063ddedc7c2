"""Plain nn.Module backbones; `build_network` turns a model config into one that keeps the backbone contract."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from tincap.errors import InvalidInput
from tincap.models.backbone import Backbone, check_backbone
from tincap.models.cnn import CNN
from tincap.models.freezing import freeze_backbone
from tincap.models.pretrained import load_weights
from tincap.models.whitening import whiten_conv

log = logging.getLogger(__name__)

# keys of a model config that say how to initialise, not how to construct (read here, or for whiten_stem by
# train.build_task, which has the data; never by the constructor)
INIT_KEYS = ("name", "weights_path", "freeze_backbone", "whiten_stem")
# the weights' origin of a network that no file, download or earlier run initialised
FROM_SCRATCH = "from scratch"
# constructor keys that download published weights (torchvision's `weights`, timm's `pretrained`)
DOWNLOAD_KEYS = {"weights": None, "pretrained": False}


def _as_dict(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def construct_network(cfg: DictConfig | dict[str, Any], num_classes: int) -> Backbone:
    """Instantiate the architecture of a model config (`_target_`), checked against the backbone contract."""
    cfg = {k: v for k, v in _as_dict(cfg).items() if k not in INIT_KEYS[1:]}
    name = cfg.pop("name", None)
    if "_target_" not in cfg:
        raise InvalidInput(f"model config {name!r} has no _target_; expected e.g. model._target_=tincap.models.cnn.CNN")
    return check_backbone(hydra.utils.instantiate(cfg, num_classes=num_classes), name or cfg["_target_"])


def initialise_network(net: Backbone, cfg: DictConfig | dict[str, Any]) -> str:
    """Apply the config's local weights file and freezing; returns where the weights came from, for the report."""
    cfg = _as_dict(cfg)
    label = FROM_SCRATCH
    if cfg.get("pretrained"):
        label = f"timm pretrained weights ({cfg.get('arch')})"
    elif cfg.get("weights"):
        label = f"torchvision ImageNet-1k weights ({cfg['weights']})"
    if cfg.get("weights_path"):
        source = load_weights(net, cfg["weights_path"], cfg.get("name"))
        if source.input_spec is not None:  # a tincap checkpoint: feed it as its own data was fed
            net.input_spec = replace(source.input_spec, size=source.input_spec.size or net.input_spec.size)
        label = source.label
    if cfg.get("freeze_backbone"):
        freeze_backbone(net)
    log.info("model %s: %s%s", cfg.get("name"), label, ", backbone frozen" if cfg.get("freeze_backbone") else "")
    return label


def whiten_stem(net: Backbone, name: str, pixels: Iterable[Tensor], init: str) -> str:
    """model.whiten_stem: the stem conv initialised from the training images' patches (`models.whitening`); returns
    the weights' origin for the report."""
    if not isinstance(net, CNN):
        raise InvalidInput(f"model.whiten_stem=true: only model=cnn has a stem conv to whiten, not model {name}; "
                           "set model.whiten_stem=false")
    if init != FROM_SCRATCH:
        raise InvalidInput(f"model.whiten_stem=true initialises the stem from the training images, but the weights "
                           f"already come from {init}; set model.whiten_stem=false")
    patches = whiten_conv(net.stem, pixels)
    log.info("model %s: stem conv whitened from %d training patches", name, patches)
    return f"{FROM_SCRATCH}, stem whitened from {patches:,} training patches"


def build_network(cfg: DictConfig | dict[str, Any], num_classes: int) -> Backbone:
    """Construct and initialise a network from its model config."""
    net = construct_network(cfg, num_classes)
    initialise_network(net, cfg)
    return net


def rebuild_network(model_cfg: dict[str, Any], num_classes: int) -> Backbone:
    """The architecture a checkpoint was trained with, ready for its state dict: no weights file, no download."""
    arch = {k: (DOWNLOAD_KEYS[k] if k in DOWNLOAD_KEYS else v) for k, v in model_cfg.items()}
    return construct_network(arch, num_classes)
