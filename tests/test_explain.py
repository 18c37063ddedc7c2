"""explain.py as a user runs it: Grad-CAM overlays of a freshly trained cnn, resnet and alexnet; a clear no for the mlp."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scripts import closing, run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tincap.data.image_files import find_images
from tincap.data.shapes import generate_shapes
from tincap.data.transforms import BatchTransform
from tincap.evaluation.gradcam import cam_layer
from tincap.models.mlp import MLP
from tincap.tasks.classifier import Classifier
from tincap.tasks.loading import load_task

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["blue_square", "red_circle"]  # sorted: the label order imagefolder gives them
MODELS = {
    "cnn": ["model=cnn", "model.widths=[8,16,32,64]"],
    "resnet": ["model=resnet"],
    # 57M parameters: no momentum buffer and no last.ckpt keep the checkpoint at 230 MB instead of 900 MB
    "alexnet": ["model=alexnet", "optimizer.momentum=0", "optimizer.nesterov=false",
                "callbacks.model_checkpoint.save_last=false"],
    "mlp": ["model=mlp", "model.hidden=[32]"],
}
NAME = re.compile(r"^(\d{4})_pred-(\w+?)(?:_true-(\w+))?\.png$")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shape classes as an image folder; each val image sits in both class folders, so exactly one copy is right."""
    base = tmp_path_factory.mktemp("explain")
    shapes = generate_shapes(8, seed=0, size=32)
    for name in CLASSES:
        images = shapes.images[shapes.labels == shapes.class_names.index(name)]
        for i, img in enumerate(images):
            folders = [f"train/{name}"] if i < 6 else [f"val/{c}" for c in CLASSES]
            for folder in folders:
                (base / "data" / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(base / "data" / folder / f"{name}_{i}.png")
    return base


@pytest.fixture(scope="module")
def checkpoints() -> dict[str, Path]:
    """Each family's checkpoint, trained once for the whole module."""
    return {}


def train(base: Path, model: str, checkpoints: dict[str, Path]) -> Path:
    if model in checkpoints:
        return checkpoints[model]
    proc = run("train.py", "data=imagefolder", f"data.root={base / 'data'}", "data.image_size=32", "data.batch_size=6",
               *MODELS[model], "trainer.max_epochs=1", "trainer.precision=32", "test=false",
               f"paths.log_dir={base / 'logs'}", f"paths.cache_dir={base / 'cache'}")
    checkpoints[model] = Path(closing(proc)["best checkpoint"])
    return checkpoints[model]


def explain(base: Path, ckpt: Path, *overrides: str) -> Path:
    proc = run("explain.py", f"ckpt_path={ckpt}", *overrides, f"paths.log_dir={base / 'logs'}",
               f"paths.cache_dir={base / 'cache'}")
    assert "tensorboard --logdir" in proc.stdout.strip().splitlines()[-1]
    return Path(closing(proc)["Run dir"])


def predict(ckpt: Path, files: list[Path]) -> list[str]:
    """The checkpoint's own predictions for image files, computed here without explain.py's code."""
    task = load_task(ckpt, Classifier).eval()
    info = task.hparams.data_info
    pixels = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]))
    x = BatchTransform(train=False, mean=info["mean"], std=info["std"])(pixels.permute(0, 3, 1, 2).contiguous())
    with torch.no_grad():
        return [task.class_names[i] for i in task(x).argmax(1).tolist()]


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "explanations.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def image_tags(run_dir: Path) -> set[str]:
    tags: set[str] = set()
    for events in (run_dir / "tensorboard").glob("events.out.tfevents*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        tags.update(acc.Tags()["images"])
    return tags


def check_heatmaps(run_dir: Path, rows: list[dict[str, str]], photos: list[Path]) -> None:
    """Every heatmap varies over the image, and each overlay PNG visibly differs from its photo."""
    saved = np.load(run_dir / "gradcam.npz")
    assert list(saved["files"]) == [r["file"] for r in rows]
    cams = saved["cams"].astype(np.float32)
    assert cams.shape == (len(rows), 32, 32) and cams.min() >= 0 and cams.max() <= 1
    assert (cams.std(axis=(1, 2)) > 0.01).all(), "a constant heatmap"
    for row, path in zip(rows, photos):
        over = np.asarray(Image.open(run_dir / row["file"]).convert("RGB"), dtype=np.float32)
        photo = Image.open(path).convert("RGB").resize((256, 256), Image.BICUBIC)
        assert over.shape == (256, 256, 3)  # overlay_size
        assert np.abs(over - np.asarray(photo, dtype=np.float32)).mean() > 10


@pytest.mark.parametrize("model", ["cnn", pytest.param("resnet", marks=pytest.mark.slow),
                                   pytest.param("alexnet", marks=pytest.mark.slow)])
def test_overlays_sorted_by_the_models_own_predictions(base: Path, checkpoints: dict, model: str) -> None:
    ckpt = train(base, model, checkpoints)
    split = "split=val" if model == "resnet" else "data.split=val"  # both spellings
    run_dir = explain(base, ckpt, split, "n=null")  # the 8 val images: 4 pictures x 2 conflicting labels
    rows = read_rows(run_dir)
    written = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob("*/*.png"))
    assert written == sorted(r["file"] for r in rows) and len(rows) == 8
    assert sorted((r["true"], r["id"]) for r in rows) == sorted((c, f"{n}_{i}.png") for c in CLASSES
                                                             for n in CLASSES for i in (6, 7))
    photos = [base / "data" / "val" / r["true"] / r["id"] for r in rows]
    for row, pred in zip(rows, predict(ckpt, photos)):
        folder, name = row["file"].split("/")
        position, named_pred, named_true = NAME.match(name).groups()
        assert (named_pred, named_true) == (pred, row["true"]) == (row["pred"], row["true"])
        assert folder == ("correct" if pred == row["true"] else "wrong")
    # each picture is in both class folders, so whatever the model predicts, exactly one copy is right
    assert sum(r["file"].startswith("correct/") for r in rows) == 4
    check_heatmaps(run_dir, rows, photos)
    assert "gradcam/grid" in image_tags(run_dir)
    assert (run_dir / "gradcam_grid.png").is_file()


