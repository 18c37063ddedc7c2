"""Where an attention decoder looked for each word of a caption, drawn over the image."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from tincap.data.transforms import BatchTransform
from tincap.evaluation.gradcam import overlay
from tincap.tasks.captioner import Captioner


@torch.inference_mode()
def word_attention(task: Captioner, pixels: np.ndarray, caption: str) -> list[tuple[str, np.ndarray]]:
    """Each word of `caption` with the attention weights (h, w) over the feature map that produced it.

    The decoder is teacher-forced along the caption: each step's weights depend only on the image and the words before,
    so they are exactly those the search computed for this caption.
    """
    words = caption.split()
    if not words:
        return []
    info = task.data_info
    transform = BatchTransform(train=False, mean=tuple(info["mean"]), std=tuple(info["std"]))
    x = transform(torch.from_numpy(pixels[None]).permute(0, 3, 1, 2).contiguous())
    task.eval()
    height, width = task.encoder.feature_map(x).shape[-2:]
    tokens = torch.tensor([[task.vocab.bos_id, *(task.vocab.stoi[w] for w in words)]])
    _, alphas = task.decoder.forward_with_attention(task.encoder(x), tokens)  # (1, words, h * w)
    return [(word, alpha.view(height, width).float().numpy()) for word, alpha in zip(words, alphas[0])]


def attention_overlay(pixels: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """The weights upsampled to the image and stretched from their least to their most (red), blended over it: an
    undertrained decoder's nearly even weights still show where they lean."""
    height, width = pixels.shape[:2]
    spread = float(weights.max() - weights.min())
    heat = (weights - weights.min()) / spread if spread > 0 else np.zeros_like(weights)
    return overlay(pixels, cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR), size)
