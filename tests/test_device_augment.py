"""data.augment_on=device and data.on_device=true give the host path's batches: every random parameter comes from the
run's seed and the batch's own indices, never from where the batch is augmented; the settings that cannot work are
refused before any image is read."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor

from tincap.data.arrays import RawBatch
from tincap.data.shapes import ShapesData
from tincap.data.transforms import batch_seed
from tincap.runtime.errors import InvalidInput

pytestmark = pytest.mark.usefixtures("one_thread")

# every device-capable augmentation on, mixing on most batches only, so both hard- and soft-label batches occur
AUGMENT = {"crop_padding": 2, "flip": True, "color_jitter": 0.4, "mixup_alpha": 0.4, "cutmix_alpha": 1.0,
           "mix_prob": 0.7}


def shapes(cache_dir: Path, **kwargs: object) -> ShapesData:
    """180 generated 16 px images: 8 training batches of 16."""
    return ShapesData(n_per_class=6, image_size=16, batch_size=16, cache_dir=cache_dir, augment=AUGMENT, **kwargs)


def batches(dm: ShapesData, stage: str) -> list[tuple[Tensor, Tensor]]:
    """A stage's batches as its step sees them: through the loader, then the datamodule's after-transfer hook."""
    return [dm.on_after_batch_transfer(batch, 0) for batch in getattr(dm, f"{stage}_dataloader")()]


@pytest.mark.parametrize("on_device", [False, True], ids=["uint8-batches", "split-on-device"])
def test_device_path_gives_the_host_batches(cache_dir: Path, on_device: bool) -> None:
    host, device = shapes(cache_dir, seed=7), shapes(cache_dir, seed=7, augment_on="device", on_device=on_device)
    raw = next(iter(device.train_dataloader()))
    assert isinstance(raw, RawBatch) and (raw.images is None) == on_device
    assert ("train" in device.placed) == on_device
    for stage in ("train", "val", "test"):
        expected, got = batches(host, stage), batches(device, stage)
        assert len(got) == len(expected) > 1
        for (xe, ye), (xg, yg) in zip(expected, got):
            assert xg.dtype == torch.float32 and torch.equal(xg, xe) and torch.equal(yg, ye)
    train = batches(host, "train")
    soft = [y.ndim == 2 for _, y in train]
    assert any(soft) and not all(soft)  # mixed and unmixed batches were both compared
    evaluated = host.dataset("train", train=False)
    first = next(iter(host.train_dataloader().batch_sampler))
    assert not torch.equal(train[0][0], evaluated.__getitems__(first)[0])  # the training batch was augmented


def test_augmentation_follows_the_run_seed_and_the_batch(cache_dir: Path) -> None:
    data = shapes(cache_dir).dataset("train", train=True)
    idx = np.arange(16)
    x, y = torch.from_numpy(data.images[idx]), data.labels(idx)

    def augmented(seed: int, index: np.ndarray) -> Tensor:
        return data.prepare(x, y, batch_seed(seed, index))[0]

    reference = augmented(0, idx)
    assert torch.equal(augmented(0, idx.copy()), reference)  # a function of (seed, indices) alone
    for other in (augmented(1, idx), augmented(0, idx[::-1]), augmented(0, idx + 16)):
        assert not torch.equal(other, reference)


def test_split_too_big_for_the_gpu_stays_on_the_host(cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A split that needs more than its share of the GPU's free memory is served from the host, with a warning."""
    dm = shapes(cache_dir, augment_on="device", on_device=True)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10_000, 10**9))
    with caplog.at_level(logging.WARNING, logger="tincap.data.placement"):
        batch = next(iter(dm.train_dataloader()))
    assert batch.images is not None and batch.images.dtype == torch.uint8 and not dm.placed
    assert "stays in host memory" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"augment_on": "device", "augment": {"trivial_augment": True}},
         ("data.augment.trivial_augment=true", "data.augment_on=device", "data.augment_on=host")),
        ({"on_device": True}, ("data.on_device=true", "data.augment_on=host", "data.augment_on=device")),
        ({"augment_on": "gpu"}, ("data.augment_on=gpu", "host or device")),
    ],
    ids=["trivial-augment-on-device", "on-device-augmented-on-host", "unknown-place"],
)
def test_impossible_placements_are_refused(kwargs: dict, named: tuple[str, ...]) -> None:
    with pytest.raises(InvalidInput) as refused:
        ShapesData(**kwargs)
    assert all(text in str(refused.value) for text in named), str(refused.value)


def test_the_run_seed_reaches_the_datamodule_as_an_argument(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch order and augmentation follow `seed` (train.py passes its own), not an environment variable."""

    def first_batch(seed: int) -> Tensor:
        return next(iter(shapes(cache_dir, seed=seed).train_dataloader()))[0]

    reference = first_batch(3)
    monkeypatch.setenv("PL_GLOBAL_SEED", "99")  # what Lightning's seed_everything sets; read by nothing here
    assert torch.equal(first_batch(3), reference)
    assert not torch.equal(first_batch(4), reference)
