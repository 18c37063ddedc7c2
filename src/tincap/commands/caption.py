"""`python caption.py ckpt_path=... images=... [--beam N]`: one caption per image file, from a captioning checkpoint
alone (or its ONNX export, backend=onnx); vocabulary and preprocessing come from the checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from tincap.data.image_files import image_paths, log_skipped
from tincap.inference.backend import Backend
from tincap.runtime.atomic import atomic_write_csv
from tincap.runtime.entry import Outcome, hydra_entry, task_wrapper

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


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    backend: Backend = hydra.utils.instantiate(cfg.backend)
    model = backend.caption_writer()
    beam = int(cfg.beam if cfg.beam is not None else model.beam_size)
    files = image_paths(cfg.images)
    results = model.caption(files, beam, cfg.batch_size)
    captioned = {path for path, _ in results}
    skipped = log_skipped(cfg.images, [path for path in files if path not in captioned])
    out = Path(cfg.out).expanduser() if cfg.get("out") else Path(cfg.paths.output_dir) / "captions.csv"
    atomic_write_csv(out, ["image", "caption"], [[p.name, c] for p, c in results])
    log.info("captioned %d image(s) with beam %d, skipped %d file(s) -> %s", len(results), beam, skipped, out)
    return Outcome(lines=[f"{path.name}\t{caption}" for path, caption in results], best_ckpt=model.source,
                   value=results)


main = hydra_entry("caption", run, argv_filter=beam_flag_to_override)
