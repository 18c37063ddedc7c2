"""`python demo.py ckpt_path=... [examples=<folder>]`: a local web page (Gradio) that shows what a checkpoint makes of
a dropped image, served until Ctrl+C."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from tincap.demo.server import build_page, example_images, free_port, launch, serve
from tincap.runtime.entry import Outcome, hydra_entry, task_wrapper
from tincap.tasks.loading import load_task


@task_wrapper
def run(cfg: DictConfig) -> Outcome:
    """Check the address and the examples, build the checkpoint's page and start serving it; returns the page."""
    examples = example_images(cfg.examples)
    port = free_port(cfg.host, cfg.port)
    task = load_task(cfg.ckpt_path)
    page = build_page(task, cfg, examples)
    local_url, public_url = launch(page, cfg.host, port, bool(cfg.share))
    unshared = ["share=true: no public link could be made (no internet?)"] if cfg.share and not public_url else []
    ready = f"serving the {type(task).__name__.lower()} page of {Path(cfg.ckpt_path).name}; Ctrl+C stops it"
    return Outcome(lines=[*unshared, ready], best_ckpt=str(cfg.ckpt_path), url=public_url or local_url, value=page)


def run_and_serve(cfg: DictConfig) -> None:
    """demo.py's Hydra body: the page, kept up until Ctrl+C (a user error has already exited)."""
    serve(run(cfg))


main = hydra_entry("demo", run_and_serve)
