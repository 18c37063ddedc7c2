"""python predict.py ckpt_path=<classifier .ckpt> images=<image or folder> top_k=5: top-k classes of any images."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import tincap  # noqa: F401 - registers the config resolvers before Hydra composes

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from tincap.predict import run

    run(cfg)


if __name__ == "__main__":
    main()
