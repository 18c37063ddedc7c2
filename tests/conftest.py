"""Shared fixtures: composed configs, the real data in ../shared/data (skipped when absent), small real subsets."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import slurm_cluster
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def shared_data_dir() -> Path | None:
    """The real datasets: $TINCAP_SHARED_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("TINCAP_SHARED_DATA")
    candidate = Path(env) if env else REPO.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def require_dataset(name: str) -> Path:
    root = shared_data_dir()
    if root is None or not (root / name).is_dir():
        pytest.skip(f"real dataset '{name}' not found (set TINCAP_SHARED_DATA or place it at ../shared/data/{name})")
    return root / name


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tin30_root() -> Path:
    return require_dataset("tinyimagenet30")


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    return require_dataset("cifar10")


@pytest.fixture(scope="session")
def coco_root() -> Path:
    return require_dataset("coco_mini")


@pytest.fixture(scope="session")
def imagenette_root() -> Path:
    return require_dataset("imagenette")


def link_subset(src: Path, dst: Path, per_class: int, pattern: str = "*") -> None:
    """A small real copy of a class-folder tree made of symlinks (first `per_class` files of each class)."""
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.glob(pattern))[:per_class]:
            (dst / cls.name / f.name).symlink_to(f)


@pytest.fixture(scope="session")
def tin30_small(tin30_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TinyImageNet30 layout with 8 train images a class and 40 test images, all real."""
    root = tmp_path_factory.mktemp("tin30_small")
    (root / "class.txt").symlink_to(tin30_root / "class.txt")
    link_subset(tin30_root / "train_set" / "train_set", root / "train_set" / "train_set", 8)
    test = root / "test_set" / "test_set"
    test.mkdir(parents=True)
    for f in sorted((tin30_root / "test_set" / "test_set").iterdir())[:40]:
        (test / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="session")
def cifar10_small(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar10_small")
    for split in ("train", "test"):
        link_subset(cifar10_root / split, root / split, 6)
    return root


@pytest.fixture(scope="session")
def imagefolder_small(imagenette_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenette_small")
    link_subset(imagenette_root / "train", root / "train", 6)
    link_subset(imagenette_root / "val", root / "val", 3)
    return root


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurm_cluster.Cluster]:
    """A real one-node SLURM cluster for the session (tests/slurm_cluster.py); skipped, with the reason, where it cannot
    run (no SLURM packages, not root). A cluster that can run but does not come up is an error, not a skip."""
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    cluster = slurm_cluster.start(folder)
    yield cluster
    slurm_cluster.stop(folder)


ComposeFn = Callable[..., DictConfig]


@pytest.fixture
def compose_train(tmp_path: Path, cache_dir: Path) -> ComposeFn:
    """Compose conf/train.yaml like `python train.py <overrides>`, with outputs under tmp_path."""

    runs = iter(range(1000))

    def make(*overrides: str, config_name: str = "train") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / f"run{next(runs)}")
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.cache_dir = str(cache_dir)
            cfg.paths.root_dir = str(REPO)
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        random.seed(0)
        return cfg

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread, and do not fight a busy machine's other cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
