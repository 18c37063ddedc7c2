"""OmegaConf resolvers that tincap's configs use; registered when the package is imported."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

from tincap.runtime.errors import InvalidInput

# accelerators whose devices are GPUs; "auto" picks the GPUs when the allocation has them, so they are asked for
GPU_ACCELERATORS = ("gpu", "cuda", "auto")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates it, ~10x slower."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_precision() -> str:
    """bf16 autocast where the CPU computes bf16 natively, else fp32."""
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def by_precision(precision: Any, full: Any, half: Any) -> Any:
    """`full` when the trainer computes in 32/64-bit floats, `half` in 16-bit ones (bf16 or fp16): a recipe sized to a
    time budget buys a larger network or more epochs where a step runs ~3x faster."""
    text = str(precision)
    if text.startswith(("bf16", "16")):
        return half
    if text.startswith(("32", "64")):
        return full
    raise InvalidInput(f"trainer.precision={precision}: expected a Lightning precision such as 32-true or bf16-mixed")


def slurm_gpus_per_node(accelerator: str, devices: Any) -> int | None:
    """GPUs a SLURM node must give the trainer: one per device for a GPU trainer, none (no request) for a CPU one."""
    if str(accelerator) not in GPU_ACCELERATORS:
        return None  # submitit then writes no --gpus-per-node; a cluster without GPU GRES may refuse even 0
    text = str(devices).strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    # "auto", -1 or device ids say nothing SLURM can allocate (SLURM, not the user, picks which GPUs a job gets)
    raise ValueError(f"hydra/launcher=slurm asks SLURM for trainer.devices GPUs per node, but "
                     f"trainer.devices={devices} is not a count; set trainer.devices=<number of GPUs per node>")


def register() -> None:
    OmegaConf.register_new_resolver("tincap.cpu_precision", cpu_precision, replace=True)
    OmegaConf.register_new_resolver("tincap.by_precision", by_precision, replace=True)
    OmegaConf.register_new_resolver("tincap.slurm_gpus_per_node", slurm_gpus_per_node, replace=True)
