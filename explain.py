"""python explain.py ckpt_path=... images=<image or folder> | split=val n=16 [data.root=...]: Grad-CAM overlays."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import tincap  # noqa: F401 - registers the config resolvers before Hydra composes

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="explain")
def main(cfg: DictConfig) -> None:
    from tincap.explain import run

    run(cfg)


if __name__ == "__main__":
    main()
