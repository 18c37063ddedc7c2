"""Every process's share of an evaluation, put back together: shares differ in length, and the whole is in dataset order."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _collective_device() -> torch.device:
    """NCCL only moves CUDA tensors; gloo moves CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(tensor: Tensor) -> Tensor:
    """The rows of `tensor` from every process, concatenated in rank order (one process: `tensor` itself).

    `torch.distributed.all_gather` wants equal shapes, so each share is padded to the longest, gathered and trimmed.
    Every process must call this, in the same order, with the same dtype and the same trailing shape."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    device = _collective_device()
    local = tensor.to(device)
    length = torch.tensor([len(local)], device=device)
    lengths = [torch.empty_like(length) for _ in range(dist.get_world_size())]
    dist.all_gather(lengths, length)
    sizes = [int(n) for n in lengths]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: len(local)] = local
    shares = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(shares, padded)
    return torch.cat([share[:n] for share, n in zip(shares, sizes)]).to(tensor.device)


def gather_by_index(index: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """Every process's rows sorted by dataset index, each index once: returns (index, *values).

    A padding sampler (torch's DistributedSampler) hands a few images to two processes; their repeats are dropped."""
    index = gather_rows(index)
    gathered = [gather_rows(v) for v in values]
    order = torch.argsort(index, stable=True)
    index = index[order]
    first = torch.ones(len(index), dtype=torch.bool)
    first[1:] = index[1:] != index[:-1]
    return (index[first], *(v[order][first] for v in gathered))
