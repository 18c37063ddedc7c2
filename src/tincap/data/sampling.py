"""The order in which loaders visit a split: seeded per epoch for training, disjoint shares for evaluation."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, DistributedSampler


def epoch_sampler(dataset: Dataset, train: bool, seed: int) -> DistributedSampler | None:
    """Training: an order drawn from (seed, epoch) alone (Lightning calls `set_epoch`), not from the global RNG, so a
    resumed run sees the batches an uninterrupted one would. Evaluation under DDP: disjoint shares without the
    padding repeats of Lightning's default sampler, which synced metrics would count twice."""
    distributed = dist.is_available() and dist.is_initialized()
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    if train:
        return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False) if world > 1 else None


def keep_batch(batch: Any) -> Any:
    """Collate for datasets that already return whole batches."""
    return batch
