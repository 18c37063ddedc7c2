"""The classifier's page: a dropped image's top-k classes with probability bars, and the top class's Grad-CAM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from tincap.data.cache import decode_files
from tincap.data.transforms import BatchTransform
from tincap.demo.layout import connect, page
from tincap.demo.photo_input import photo_input, unreadable, uploaded
from tincap.evaluation.gradcam import cam_layer, grad_cams, overlay
from tincap.inference.backend import top_k_rows
from tincap.inference.torch_backend import predict_files
from tincap.models import network_name
from tincap.runtime.errors import InvalidInput
from tincap.tasks.classifier import Classifier

OVERLAY_SIZE = 256  # px of the overlay's longer side, as explain.py writes them
HEATMAP_LABEL = "Grad-CAM of the top class"


@dataclass
class ClassifierDemo:
    """One image in, its classes and heatmap out: predict.py's code path for the classes."""

    task: Classifier
    trainer: L.Trainer
    top_k: int
    layer: nn.Module | None  # None: the network has no feature map for Grad-CAM

    def __call__(self, value: dict[str, Any] | None) -> tuple[dict[str, float] | None, gr.Image]:
        upload = uploaded(value)
        if upload is None:  # the image was cleared
            return None, gr.Image(value=None, label=HEATMAP_LABEL)
        try:
            result = predict_files(self.task, [upload.path], self.trainer, batch_size=1)
        except InvalidInput:
            raise unreadable(upload) from None
        ranked = top_k_rows(result, self.task.class_names, self.top_k)
        classes = {str(name): float(probability) for _, _, name, probability in ranked}
        if self.layer is None:
            return classes, gr.Image(value=None)
        top = ranked[0][2]
        return classes, gr.Image(value=self.heatmap(upload.path, self.task.class_names.index(top)),
                                 label=f"Grad-CAM of '{top}'")

    def heatmap(self, file: Path, target: int) -> np.ndarray:
        """Grad-CAM of class `target` over the image as the network saw it, as explain.py draws it."""
        info = self.task.data_info
        pixels = decode_files([file], info["image_size"]).images
        transform = BatchTransform(train=False, mean=tuple(info["mean"]), std=tuple(info["std"]))
        inputs = transform(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous())
        cams = grad_cams(self.task, self.layer, inputs, classes=[target]).cams
        return overlay(pixels[0], cams[0], OVERLAY_SIZE)


def build(task: Classifier, cfg: DictConfig, examples: list[Path]) -> gr.Blocks:
    """The page for a classifier checkpoint; `top_k`, `tta` and `trainer` configure its predictions."""
    if cfg.top_k < 1:
        raise InvalidInput(f"top_k={cfg.top_k}: expected a positive number of classes to show")
    task.use_tta(cfg.tta)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False,
                                                 enable_model_summary=False)
    try:
        layer = cam_layer(task.net)
        explained = "the Grad-CAM heatmap of the top class"
    except ValueError:
        layer = None
        explained = f"no Grad-CAM: {type(task.net).__name__} has no spatial feature map"
    demo = ClassifierDemo(task, trainer, min(cfg.top_k, task.num_classes), layer)
    about = (f"A classifier of {task.num_classes} classes ({network_name(task.hparams.model_cfg or {})}, "
             f"{task.data_info['image_size']} px, test-time augmentation: {task.tta}). Drop an image to see "
             f"its top-{demo.top_k} classes and {explained}.")
    with page("tincap classifier", about) as blocks:
        with gr.Row():
            with gr.Column():
                photo = photo_input()
            with gr.Column():
                classes = gr.Label(num_top_classes=demo.top_k, label=f"Top-{demo.top_k} classes", elem_id="classes")
                heatmap = gr.Image(label=HEATMAP_LABEL, interactive=False, elem_id="gradcam",
                                   visible=layer is not None, format="png", buttons=["download", "fullscreen"])
        connect(photo, [classes, heatmap], demo, examples, api_name="classify")
    return blocks
