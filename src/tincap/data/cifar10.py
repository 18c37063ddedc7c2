"""CIFAR-10 from JPEG class folders (train/, test/) or from torchvision's cifar-10-batches-py pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np

from tincap.data.cache import DecodedImages, cached_decode
from tincap.data.imagefolder import ImageFolderData
from tincap.data.splits import Split
from tincap.runtime.errors import InvalidInput, MissingInput

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batches_dir(root: Path) -> Path | None:
    for candidate in (root / "cifar-10-batches-py", root):
        if (candidate / "batches.meta").is_file():
            return candidate
    return None


LAYOUT = "train/<class>/*.jpg and test/<class>/*.jpg, or torchvision's cifar-10-batches-py"
FIX = "Replace the file (re-extract cifar-10-python.tar.gz), or set data.root=/path/to/cifar10"


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's pickles hold dicts of lists, strings and numpy arrays; any other global is refused, so a crafted file
    cannot run code when it is read."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "ndarray"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"), ("numpy", "dtype"),
               ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it holds {module}.{name}, which a CIFAR-10 pickle never does; tincap "
                                         "refuses to unpickle it, because loading it could run code")
        return super().find_class(module, name)


def _unpickle(path: Path, keys: tuple[str, ...]) -> dict:
    """One cifar-10-batches-py pickle, with the keys tincap reads."""
    if not path.is_file():
        raise MissingInput(
            f"{path} not found; expected the cifar-10-batches-py files batches.meta, data_batch_1..5 and test_batch. {FIX}"
        )
    try:
        with path.open("rb") as f:
            data = _ArraysOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise InvalidInput(f"{path}: not a readable CIFAR-10 pickle ({type(exc).__name__}: {exc}). {FIX}") from None
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise InvalidInput(f"{path}: expected a CIFAR-10 pickle holding {list(keys)}. {FIX}")
    return data


class CIFAR10(ImageFolderData):
    """CIFAR-10, test set labelled; images resized to `image_size` when it differs from 32."""

    name = "cifar10"

    def discover_classes(self) -> list[str]:
        batches = _batches_dir(self.root)
        if batches is not None:
            return list(_unpickle(batches / "batches.meta", ("label_names",))["label_names"])
        if not (self.root / "train").is_dir():
            what = "folder does not exist" if not self.root.is_dir() else "holds neither train/ nor batches.meta"
            raise MissingInput(f"data.root={self.root}: {what}; expected CIFAR-10 as {LAYOUT}. "
                               "Set data.root=/path/to/cifar10")
        return super().discover_classes()

    def load_splits(self) -> dict[str, Split]:
        batches = _batches_dir(self.root)
        if batches is None:
            return super().load_splits()
        parts = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        return {split: self._from_pickles(split, [batches / n for n in names]) for split, names in parts.items()}

    def _from_pickles(self, split: str, files: list[Path]) -> Split:
        def build() -> DecodedImages:
            data = [_unpickle(f, ("data", "labels")) for f in files]
            images = np.concatenate([d["data"] for d in data]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            if self.image_size and self.image_size != 32:
                images = np.stack([cv2.resize(im, (self.image_size,) * 2, interpolation=cv2.INTER_LINEAR) for im in images])
            return DecodedImages(np.ascontiguousarray(images), np.arange(len(images)))

        labels = np.concatenate([np.asarray(_unpickle(f, ("data", "labels"))["labels"]) for f in files]).astype(np.int64)
        decoded = cached_decode(files, self.cache_path(split), self.image_size, build=build, extra_key="pickle")
        return Split(decoded.images, labels[decoded.kept], [f"{split}_{i:05d}" for i in decoded.kept])
