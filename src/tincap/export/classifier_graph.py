"""A classifier as one graph: uint8 image (N, 3, H, W) -> logits (N, classes), batch size free."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tincap.export.graph import BATCH, Graph, Normalise
from tincap.tasks.classifier import Classifier


class ClassifierGraph(nn.Module):
    """Normalisation and the network, as predict.py runs them; flip TTA stays outside (the runner averages two
    passes, as the PyTorch path does)."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalise = Normalise(mean, std)
        self.net = net

    def forward(self, image: Tensor) -> Tensor:
        return self.net(self.normalise(image))  # (N, classes)


def classifier_graphs(task: Classifier) -> list[Graph]:
    """The one graph of a classifier, with a two-image example batch (a batch of one could fix the batch size)."""
    info = task.hparams.data_info
    size = int(info["image_size"])
    module = ClassifierGraph(task.net, info["mean"], info["std"]).eval()
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    return [Graph("model", module, (example,), {"image": 0, "logits": 0})]


def classifier_sidecar(task: Classifier) -> dict[str, Any]:
    """What a classifier's model.json adds: its classes and its test-time augmentation."""
    return {"kind": "classifier", "classes": task.class_names, "tta": task.tta,
            "outputs": {"logits": f"({BATCH}, {len(task.class_names)}) float32, before softmax"}}
