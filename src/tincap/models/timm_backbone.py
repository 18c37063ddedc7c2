"""Any timm (PyTorch Image Models) architecture behind tincap's backbone contract."""

from __future__ import annotations

import difflib
import socket
from collections.abc import Sequence
from urllib.parse import urlparse

import timm
import torch
from torch import Tensor, nn

from tincap.data.input_spec import InputSpec
from tincap.runtime.errors import InvalidInput, UserError


def create_timm_model(arch: str, num_classes: int, pretrained: bool, **kwargs: float) -> nn.Module:
    """timm.create_model with clear errors for an unknown name or weights that cannot be downloaded."""
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        raise InvalidInput(f"model.arch={arch} is not a timm architecture"
                         + (f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models('*name*')"))
    if not pretrained:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    fix = (f"Offline, download the weights file elsewhere and pass init.weights_path=/path/to/{arch}.pth "
           "with model.pretrained=false")
    reason = hub_unreachable()
    if reason:
        raise UserError(f"model.pretrained=true: could not download timm's weights for {arch} ({reason}). {fix}")
    try:
        return timm.create_model(arch, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub, socket and offline-mode errors all mean "could not download"
        raise UserError(f"model.pretrained=true: could not download timm's weights for {arch} "
                           f"({type(exc).__name__}: {exc}). {fix}") from exc


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why timm's weights hub cannot be reached, found in one quick try (its own client retries for ~30 s)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None  # the user chose offline mode: the hub client answers from its local cache, or fails at once
    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as exc:
        return f"cannot reach {host}: {exc}"
    return None


class TimmBackbone(nn.Module):
    """timm's network as `self.model`; the feature map passes through `feature_map`, the point Grad-CAM hooks.

    The input spec follows the weights: timm's `pretrained_cfg` (size, mean, std), or `mean`/`std` given for a
    local weights file trained with other statistics.
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "resnet18",
        pretrained: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        self.model = create_timm_model(arch, num_classes, pretrained, drop_rate=drop_rate, **extra)
        cfg = self.model.pretrained_cfg
        self.input_spec = InputSpec(
            size=int(cfg["input_size"][-1]),
            mean=tuple(mean or cfg.get("mean")),
            std=tuple(std or cfg.get("std")),
            fixed_size=bool(cfg.get("fixed_input_size", False)),
        )
        self.feature_dim = int(self.model.num_features)
        self.feature_map = nn.Identity()
        self.tokens = self._gives_tokens()  # ViT-style models give (N, L, C) tokens instead of a map
        self.spatial = True

    def _gives_tokens(self) -> bool:
        was_training = self.model.training
        size = self.input_spec.size or 224
        with torch.no_grad():
            out = self.model.eval().forward_features(torch.zeros(1, 3, size, size))
        self.model.train(was_training)
        return out.ndim == 3

    @property
    def head(self) -> nn.Linear:
        classifier = self.model.get_classifier()
        if not isinstance(classifier, nn.Linear):
            raise TypeError(f"timm model {type(self.model).__name__} has a {type(classifier).__name__} head, not a Linear")
        return classifier

    @property
    def cam_layer(self) -> nn.Module | None:
        return None if self.tokens else self.feature_map

    def _timm_features(self, x: Tensor) -> Tensor:
        """timm's own output before its head, through the Grad-CAM point: (N, C, h, w), or (N, L, C) tokens."""
        return self.feature_map(self.model.forward_features(x))

    def forward_features(self, x: Tensor) -> Tensor:
        feats = self._timm_features(x)
        if not self.tokens:
            return feats  # (N, C, h, w)
        patches = feats[:, self.model.num_prefix_tokens:]  # drop class/register tokens: (N, h*w, C)
        side = int(round(patches.shape[1] ** 0.5))
        return patches.transpose(1, 2).reshape(len(x), -1, side, side)  # (N, C, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_head(self._timm_features(x))  # (N, classes)
