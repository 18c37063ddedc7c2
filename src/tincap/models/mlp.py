"""The coursework's fully connected baseline: flattened pixels through ReLU hidden layers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tincap.data.input_spec import InputSpec


class MLP(nn.Module):
    """Fixed input size (its first layer sees every pixel) and no spatial map: nothing to attend over or explain."""

    spatial = False
    cam_layer = None

    def __init__(
        self,
        num_classes: int,
        image_size: int | None = 64,
        hidden: Sequence[int] = (1024, 512),
        dropout: float = 0.2,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        image_size = image_size or 64  # null data.image_size: the coursework's 64x64 images
        prev = in_channels * image_size * image_size
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)
        self.feature_dim = prev
        self.image_size = image_size
        self.input_spec = InputSpec(size=image_size, fixed_size=True)

    def forward_features(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"MLP was built for {self.image_size}x{self.image_size} images, got {tuple(x.shape[-2:])}")
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))