def test_plain_image_files_go_to_unlabelled(base: Path, checkpoints: dict) -> None:
    ckpt = train(base, "cnn", checkpoints)
    folder = base / "data" / "val" / CLASSES[0]
    run_dir = explain(base, ckpt, f"images={folder}")
    rows = read_rows(run_dir)
    files = sorted(folder.iterdir())
    assert [r["id"] for r in rows] == [f.name for f in files]
    for row, pred in zip(rows, predict(ckpt, files)):
        assert re.fullmatch(rf"unlabelled/\d{{4}}_pred-{pred}\.png", row["file"]) and row["true"] == ""
        assert (run_dir / row["file"]).is_file()
    check_heatmaps(run_dir, rows, files)
    assert "gradcam/grid" in image_tags(run_dir)


# trains an mlp (~20 s); test_cam_layer_is_each_models_last_conv_block checks the refusal in-process
@pytest.mark.slow
def test_mlp_is_refused_with_a_clear_error(base: Path, checkpoints: dict) -> None:
    ckpt = train(base, "mlp", checkpoints)
    proc = subprocess.run([sys.executable, str(REPO / "explain.py"), f"ckpt_path={ckpt}", f"paths.log_dir={base / 'logs'}"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert f"{ckpt}: model MLP cannot be explained with Grad-CAM" in err and "no spatial feature map for Grad-CAM" in err


def test_cam_layer_is_each_models_last_conv_block() -> None:
    from tincap.models.alexnet import AlexNet
    from tincap.models.cnn import CNN
    from tincap.models.resnet import ResNet

    resnet, alexnet, cnn = ResNet(2), AlexNet(2), CNN(2, widths=(8, 16))
    assert cam_layer(resnet) is resnet.layer4
    assert cam_layer(alexnet) is alexnet.features[11]  # conv5's ReLU: conv5's output is overwritten in place
    assert cam_layer(cnn) is cnn.features[-1]
    with pytest.raises(ValueError, match="no spatial feature map for Grad-CAM"):
        cam_layer(MLP(2, image_size=8, hidden=(4,)))


def test_labelled_image_folders(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / "val" / name).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "val" / name / "a.png")
    files, labels = find_images(tmp_path / "val", ["dog", "cat"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["val/cat/a.png", "val/dog/a.png"]
    assert labels == [1, 0]
    with pytest.raises(ValueError, match=r"sub-folders \['cat'\] are not classes"):
        find_images(tmp_path / "val", ["dog", "bird"])
