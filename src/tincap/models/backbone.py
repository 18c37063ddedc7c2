"""The backbone contract: what every classification network offers to the classifier, the caption encoder,
Grad-CAM, the feature cache and freezing. They use this interface alone, with no special case per model."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

from tincap.data.input_spec import InputSpec


class Backbone(Protocol):
    """A classification network: `forward(x)` gives logits (N, classes) through `head`."""

    feature_dim: int  # channels C of the feature map (the mlp: width of its last hidden layer)
    spatial: bool  # False when forward_features gives (N, D) vectors, not a map (the mlp)
    input_spec: InputSpec

    @property
    def head(self) -> nn.Linear:
        """The classification layer, replaced when weights come with another class count."""
        ...

    @property
    def cam_layer(self) -> nn.Module | None:
        """The module whose output map Grad-CAM weighs; None when there is none (mlp, token-based ViT)."""
        ...

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map before pooling, (N, C, h, w); (N, D) when `spatial` is False."""
        ...

    def forward(self, x: Tensor) -> Tensor: ...


BACKBONE_MEMBERS = ("feature_dim", "spatial", "input_spec", "head", "cam_layer", "forward_features", "forward")


def check_backbone(net: nn.Module, model_name: str) -> Backbone:
    """Refuse, at build time, a network that does not keep the contract (e.g. a user's own `_target_`)."""
    # hasattr, not isinstance on a runtime_checkable Protocol: from Python 3.12 that looks members up statically
    # and misses what nn.Module keeps in _modules (a `head` submodule)
    missing = [a for a in BACKBONE_MEMBERS if not hasattr(net, a)]
    if missing:
        raise TypeError(f"model {model_name} ({type(net).__name__}) does not satisfy tincap.models.backbone.Backbone: "
                        f"it lacks {missing}")
    if not isinstance(net.head, nn.Linear):
        raise TypeError(f"model {model_name}: `head` must be an nn.Linear, got {type(net.head).__name__}")
    return net


def module_name(net: nn.Module, module: nn.Module) -> str:
    """The dotted name of a submodule of `net` (its state-dict prefix)."""
    for name, m in net.named_modules():
        if m is module:
            return name
    raise ValueError(f"{type(module).__name__} is not a submodule of {type(net).__name__}")
