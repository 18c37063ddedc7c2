"""`python explain.py ckpt_path=... images=...` (or `split=val n=16`): Grad-CAM overlays of a classification
checkpoint's predictions, sorted into correct/, wrong/ or unlabelled/."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from tincap.inference.explanations import explain
from tincap.runtime.entry import Outcome, hydra_entry, task_wrapper


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    out = Path(cfg.paths.output_dir)
    summary = explain(cfg, out)
    shown = ", ".join(f"{summary[k]} {k}" for k in ("correct", "wrong", "unlabelled") if summary[k])
    return Outcome(lines=[f"explained {summary['n']} image(s): {shown} -> {out}"], tb_dir=out / "tensorboard",
                   value=summary)


main = hydra_entry("explain", run)
