"""Image encoder for captioning: a classifier backbone's feature map as a global vector plus a grid to attend over."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CaptionEncoder(nn.Module):
    """Backbone map (N, C, h, w) -> global (N, D) = ReLU(Linear(avg-pool)) and spatial (N, h*w, C) for attention."""

    def __init__(self, backbone: nn.Module, embed_dim: int, dropout: float = 0.0, freeze: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim: int = backbone.feature_dim
        self.embed_dim = embed_dim
        self.freeze = freeze
        self.project = nn.Sequential(nn.Linear(self.feature_dim, embed_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
        if freeze:
            for p in backbone.parameters():
                p.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True) -> CaptionEncoder:
        """A frozen backbone stays in eval mode, so its BatchNorm statistics and dropout never change."""
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            fmap = self.backbone.forward_features(images)
        spatial = fmap.flatten(2).transpose(1, 2)
        return self.project(spatial.mean(1)), spatial
