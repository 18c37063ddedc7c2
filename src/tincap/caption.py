"""Caption image files with a trained checkpoint alone (or its ONNX export, backend=onnx): no dataset, vocabulary and
preprocessing come from the ckpt."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import hydra
import torch
from omegaconf import DictConfig
from torch import Tensor

from tincap.atomic import atomic_write_csv
from tincap.data.cache import decode_files
from tincap.data.image_files import image_paths
from tincap.data.transforms import BatchTransform
from tincap.entry import Outcome, task_wrapper
from tincap.tasks.captioner import Captioner

if TYPE_CHECKING:
    from tincap.backends import Backend

log = logging.getLogger(__name__)


class ImageCaptioner(Protocol):
    """What caption.py runs: a checkpoint in PyTorch, or its export in ONNX Runtime (conf/backend/)."""

    source: str  # the checkpoint it is or was exported from, for the closing line
    beam_size: int  # the checkpoint's task.beam_size, used when beam=null

    def caption(self, files: list[Path], beam: int, batch_size: int) -> list[tuple[Path, str]]: ...


def beam_flag_to_override(argv: list[str]) -> list[str]:
    """Accept `--beam N` / `--beam=N` beside Hydra's `beam=N`."""
    out, i = [argv[0]], 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--beam" and i + 1 < len(argv):
            out.append(f"beam={argv[i + 1]}")
            i += 2
            continue
        out.append(f"beam={arg.split('=', 1)[1]}" if arg.startswith("--beam=") else arg)
        i += 1
    return out


def caption_images(files: list[Path], image_size: int, write: Callable[[Tensor], list[str]],
                   batch_size: int = 64) -> list[tuple[Path, str]]:
    """(file, caption) for each readable file: decoded at `image_size`, then captioned by `write` from uint8 pixels
    (N, 3, H, W), `batch_size` images at a time."""
    decoded = decode_files(files, image_size)
    pixels = torch.from_numpy(decoded.images).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
    captions: list[str] = []
    for start in range(0, len(pixels), batch_size):
        captions += write(pixels[start : start + batch_size])
    return [(files[i], c) for i, c in zip(decoded.kept.tolist(), captions)]


def caption_files(task: Captioner, files: list[Path], beam: int, batch_size: int = 64) -> list[tuple[Path, str]]:
    """(file, caption) for each readable file, decoded and normalised as the checkpoint's training data was."""
    info = task.hparams.data_info
    transform = BatchTransform(train=False, mean=tuple(info["mean"]), std=tuple(info["std"]))
    task.eval()
    with torch.inference_mode():
        return caption_images(files, info["image_size"], lambda pixels: task.captions(transform(pixels), beam),
                              batch_size)


@dataclass
class CheckpointCaptioner:
    """backend=torch: the checkpoint's captioner."""

    task: Captioner
    source: str

    @property
    def beam_size(self) -> int:
        return int(self.task.hparams.beam_size)

    def caption(self, files: list[Path], beam: int, batch_size: int) -> list[tuple[Path, str]]:
        return caption_files(self.task, files, beam, batch_size)


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    backend: Backend = hydra.utils.instantiate(cfg.backend)
    model = backend.captioner()
    beam = int(cfg.beam if cfg.beam is not None else model.beam_size)
    results = model.caption(image_paths(cfg.images), beam, cfg.batch_size)
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(cfg.paths.output_dir) / "captions.csv"
    atomic_write_csv(out, ["image", "caption"], [[p.name, c] for p, c in results])
    log.info("captioned %d image(s) with beam %d -> %s", len(results), beam, out)
    return Outcome(lines=[f"{path.name}\t{caption}" for path, caption in results], best_ckpt=model.source,
                   value=results)
