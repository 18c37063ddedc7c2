"""Shared fixtures: composed configs, the real data in ../shared/data (skipped when absent), small real subsets."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import scripts
import slurm_cluster
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import tincap  # noqa: F401 - registers the config resolvers that compose_train's configs use

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
def flickr8k_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flickr8k layout with 240 train-list and 100 dev-list images (dev is the test split), all real."""
    src = require_dataset("flickr8k")
    root = tmp_path_factory.mktemp("flickr8k_small")
    (root / "images").mkdir()
    lists = {name: (src / name).read_text().split()[:n]
             for name, n in (("Flickr_8k.trainImages.txt", 240), ("Flickr_8k.devImages.txt", 100))}
    keep = {image for names in lists.values() for image in names}
    for name, images in lists.items():
        (root / name).write_text("\n".join(images) + "\n")
    for image in sorted(keep):
        (root / "images" / image).symlink_to(src / "images" / image)
    lines = (src / "captions.txt").read_text().splitlines()
    (root / "captions.txt").write_text("\n".join([lines[0], *(ln for ln in lines[1:] if ln.split(",", 1)[0] in keep)])
                                       + "\n")
    return root


@pytest.fixture(scope="session")
def tin30_classifier(tin30_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Best checkpoint of a real `experiment=tin30_cnn` run: 2 epochs on 240 TinyImageNet30 images (train.py)."""
    base = tmp_path_factory.mktemp("tin30_classifier")
    proc = scripts.run("train.py", "experiment=tin30_cnn", f"data.root={tin30_small}", "trainer.max_epochs=2",
                       "data.batch_size=32", f"paths.log_dir={base / 'logs'}", f"paths.cache_dir={base / 'cache'}")
    return Path(scripts.closing(proc)["best checkpoint"])


@pytest.fixture(scope="session")
def flickr8k_captioner(flickr8k_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoint of a real `experiment=flickr8k_attention_imagenet` run (ImageNet-pretrained EfficientNet-Lite0, frozen, at
    128 px; a 128-wide attention LSTM) trained 2 epochs on flickr8k_small: ~30 s on 2 idle cores.

    Its captions vary with the image (45 distinct greedy, 42 beam-3 on the 100 dev images when measured), so tests
    that compare captions compare something: 27 steps of 8 images an epoch at a constant lr 3e-3 without dropout, and
    validation only after the last epoch, so the checkpoint is the last one. The experiment's own settings (a warmup
    epoch, dropout 0.5, 7 steps of 32 images an epoch) left 4 epochs writing "a man" for almost every image, and the
    best-CIDEr checkpoint of 24 validation images was the second epoch's. Captions of at most 14 words (data.max_len)
    and no test stage keep it cheap."""
    return train_flickr8k_captioner(flickr8k_small, tmp_path_factory.mktemp("flickr8k_captioner"),
                                    "experiment=flickr8k_attention_imagenet", "optimizer.lr=3e-3",
                                    "task.decoder.embed_dim=128", "task.decoder.hidden_dim=128",
                                    "task.decoder.attention_dim=128", "task.decoder.dropout=0")


@pytest.fixture(scope="session")
def flickr8k_transformer_captioner(flickr8k_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoint of a real `experiment=flickr8k_transformer_imagenet` run, trained as `flickr8k_captioner` is, with a
    one-layer Transformer 128 wide, for 4 epochs: after 2 it wrote one caption for all 100 dev images when measured,
    after 4 it wrote 40 distinct (33 at beam 3)."""
    return train_flickr8k_captioner(flickr8k_small, tmp_path_factory.mktemp("flickr8k_transformer"),
                                    "experiment=flickr8k_transformer_imagenet", "optimizer.lr=3e-3",
                                    "task.decoder.d_model=128", "task.decoder.num_layers=1", "task.decoder.heads=4", "task.decoder.ff_dim=256",
                                    "task.decoder.dropout=0", epochs=4)


def train_flickr8k_captioner(flickr8k_small: Path, base: Path, experiment: str, lr: str, *decoder: str,
                             epochs: int = 2) -> Path:
    """`python train.py <experiment> <lr> <decoder sizes>` on flickr8k_small as the captioner fixtures train; its best
    checkpoint."""
    env = os.environ.get("TINCAP_WEIGHTS")
    weights = (Path(env) if env else REPO.parent / "shared" / "weights") / "tf_efficientnet_lite0_imagenet.pth"
    if not weights.is_file():
        pytest.skip(f"shared ImageNet weights not found at {weights} (set TINCAP_WEIGHTS or place them at "
                    "../shared/weights)")
    proc = scripts.run("train.py", experiment, lr, *decoder, f"data.root={flickr8k_small}",
                       "data.image_size=128", "data.min_freq=2", "data.max_len=16", "data.batch_size=8", "scheduler=none",
                       f"trainer.max_epochs={epochs}", f"trainer.check_val_every_n_epoch={epochs}", "test=false", f"init.weights_path={weights}",
                       f"paths.log_dir={base / 'logs'}", f"paths.cache_dir={base / 'cache'}")
    return Path(scripts.closing(proc)["best checkpoint"])


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
