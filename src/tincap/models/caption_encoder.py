"""Image encoder for captioning: a classifier backbone's feature map as a global vector plus a grid to attend over."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CaptionEncoder(nn.Module):
    """Backbone map (N, C, h, w) -> global (N, D) = BN(Linear(avg-pool)) and spatial (N, h*w, C) for attention."""

    def __init__(self, backbone: nn.Module, embed_dim: int, dropout: float = 0.0, freeze: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim: int = backbone.feature_dim
        self.embed_dim = embed_dim
        self.freeze = freeze
        self.precomputed = False  # True while inputs are this backbone's cached feature maps, not images
        # batch-normalised as in Show and Tell: raw pooled ReLU features are large and all positive, which
        # saturates a decoder's tanh(Linear(.)) initial state until every image gets the same one
        self.project = nn.Sequential(nn.Linear(self.feature_dim, embed_dim), nn.BatchNorm1d(embed_dim), nn.Dropout(dropout))
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

    def feature_map(self, images: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            fmap = self.backbone.forward_features(images)
        if fmap.dim() != 4:
            raise ValueError(f"{type(self.backbone).__name__} gives features of shape {tuple(fmap.shape)}, not a "
                             "(N, C, h, w) map; a caption encoder must be convolutional (model=cnn, resnet or alexnet)")
        return fmap

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        fmap = images if self.precomputed else self.feature_map(images)
        spatial = fmap.flatten(2).transpose(1, 2)
        return self.project(spatial.mean(1)), spatial
