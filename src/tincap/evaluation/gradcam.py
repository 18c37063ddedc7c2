"""Grad-CAM heatmaps (pytorch-grad-cam) for a classifier's predictions, their overlays, files and grid figure."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from tincap.evaluation.canvas import image_grid
from tincap.models.backbone import Backbone
from tincap.runtime.atomic import atomic_path

log = logging.getLogger(__name__)


def cam_layer(net: Backbone) -> nn.Module:
    """The layer whose feature maps Grad-CAM weighs: the network's `cam_layer` (backbone contract)."""
    if net.cam_layer is None:
        raise ValueError(f"{type(net).__name__} has no spatial feature map for Grad-CAM to weigh (no cam_layer); "
                         "explain a convolutional model (cnn, resnet, alexnet, or a timm CNN)")
    return net.cam_layer


@dataclass(frozen=True)
class Explanation:
    """Per image: the Grad-CAM heatmap of the predicted class (H, W in [0, 1]) and the class probabilities."""

    cams: np.ndarray  # (N, H, W) float32
    probs: np.ndarray  # (N, C) float32

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)


def grad_cams(model: nn.Module, layer: nn.Module, inputs: Tensor, batch_size: int = 64,
              classes: Sequence[int] | None = None) -> Explanation:
    """Grad-CAM of each image's predicted class (or of `classes`, one per image) at `layer`, from the same forward pass
    that makes the prediction."""
    model.eval().requires_grad_(True)  # gradients must reach `layer` even for a frozen backbone
    cam = GradCAM(model=model, target_layers=[layer])
    cams, probs = [], []
    try:  # not `with GradCAM(...)`: its __exit__ swallows IndexError
        with torch.enable_grad():
            for start in range(0, len(inputs), batch_size):
                batch = slice(start, start + batch_size)
                targets = None if classes is None else [ClassifierOutputTarget(int(c)) for c in classes[batch]]
                cams.append(cam(inputs[batch], targets=targets))  # targets None: each image's argmax class
                probs.append(cam.outputs.detach().float().softmax(1).cpu().numpy())
    finally:
        cam.activations_and_grads.release()
    return Explanation(np.concatenate(cams).astype(np.float32), np.concatenate(probs))


def overlay(image: np.ndarray, cam: np.ndarray, size: int | None = None, image_weight: float = 0.5) -> np.ndarray:
    """A uint8 RGB image with the jet-coloured heatmap blended in, upscaled so its longer side is `size` px."""
    h, w = image.shape[:2]
    if size and max(h, w) < size:
        scale = size / max(h, w)
        h, w = round(h * scale), round(w * scale)
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))
        cam = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(image.astype(np.float32) / 255, np.clip(cam, 0, 1), use_rgb=True,
                             image_weight=image_weight)


def safe_name(name: str) -> str:
    """A class name usable inside a file name on every OS."""
    return re.sub(r"[^\w.-]+", "-", str(name)).strip("-") or "class"


def overlay_name(position: int, pred: str, true: str | None) -> str:
    """`0007_pred-goldfish_true-koala.png`, or `0007_pred-goldfish.png` when the true class is unknown."""
    label = f"_true-{safe_name(true)}" if true is not None else ""
    return f"{position:04d}_pred-{safe_name(pred)}{label}.png"


def overlay_folder(pred: int, true: int | None) -> str:
    return "unlabelled" if true is None else ("correct" if pred == true else "wrong")


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 RGB array atomically (never a truncated PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def overlay_grid_figure(overlays: Sequence[np.ndarray], preds: Sequence[str], trues: Sequence[str | None],
                        confidences: Sequence[float], cols: int = 8) -> Figure:
    """Overlays titled with prediction (and truth): green when right, red when wrong, black when unknown."""
    fig, axes = image_grid(list(overlays), cols, (2.0, 2.3))
    for i, ax in enumerate(axes):
        title = f"pred {preds[i]} ({confidences[i]:.2f})"
        colour = "black"
        if trues[i] is not None:
            title += f"\ntrue {trues[i]}"
            colour = "green" if trues[i] == preds[i] else "red"
        ax.set_title(title, fontsize=7, color=colour)
    return fig


def figure_pixels(fig: Figure) -> np.ndarray:
    """Render a figure once to uint8 RGB, for both the PNG file and TensorBoard (each would re-render it)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
