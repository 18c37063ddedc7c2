"""What every tincap datamodule offers the tasks and the commands: named splits of images, preprocessed as the network
they feed asks, and a description a checkpoint keeps so that new images are prepared the same way."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from tincap.data.input_spec import InputSpec
from tincap.data.transforms import BatchTransform
from tincap.runtime.progress import progress


class ImageDataModule(L.LightningDataModule, ABC):
    """The base of every datamodule: `splits` maps a split name to an object holding `images` (N, H, W, 3) uint8.

    `seed` is the run's seed (train.py's `seed`): the training order and the augmentation of each batch come from it.
    """

    name: str
    root: Path | None
    image_size: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    seed: int
    splits: dict[str, Any]

    @property
    def where(self) -> str:
        """How messages name the data: the dataset and its folder (generated data has none)."""
        return f"{self.name} at {self.root}" if self.root is not None else self.name

    def feed(self, spec: InputSpec, model_name: str) -> None:
        """Preprocess for this network: its mean and std, and its input size unless data.image_size is set."""
        self.image_size = spec.image_size(self.image_size, model_name)
        self.mean, self.std = spec.mean, spec.std

    def decoded_size(self) -> int:
        """The side the images are decoded at: data.image_size, else (null) the training files' own size."""
        return self.image_size or int(self.splits["train"].images.shape[1])

    def training_side(self, epoch: int, epochs: int) -> int | None:
        """The side of the images epoch `epoch` (0-based) of `epochs` trains at, where it changes from epoch to epoch
        (progressive resizing); None where it does not. A time budget prices each epoch by it."""
        return None

    def task_inputs(self) -> dict[str, Any]:
        """Objects the task is built with besides its config (a captioner's vocabulary); none by default."""
        return {}

    @property
    @abstractmethod
    def num_classes(self) -> int:
        """The size of the network's classification head."""

    @abstractmethod
    def has_labels(self, split: str) -> bool:
        """Whether `split` exists and can be scored (labels or reference captions)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What a checkpoint must remember to preprocess new images identically (image_size, mean, std, dataset,
        num_classes, ...)."""

    def first_epoch_pixels(self, chunk: int = 500) -> Iterator[Tensor]:
        """The training images as the first epoch feeds them, without augmentation: normalised (chunk, 3, s, s)
        float batches, for statistics of the data (init.whiten_stem)."""
        self.setup()
        images = self.splits["train"].images  # (N, H, W, 3) uint8
        normalise = BatchTransform(train=False, mean=self.mean, std=self.std)
        with progress(len(images), f"{self.name} train images, as the first epoch sees them") as advance:
            for start in range(0, len(images), chunk):
                yield normalise(torch.from_numpy(images[start:start + chunk]).permute(0, 3, 1, 2))
                advance(min(chunk, len(images) - start))
