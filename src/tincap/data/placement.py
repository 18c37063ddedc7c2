"""data.on_device=true: each split held once on the trainer's device, when it fits, so batches are gathered there."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

ON_DEVICE_SHARE = 0.5  # a split stays on a GPU when it takes at most this share of the free memory


class DevicePlacement:
    """The NCHW pixels of each placed split, on the device the trainer computes on."""

    def __init__(self) -> None:
        self._held: dict[str, Tensor] = {}

    def __getitem__(self, split: str) -> Tensor:
        return self._held[split]

    def __contains__(self, split: str) -> bool:
        return split in self._held

    def __len__(self) -> int:
        return len(self._held)

    def place(self, split: str, pixels: np.ndarray, device: torch.device) -> bool:
        """Keep a split's pixels on `device` when they fit; False, with a warning, when they stay in host memory
        (and travel a batch at a time)."""
        if split in self._held and self._held[split].device == device:
            return True
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if pixels.nbytes > free * ON_DEVICE_SHARE:
                log.warning("data.on_device=true: the %s split (%.2f GiB) is more than %d%% of the %.2f GiB free on "
                            "%s, so it stays in host memory and moves a batch at a time", split, pixels.nbytes / 2**30,
                            ON_DEVICE_SHARE * 100, free / 2**30, device)
                self._held.pop(split, None)
                return False
        self._held[split] = torch.from_numpy(pixels).to(device)  # on the CPU: the same memory, no copy
        return True

    def clear(self) -> None:
        """Give the device memory back (when a fit, validation or test ends)."""
        self._held.clear()
