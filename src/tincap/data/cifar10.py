"""CIFAR-10 from JPEG class folders (train/, test/) or from torchvision's cifar-10-batches-py pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np

from tincap.data.base import Split
from tincap.data.cache import DecodedImages, cached_decode
from tincap.data.imagefolder import ImageFolderData

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batches_dir(root: Path) -> Path | None:
    for candidate in (root / "cifar-10-batches-py", root):
        if (candidate / "batches.meta").is_file():
            return candidate
    return None


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected the cifar-10-batches-py files data_batch_1..5 and test_batch")
    with path.open("rb") as f:
        return pickle.load(f, encoding="latin1")


class CIFAR10(ImageFolderData):
    """CIFAR-10, test set labelled; images resized to `image_size` when it differs from 32."""

    name = "cifar10"

    def discover_classes(self) -> list[str]:
        batches = _batches_dir(self.root)
        if batches is not None:
            return list(_unpickle(batches / "batches.meta")["label_names"])
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"CIFAR-10 folder {self.root} does not exist; expected train/<class>/*.jpg and test/<class>/*.jpg, "
                "or torchvision's cifar-10-batches-py (set data.root=...)"
            )
        return super().discover_classes()

    def load_splits(self) -> dict[str, Split]:
        batches = _batches_dir(self.root)
        if batches is None:
            return super().load_splits()
        parts = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        return {split: self._from_pickles(split, [batches / n for n in names]) for split, names in parts.items()}

    def _from_pickles(self, split: str, files: list[Path]) -> Split:
        def build() -> DecodedImages:
            data = [_unpickle(f) for f in files]
            images = np.concatenate([d["data"] for d in data]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            if self.image_size and self.image_size != 32:
                images = np.stack([cv2.resize(im, (self.image_size,) * 2, interpolation=cv2.INTER_LINEAR) for im in images])
            return DecodedImages(np.ascontiguousarray(images), np.arange(len(images)))

        labels = np.concatenate([np.asarray(_unpickle(f)["labels"]) for f in files]).astype(np.int64)
        decoded = cached_decode(files, self.cache_path(split), self.image_size, build=build, extra_key="pickle")
        return Split(decoded.images, labels[decoded.kept], [f"{split}_{i:05d}" for i in decoded.kept])
