"""Whitening initialisation of a stem conv (airbench, Jordan 2024): its filters are the principal directions of the
training images' patches, each scaled to unit variance and used with both signs so that the ReLU after it keeps both
halves. The network then starts from decorrelated inputs instead of random projections of them."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def patch_covariance(batches: Iterable[Tensor], kernel: int) -> tuple[Tensor, int]:
    """Covariance (D, D), D = C * kernel**2, of every kernel x kernel patch of the (N, C, H, W) batches, summed in
    float64 one batch at a time; and the number of patches."""
    count, total, outer = 0, None, None
    for x in batches:
        patches = F.unfold(x.double(), kernel).transpose(1, 2).flatten(0, 1)  # (N * L, D)
        if total is None:
            total = patches.new_zeros(patches.shape[1])
            outer = patches.new_zeros(patches.shape[1], patches.shape[1])
        count += len(patches)
        total += patches.sum(0)
        outer += patches.T @ patches
    if not count:
        raise ValueError("patch_covariance: no patches (an empty training split)")
    mean = total / count
    return outer / count - torch.outer(mean, mean), count


def whitening_filters(cov: Tensor, out_channels: int, kernel: int, eps: float = 5e-4) -> Tensor:
    """Filters (2n, C, kernel, kernel), n = min(out_channels // 2, D): the n directions of largest variance, each
    divided by the square root of its variance (+ eps, which keeps near-constant directions from blowing up), then
    the same n negated."""
    variance, directions = torch.linalg.eigh(cov)  # ascending
    n = min(out_channels // 2, len(variance))
    top = directions[:, -n:].flip(1) / torch.sqrt(variance[-n:].flip(0) + eps)  # (D, n), largest variance first
    filters = torch.cat([top.T, -top.T])  # (2n, D)
    return filters.reshape(2 * n, -1, kernel, kernel).float()


def whiten_conv(conv: nn.Conv2d, batches: Iterable[Tensor], eps: float = 5e-4) -> int:
    """Set the first filters of `conv` to the whitening filters of the batches' patches (the rest keep their
    initialisation when it has more than 2 * C * k**2 of them); returns how many patches were measured."""
    kernel = conv.kernel_size[0]
    cov, count = patch_covariance(batches, kernel)
    filters = whitening_filters(cov, conv.out_channels, kernel, eps)
    with torch.no_grad():
        conv.weight[: len(filters)] = filters.to(conv.weight)
    return count
