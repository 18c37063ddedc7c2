"""Labelled splits of a classification dataset, and the stratified split that carves validation out of training."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tincap.data.settings import check_setting


@dataclass
class Split:
    """One split's pixels and labels (labels None for an unlabelled test set)."""

    images: np.ndarray  # (N, H, W, 3) uint8
    targets: np.ndarray | None
    ids: list[str] = field(default_factory=list)


def stratified_split(
    labels: np.ndarray, val_ratio: float, seed: int, key: str = "val_ratio"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class random split, so train and validation keep the class balance and never share an image."""
    check_setting(key, val_ratio, 0 <= val_ratio < 1, "a fraction in [0, 1)", 0.2)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        n_val = int(round(len(members) * val_ratio))
        if val_ratio > 0 and len(members) > 1:
            n_val = min(len(members) - 1, max(1, n_val))  # every class in both parts when it can be
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
