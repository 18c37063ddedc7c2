"""Image encoder for captioning: a classifier backbone's feature map as a global vector plus a grid to attend over."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tincap.errors import InvalidInput
from tincap.models.backbone import Backbone
from tincap.models.freezing import keep_frozen_norms_in_eval


class CaptionEncoder(nn.Module):
    """Backbone map (N, C, h, w) -> global (N, D) = BN(Linear(avg-pool)) and spatial (N, h*w, C) for attention."""

    def __init__(self, backbone: Backbone, embed_dim: int, dropout: float = 0.0, freeze: bool = False) -> None:
        super().__init__()
        if not backbone.spatial:
            raise InvalidInput(f"{type(backbone).__name__} has no spatial feature map (N, C, h, w) for a caption encoder; "
                             "choose a convolutional model (model=cnn, resnet, alexnet or timm)")
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
        keep_frozen_norms_in_eval(self.backbone)  # a backbone frozen but for its head (model.freeze_backbone)
        return self

    def feature_map(self, images: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            fmap = self.backbone.forward_features(images)
        return fmap  # (N, C, h, w)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        fmap = images if self.precomputed else self.feature_map(images)
        spatial = fmap.flatten(2).transpose(1, 2)
        return self.project(spatial.mean(1)), spatial
