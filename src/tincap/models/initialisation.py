"""`init`: where a new network's weights come from before training (from scratch, a local weights file, or the
training images for a whitened stem), and which of them stay frozen. Read here, and nowhere else."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor

from tincap.data.datamodule import ImageDataModule
from tincap.models import FROM_SCRATCH, construct_network, network_name, weights_origin
from tincap.models.backbone import Backbone
from tincap.models.cnn import CNN
from tincap.models.freezing import freeze_backbone
from tincap.models.pretrained import load_weights
from tincap.models.whitening import whiten_conv
from tincap.runtime.errors import InvalidInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Initialisation:
    """The `init` config group: `weights_path` (a timm/torchvision state dict or a tincap checkpoint; a head with
    another class count is replaced), `freeze_backbone` (train the head alone) and `whiten_stem` (the stem conv of
    model=cnn from the training images' patches)."""

    weights_path: str | None = None
    freeze_backbone: bool = False
    whiten_stem: bool = False

    def apply(self, net: Backbone, model_cfg: dict[str, Any], datamodule: ImageDataModule) -> str:
        """Initialise `net` and feed `datamodule` as its weights expect; returns the weights' origin for the report."""
        origin = self.load(net, model_cfg)
        name = network_name(model_cfg)
        datamodule.feed(net.input_spec, name)
        if self.whiten_stem:
            origin = whiten_stem(net, name, datamodule.first_epoch_pixels(), origin)
        return origin

    def load(self, net: Backbone, model_cfg: dict[str, Any]) -> str:
        """The part that needs no data: the weights file, then freezing; returns the weights' origin."""
        origin = weights_origin(model_cfg)
        if self.weights_path:
            source = load_weights(net, self.weights_path, model_cfg)
            if source.input_spec is not None:  # a tincap checkpoint: feed it as its own data was fed
                net.input_spec = replace(source.input_spec, size=source.input_spec.size or net.input_spec.size)
            origin = source.label
        if self.freeze_backbone:
            freeze_backbone(net)
        log.info("model %s: %s%s", network_name(model_cfg), origin, ", backbone frozen" if self.freeze_backbone else "")
        return origin


def whiten_stem(net: Backbone, name: str, pixels: Iterable[Tensor], origin: str) -> str:
    """init.whiten_stem: the stem conv initialised from the training images' patches (`models.whitening`); returns the
    weights' origin for the report."""
    if not isinstance(net, CNN):
        raise InvalidInput(f"init.whiten_stem=true: only model=cnn has a stem conv to whiten, not model {name}; "
                           "set init.whiten_stem=false")
    if origin != FROM_SCRATCH:
        raise InvalidInput(f"init.whiten_stem=true initialises the stem from the training images, but the weights "
                           f"already come from {origin}; set init.whiten_stem=false")
    patches = whiten_conv(net.stem, pixels)
    log.info("model %s: stem conv whitened from %d training patches", name, patches)
    return f"{FROM_SCRATCH}, stem whitened from {patches:,} training patches"


def build_network(model_cfg: dict[str, Any], num_classes: int, init: Initialisation | None = None) -> Backbone:
    """A network constructed from its model config and initialised by `init` (weights file, freezing) without data:
    for scripts and notebooks (train.py initialises through `Initialisation.apply`, which also feeds the data)."""
    net = construct_network(model_cfg, num_classes)
    (init or Initialisation()).load(net, model_cfg)
    return net
