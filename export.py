"""python export.py ckpt_path=<.ckpt> format=onnx|torchscript: the model as graph files plus model.json."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import tincap  # noqa: F401 - registers the config resolvers before Hydra composes

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from tincap.export.export_checkpoint import run

    run(cfg)


if __name__ == "__main__":
    main()
