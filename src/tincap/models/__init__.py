"""Plain nn.Module backbones; `build_network` turns a model config into one."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from torch import nn

from tincap.models.pretrained import freeze_backbone, load_weights

# keys of a model config that describe how to initialise, not how to construct
INIT_KEYS = ("name", "weights_path", "freeze_backbone")


def build_network(cfg: DictConfig | dict[str, Any], num_classes: int) -> nn.Module:
    """Instantiate a model config (`_target_`), then apply its local weights file and freezing."""
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    init = {k: cfg.pop(k, None) for k in INIT_KEYS}
    if "_target_" not in cfg:
        raise ValueError(f"model config {init['name']!r} has no _target_; expected e.g. tincap.models.cnn.CNN")
    net = hydra.utils.instantiate(cfg, num_classes=num_classes)
    if init["weights_path"]:
        load_weights(net, init["weights_path"], init["name"])
    if init["freeze_backbone"]:
        freeze_backbone(net)
    return net
