"""What every tincap image-classification datamodule shares: in-memory uint8 arrays, batch transforms (run on the host
or, after the transfer, on the device), splits."""

from __future__ import annotations

import hashlib
import logging
import numbers
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tincap.data.cache import cached_decode
from tincap.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchMix,
    BatchTransform,
    ProgressiveResize,
    batch_seed,
)
from tincap.errors import InvalidInput
from tincap.progress import progress

if TYPE_CHECKING:
    from tincap.models.backbone import InputSpec

log = logging.getLogger(__name__)

ON_DEVICE_SHARE = 0.5  # data.on_device=true keeps a split on a GPU when it takes at most this share of the free memory


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


def epoch_sampler(dataset: Dataset, train: bool, seed: int) -> DistributedSampler | None:
    """Training: an order drawn from (seed, epoch) alone (Lightning calls `set_epoch`), not from the global RNG, so a
    resumed run sees the batches an uninterrupted one would. Evaluation under DDP: disjoint shares without the
    padding repeats of Lightning's default sampler, which synced metrics would count twice."""
    distributed = dist.is_available() and dist.is_initialized()
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    if train:
        return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False) if world > 1 else None


def keep_batch(batch: Any) -> Any:
    """Collate for datasets that already return whole batches."""
    return batch


def check_setting(key: str, value: object, valid: bool, expected: str, example: object) -> None:
    """Refuse an impossible data.* value before any image is read, naming the override that fixes it."""
    if not valid:
        shown = "null" if value is None else value
        raise InvalidInput(f"data.{key}={shown}: expected {expected}. Set e.g. data.{key}={example}")


def is_count(value: object, least: int = 1) -> bool:
    """An integer >= least; True and 1.0 are not counts, so a mistyped YAML value is refused, not coerced."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least


def check_loader_settings(image_size: object, batch_size: object, eval_batch_size: object, num_workers: object) -> None:
    """The data.* values every datamodule takes, checked when it is built rather than deep inside a loader."""
    check_setting("image_size", image_size, image_size is None or is_count(image_size),
                  "a side in pixels >= 1, or null for the images' own size (the model's for pretrained ones)", 64)
    check_setting("batch_size", batch_size, is_count(batch_size), "an integer >= 1", 128)
    check_setting("eval_batch_size", eval_batch_size, eval_batch_size is None or is_count(eval_batch_size),
                  "an integer >= 1, or null for data.batch_size", 256)
    check_setting("num_workers", num_workers, is_count(num_workers, 0), "an integer >= 0", 0)


def check_placement(augment_on: object, on_device: object, augment: dict) -> None:
    """data.augment_on and data.on_device, and the augmentations that only the host can run."""
    check_setting("augment_on", augment_on, augment_on in ("host", "device"), "host or device", "device")
    check_setting("on_device", on_device, isinstance(on_device, bool), "true or false", "true")
    if on_device and augment_on != "device":
        raise InvalidInput(f"data.on_device=true with data.augment_on={augment_on}: a split kept on the device is "
                           "augmented there, so on_device needs augment_on=device. Set data.augment_on=device, or "
                           "data.on_device=false")
    if augment_on == "device" and augment.get("trivial_augment"):
        raise InvalidInput("data.augment.trivial_augment=true with data.augment_on=device: TrivialAugment runs image "
                           "by image on the host only. Set data.augment.trivial_augment=false, or data.augment_on=host")


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


@dataclass
class Split:
    """One split's pixels and labels (labels None for an unlabelled test set)."""

    images: np.ndarray
    targets: np.ndarray | None
    ids: list[str] = field(default_factory=list)


class FedByNetwork:
    """The preprocessing a datamodule takes from the network it feeds, shared by the classification and caption data."""

    image_size: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    splits: dict[str, Any]  # each split holds `images` (N, H, W, 3)

    def feed(self, spec: InputSpec, model_name: str) -> None:
        """Preprocess for this network: its mean and std, and its input size unless data.image_size is set."""
        self.image_size = spec.image_size(self.image_size, model_name)
        self.mean, self.std = spec.mean, spec.std

    def decoded_size(self) -> int:
        """The side the images are decoded at: data.image_size, else (null) the training files' own size."""
        return self.image_size or int(self.splits["train"].images.shape[1])

    def task_inputs(self) -> dict[str, Any]:
        """Objects the task is built with besides its config (a captioner's vocabulary); none for classification."""
        return {}


