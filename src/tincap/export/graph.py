"""What an exported graph is: a module with example inputs, named inputs and outputs, and each one's batch axis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from tincap.data.transforms import BatchTransform

BATCH = "batch"  # the name of every dynamic batch axis


@dataclass(frozen=True)
class Graph:
    """One file of an export: `module(*inputs)` traced; `batch_axes` names every input and output, in order."""

    name: str  # the file's stem and its key in model.json
    module: nn.Module
    inputs: tuple[Tensor, ...]
    batch_axes: dict[str, int]  # input names, then output names -> the axis that holds the batch

    @property
    def input_names(self) -> list[str]:
        return list(self.batch_axes)[: len(self.inputs)]

    @property
    def output_names(self) -> list[str]:
        return list(self.batch_axes)[len(self.inputs) :]


class Normalise(nn.Module):
    """uint8 RGB pixels (N, 3, H, W) -> the float input the network was trained on, computed as predict.py's
    `BatchTransform` computes it (x * 1/(255 std) - mean/std), so exported and PyTorch outputs agree to rounding."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        transform = BatchTransform(train=False, mean=mean, std=std)
        self.register_buffer("scale", transform.scale)  # (1, 3, 1, 1)
        self.register_buffer("shift", transform.shift)  # (1, 3, 1, 1)

    def forward(self, image: Tensor) -> Tensor:
        return image.float() * self.scale - self.shift  # (N, 3, H, W)
