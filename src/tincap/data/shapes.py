"""Deterministic synthetic "coloured shapes" dataset with images, labels and captions.

Each image shows one filled, anti-aliased shape of a saturated class colour on a
greyish, textured background. The class is ``<colour>_<shape>``; every image also has
five English captions that describe colour, shape, size and position, where size and
position are derived from the radius and centre actually drawn.

Sample order is class-interleaved: sample ``i`` has class ``i % len(CLASS_NAMES)``, so
every contiguous slice whose length is a multiple of 30 is perfectly balanced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from tincap.data.cache import DecodedImages, cached_decode
from tincap.data.classification import ClassificationDataModule
from tincap.data.settings import check_setting, is_count
from tincap.data.splits import Split, stratified_split
from tincap.runtime.errors import InvalidInput
from tincap.runtime.progress import progress

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")

# Hues (deg): red ~0, yellow ~55, green ~127, blue ~226, purple ~281.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 65),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (160, 50, 210),
}

# Class index = colour_idx * len(SHAPES) + shape_idx.
CLASS_NAMES: list[str] = [f"{c}_{s}" for c in COLOURS for s in SHAPES]

SIZES: tuple[str, ...] = ("small", "medium", "large")

# 3x3 grid, row-major: index = row * 3 + col.
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)

# Circumradius ranges in pixels at a 64 px image; scaled linearly with the image size.
_RADIUS_BINS_64: tuple[tuple[float, float], ...] = ((8.0, 11.5), (12.0, 16.5), (17.0, 22.0))
_RADIUS_THRESHOLDS_64: tuple[float, float] = (11.75, 16.75)
# Fraction of the radius the centre keeps from the image border (< 1: may poke out a bit).
_BORDER_MARGIN = 0.75
_COLOUR_JITTER = 15
_N_BACKGROUNDS = 5  # gradient, stripes, checkerboard, smooth noise, blotches
_CHUNK = 512

SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "medium": ("medium", "medium sized", "mid sized"),
    "large": ("large", "big", "huge"),
}

POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "top left": (
        "in the top left corner", "at the top left", "in the upper left corner",
        "near the top left corner",
    ),
    "top": ("at the top", "near the top", "at the top of the image", "near the top edge"),
    "top right": (
        "in the top right corner", "at the top right", "in the upper right corner",
        "near the top right corner",
    ),
    "left": (
        "on the left", "on the left side", "near the left edge", "on the left side of the image",
    ),
    "center": (
        "in the center", "in the middle", "at the center of the image",
        "in the middle of the picture",
    ),
    "right": (
        "on the right", "on the right side", "near the right edge",
        "on the right side of the image",
    ),
    "bottom left": (
        "in the bottom left corner", "at the bottom left", "in the lower left corner",
        "near the bottom left corner",
    ),
    "bottom": (
        "at the bottom", "near the bottom", "at the bottom of the image", "near the bottom edge",
    ),
    "bottom right": (
        "in the bottom right corner", "at the bottom right", "in the lower right corner",
        "near the bottom right corner",
    ),
}

# {a} size adjective (a synonym), {n} canonical size word, {c} colour, {s} shape, {p} position.
_TEMPLATES: tuple[str, ...] = (
    "a {a} {c} {s} {p}",
    "there is a {a} {c} {s} {p}",
    "a {c} {s} of {n} size {p}",
    "{p} there is a {a} {c} {s}",
    "the image shows a {a} {c} {s} {p}",
    "a picture of a {a} {c} {s} {p}",
    "{p} is a {a} {c} {s}",
    "you can see a {a} {c} {s} {p}",
    "{a} {c} {s} {p}",
    "the {s} {p} is {c} and {a}",
    "this is a {a} {c} {s} {p}",
    "a {a} {s} {p} painted {c}",
    "a {a} {s} in {c} {p}",
    "one {a} {c} {s} can be seen {p}",
)
_N_CAPTIONS = 5


@dataclass(frozen=True)
class ShapesSet:
    """Generated images with class labels and five captions each."""

    images: np.ndarray  # (N, size, size, 3) uint8 RGB, C-contiguous
    labels: np.ndarray  # (N,) int64
    captions: list[list[str]]  # N lists of 5 distinct captions
    class_names: list[str]


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices of a shape centred on its area centroid, scaled to circumradius 1."""
    if shape == "circle":
        t = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif shape == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif shape == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2.0 * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)
    elif shape == "cross":
        w = 0.32
        pts = np.array(
            [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1),
             (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)],
            dtype=np.float64,
        )
    elif shape == "heart":
        t = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y], axis=1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    x, y = pts[:, 0], pts[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2.0
    centroid = np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6.0 * area)
    pts = pts - centroid
    return pts / np.linalg.norm(pts, axis=1).max()