class ClassificationDataModule(FedByNetwork, L.LightningDataModule):
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
        self.splits: dict[str, Split] = {}
        self._datasets: dict[tuple[str, bool], ArrayDataset] = {}
        self._on_device: dict[str, Tensor] = {}  # data.on_device=true: each placed split's NCHW pixels
        self._class_names: list[str] | None = None

    def feed(self, spec: InputSpec, model_name: str) -> None:
        """As FedByNetwork, refusing progressive resizing for a network that takes only one image size."""
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

    def place(self, split: str, pixels: np.ndarray) -> bool:
        """Keep a split's NCHW pixels on the trainer's device when they fit; False, with a warning, when they stay in
        host memory (and travel a batch at a time)."""
        device = self.target_device()
        if split in self._on_device and self._on_device[split].device == device:
            return True
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if pixels.nbytes > free * ON_DEVICE_SHARE:
                log.warning("data.on_device=true: the %s split (%.2f GiB) is more than %d%% of the %.2f GiB free on "
                            "%s, so it stays in host memory and moves a batch at a time", split, pixels.nbytes / 2**30,
                            ON_DEVICE_SHARE * 100, free / 2**30, device)
                self._on_device.pop(split, None)
                return False
        self._on_device[split] = torch.from_numpy(pixels).to(device)  # on the CPU: the same memory, no copy
        return True

    def teardown(self, stage: str | None = None) -> None:
        """Give the device memory of placed splits back when a fit, validation or test ends."""
        self._on_device.clear()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """data.augment_on=device: gather, augment and normalise each batch on the device it was moved to; then, with
        data.progressive, shrink training batches to the epoch's size."""
        if isinstance(batch, RawBatch):
            images = batch.images
            if images is None:
                held = self._on_device[batch.split]
                images = held[batch.index.to(held.device, non_blocking=True)]
            batch = self._datasets[batch.split, batch.train].prepare(images, batch.targets.to(images.device), batch.seed)
        if self.progressive is not None and self.trainer is not None and self.trainer.training:
            x, y = batch
            batch = self.progressive(x, self.trainer.current_epoch, self.trainer.max_epochs), y
        return batch

    def first_epoch_pixels(self, chunk: int = 500) -> Iterator[Tensor]:
        """The training images as the first training epoch feeds them, without augmentation: normalised, at that
        epoch's size (data.progressive's smallest); (chunk, 3, s, s) float batches, for statistics of the data."""
        self.setup()
        images = self.splits["train"].images  # (N, H, W, 3) uint8
        normalise = self.transform(train=False)
        with progress(len(images), f"{self.name} train images, as the first epoch sees them") as advance:
            for start in range(0, len(images), chunk):
                x = normalise(torch.from_numpy(images[start:start + chunk]).permute(0, 3, 1, 2))
                yield x if self.progressive is None else self.progressive(x, 0, 1)
                advance(len(x))

    def has_labels(self, split: str) -> bool:
        self.setup()
        return split in self.splits and self.splits[split].targets is not None and len(self.splits[split].images) > 0

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.dataset(split, train)
        seed = int(os.environ.get("PL_GLOBAL_SEED", "0"))  # the run's seed (seed_everything), as samplers use
        dataset.seed = seed
        if self.on_device:
            dataset.send_pixels = not self.place(split, dataset.images)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=epoch_sampler(dataset, train, seed),
            generator=torch.Generator().manual_seed(seed),  # so creating an iterator draws nothing from the global RNG
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
            "image_size": self.decoded_size(),
            "mean": list(self.mean),
            "std": list(self.std),
            "dataset": self.name,
        }
