"""Batch augmentations on uint8 tensors: one vectorised call per batch instead of one PIL call per image.

Every random parameter is drawn on the CPU from the `generator` passed in (the global RNG when None) and only the
pixel work runs on the batch's device, so a batch seeded alike is augmented alike on the host and on a GPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from tincap.runtime.errors import InvalidInput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = (0.299, 0.587, 0.114)


def batch_seed(seed: int, index: np.ndarray | Sequence[int]) -> int:
    """A batch's augmentation seed from the run's seed and its sample indices alone, so it is the same wherever and
    whenever the batch is augmented: host or device, uninterrupted or resumed run, any number of loader workers."""
    data = np.asarray([seed], dtype="<i8").tobytes() + np.asarray(index, dtype="<i8").tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def _to(params: Tensor, like: Tensor) -> Tensor:
    """Small CPU-drawn parameters onto the batch's device; non-blocking so the GPU stream is not waited for."""
    return params.to(like.device, non_blocking=True)


def crop_and_flip(x: Tensor, padding: int, flip_p: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image by up to `padding` px (zero-filled border, torchvision's padded RandomCrop) and mirror it
    left-right with probability flip_p, as one gather over the whole batch: no per-image loop for a GPU to wait on."""
    padding = max(padding, 0)
    if not padding and flip_p <= 0:
        return x
    n, c, h, w = x.shape
    shifts = torch.zeros(n, 2, dtype=torch.long)
    if padding:
        shifts = torch.randint(-padding, padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < flip_p if flip_p > 0 else torch.zeros(n, dtype=torch.bool)
    shifts, flips = _to(shifts, x), _to(flips, x)
    rows = torch.arange(h, device=x.device) + padding + shifts[:, :1]  # (n, h): source row of each output row
    cols = torch.arange(w, device=x.device) + padding + shifts[:, 1:]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    width = w + 2 * padding
    index = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    padded = F.pad(x, (padding,) * 4) if padding else x
    return padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w)


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image by up to `padding` px, zero-filling the border: torchvision's padded RandomCrop, batched."""
    return crop_and_flip(x, padding, 0.0, generator)


def color_jitter(x: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Per-image brightness, contrast and saturation factors in [max(0, 1-s), 1+s], on float images in [0, 1]."""
    n = x.shape[0]
    # floored at 0 as torchvision's ColorJitter does: a negative contrast or saturation factor inverts the image
    factors = (1 + (torch.rand(3, n, 1, 1, 1, generator=generator) * 2 - 1) * strength).clamp_(min=0)
    brightness, contrast, saturation = _to(factors, x).to(x.dtype)
    x = x * brightness  # the one copy; the rest works in place on it
    channel = x.mean((2, 3), keepdim=True)  # the mean grey level below, without making a grey image
    mean = channel[:, :1] * _GRAY[0] + channel[:, 1:2] * _GRAY[1] + channel[:, 2:] * _GRAY[2]
    x.sub_(mean).mul_(contrast).add_(mean)
    gray = x[:, :1] * _GRAY[0]
    gray.add_(x[:, 1:2], alpha=_GRAY[1]).add_(x[:, 2:], alpha=_GRAY[2])
    x.sub_(gray).mul_(saturation).add_(gray)
    return x.clamp_(0, 1)


class BatchTransform:
    """uint8 (N,3,H,W) -> normalised float batch, with the configured augmentations when training.

    Fastest on contiguous NCHW input (per-channel broadcasting on channels-last memory is ~10x slower on CPU).
    """

    def __init__(
        self,
        train: bool,
        crop_padding: int = 0,
        flip: bool = False,
        color_jitter: float = 0.0,
        trivial_augment: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.train = train
        self.crop_padding = crop_padding
        self.flip = flip
        self.color_jitter = color_jitter
        self.trivial = v2.TrivialAugmentWide() if trivial_augment else None
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.scale = 1 / (255 * self.std)  # (x/255 - mean)/std as one multiply and one subtract
        self.shift = self.mean / self.std

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.train:
            if self.trivial is not None:
                x = self.trivial_augment(x, generator)
            x = crop_and_flip(x, self.crop_padding, 0.5 if self.flip else 0.0, generator)
        if self.train and self.color_jitter > 0:
            x = color_jitter(x.float().div_(255), self.color_jitter, generator)
            return x.sub_(_to(self.mean, x)).div_(_to(self.std, x))
        x = x.contiguous().float()
        return x.mul_(_to(self.scale, x)).sub_(_to(self.shift, x))

    def trivial_augment(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """TrivialAugmentWide per image (torchvision draws from the global RNG: seeded here from `generator`)."""
        seed = int(torch.randint(2**62, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([self.trivial(img) for img in x])

    def denormalize(self, x: Tensor) -> Tensor:
        """Back to [0, 1] pixels, for figures and Grad-CAM overlays."""
        return (x * self.std.to(x.device) + self.mean.to(x.device)).clamp(0, 1)


class BatchMix:
    """MixUp / CutMix on a normalised batch, turning integer labels into soft targets.

    Each image is mixed with its predecessor in the batch (`roll(1, 0)`), as torchvision pairs them; the
    parameters come from `generator` on the CPU, the pixels are mixed on the batch's device."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0) -> None:
        self.kinds = [(kind, alpha) for kind, alpha in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if alpha > 0]
        if not self.kinds:
            raise ValueError("BatchMix needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.num_classes = num_classes
        self.prob = prob

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if float(torch.rand((), generator=generator)) >= self.prob:
            return x, y
        pick = int(torch.randint(len(self.kinds), (), generator=generator)) if len(self.kinds) > 1 else 0
        kind, alpha = self.kinds[pick]
        # torch's Beta sampler takes no generator: numpy's, seeded from ours, draws lambda instead
        lam = float(np.random.default_rng(int(torch.randint(2**62, (), generator=generator))).beta(alpha, alpha))
        if kind == "mixup":
            mixed = x.roll(1, 0).mul_(1 - lam).add_(x, alpha=lam)
        else:
            mixed, lam = self.cutmix(x, lam, generator)
        onehot = torch.zeros(len(y), self.num_classes, dtype=x.dtype, device=x.device).scatter_(1, y[:, None], 1.0)
        return mixed, onehot.mul(lam).add_(onehot.roll(1, 0), alpha=1 - lam)

    @staticmethod
    def cutmix(x: Tensor, lam: float, generator: torch.Generator | None) -> tuple[Tensor, float]:
        """Paste one box of area ~(1 - lam), clipped at the border, from each image's partner; the label weight is
        the area actually kept."""
        h, w = x.shape[-2:]
        cy, cx = int(torch.randint(h, (), generator=generator)), int(torch.randint(w, (), generator=generator))
        half = 0.5 * (1 - lam) ** 0.5
        y0, y1 = max(cy - int(half * h), 0), min(cy + int(half * h), h)
        x0, x1 = max(cx - int(half * w), 0), min(cx + int(half * w), w)
        mixed = x.clone()
        mixed[:, :, y0:y1, x0:x1] = x[:, :, y0:y1, x0:x1].roll(1, 0)
        return mixed, 1 - (y1 - y0) * (x1 - x0) / (h * w)


@dataclass(frozen=True)
class ProgressiveResize:
    """`data.progressive`: training images start at `min_size` px and grow linearly to their full size between the
    fractions `ramp_start` and `ramp_end` of the epochs (sizes in steps of `multiple` px), as FFCV's recipes do; cheap
    early epochs buy more of them in the same time. Evaluation always sees the full size."""

    min_size: int = 32
    ramp_start: float = 0.3
    ramp_end: float = 0.8
    multiple: int = 8

    def __post_init__(self) -> None:
        if not (isinstance(self.min_size, int) and self.min_size >= self.multiple >= 1):
            raise InvalidInput(f"data.progressive.min_size={self.min_size}: expected an integer >= "
                               f"data.progressive.multiple ({self.multiple})")
        if not 0 <= self.ramp_start <= self.ramp_end <= 1:
            raise InvalidInput(f"data.progressive.ramp_start={self.ramp_start}, ramp_end={self.ramp_end}: expected "
                               "0 <= ramp_start <= ramp_end <= 1 (fractions of trainer.max_epochs)")

    def size(self, epoch: int, epochs: int, full: int) -> int:
        """The training side in epoch `epoch` (0-based) of `epochs`, for images `full` px wide."""
        progress = epoch / max(epochs, 1)
        if progress >= self.ramp_end:
            return full
        t = 0.0 if progress <= self.ramp_start else (progress - self.ramp_start) / (self.ramp_end - self.ramp_start)
        side = self.min_size + t * (full - self.min_size)
        return min(full, int(side // self.multiple) * self.multiple)

    def __call__(self, x: Tensor, epoch: int, epochs: int) -> Tensor:
        side = self.size(epoch, epochs, x.shape[-1])
        if side == x.shape[-1]:
            return x
        return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
