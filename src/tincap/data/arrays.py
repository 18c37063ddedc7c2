"""Images held in memory as one uint8 array, served a whole batch at a time: prepared on the host, or sent raw
(data.augment_on=device) and prepared after the transfer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tincap.data.transforms import BatchMix, BatchTransform, batch_seed


class ArrayDataset(Dataset):
    """Images held as one uint8 NCHW array; `__getitems__` builds and augments a whole batch at once."""

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray | None,
        transform: BatchTransform,
        ids: list[str] | None = None,
        mix: BatchMix | None = None,
        seed: int = 0,
    ) -> None:
        self.images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # NHWC (as decoded) -> NCHW, once
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.long)
        self.transform = transform
        self.ids = ids
        self.mix = mix
        self.seed = seed  # the run's seed; each training batch is augmented from it and its own indices

    def __len__(self) -> int:
        return len(self.images)

    def labels(self, idx: np.ndarray) -> Tensor:
        """The batch's labels; -1 for an unlabelled split."""
        return self.targets[idx] if self.targets is not None else torch.full((len(idx),), -1, dtype=torch.long)

    def prepare(self, x: Tensor, y: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """uint8 batch -> normalised (and, training, augmented and mixed) batch: the one code path of the host loader
        and the device hook, so both give the same batch for the same seed."""
        if not self.transform.train:
            return self.transform(x), y
        generator = torch.Generator().manual_seed(seed)
        x = self.transform(x, generator)
        return self.mix(x, y, generator) if self.mix is not None else (x, y)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        seed = batch_seed(self.seed, idx) if self.transform.train else 0
        return self.prepare(torch.from_numpy(self.images[idx]), self.labels(idx), seed)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]


@dataclass
class RawBatch:
    """A batch as data.augment_on=device moves it: uint8 pixels, or only their indices when the split already lives
    on the device; the datamodule's `on_after_batch_transfer` turns it into (images, targets) there."""

    split: str
    train: bool
    index: Tensor
    targets: Tensor
    seed: int  # hashed on the host, so the device never waits to read the indices back
    images: Tensor | None = None

    def pin_memory(self) -> RawBatch:
        """DataLoader(pin_memory=True) pins only the containers it knows; this one pins itself."""
        return replace(self, index=self.index.pin_memory(), targets=self.targets.pin_memory(),
                       images=None if self.images is None else self.images.pin_memory())


class RawArrayDataset(ArrayDataset):
    """data.augment_on=device: batches leave the loader as uint8 `RawBatch`es, and are prepared after the transfer."""

    def __init__(self, split: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.split = split
        self.send_pixels = True  # False while the datamodule holds this split on the device

    def __getitems__(self, indices: list[int]) -> RawBatch:
        idx = np.asarray(indices, dtype=np.int64)
        return RawBatch(
            self.split, self.transform.train, torch.from_numpy(idx), self.labels(idx),
            batch_seed(self.seed, idx) if self.transform.train else 0,
            torch.from_numpy(self.images[idx]) if self.send_pixels else None,
        )

    def __getitem__(self, index: int) -> RawBatch:
        return self.__getitems__([index])
