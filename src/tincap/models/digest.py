"""A network's identity as a hash of its weights, so features cached from it go stale when it changes."""

from __future__ import annotations

import hashlib

import torch


def state_digest(module: torch.nn.Module) -> str:
    """Identify a network by its exact weights and buffers, so features cached from it go stale when it changes."""
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