_UNIT_POLYGONS: dict[str, np.ndarray] = {s: _unit_polygon(s) for s in SHAPES}
# Orientation-bearing shapes look unnatural upside down; keep them roughly upright.
_MAX_ROTATION: dict[str, float] = {s: np.pi for s in SHAPES} | {"heart": np.deg2rad(30.0)}


def _interp_matrix(out_len: int, in_len: int) -> np.ndarray:
    """Linear-interpolation matrix (out_len, in_len) used to upsample coarse noise."""
    p = np.clip((np.arange(out_len) + 0.5) * in_len / out_len - 0.5, 0.0, in_len - 1)
    i0 = np.floor(p).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_len - 1)
    w = p - i0
    m = np.zeros((out_len, in_len), dtype=np.float32)
    m[np.arange(out_len), i0] += 1.0 - w
    m[np.arange(out_len), i1] += w
    return m


def _normalise(g: np.ndarray) -> np.ndarray:
    """Stretch each (n, H, W) field to [0, 1] so brightness/contrast are set separately."""
    lo = g.min(axis=(1, 2), keepdims=True)
    hi = g.max(axis=(1, 2), keepdims=True)
    return (g - lo) / np.maximum(hi - lo, 1e-6)


class _BackgroundParams:
    """Per-image random background parameters, drawn once for the whole set."""

    def __init__(self, rng: np.random.Generator, n: int, size: int) -> None:
        self.kind = rng.integers(0, _N_BACKGROUNDS, n)
        self.angle = rng.uniform(0.0, 2.0 * np.pi, n)
        self.freq = rng.uniform(1.5, 6.0, n)  # stripe cycles per image
        self.phase = rng.uniform(0.0, 2.0 * np.pi, n)
        self.hardness = rng.uniform(0.5, 6.0, n)
        self.cell = rng.uniform(5.0, 16.0, n) * size / 64.0
        self.coarse4 = rng.standard_normal((n, 4, 4)).astype(np.float32)
        self.coarse8 = rng.standard_normal((n, 8, 8)).astype(np.float32)
        self.blob_xy = rng.uniform(0.0, size, (n, 2, 6)).astype(np.float32)
        self.blob_sigma = (rng.uniform(3.0, 12.0, (n, 6)) * size / 64.0).astype(np.float32)
        self.blob_w = rng.uniform(-1.0, 1.0, (n, 6)).astype(np.float32)
        self.gamma = rng.uniform(0.6, 1.6, n)
        self.low = rng.uniform(10.0, 120.0, n)
        self.span = rng.uniform(25.0, 90.0, n)
        self.tint = 1.0 + rng.uniform(-0.12, 0.12, (n, 3))
        self.noise_sigma = rng.uniform(2.0, 7.0, n)


def _background_fields(p: _BackgroundParams, idx: np.ndarray, size: int) -> np.ndarray:
    """Grey texture fields in [0, 1] of shape (len(idx), size, size), vectorised per kind."""
    out = np.empty((len(idx), size, size), dtype=np.float32)
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    kinds = p.kind[idx]
    for kind in range(_N_BACKGROUNDS):
        sel = np.nonzero(kinds == kind)[0]
        if sel.size == 0:
            continue
        j = idx[sel]
        cos = np.cos(p.angle[j]).astype(np.float32)[:, None, None]
        sin = np.sin(p.angle[j]).astype(np.float32)[:, None, None]
        u = xx * cos + yy * sin
        if kind == 0:  # linear gradient
            g = u
        elif kind == 1:  # stripes, from soft sinusoid to hard bars
            omega = (2.0 * np.pi * p.freq[j] / size)[:, None, None]
            wave = np.sin(u * omega + p.phase[j][:, None, None])
            g = np.tanh(wave * p.hardness[j][:, None, None])
        elif kind == 2:  # rotated checkerboard
            v = -xx * sin + yy * cos
            c = p.cell[j][:, None, None]
            g = (np.floor(u / c) + np.floor(v / c)) % 2.0
        elif kind == 3:  # smooth value noise, two octaves
            a4, a8 = _interp_matrix(size, 4), _interp_matrix(size, 8)
            g = a4 @ p.coarse4[j] @ a4.T + 0.6 * (a8 @ p.coarse8[j] @ a8.T)
        else:  # soft gaussian blotches, separable so it is one batched matmul
            pix = np.arange(size, dtype=np.float32)
            s2 = 2.0 * p.blob_sigma[j][:, :, None] ** 2
            gx = np.exp(-((pix - p.blob_xy[j, 0][:, :, None]) ** 2) / s2)
            gy = np.exp(-((pix - p.blob_xy[j, 1][:, :, None]) ** 2) / s2)
            g = np.transpose(gy * p.blob_w[j][:, :, None], (0, 2, 1)) @ gx
        out[sel] = _normalise(np.asarray(g, dtype=np.float32))
    return out ** p.gamma[idx].astype(np.float32)[:, None, None]


