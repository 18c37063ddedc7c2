"""Frozen means frozen: no gradients, and normalisation layers keep their running statistics (eval mode)."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from tincap.models.backbone import Backbone


def freeze_backbone(net: Backbone) -> None:
    """Train only the classification head (linear probing)."""
    for p in net.parameters():
        p.requires_grad_(False)
    for p in net.head.parameters():
        p.requires_grad_(True)
    keep_frozen_norms_in_eval(net)


def freeze_norms(module: nn.Module) -> None:
    """Fine-tune around the normalisation layers: their affine parameters stop learning and their running statistics
    stay as pretraining left them (small caption batches make poor batch statistics)."""
    for m in module.modules():
        if isinstance(m, _NormBase):
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
    keep_frozen_norms_in_eval(module)


def keep_frozen_norms_in_eval(module: nn.Module) -> None:
    """Put back in eval mode every BatchNorm whose affine parameters are all frozen; call it after `.train()`."""
    for m in module.modules():
        params = list(m.parameters(recurse=False))
        if isinstance(m, _NormBase) and params and not any(p.requires_grad for p in params):
            m.eval()
