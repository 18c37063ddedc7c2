"""python eval.py ckpt_path=... data=<dataset> [data.root=...]: score a trained checkpoint."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import tincap  # noqa: F401 - registers the config resolvers before Hydra composes

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from tincap.checkpoint_eval import run

    run(cfg)


if __name__ == "__main__":
    main()
