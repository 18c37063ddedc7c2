"""Caption image files with a trained checkpoint alone: no dataset, vocabulary and preprocessing come from the ckpt."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from tincap.atomic import atomic_write_csv
from tincap.checkpoints import load_captioner
from tincap.data.cache import decode_files
from tincap.data.image_files import image_paths
from tincap.data.transforms import BatchTransform
from tincap.entry import Outcome, task_wrapper
from tincap.tasks.captioner import Captioner

log = logging.getLogger(__name__)


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


def caption_files(task: Captioner, files: list[Path], beam: int, batch_size: int = 64) -> list[tuple[Path, str]]:
    """(file, caption) for each readable file, decoded and normalised as the checkpoint's training data was."""
    info = task.hparams.data_info
    decoded = decode_files(files, info["image_size"])
    transform = BatchTransform(train=False, mean=tuple(info["mean"]), std=tuple(info["std"]))
    pixels = torch.from_numpy(decoded.images).permute(0, 3, 1, 2).contiguous()
    task.eval()
    captions: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            captions += task.captions(transform(pixels[start : start + batch_size]), beam)
    return [(files[i], c) for i, c in zip(decoded.kept.tolist(), captions)]


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    task = load_captioner(cfg.ckpt_path)
    beam = int(cfg.beam if cfg.beam is not None else task.hparams.beam_size)
    results = caption_files(task, image_paths(cfg.images), beam, cfg.batch_size)
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(cfg.paths.output_dir) / "captions.csv"
    atomic_write_csv(out, ["image", "caption"], [[p.name, c] for p, c in results])
    log.info("captioned %d image(s) with beam %d -> %s", len(results), beam, out)
    return Outcome(lines=[f"{path.name}\t{caption}" for path, caption in results], best_ckpt=str(cfg.ckpt_path),
                   value=results)