def _shape_masks(
    labels: np.ndarray, centres: np.ndarray, radii: np.ndarray, angles: np.ndarray, size: int
) -> np.ndarray:
    """Anti-aliased coverage masks (n, size, size) uint8 of the shapes to draw."""
    shift = 4
    masks = np.zeros((len(labels), size, size), dtype=np.uint8)
    for k in range(len(labels)):
        poly = _UNIT_POLYGONS[SHAPES[labels[k] % len(SHAPES)]]
        c, s = np.cos(angles[k]), np.sin(angles[k])
        rot = poly @ np.array([[c, s], [-s, c]]) * radii[k] + centres[k]
        # cv2 pixel centres sit at integer coordinates; ours at +0.5.
        pts = np.round((rot - 0.5) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(masks[k], [pts], 255, lineType=cv2.LINE_AA, shift=shift)
    return masks


def _captions(
    rng: np.random.Generator, labels: np.ndarray, size_bins: np.ndarray, cells: np.ndarray
) -> list[list[str]]:
    """Five distinct captions per image from shuffled templates and random synonyms."""
    n = len(labels)
    template_order = np.argsort(rng.random((n, len(_TEMPLATES))), axis=1)[:, :_N_CAPTIONS]
    syn = rng.integers(0, 1 << 30, (n, _N_CAPTIONS, 2))
    colour_names = list(COLOURS)
    out: list[list[str]] = []
    for i in range(n):
        colour = colour_names[labels[i] // len(SHAPES)]
        shape = SHAPES[labels[i] % len(SHAPES)]
        size_name = SIZES[size_bins[i]]
        adjs = SIZE_SYNONYMS[size_name]
        phrases = POSITION_PHRASES[POSITIONS[cells[i]]]
        caps: list[str] = []
        for k in range(_N_CAPTIONS):
            caps.append(
                _TEMPLATES[template_order[i, k]].format(
                    a=adjs[syn[i, k, 0] % len(adjs)],
                    n=size_name,
                    c=colour,
                    s=shape,
                    p=phrases[syn[i, k, 1] % len(phrases)],
                )
            )
        out.append(caps)
    return out


def generate_shapes(n_per_class: int, seed: int = 0, size: int = 64) -> ShapesSet:
    """Build a balanced, seed-reproducible image+caption set that trains in minutes on CPU."""
    if not is_count(n_per_class):
        raise InvalidInput(f"n_per_class={n_per_class}: expected an integer >= 1 images per class. "
                           "Set e.g. data.n_per_class=200 (data.shapes_per_class=100 for captions)")
    if not is_count(size, 16):
        raise InvalidInput(f"size={size}: expected a side >= 16 pixels for generated shapes. Set e.g. data.image_size=64")
    rng = np.random.default_rng(seed)
    n_classes = len(CLASS_NAMES)
    n = n_classes * n_per_class
    scale = size / 64.0
    labels = np.arange(n, dtype=np.int64) % n_classes

    # Shape geometry: radius from a size bin, centre uniformly inside a 3x3 grid cell.
    bins = np.asarray(_RADIUS_BINS_64) * scale
    size_draw = rng.integers(0, 3, n)
    radii = rng.uniform(bins[size_draw, 0], bins[size_draw, 1])
    cell_draw = rng.integers(0, 9, (n,))
    third = size / 3.0
    inset = 2.0 * scale  # keep centres off grid lines so the position word is unambiguous
    lo_border = _BORDER_MARGIN * radii
    hi_border = size - _BORDER_MARGIN * radii
    cell_rc = np.stack([cell_draw // 3, cell_draw % 3], axis=1)  # (row, col)
    lo = np.maximum(cell_rc * third + inset, lo_border[:, None])
    hi = np.minimum((cell_rc + 1) * third - inset, hi_border[:, None])
    hi = np.maximum(hi, lo)
    yx = rng.uniform(lo, hi)
    centres = yx[:, ::-1].copy()  # (x, y)
    max_rot = np.array([_MAX_ROTATION[SHAPES[s]] for s in range(len(SHAPES))])[labels % len(SHAPES)]
    angles = rng.uniform(-max_rot, max_rot)

    colour_arr = np.array(list(COLOURS.values()), dtype=np.float32)[labels // len(SHAPES)]
    colour_arr += rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, (n, 3)).astype(np.float32)

    # Words are derived from what is drawn, not from the draws above.
    thresholds = np.asarray(_RADIUS_THRESHOLDS_64) * scale
    size_bins = np.searchsorted(thresholds, radii)
    cols = np.clip((centres[:, 0] // third).astype(np.int64), 0, 2)
    rows = np.clip((centres[:, 1] // third).astype(np.int64), 0, 2)
    cells = rows * 3 + cols

    bg = _BackgroundParams(rng, n, size)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    with progress(n, "drawing shapes") as advance:
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            idx = np.arange(start, stop)
            field = _background_fields(bg, idx, size)
            low = bg.low[idx].astype(np.float32)[:, None, None]
            grey = low + field * bg.span[idx].astype(np.float32)[:, None, None]
            img = grey[..., None] * bg.tint[idx].astype(np.float32)[:, None, None, :]
            alpha = _shape_masks(labels[idx], centres[idx], radii[idx], angles[idx], size)
            alpha = alpha.astype(np.float32)[..., None] * np.float32(1.0 / 255.0)
            img += alpha * (colour_arr[idx][:, None, None, :] - img)
            noise = rng.standard_normal(img.shape, dtype=np.float32)
            img += noise * bg.noise_sigma[idx].astype(np.float32)[:, None, None, None]
            np.clip(img, 0.0, 255.0, out=img)
            images[start:stop] = np.rint(img).astype(np.uint8)
            advance(stop - start)

    captions = _captions(rng, labels, size_bins, cells)
    return ShapesSet(images=images, labels=labels, captions=captions, class_names=list(CLASS_NAMES))


class ShapesData(ClassificationDataModule):
    """Generated shapes (no files needed): the default data on a fresh machine, split into train/val/test."""

    name = "shapes"

    def __init__(self, n_per_class: int = 200, shapes_seed: int = 0, test_ratio: float = 0.1, image_size: int = 64,
                 **kwargs: Any) -> None:
        check_setting("n_per_class", n_per_class, is_count(n_per_class), "an integer >= 1 images per class", 200)
        check_setting("test_ratio", test_ratio, isinstance(test_ratio, (int, float)) and 0 <= test_ratio < 1,
                      "a fraction in [0, 1)", 0.1)
        kwargs.setdefault("root", f"generated-shapes-{n_per_class}-{shapes_seed}")
        super().__init__(image_size=image_size, **kwargs)
        self.n_per_class = n_per_class
        self.shapes_seed = shapes_seed
        self.test_ratio = test_ratio

    def discover_classes(self) -> list[str]:
        return list(CLASS_NAMES)

    def load_splits(self) -> dict[str, Split]:
        check_setting("image_size", self.image_size, is_count(self.image_size, 16),
                      "a side >= 16 pixels to draw the shapes at", 64)

        def build() -> DecodedImages:
            generated = generate_shapes(self.n_per_class, self.shapes_seed, self.image_size)
            return DecodedImages(generated.images, np.arange(len(generated.images)), generated.labels)

        key = f"shapes|n={self.n_per_class}|seed={self.shapes_seed}"
        data = cached_decode([], self.cache_path("all"), self.image_size, build=build, extra_key=key)
        rest, test = stratified_split(data.labels, self.test_ratio, self.split_seed, key="test_ratio")
        ids = [f"shape_{i:05d}" for i in range(len(data.images))]

        def take(idx: np.ndarray) -> Split:
            return Split(data.images[idx], data.labels[idx], [ids[i] for i in idx])

        return {"train": take(rest), "test": take(test)} if len(test) else {"train": take(rest)}
