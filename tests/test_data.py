"""The decode-once cache, the splits, the augmentations and every bad-input message, on real images."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

import tincap.runtime.progress
from tincap.data.cache import cached_decode, decode_files, decode_image, fingerprint
from tincap.data.caption_datamodule import CaptionData
from tincap.data.cifar10 import CIFAR10
from tincap.data.imagefolder import ImageFolderData
from tincap.data.shapes import ShapesData
from tincap.data.splits import stratified_split
from tincap.data.tin30 import TinyImageNet30
from tincap.data.transforms import BatchTransform, random_crop
from tincap.runtime.errors import InvalidInput, MissingInput, UserError


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
    with pytest.raises(MissingInput, match=r"does not exist.*class\.txt"):
        TinyImageNet30(root=tmp_path / "nope").setup()


def test_missing_class_file(tmp_path: Path) -> None:
    (tmp_path / "train_set").mkdir()
    with pytest.raises(MissingInput, match="class.txt"):
        TinyImageNet30(root=tmp_path).setup()


def test_malformed_class_file(tmp_path: Path) -> None:
    (tmp_path / "class.txt").write_text("0\tbaboon\nbanana\n")
    with pytest.raises(InvalidInput, match=r"class\.txt:2: expected 'idx<TAB>classname'"):
        TinyImageNet30(root=tmp_path).setup()


def test_empty_class_folder(tin30_root: Path, tmp_path: Path) -> None:
    root = copy_tin30(tin30_root, tmp_path / "t", classes=3)
    for f in (root / "train_set" / "train_set" / "bee").iterdir():
        f.unlink()
    with pytest.raises(InvalidInput, match=r"bee is empty; expected image files"):
        TinyImageNet30(root=root).setup()


def test_class_file_and_folders_disagree(tin30_root: Path, tmp_path: Path) -> None:
    root = copy_tin30(tin30_root, tmp_path / "t", classes=3)
    (root / "train_set" / "train_set" / "bee").rename(root / "train_set" / "train_set" / "honeybee")
    with pytest.raises(InvalidInput, match=r"disagree: no folder for \['bee'\].*not in the class list \['honeybee'\]"):
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
    with pytest.raises(InvalidInput, match=r"none of the 3 images could be decoded"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ImageFolderData(root=tmp_path).setup()


def test_imagefolder_without_train(tmp_path: Path) -> None:
    with pytest.raises(MissingInput, match=r"train does not exist; expected .*/train/<class>/<images>"):
        ImageFolderData(root=tmp_path).setup()


def write_pngs(folder: Path, n: int, size: tuple[int, int] = (20, 24)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return sorted(folder.glob("*.png"))


@pytest.mark.parametrize(
    "make", [TinyImageNet30, ImageFolderData, CIFAR10, CaptionData], ids=["tin30", "imagefolder", "cifar10", "captions"]
)
def test_missing_data_root_is_a_user_error(make: type, tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(MissingInput) as info:
        make(root=root).setup()
    message = str(info.value)
    assert isinstance(info.value, UserError) and isinstance(info.value, FileNotFoundError)
    assert message.startswith(f"data.root={root}: "), message
    assert "expected" in message and "Set data.root=/path/to/" in message, message


def _no_train_set(root: Path) -> None:
    (root / "class.txt").write_text("0\tbaboon\n1\tbee\n")


def _class_listed_twice(root: Path) -> None:
    (root / "class.txt").write_text("0\tbaboon\n1 bee\n1\tcat\n")


def _files_without_class_folders(root: Path) -> None:
    write_pngs(root / "train", 2)


def _empty_test_folder(root: Path) -> None:
    write_pngs(root / "train" / "a", 2)
    write_pngs(root / "train" / "b", 2)
    (root / "test").mkdir()


def _images_of_two_sizes(root: Path) -> None:
    write_pngs(root / "train" / "a", 2, size=(20, 24))
    write_pngs(root / "train" / "b", 2, size=(24, 20))


@pytest.mark.parametrize(
    ("make", "layout", "kind", "patterns"),
    [
        (TinyImageNet30, _no_train_set, MissingInput,
         [r"^data\.root=.*: TinyImageNet30 train set: folder .*/train_set does not exist",
          r"Set data\.root=/path/to/tinyimagenet30$"]),
        (TinyImageNet30, _class_listed_twice, InvalidInput,
         [r"class\.txt:3: class index 1 appears twice; expected each index once", r"or set data\.root to another"]),
        (ImageFolderData, _files_without_class_folders, InvalidInput,
         [r"^data\.root=.*: imagefolder train set: .*/train has no class sub-folders; expected .*/train/<class_name>/",
          r"Set data\.root=/path/to/imagefolder$"]),
        (ImageFolderData, _empty_test_folder, InvalidInput,
         [r"^data\.root=.*/test holds no images and no class folders; expected test/<images> or test/<class>/<images>",
          r"set data\.root=/path/to/imagefolder$"]),
        (ImageFolderData, _images_of_two_sizes, InvalidInput,
         [r"have different sizes .*expected one size when data\.image_size=null", r"Set e\.g\. data\.image_size=64"]),
    ],
    ids=["tin30-no-train-set", "tin30-class-twice", "imagefolder-flat-train", "imagefolder-empty-test", "mixed-sizes"],
)
def test_ill_formed_dataset_is_a_user_error(
    make: type, layout: Callable[[Path], None], kind: type, patterns: list[str], tmp_path: Path
) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    layout(root)
    with pytest.raises(kind) as info:
        make(root=root, image_size=None).setup()
    message = str(info.value)
    assert isinstance(info.value, UserError) and "data." in message, message
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)


@pytest.mark.parametrize(
    ("make", "kwargs", "shown"),
    [
        (ShapesData, {"n_per_class": 0},
         "data.n_per_class=0: expected an integer >= 1 images per class. Set e.g. data.n_per_class=200"),
        (ShapesData, {"test_ratio": 1.0}, "data.test_ratio=1.0: expected a fraction in [0, 1)"),
        (TinyImageNet30, {"root": "x", "val_ratio": -0.1}, "data.val_ratio=-0.1: expected a fraction in [0, 1)"),
        (ImageFolderData, {"root": "x", "batch_size": 0}, "data.batch_size=0: expected an integer >= 1"),
        (CaptionData, {"shapes_per_class": 2, "max_len": 1}, "data.max_len=1: expected an integer >= 2 tokens"),
        (CaptionData, {}, "data.root=null: a caption dataset needs a folder"),
    ],
    ids=["n_per_class", "test_ratio", "val_ratio", "batch_size", "max_len", "no-root"],
)
def test_impossible_data_values_are_user_errors(make: type, kwargs: dict, shown: str) -> None:
    with pytest.raises(InvalidInput) as info:
        make(**kwargs)
    assert str(info.value).startswith(shown), str(info.value)


def test_shapes_at_a_size_too_small_to_draw() -> None:
    dm = ShapesData(n_per_class=1, image_size=8)
    with pytest.raises(InvalidInput, match=r"^data\.image_size=8: expected a side >= 16 pixels"):
        dm.setup()


def test_decoding_reports_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_pngs(tmp_path / "imgs", 7)
    monkeypatch.setattr(tincap.runtime.progress, "SHOW_AFTER_S", 60.0)
    decode_files(files, 16, threads=3, description="my set")
    assert capsys.readouterr().err == ""  # loops quicker than SHOW_AFTER_S stay silent
    monkeypatch.setattr(tincap.runtime.progress, "SHOW_AFTER_S", 0.0)
    decoded = decode_files(files, 16, threads=3, description="my set")
    captured = capsys.readouterr()
    np.testing.assert_array_equal(decoded.images, np.stack([decode_image(f, 16) for f in files]))
    # stderr is not a terminal here, as in a log file: one final line, no redraws
    lines = captured.err.splitlines()
    assert len(lines) == 1 and re.match(r"decoding my set\b.* 7/7 ", lines[0]), captured.err
    assert captured.out == ""


def test_shapes_generation_reports_progress(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tincap.runtime.progress, "SHOW_AFTER_S", 0.0)
    ShapesData(n_per_class=2, image_size=16).setup()
    (line,) = capsys.readouterr().err.splitlines()
    assert re.match(r"drawing shapes\b.* 60/60 ", line), line


def test_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(record=True, force_terminal=True, width=100)
    monkeypatch.setattr(tincap.runtime.progress, "SHOW_AFTER_S", 60.0)
    with tincap.runtime.progress.progress(3, "counting", console=console) as advance:
        for _ in range(3):
            advance(1)
    assert console.export_text() == ""  # done before SHOW_AFTER_S: no bar
    monkeypatch.setattr(tincap.runtime.progress, "SHOW_AFTER_S", 0.0)
    with tincap.runtime.progress.progress(3, "counting", console=console) as advance:
        for _ in range(3):
            advance(1)
    text = console.export_text()
    assert re.search(r"counting .*3/3", text), text
