"""Tests for the synthetic shapes generator: format, determinism, captions and pixels."""

from __future__ import annotations

import re
import time

import cv2
import numpy as np
import pytest

from tincap.data.shapes import CLASS_NAMES, COLOURS, SHAPES, generate_shapes

SIZE_WORDS = {0: {"small", "tiny", "little"}, 1: {"medium", "mid"}, 2: {"large", "big", "huge"}}
SATURATION_CHROMA = 100  # max(R,G,B) - min(R,G,B); backgrounds stay well below this


@pytest.fixture(scope="module")
def sample():
    return generate_shapes(20, seed=3)


def _words(caption: str) -> set[str]:
    return set(re.findall(r"[a-z]+", caption.lower()))


def _size_bin(caption: str) -> int:
    """Size bin named by a caption, parsed independently of the generator's tables."""
    found = [b for b, words in SIZE_WORDS.items() if words & _words(caption)]
    assert len(found) == 1, caption
    return found[0]


def _cell(caption: str) -> tuple[int, int]:
    """(row, col) of the 3x3 grid named by a caption, parsed from plain keywords."""
    w = _words(caption)
    row = 0 if w & {"top", "upper"} else 2 if w & {"bottom", "lower"} else 1
    col = 0 if "left" in w else 2 if "right" in w else 1
    if (row, col) == (1, 1):
        assert w & {"center", "middle"}, caption
    return row, col


def _saturated(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.int16)
    return (img.max(axis=2) - img.min(axis=2)) > SATURATION_CHROMA


def test_shapes_and_dtypes() -> None:
    for size in (64, 48, 96):
        ds = generate_shapes(2, seed=0, size=size)
        assert ds.images.shape == (60, size, size, 3)
        assert ds.images.dtype == np.uint8
        assert ds.images.flags["C_CONTIGUOUS"]
        assert ds.labels.shape == (60,)
        assert ds.labels.dtype == np.int64
        assert len(ds.captions) == 60
        assert ds.class_names == CLASS_NAMES


def test_class_names_order() -> None:
    assert len(SHAPES) == 6 and len(COLOURS) == 5 and len(CLASS_NAMES) == 30
    for ci, colour in enumerate(COLOURS):
        for si, shape in enumerate(SHAPES):
            assert CLASS_NAMES[ci * len(SHAPES) + si] == f"{colour}_{shape}"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        generate_shapes(0)
    with pytest.raises(ValueError):
        generate_shapes(1, size=8)


def test_deterministic_and_seed_dependent() -> None:
    a = generate_shapes(3, seed=11)
    np.random.seed(123)  # global RNG state must not matter
    b = generate_shapes(3, seed=11)
    c = generate_shapes(3, seed=12)
    assert a.images.tobytes() == b.images.tobytes()
    assert np.array_equal(a.labels, b.labels)
    assert a.captions == b.captions
    assert a.images.tobytes() != c.images.tobytes()
    assert a.captions != c.captions


def test_balanced_and_class_interleaved() -> None:
    ds = generate_shapes(7, seed=1)
    assert np.array_equal(np.bincount(ds.labels, minlength=30), np.full(30, 7))
    assert np.array_equal(ds.labels, np.arange(len(ds.labels)) % 30)


def test_five_distinct_captions_naming_the_class(sample) -> None:
    for label, caps in zip(sample.labels, sample.captions):
        colour, shape = CLASS_NAMES[label].split("_")
        assert len(caps) == 5
        assert len(set(caps)) == 5
        for cap in caps:
            assert cap == cap.lower()
            assert re.fullmatch(r"[a-z ]+\.?", cap), cap
            words = _words(cap)
            assert colour in words and shape in words, cap
            assert not (words & set(COLOURS)) - {colour}, cap
            assert not (words & set(SHAPES)) - {shape}, cap
    all_caps = [c for caps in sample.captions for c in caps]
    assert len(set(all_caps)) > 0.8 * len(all_caps)  # varied, not a handful of strings


def test_size_words_match_pixels(sample) -> None:
    areas: dict[tuple[int, int], list[int]] = {}
    for img, label, caps in zip(sample.images, sample.labels, sample.captions):
        bins = {_size_bin(c) for c in caps}
        assert len(bins) == 1, caps
        key = (int(label) % len(SHAPES), bins.pop())
        areas.setdefault(key, []).append(int(_saturated(img).sum()))
    for s in range(len(SHAPES)):
        small, medium, large = (areas.get((s, b), []) for b in range(3))
        assert small and medium and large
        assert max(small) < min(large), SHAPES[s]
        assert np.median(small) < np.median(medium) < np.median(large), SHAPES[s]


def test_position_words_match_pixels(sample) -> None:
    size = sample.images.shape[1]
    tol = 3.0
    seen = set()
    for img, caps in zip(sample.images, sample.captions):
        cells = {_cell(c) for c in caps}
        assert len(cells) == 1, caps
        row, col = cells.pop()
        seen.add((row, col))
        ys, xs = np.nonzero(_saturated(img))
        cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
        third = size / 3
        assert col * third - tol <= cx <= (col + 1) * third + tol, (caps[0], cx)
        assert row * third - tol <= cy <= (row + 1) * third + tol, (caps[0], cy)
    assert len(seen) == 9


def test_colour_recoverable_from_saturated_hue() -> None:
    ds = generate_shapes(10, seed=5)
    ref = np.array(list(COLOURS.values()), dtype=np.uint8)[None]
    ref_hue = cv2.cvtColor(ref, cv2.COLOR_RGB2HSV_FULL)[0, :, 0].astype(np.float64) * 360 / 256
    correct = 0
    for img, label in zip(ds.images, ds.labels):
        mask = _saturated(img)
        assert mask.sum() > 20
        hue = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)[..., 0][mask] * (2 * np.pi / 256)
        mean_hue = np.degrees(np.arctan2(np.sin(hue).mean(), np.cos(hue).mean())) % 360
        dist = np.abs((mean_hue - ref_hue + 180) % 360 - 180)
        correct += int(np.argmin(dist) == label // len(SHAPES))
    assert correct / len(ds.labels) > 0.95


def test_generation_speed() -> None:
    start = time.perf_counter()
    ds = generate_shapes(450, seed=0)
    elapsed = time.perf_counter() - start
    assert ds.images.shape == (13_500, 64, 64, 3)
    assert elapsed < 60.0
