"""python caption.py ckpt_path=<captioner .ckpt> images=<image or folder> [--beam N]: one caption per image."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import tincap  # noqa: F401 - registers the config resolvers before Hydra composes

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="caption")
def main(cfg: DictConfig) -> None:
    from tincap.caption import run

    run(cfg)


if __name__ == "__main__":
    from tincap.caption import beam_flag_to_override

    sys.argv = beam_flag_to_override(sys.argv)
    main()
