"""End-to-end training: fast_dev_run of every model on every datamodule, reproducibility, a real short run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from tincap.commands.train import train
from tincap.runtime.checkpoint_io import checkpoint_epoch

MODELS = ["mlp", "cnn", "resnet", "alexnet"]
DATASETS = ["shapes", "tin30", "cifar10", "imagefolder"]


def data_overrides(name: str, request: pytest.FixtureRequest) -> list[str]:
    if name == "shapes":
        return ["data=shapes", "data.n_per_class=4"]
    root = request.getfixturevalue({"tin30": "tin30_small", "cifar10": "cifar10_small",
                                    "imagefolder": "imagefolder_small"}[name])
    extra = ["data.image_size=32"] if name == "cifar10" else []
    return [f"data={name}", f"data.root={root}", "data.batch_size=8", *extra]


# resnet at Imagenette's own size is the slowest pair (~30 s); the other models cover that dataset by default
CASES = [pytest.param(m, d, marks=pytest.mark.slow) if (m, d) == ("resnet", "imagefolder") else (m, d)
         for m in MODELS for d in DATASETS]


@pytest.mark.parametrize(("model", "dataset"), CASES)
def test_fast_dev_run(compose_train, request: pytest.FixtureRequest, model: str, dataset: str) -> None:
    overrides = [f"model={model}", "debug=fdr", *data_overrides(dataset, request)]
    if model == "resnet":
        overrides.append("model.depth=18")
    cfg = compose_train(*overrides)
    metrics, objects = train(cfg)
    assert 0.0 <= metrics["val/acc"] <= 1.0
    assert Path(cfg.paths.output_dir, "metrics.json").is_file()
    # fast_dev_run predicts one batch only, so no partial submission.csv may be written
    assert not Path(cfg.paths.output_dir, "submission.csv").exists()


def short_shapes_run(compose_train, seed: int) -> dict:
    cfg = compose_train("data.n_per_class=12", "trainer.max_epochs=2", "model.widths=[16,32,64,128]",
                        f"seed={seed}", "trainer.precision=32")
    metrics, _ = train(cfg)
    on_disk = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())
    assert on_disk["val/acc"] == pytest.approx(metrics["val/acc"])
    for name in ("confusion_matrix.png", "roc.png", "per_class.csv", "checkpoints/last.ckpt"):
        assert Path(cfg.paths.output_dir, name).is_file(), name
    rows = list(csv.DictReader(Path(cfg.paths.output_dir, "per_class.csv").open()))
    f1 = [float(r["f1"]) for r in rows]
    assert all(int(r["support"]) > 0 for r in rows)  # stratified: every class is in validation
    assert metrics["val/f1"] == pytest.approx(sum(f1) / len(f1), abs=1e-4)
    assert metrics["val/acc"] <= metrics["val/acc_top5"]
    return {k: v for k, v in metrics.items() if k.startswith(("val/", "test/", "train/loss", "train/acc"))}


def test_same_seed_same_metrics(compose_train) -> None:
    a = short_shapes_run(compose_train, seed=3)
    b = short_shapes_run(compose_train, seed=3)
    assert a == b
    assert {"val/acc", "val/acc_top5", "val/loss", "val/f1", "val/auroc", "test/acc"} <= set(a)


def test_a_final_fit_without_validation_tests_the_last_epoch(compose_train) -> None:
    """data.val_ratio=0, as experiment=tin30_cnn_full refits: every labelled image trains, no validation loop runs,
    and the last epoch's checkpoint is the one tested."""
    cfg = compose_train("data.n_per_class=12", "trainer.max_epochs=2", "model.widths=[16,32,64,128]",
                        "trainer.precision=32", "data.val_ratio=0", "optimized_metric=null",
                        "callbacks.early_stopping=null")
    metrics, objects = train(cfg)
    splits = objects["datamodule"].splits
    labelled = 12 * len(objects["datamodule"].class_names)  # shapes draws its test images from these too
    assert len(splits["val"].images) == 0 and len(splits["train"].images) + len(splits["test"].images) == labelled
    assert not [k for k in metrics if k.startswith("val/")], metrics
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["epochs"] == 2
    assert Path(objects["best_ckpt"]).name == "epoch_001.ckpt" and checkpoint_epoch(objects["best_ckpt"]) == 2
    assert Path(cfg.paths.output_dir, "checkpoints", "last.ckpt").is_file()
    assert not Path(cfg.paths.output_dir, "confusion_matrix.png").exists()  # the validation figures: no split


@pytest.mark.slow  # decodes all 15,000 images and trains 2 epochs: ~100 s on a 2-core CPU (make test-full)
def test_real_tin30_short_run_beats_chance(compose_train, tin30_root: Path) -> None:
    cfg = compose_train(
        "data=tin30", f"data.root={tin30_root}", "model=cnn", "model.widths=[32,64,128,256]",
        "scheduler=onecycle", "optimizer.lr=0.1", "trainer.max_epochs=2", "trainer.limit_train_batches=60",
    )
    with open_dict(cfg):
        cfg.test = False
    metrics, _ = train(cfg)
    assert metrics["val/acc"] > 0.2, metrics  # chance is 1/30 = 0.033
    assert metrics["val/acc_top5"] > 0.45, metrics
