"""The preprocessing a network asks of the data that feeds it: size, mean and std (declared by models, applied by
datamodules)."""

from __future__ import annotations

from dataclasses import dataclass

from tincap.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tincap.runtime.errors import InvalidInput


@dataclass(frozen=True)
class InputSpec:
    """How a network wants its images: side in px (None: any size), mean and std of [0, 1] RGB pixels."""

    size: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    fixed_size: bool = False  # True when no other size works (an MLP's input layer, a ViT's position table)

    def image_size(self, requested: int | None, model_name: str) -> int | None:
        """The side to feed: `data.image_size` when set (it must equal a fixed size), else the network's own."""
        if requested is None:
            return self.size
        if self.fixed_size and requested != self.size:
            raise InvalidInput(
                f"model {model_name} only takes {self.size}x{self.size} images, but data.image_size={requested}; "
                f"set data.image_size={self.size} (or null to follow the model)"
            )
        return requested
