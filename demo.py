"""python demo.py ckpt_path=<classifier or captioner .ckpt> [examples=<folder>] [port=0]: a local web page."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import tincap  # noqa: F401 - registers the config resolvers before Hydra composes

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    from tincap.demo.server import run, serve

    serve(run(cfg))


if __name__ == "__main__":
    main()
