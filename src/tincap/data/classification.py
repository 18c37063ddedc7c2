"""The base of the classification datamodules: subclasses say where the images are (`load_splits`); this class
caches, splits and serves them."""

from __future__ import annotations

import hashlib
import logging
import numbers
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from tincap.data.arrays import ArrayDataset, RawArrayDataset, RawBatch
from tincap.data.cache import cached_decode
from tincap.data.datamodule import ImageDataModule
from tincap.data.input_spec import InputSpec
from tincap.data.placement import DevicePlacement
from tincap.data.sampling import epoch_sampler, keep_batch
from tincap.data.settings import check_loader_settings, check_placement, check_setting
from tincap.data.splits import Split, stratified_split
from tincap.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchMix,
    BatchTransform,
    ProgressiveResize,
)
from tincap.runtime.errors import InvalidInput

log = logging.getLogger(__name__)


class ClassificationDataModule(ImageDataModule):
    """Base datamodule: subclasses say where the images are (`load_splits`); this class caches, splits and serves."""

    name = "images"

    def __init__(
        self,
        root: str | Path,
        image_size: int | None = 64,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_ratio: float = 0.2,
        split_seed: int = 0,
        cache_dir: str | Path | None = None,
        augment: dict | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        pin_memory: bool = False,
        augment_on: str = "host",
        on_device: bool = False,
        progressive: dict | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_loader_settings(image_size, batch_size, eval_batch_size, num_workers)
        check_placement(augment_on, on_device, dict(augment or {}))
        check_setting("val_ratio", val_ratio, isinstance(val_ratio, numbers.Real) and 0 <= val_ratio < 1,
                      "a fraction in [0, 1)", 0.2)
        self.root = Path(root).expanduser()
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_ratio = val_ratio
        self.split_seed = split_seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.augment = dict(augment or {})
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.pin_memory = pin_memory
        self.augment_on = augment_on
        self.on_device = on_device
        self.progressive = ProgressiveResize(**progressive) if progressive else None
        self.seed = seed
        self.splits: dict[str, Split] = {}
        self._datasets: dict[tuple[str, bool], ArrayDataset] = {}
        self.placed = DevicePlacement()  # data.on_device=true: the splits held on the trainer's device
        self._class_names: list[str] | None = None

    def feed(self, spec: InputSpec, model_name: str) -> None:
        """As ImageDataModule.feed, refusing progressive resizing for a network that takes only one image size."""
        if self.progressive is not None and spec.fixed_size:
            raise InvalidInput(f"data.progressive resizes training images, but model {model_name} only takes "
                               f"{spec.size}x{spec.size} images; set data.progressive=null, or choose a model that "
                               "takes any size (cnn, resnet, alexnet)")
        super().feed(spec, model_name)

    # -- what subclasses provide -------------------------------------------------------
    def discover_classes(self) -> list[str]:
        """Class names in label order, found without decoding any image."""
        raise NotImplementedError

    def load_splits(self) -> dict[str, Split]:
        """Decoded 'train' (and optionally 'val', 'test') splits; 'val' is carved from train when absent."""
        raise NotImplementedError

    # -- shared machinery --------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = self.discover_classes()
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def cache_path(self, split: str) -> Path | None:
        if self.cache_dir is None:
            return None
        where = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:10]
        return self.cache_dir / f"{self.name}-{split}-{self.image_size or 'native'}-{where}.h5"

    def decode_split(self, split: str, files: list[Path], labels: np.ndarray | None) -> Split:
        """Decode (or read from cache) one split, dropping the labels of files that failed to decode."""
        decoded = cached_decode(files, self.cache_path(split), self.image_size, description=f"{self.name} {split}")
        kept = decoded.kept
        return Split(
            images=decoded.images,
            targets=None if labels is None else labels[kept],
            ids=[files[i].name for i in kept],
        )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = self.load_splits()
        if "val" not in splits:
            train = splits["train"]
            tr, va = stratified_split(train.targets, self.val_ratio, self.split_seed)
            splits["train"] = Split(train.images[tr], train.targets[tr], [train.ids[i] for i in tr])
            splits["val"] = Split(train.images[va], train.targets[va], [train.ids[i] for i in va])
        self.splits = splits
        log.info(
            "%s: %s", self.name, ", ".join(f"{k}={len(v.images)}" for k, v in splits.items())
        )

    def transform(self, train: bool) -> BatchTransform:
        aug = {k: v for k, v in self.augment.items() if k not in ("mixup_alpha", "cutmix_alpha", "mix_prob")}
        return BatchTransform(train=train, mean=self.mean, std=self.std, **(aug if train else {}))

    def _mix(self) -> BatchMix | None:
        mixup, cutmix = self.augment.get("mixup_alpha", 0.0), self.augment.get("cutmix_alpha", 0.0)
        if not (mixup or cutmix):
            return None
        return BatchMix(self.num_classes, mixup, cutmix, self.augment.get("mix_prob", 1.0))

    def dataset(self, split: str, train: bool = False) -> ArrayDataset:
        self.setup()
        if split not in self.splits:
            raise KeyError(f"{self.name} at {self.root} has no '{split}' split (has {sorted(self.splits)})")
        if (split, train) not in self._datasets:
            s = self.splits[split]
            args = (s.images, s.targets, self.transform(train), s.ids, self._mix() if train else None)
            raw = self.augment_on == "device"
            self._datasets[split, train] = RawArrayDataset(split, *args) if raw else ArrayDataset(*args)
        return self._datasets[split, train]

    def target_device(self) -> torch.device:
        """Where the trainer computes (the CPU when no trainer is attached)."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def teardown(self, stage: str | None = None) -> None:
        """Give the device memory of placed splits back when a fit, validation or test ends."""
        self.placed.clear()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """data.augment_on=device: gather, augment and normalise each batch on the device it was moved to; then, with
        data.progressive, shrink training batches to the epoch's size."""
        if isinstance(batch, RawBatch):
            images = batch.images
            if images is None:
                held = self.placed[batch.split]
                images = held[batch.index.to(held.device, non_blocking=True)]
            dataset = self._datasets[batch.split, batch.train]
            batch = dataset.prepare(images, batch.targets.to(images.device), batch.seed)
        if self.progressive is not None and self.trainer is not None and self.trainer.training:
            x, y = batch
            batch = self.progressive(x, self.trainer.current_epoch, self.trainer.max_epochs), y
        return batch

    def training_side(self, epoch: int, epochs: int) -> int | None:
        """data.progressive's side for that epoch; None without progressive resizing."""
        if self.progressive is None:
            return None
        self.setup()
        return self.progressive.size(epoch, epochs, self.decoded_size())

    def first_epoch_pixels(self, chunk: int = 500) -> Iterator[Tensor]:
        """As ImageDataModule's, at the first epoch's size (data.progressive's smallest)."""
        for x in super().first_epoch_pixels(chunk):
            yield x if self.progressive is None else self.progressive(x, 0, 1)

    def has_labels(self, split: str) -> bool:
        self.setup()
        return split in self.splits and self.splits[split].targets is not None and len(self.splits[split].images) > 0

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.dataset(split, train)
        dataset.seed = self.seed
        if self.on_device:
            dataset.send_pixels = not self.placed.place(split, dataset.images, self.target_device())
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=epoch_sampler(dataset, train, self.seed),
            # so creating an iterator draws nothing from the global RNG
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=train and len(self.splits[split].images) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=keep_batch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        if not self.has_labels("test"):  # never score another split under the name test/*
            raise InvalidInput(f"{self.name} at {self.root} has no labelled test split; evaluate split=val, or score "
                               "its unlabelled test images with eval.py split=test labels_csv=<Id,Category file>")
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test" if "test" in self.splits else "val", train=False)

    def describe(self) -> dict[str, Any]:
        """What a checkpoint must remember to preprocess new images identically."""
        self.setup()
        return {
            "class_names": self.class_names,
            "num_classes": self.num_classes,
            "image_size": self.decoded_size(),
            "mean": list(self.mean),
            "std": list(self.std),
            "dataset": self.name,
        }
