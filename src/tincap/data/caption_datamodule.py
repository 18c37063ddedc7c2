"""Caption datasets (Kaggle captions.txt, Flickr8k token file, COCO json, or the generated shapes) as a datamodule."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tincap.data.cache import cached_decode
from tincap.data.caption_files import read_captions, records_by_split, split_by_image
from tincap.data.datamodule import ImageDataModule
from tincap.data.encoder_features import encoder_features, feature_key
from tincap.data.sampling import epoch_sampler, keep_batch
from tincap.data.settings import check_loader_settings, check_setting, is_count
from tincap.data.shapes import generate_shapes
from tincap.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchTransform
from tincap.data.vocab import Vocabulary, tokenize
from tincap.runtime.errors import InvalidInput

log = logging.getLogger(__name__)


@dataclass
class CaptionSplit:
    """One split: pixels of each image and all of its reference captions."""

    images: np.ndarray  # (N, H, W, 3) uint8
    names: list[str]
    captions: list[list[str]]


def pad_tokens(sequences: list[list[int]], length: int | None = None) -> Tensor:
    """Right-pad token id lists with <pad> (0) into one (N, T) tensor."""
    out = torch.zeros(len(sequences), length or max(map(len, sequences)), dtype=torch.long)
    for row, ids in enumerate(sequences):
        out[row, : len(ids)] = torch.tensor(ids)
    return out


def pad_groups(groups: list[list[list[int]]], per_image: int) -> Tensor:
    """Each image's captions as one (N, per_image, T) tensor; an image with fewer captions gets all-<pad> rows."""
    length = max(len(ids) for caps in groups for ids in caps)
    return torch.stack([pad_tokens(caps + [[]] * (per_image - len(caps)), length) for caps in groups])


class CaptionPairs(Dataset):
    """Training items: one (image, caption) pair each, batched with `__getitems__` and padded to the longest."""

    def __init__(self, inputs: np.ndarray, captions: list[list[list[int]]], transform: Callable[[Tensor], Tensor]) -> None:
        self.inputs = inputs
        self.pairs = [(i, ids) for i, caps in enumerate(captions) for ids in caps]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        items = [self.pairs[i] for i in indices]
        x = self.transform(torch.from_numpy(self.inputs[np.asarray([i for i, _ in items])]))
        return x, pad_tokens([ids for _, ids in items])


class CaptionGroups(Dataset):
    """Training items: one image with all its captions (tokens (N, K, T)), so the encoder runs once for K captions."""

    def __init__(self, inputs: np.ndarray, captions: list[list[list[int]]], transform: Callable[[Tensor], Tensor]) -> None:
        self.inputs, self.captions, self.transform = inputs, captions, transform
        self.per_image = max(map(len, captions))

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        tokens = pad_groups([self.captions[i] for i in indices], self.per_image)
        return self.transform(torch.from_numpy(self.inputs[idx])), tokens


class CaptionImages(Dataset):
    """Items of one image each, (input, dataset index): evaluation, and SCST training, which looks up the image's
    references by the index."""

    def __init__(self, inputs: np.ndarray, transform: Callable[[Tensor], Tensor]) -> None:
        self.inputs, self.transform = inputs, transform

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        return self.transform(torch.from_numpy(self.inputs[idx])), torch.from_numpy(idx)


def _to_float(x: Tensor) -> Tensor:
    return x.float()


TrainItems = Literal["pairs", "groups", "images"]


