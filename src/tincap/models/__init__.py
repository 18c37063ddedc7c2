"""Plain nn.Module networks behind one backbone contract (`backbone.Backbone`), built from the `model` config group,
which holds only what a network's constructor takes; how it is initialised is the `init` group's (`initialisation`)."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from tincap.models.backbone import Backbone, check_backbone
from tincap.runtime.errors import InvalidInput

# the weights' origin of a network that no file, download or earlier run initialised
FROM_SCRATCH = "from scratch"
# constructor keys that download published weights (torchvision's `weights`, timm's `pretrained`), and their off value
DOWNLOAD_KEYS = {"weights": None, "pretrained": False}


def plain_config(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """A model config as a resolved dict."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def network_name(cfg: DictConfig | dict[str, Any]) -> str:
    """How messages and reports name a model config's network: its timm architecture, else its class."""
    cfg = plain_config(cfg)
    return str(cfg.get("arch") or str(cfg.get("_target_", "?")).rsplit(".", 1)[-1])


def weights_origin(cfg: DictConfig | dict[str, Any]) -> str:
    """Where a freshly constructed network's weights came from: a download its constructor made, else nowhere."""
    cfg = plain_config(cfg)
    if cfg.get("pretrained"):
        return f"timm pretrained weights ({cfg.get('arch')})"
    if cfg.get("weights"):
        return f"torchvision ImageNet-1k weights ({cfg['weights']})"
    return FROM_SCRATCH


def construct_network(cfg: DictConfig | dict[str, Any], num_classes: int) -> Backbone:
    """Instantiate the architecture of a model config (`_target_`), checked against the backbone contract."""
    cfg = plain_config(cfg)
    if "_target_" not in cfg:
        raise InvalidInput(f"model config {cfg} has no _target_; expected e.g. model._target_=tincap.models.cnn.CNN")
    return check_backbone(hydra.utils.instantiate(cfg, num_classes=num_classes), network_name(cfg))


def rebuild_network(model_cfg: dict[str, Any], num_classes: int) -> Backbone:
    """The architecture a checkpoint was trained with, ready for its state dict: no download."""
    arch = {k: (DOWNLOAD_KEYS[k] if k in DOWNLOAD_KEYS else v) for k, v in model_cfg.items()}
    return construct_network(arch, num_classes)
