"""`python export.py ckpt_path=... format=onnx|torchscript`: a checkpoint as graph files plus model.json, for use
outside tincap and by predict.py / caption.py backend=onnx."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from tincap.export.export_checkpoint import ExportFormat, export_task
from tincap.export.sidecar import EXPORT_DIR, checkpoint_run_dir
from tincap.runtime.entry import Outcome, hydra_entry, task_wrapper
from tincap.tasks.loading import load_task


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    fmt: ExportFormat = hydra.utils.instantiate(cfg.format)
    ckpt = Path(cfg.ckpt_path).expanduser()
    task = load_task(ckpt)
    out = Path(cfg.out).expanduser() if cfg.get("out") else checkpoint_run_dir(ckpt) / EXPORT_DIR / fmt.name
    files = export_task(task, out, fmt, ckpt)
    lines = [f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)" for path in files]
    return Outcome(lines=[*lines, f"export: {out}"], best_ckpt=str(ckpt), value=out)


main = hydra_entry("export", run)
