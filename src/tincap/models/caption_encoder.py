"""Image encoder for captioning: a backbone's feature map, handed to the decoder in the form the decoder reads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tincap.models.backbone import Backbone
from tincap.models.caption_decoders import ImageInput
from tincap.models.freezing import freeze_norms, keep_frozen_norms_in_eval
from tincap.runtime.errors import InvalidInput


class CaptionEncoder(nn.Module):
    """Backbone map (N, C, h, w) -> spatial (N, h*w, C) for an attending decoder, or global (N, D) =
    BN(Linear(avg-pool)) for one that reads a vector; ``output_dim`` is C or D accordingly."""

    def __init__(self, backbone: Backbone, reads: ImageInput, embed_dim: int = 256, freeze: bool = False,
                 dropout: float = 0.0, frozen_norms: bool = False) -> None:
        super().__init__()
        if not backbone.spatial:
            raise InvalidInput(f"{type(backbone).__name__} has no spatial feature map (N, C, h, w) for a caption encoder; "
                               "choose a convolutional model (model=cnn, resnet, alexnet or timm)")
        self.backbone = backbone
        self.feature_dim: int = backbone.feature_dim
        self.freeze = freeze
        self.precomputed = False  # True while inputs are this backbone's cached feature maps, not images
        self.project: nn.Module | None = None
        if reads == "global":
            # batch-normalised as in Show and Tell: raw pooled ReLU features are large and all positive, which
            # saturates a decoder's tanh(Linear(.)) initial state until every image gets the same one
            self.project = nn.Sequential(nn.Linear(self.feature_dim, embed_dim), nn.BatchNorm1d(embed_dim),
                                         nn.Dropout(dropout))
        self.output_dim = embed_dim if reads == "global" else self.feature_dim
        for p in backbone.head.parameters():  # the classification head is unused: no gradient, nothing for DDP to wait on
            p.requires_grad_(False)
        if freeze:
            for p in backbone.parameters():
                p.requires_grad_(False)
            backbone.eval()
        elif frozen_norms:
            freeze_norms(backbone)

    def train(self, mode: bool = True) -> CaptionEncoder:
        """A frozen backbone stays in eval mode, so its BatchNorm statistics and dropout never change."""
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        keep_frozen_norms_in_eval(self.backbone)  # init.freeze_backbone, or task.freeze_encoder_norms
        return self

    def feature_map(self, images: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            fmap = self.backbone.forward_features(images)
        return fmap  # (N, C, h, w)

    def _map(self, inputs: Tensor) -> Tensor:
        return inputs if self.precomputed else self.feature_map(inputs)

    def pooled(self, inputs: Tensor) -> Tensor:
        """The average-pooled backbone feature (N, C): the space of the nearest-neighbour baseline."""
        return self._map(inputs).flatten(2).mean(2)

    def forward(self, inputs: Tensor) -> Tensor:
        spatial = self._map(inputs).flatten(2).transpose(1, 2)  # (N, h*w, C)
        return spatial if self.project is None else self.project(spatial.mean(1))  # (N, L, C) or (N, D)
