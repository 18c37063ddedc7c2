"""The decode-once cache, the splits, the augmentations and every bad-input message, on real images."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tincap.data.base import stratified_split
from tincap.data.cache import cached_decode, decode_image, fingerprint
from tincap.data.cifar10 import CIFAR10
from tincap.data.imagefolder import ImageFolderData
from tincap.data.shapes import ShapesData
from tincap.data.tin30 import TinyImageNet30
from tincap.data.transforms import BatchTransform, random_crop


def copy_tin30(src: Path, dst: Path, per_class: int = 3, classes: int = 30) -> Path:
    """A real, writable TinyImageNet30-layout copy we are allowed to break."""
    lines = (src / "class.txt").read_text().splitlines()[:classes]
    (dst / "train_set" / "train_set").mkdir(parents=True)
    (dst / "class.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        name = line.split("\t")[1]
        out = dst / "train_set" / "train_set" / name
        out.mkdir()
        for f in sorted((src / "train_set" / "train_set" / name).iterdir())[:per_class]:
            shutil.copy(f, out / f.name)
    return dst


def test_cache_round_trip_is_pixel_exact(tin30_root: Path, tmp_path: Path) -> None:
    files = sorted((tin30_root / "train_set" / "train_set" / "baboon").iterdir())[:40]
    files += sorted((tin30_root / "train_set" / "train_set" / "bee").iterdir())[:40]
    cache = tmp_path / "c.h5"
    first = cached_decode(files, cache, 64)
    second = cached_decode(files, cache, 64)  # read back from HDF5
    assert cache.is_file()
    direct = np.stack([decode_image(f, 64) for f in files])
    np.testing.assert_array_equal(second.images, direct)
    np.testing.assert_array_equal(first.images, direct)
    assert second.images.dtype == np.uint8 and second.images.shape == (80, 64, 64, 3)


def test_grayscale_becomes_rgb(tin30_root: Path) -> None:
    from PIL import Image

    gray = next(f for f in sorted((tin30_root / "train_set" / "train_set").rglob("*.JPEG"))
                if Image.open(f).mode == "L")
    px = decode_image(gray, 64)
    assert px.shape == (64, 64, 3)
    assert (px[..., 0] == px[..., 1]).all()


def test_cache_rebuilt_when_a_file_changes(tin30_root: Path, tmp_path: Path) -> None:
    src = sorted((tin30_root / "train_set" / "train_set" / "bee").iterdir())[:6]
    files = []
    for f in src:
        shutil.copy(f, tmp_path / f.name)
        files.append(tmp_path / f.name)
    cache = tmp_path / "cache.h5"
    before = cached_decode(files, cache, 64)
    replacement = sorted((tin30_root / "train_set" / "train_set" / "baboon").iterdir())[0]
    shutil.copy(replacement, files[2])
    os.utime(files[2], ns=(1, 1_000_000_000))
    after = cached_decode(files, cache, 64)
    np.testing.assert_array_equal(after.images[2], decode_image(replacement, 64))
    assert not np.array_equal(before.images[2], after.images[2])


def test_corrupt_cache_is_rebuilt(tin30_root: Path, tmp_path: Path) -> None:
    files = sorted((tin30_root / "train_set" / "train_set" / "bee").iterdir())[:5]
    cache = tmp_path / "cache.h5"
    cache.write_bytes(b"not an hdf5 file")
    decoded = cached_decode(files, cache, 64)
    assert decoded.images.shape[0] == 5
    assert cached_decode(files, cache, 64).images.shape[0] == 5  # now a valid cache
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_fingerprint_depends_on_size_and_files(tin30_root: Path) -> None:
    files = sorted((tin30_root / "train_set" / "train_set" / "bee").iterdir())[:5]
    assert fingerprint(files, 64) == fingerprint(files, 64)
    assert fingerprint(files, 64) != fingerprint(files, 32)
    assert fingerprint(files, 64) != fingerprint(files[:4], 64)


def test_split_is_stratified_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(30), 450)
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    assert (np.bincount(labels[va]) == 90).all()
    tr2, va2 = stratified_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(va, va2)
    _, va3 = stratified_split(labels, 0.2, seed=1)
    assert not np.array_equal(va, va3)


def test_tin30_datamodule_real(tin30_root: Path, cache_dir: Path) -> None:
    dm = TinyImageNet30(root=tin30_root, cache_dir=cache_dir, batch_size=64)
    dm.setup()
    assert dm.num_classes == 30 and dm.class_names[0] == "baboon" and dm.class_names[29] == "umbrella"
    assert len(dm.splits["train"].images) == 10800 and len(dm.splits["val"].images) == 2700
    assert len(dm.splits["test"].images) == 1500 and dm.splits["test"].targets is None
    assert not set(dm.splits["train"].ids) & set(dm.splits["val"].ids)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 3, 64, 64) and x.dtype == torch.float32 and y.max() < 30


def test_cifar10_folders_and_pickles(cifar10_small: Path, tmp_path: Path) -> None:
    import pickle

    dm = CIFAR10(root=cifar10_small, image_size=32)
    dm.setup()
    assert dm.class_names[0] == "airplane" and dm.has_labels("test")
    # the same pixels written as torchvision's cifar-10-batches-py pickles
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    imgs, labels = dm.splits["train"].images, dm.splits["train"].targets
    data = imgs.transpose(0, 3, 1, 2).reshape(len(imgs), -1)
    for i in range(1, 6):
        part = slice(i - 1, None, 5)
        with open(batches / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": data[part], "labels": labels[part].tolist()}, f)
    with open(batches / "test_batch", "wb") as f:
        pickle.dump({"data": data[:10], "labels": labels[:10].tolist()}, f)
    with open(batches / "batches.meta", "wb") as f:
        pickle.dump({"label_names": dm.class_names}, f)
    dm2 = CIFAR10(root=tmp_path, image_size=32)
    dm2.setup()
    assert dm2.class_names == dm.class_names
    assert len(dm2.splits["train"].images) + len(dm2.splits["val"].images) == len(imgs)
    np.testing.assert_array_equal(dm2.splits["test"].images, imgs[:10])


def test_shapes_datamodule_splits() -> None:
    dm = ShapesData(n_per_class=10, val_ratio=0.2, test_ratio=0.1)
    dm.setup()
    sizes = {k: len(v.images) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 300 and sizes["test"] == 30
    ids = [set(s.ids) for s in dm.splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_random_crop_matches_reference_crop() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(4):  # each output is some 8x8 window of its own padded image
        found = any(torch.equal(out[i], padded[i, :, a:a + 8, b:b + 8]) for a in range(5) for b in range(5))
        assert found


def test_batch_transform_normalises_and_augments() -> None:
    x = torch.full((16, 3, 32, 32), 128, dtype=torch.uint8)
    x[:, :, :, :16] = 0
    ev = BatchTransform(train=False)(x)
    assert ev.dtype == torch.float32 and torch.allclose(ev[0], ev[1])
    tr = BatchTransform(train=True, crop_padding=4, flip=True, color_jitter=0.4, trivial_augment=True)(x)
    assert tr.shape == ev.shape and not torch.allclose(tr, ev)


# ---- bad input: each raises a message that names the path and what was expected -----------------

def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"does not exist.*class\.txt"):
        TinyImageNet30(root=tmp_path / "nope").setup()


def test_missing_class_file(tmp_path: Path) -> None:
    (tmp_path / "train_set").mkdir()
    with pytest.raises(FileNotFoundError, match="class.txt"):
        TinyImageNet30(root=tmp_path).setup()


def test_malformed_class_file(tmp_path: Path) -> None:
    (tmp_path / "class.txt").write_text("0\tbaboon\nbanana\n")
    with pytest.raises(ValueError, match=r"class\.txt:2: expected 'idx<TAB>classname'"):
        TinyImageNet30(root=tmp_path).setup()


def test_empty_class_folder(tin30_root: Path, tmp_path: Path) -> None:
    root = copy_tin30(tin30_root, tmp_path / "t", classes=3)
    for f in (root / "train_set" / "train_set" / "bee").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"bee is empty; expected image files"):
        TinyImageNet30(root=root).setup()


def test_class_file_and_folders_disagree(tin30_root: Path, tmp_path: Path) -> None:
    root = copy_tin30(tin30_root, tmp_path / "t", classes=3)
    (root / "train_set" / "train_set" / "bee").rename(root / "train_set" / "train_set" / "honeybee")
    with pytest.raises(ValueError, match=r"disagree: no folder for \['bee'\].*not in the class list \['honeybee'\]"):
        TinyImageNet30(root=root).setup()


def test_flat_train_set_layout_accepted(tin30_root: Path, tmp_path: Path) -> None:
    root = copy_tin30(tin30_root, tmp_path / "t", classes=3)
    (root / "train_set" / "train_set").rename(tmp_path / "moved")
    (root / "train_set").rmdir()
    (tmp_path / "moved").rename(root / "train_set")
    dm = TinyImageNet30(root=root, val_ratio=0.34)
    dm.setup()
    assert len(dm.splits["train"].images) + len(dm.splits["val"].images) == 9


def test_unreadable_image_is_skipped_with_a_count(tin30_root: Path, tmp_path: Path) -> None:
    root = copy_tin30(tin30_root, tmp_path / "t", per_class=4, classes=3)
    broken = sorted((root / "train_set" / "train_set" / "bee").iterdir())[0]
    broken.write_bytes(b"this is not a jpeg")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) of 12.*" + broken.name):
        dm = TinyImageNet30(root=root, val_ratio=0.25)
        dm.setup()
    assert len(dm.splits["train"].images) + len(dm.splits["val"].images) == 11
    assert broken.name not in dm.splits["train"].ids + dm.splits["val"].ids


def test_all_images_unreadable(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "train" / "a" / f"{i}.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"none of the 3 images could be decoded"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ImageFolderData(root=tmp_path).setup()


def test_imagefolder_without_train(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train does not exist; expected .*/train/<class>/<images>"):
        ImageFolderData(root=tmp_path).setup()
