"""python train.py [group=option ...] [key=value ...]: one tincap training run (or a sweep with -m)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import tincap  # noqa: F401 - registers the config resolvers before Hydra composes

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from tincap.train import run

    return run(cfg)


if __name__ == "__main__":
    main()