class CaptionData(ImageDataModule):
    """Images + captions split by image; the vocabulary comes from the training captions only and is saved in
    checkpoints as this datamodule's state (`state_dict`), so a checkpoint decodes with exactly its own words."""

    def __init__(
        self,
        root: str | Path | None = None,
        shapes_per_class: int | None = None,
        shapes_seed: int = 0,
        image_size: int | None = 64,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        min_freq: int = 3,
        max_len: int = 20,
        split_seed: int = 0,
        cache_dir: str | Path | None = None,
        augment: dict | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        group_captions: bool = False,
        allow_uncaptioned: bool = False,
        captions_file: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if root is None and shapes_per_class is None:
            raise InvalidInput("data.root=null: a caption dataset needs a folder; expected images/ and captions.txt, "
                               "Flickr8k.token.txt or annotations/captions_*.json. Set data.root=/path/to/captions "
                               "(or use data=shapes_caption)")
        check_loader_settings(image_size, batch_size, eval_batch_size, num_workers)
        if root is None:
            check_setting("shapes_per_class", shapes_per_class, is_count(shapes_per_class),
                          "an integer >= 1 images per class", 100)
        check_setting("min_freq", min_freq, is_count(min_freq), "an integer >= 1 (words rarer than this are <unk>)", 3)
        check_setting("max_len", max_len, is_count(max_len, 2), "an integer >= 2 tokens (<bos> and <eos> included)", 20)
        self.allow_uncaptioned = allow_uncaptioned
        self.captions_file = Path(captions_file).expanduser() if captions_file else None
        self.root = Path(root).expanduser() if root is not None else None
        self.shapes_per_class, self.shapes_seed = shapes_per_class, shapes_seed
        self.image_size = image_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.min_freq, self.max_len = min_freq, max_len
        self.split_seed = split_seed
        self.seed = seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.augment = dict(augment or {})
        self.mean, self.std = tuple(mean), tuple(std)
        self.fixed_vocab: Vocabulary | None = None  # a checkpoint's (load_state_dict), never rebuilt
        # what a training batch holds: (image, caption) pairs, (image, all its captions), or (image, index) for SCST
        self.train_items: TrainItems = "groups" if group_captions else "pairs"
        self.splits: dict[str, CaptionSplit] = {}
        self.inputs: dict[str, np.ndarray] = {}  # per split: NCHW uint8 pixels, or a frozen encoder's features
        self.features_from: str | None = None
        self.vocab: Vocabulary | None = None

    @property
    def name(self) -> str:
        return "shapes" if self.root is None else self.root.name

    def _from_shapes(self) -> dict[str, CaptionSplit]:
        check_setting("image_size", self.image_size, is_count(self.image_size, 16),
                      "a side >= 16 pixels to draw shapes at", 64)
        data = generate_shapes(self.shapes_per_class, self.shapes_seed, self.image_size)
        names = [f"shape_{i:05d}" for i in range(len(data.images))]
        rng = np.random.default_rng(self.split_seed)
        order = rng.permutation(len(names))
        n_test = n_val = max(1, len(names) // 10)
        parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
        return {k: CaptionSplit(data.images[np.sort(v)], [names[i] for i in np.sort(v)],
                                [data.captions[i] for i in np.sort(v)]) for k, v in parts.items()}

    def _from_folder(self) -> dict[str, CaptionSplit]:
        records = read_captions(self.root, self.allow_uncaptioned, self.captions_file)
        grouped = records_by_split(records, split_by_image(records, self.root, seed=self.split_seed))
        where = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:10]
        splits = {}
        for split, recs in grouped.items():
            by_image: dict[str, list[str]] = {}
            for r in recs:
                by_image.setdefault(r.image, []).append(r.caption)
            names = sorted(by_image)
            files = [self.root / "images" / n for n in names]
            cache = self.cache_dir / f"captions-{self.name}-{split}-{self.image_size}-{where}.h5" if self.cache_dir else None
            decoded = cached_decode(files, cache, self.image_size, description=f"{self.name} {split}")
            kept = [names[i] for i in decoded.kept]
            splits[split] = CaptionSplit(decoded.images, kept, [by_image[n] for n in kept])
        return splits

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.splits = self._from_shapes() if self.root is None else self._from_folder()
        self.inputs = {k: np.ascontiguousarray(v.images.transpose(0, 3, 1, 2)) for k, v in self.splits.items()}
        self.vocab = self.fixed_vocab or Vocabulary.build(self.training_captions(), self.min_freq)
        log.info("%s: %s images, vocabulary %d words", self.name,
                 {k: len(v.names) for k, v in self.splits.items()}, len(self.vocab))

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint by Lightning: the vocabulary the decoder's ids refer to."""
        return {"vocab": self.vocab.state_dict()} if self.vocab is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a checkpoint's vocabulary instead of building one from this dataset's captions."""
        self.fixed_vocab = Vocabulary.from_state_dict(state["vocab"])
        if self.vocab is not None:
            self.vocab = self.fixed_vocab

    def training_captions(self) -> list[str]:
        """Every training caption as written: the vocabulary's source, and the yardstick of novel captions."""
        self.setup()
        return [c for caps in self.splits["train"].captions for c in caps]

    def references(self, split: str) -> list[list[list[str]]]:
        """Tokenised reference captions of each image of a split, in dataset order."""
        self.setup()
        return [[tokenize(c) for c in caps] for caps in self.splits[split].captions]

    def use_encoder(self, encode: Callable[[Tensor], Tensor], digest: str) -> None:
        """Feed a frozen encoder's feature maps instead of pixels, computed once per split and cached by its weights."""
        self.setup()
        if self.features_from == digest:
            return
        prepare = BatchTransform(train=False, mean=self.mean, std=self.std)
        for split, pixels in self.inputs.items():
            key = feature_key(digest, pixels, f"{self.mean}|{self.std}")
            path = None
            if self.cache_dir is not None:
                path = self.cache_dir / f"features-{self.name}-{split}-{self.decoded_size()}-{digest[:16]}.h5"
            self.inputs[split] = encoder_features(encode, pixels, prepare, key, path, f"{self.name} {split}")
        self.features_from = digest
        if any(self.augment.get(k) for k in ("crop_padding", "flip", "color_jitter")):
            log.info("frozen encoder features are cached once, so image augmentation (%s) is off", self.augment)

    def _transform(self, train: bool) -> Callable[[Tensor], Tensor]:
        if self.features_from is not None:
            return _to_float
        aug = {k: v for k, v in self.augment.items() if k in ("crop_padding", "flip", "color_jitter")}
        return BatchTransform(train=train, mean=self.mean, std=self.std, **(aug if train else {}))

    def encoded_captions(self, split: str) -> list[list[list[int]]]:
        """Token ids of every caption of every image of a split (cut to max_len)."""
        self.setup()
        return [[self.vocab.encode(c, self.max_len) for c in caps] for caps in self.splits[split].captions]

    def train_dataloader(self) -> DataLoader:
        self.setup()
        if self.train_items == "images":
            data: Dataset = CaptionImages(self.inputs["train"], self._transform(True))
        else:
            kind = CaptionGroups if self.train_items == "groups" else CaptionPairs
            data = kind(self.inputs["train"], self.encoded_captions("train"), self._transform(True))
        return DataLoader(data, batch_size=self.batch_size, sampler=epoch_sampler(data, True, self.seed),
                          generator=torch.Generator().manual_seed(self.seed), drop_last=len(data) > self.batch_size,
                          num_workers=self.num_workers, collate_fn=keep_batch)

    def eval_dataloader(self, split: str, share: bool = True) -> DataLoader:
        """Every image of a split once, in order; under DDP (`share`) each process gets a disjoint part of them."""
        self.setup()
        data = CaptionImages(self.inputs[split], self._transform(False))
        return DataLoader(data, batch_size=self.eval_batch_size, num_workers=self.num_workers, collate_fn=keep_batch,
                          sampler=epoch_sampler(data, False, 0) if share else None)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def has_labels(self, split: str) -> bool:
        self.setup()
        return split in self.splits and len(self.splits[split].names) > 0

    @property
    def num_classes(self) -> int:
        return 1  # the size of the backbone's classification head, which a caption encoder does not use

    def task_inputs(self) -> dict[str, Any]:
        """What the captioner is built with besides its config: the vocabulary its decoder writes in."""
        self.setup()
        return {"vocab": self.vocab}

    def describe(self) -> dict[str, Any]:
        self.setup()
        return {"image_size": self.decoded_size(), "mean": list(self.mean), "std": list(self.std),
                "dataset": self.name, "max_len": self.max_len, "num_classes": self.num_classes}
