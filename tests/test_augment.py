"""Each batch augmentation on its own: MixUp and CutMix targets match the pixels they mixed; jitter, TrivialAugment
and flip do what they say and nothing else (every other augmentation off), so one cannot pass on another's change."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tincap.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchMix,
    BatchTransform,
    color_jitter,
)

N_CLASSES = 10


def uint8_batch(n: int = 16, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def distinct_neighbour_labels(n: int) -> torch.Tensor:
    """Labels where every image's class differs from the one it is paired with (its predecessor, cyclically)."""
    y = torch.arange(n) % N_CLASSES
    assert (y != y.roll(1)).all()
    return y


def test_no_augmentation_when_training_equals_evaluation() -> None:
    """The baseline the one-at-a-time tests rely on: with every option off a training batch is not changed."""
    x = uint8_batch()
    assert torch.equal(BatchTransform(train=True)(x), BatchTransform(train=False)(x))


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_targets_and_images_are_the_same_convex_combination(alpha: float) -> None:
    torch.manual_seed(1)
    mix = BatchMix(N_CLASSES, mixup_alpha=alpha)
    for _ in range(5):
        x = torch.randn(8, 3, 8, 8)
        y = distinct_neighbour_labels(8)
        mixed, soft = mix(x, y)
        assert soft.shape == (8, N_CLASSES) and soft.dtype.is_floating_point
        assert torch.allclose(soft.sum(1), torch.ones(8))
        lam = float(soft[0, y[0]])  # the weight of each image's own class; the partner (y.roll(1)) has 1 - lam
        assert 0.0 <= lam <= 1.0
        onehot = F.one_hot(y, N_CLASSES).float()
        assert torch.allclose(soft, lam * onehot + (1 - lam) * onehot.roll(1, 0), atol=1e-6)
        assert torch.allclose(mixed, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-5)
        assert not torch.equal(mixed, x)  # x is left as it was, and the result is a different batch
        assert x.shape == mixed.shape


def test_cutmix_label_weight_is_the_pasted_area() -> None:
    """The other class's weight equals the fraction of pixels pasted from the other image, boxes clipped at the
    border included; the pasted pixels form one rectangle, the same in every image and channel."""
    torch.manual_seed(2)
    mix = BatchMix(N_CLASSES, cutmix_alpha=1.0)
    h, w = 12, 16
    clipped = 0
    for _ in range(60):
        x = torch.randn(6, 3, h, w)  # continuous noise: a pixel equals its partner's only where it was pasted
        y = distinct_neighbour_labels(6)
        mixed, soft = mix(x, y)
        assert torch.allclose(soft.sum(1), torch.ones(6))
        pasted = mixed == x.roll(1, 0)
        kept = mixed == x
        assert (pasted ^ kept).all()  # every pixel comes from exactly one of the two images
        assert (pasted == pasted[:1, :1]).all()  # one box for the batch and all channels
        box = pasted[0, 0]
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        if len(rows):
            assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a filled rectangle
            clipped += int(rows.min() == 0 or cols.min() == 0 or rows.max() == h - 1 or cols.max() == w - 1)
        area = box.float().mean().item()
        other = soft[torch.arange(6), y.roll(1)]
        own = soft[torch.arange(6), y]
        assert torch.allclose(other, torch.full((6,), area), atol=1e-6), (other, area)
        assert torch.allclose(own, torch.full((6,), 1 - area), atol=1e-6)
    assert clipped > 0  # the border case was exercised


def test_mix_prob_zero_leaves_the_batch_and_hard_labels() -> None:
    x, y = torch.randn(4, 3, 8, 8), distinct_neighbour_labels(4)
    mixed, labels = BatchMix(N_CLASSES, mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0)(x, y)
    assert mixed is x and labels is y


def test_color_jitter_alone_changes_colours_only() -> None:
    torch.manual_seed(3)
    x = uint8_batch()
    ev = BatchTransform(train=False)(x)
    out = BatchTransform(train=True, color_jitter=0.4)(x)
    assert out.shape == ev.shape and out.dtype == ev.dtype == torch.float32
    changed = [not torch.allclose(out[i], ev[i], atol=1e-3) for i in range(len(x))]
    assert all(changed)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = out * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # still valid [0, 1] pixels after de-normalising


def test_color_jitter_keeps_grey_grey_and_strength_zero_is_identity() -> None:
    torch.manual_seed(4)
    grey = torch.rand(8, 1, 6, 6).expand(8, 3, 6, 6).contiguous()
    jittered = color_jitter(grey.clone(), 0.5)
    assert not torch.allclose(jittered, grey, atol=1e-3)
    assert torch.allclose(jittered[:, 0], jittered[:, 1], atol=1e-6)  # no hue shift: grey stays grey
    assert torch.allclose(jittered[:, 1], jittered[:, 2], atol=1e-6)
    colour = torch.rand(8, 3, 6, 6)
    assert torch.allclose(color_jitter(colour.clone(), 0.0), colour, atol=1e-6)
    x = uint8_batch()
    assert torch.equal(BatchTransform(train=True, color_jitter=0.0)(x), BatchTransform(train=False)(x))


def test_color_jitter_factors_never_invert_the_image() -> None:
    """Strength above 1 draws factors below 0; a negative contrast or saturation factor would invert the image."""
    torch.manual_seed(5)
    x = torch.zeros(64, 3, 4, 4)
    x[:, :, :, 2:] = 1.0  # half black, half white
    out = color_jitter(x.clone(), 1.8)
    assert (out[:, :, :, 2:] >= out[:, :, :, :2]).all()  # the white half is never darker than the black half


def test_trivial_augment_alone_changes_the_batch() -> None:
    torch.manual_seed(6)
    x = uint8_batch(n=16)
    ev = BatchTransform(train=False)(x)
    out = BatchTransform(train=True, trivial_augment=True)(x)
    assert out.shape == ev.shape and out.dtype == ev.dtype
    changed = sum(not torch.equal(out[i], ev[i]) for i in range(len(x)))
    assert changed >= len(x) // 2  # each image gets one random op (identity is one of the ~14 choices)


def test_flip_alone_is_an_exact_mirror() -> None:
    torch.manual_seed(7)
    x = uint8_batch(n=32)
    ev = BatchTransform(train=False)(x)
    out = BatchTransform(train=True, flip=True)(x)
    flipped = [torch.equal(out[i], ev[i].flip(-1)) for i in range(len(x))]
    unchanged = [torch.equal(out[i], ev[i]) for i in range(len(x))]
    assert all(f or u for f, u in zip(flipped, unchanged))
    assert 0 < sum(flipped) < len(x)  # a coin per image


def test_crop_alone_shifts_by_at_most_the_padding() -> None:
    torch.manual_seed(8)
    x = uint8_batch(n=8, size=8)
    out = BatchTransform(train=True, crop_padding=2, mean=(0, 0, 0), std=(1 / 255,) * 3)(x)  # scale 1: pixel values
    padded = F.pad(x, (2, 2, 2, 2)).float()
    for i in range(len(x)):
        windows = [padded[i, :, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]
        assert any(torch.allclose(out[i], win, atol=1e-3) for win in windows)
    assert not torch.allclose(out, x.float(), atol=1e-3)
