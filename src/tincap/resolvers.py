"""OmegaConf resolvers that tincap's configs use; registered when the package is imported."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf


def cpu_precision() -> str:
    """bf16 autocast where the CPU computes bf16 natively (AVX512-BF16/AMX), else fp32: emulated bf16 is ~10x slower."""
    return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"


def register() -> None:
    OmegaConf.register_new_resolver("tincap.cpu_precision", cpu_precision, replace=True)
