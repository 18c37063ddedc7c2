"""predict.py as a user runs it: any images, only the checkpoint, the same top-1 as eval.py; a timm model end to end."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import timm
import torch
from scripts import closing, finish, run, start, stop

from tincap.tasks.classifier import Classifier
from tincap.tasks.loading import load_task


@pytest.fixture(scope="module")
def trained(tin30_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A timm classifier initialised from a local timm state dict, trained one epoch on real TinyImageNet30 images."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    weights = root / "resnet18_random.pth"
    torch.save(timm.create_model("resnet18", num_classes=1000).state_dict(), weights)
    logs, cache = root / "logs", root / "cache"
    proc = run("train.py", "data=tin30", f"data.root={tin30_small}", "model=timm", "model.arch=resnet18",
               f"init.weights_path={weights}", "data.image_size=32", "trainer.max_epochs=1", "data.batch_size=32",
               "trainer.precision=32-true", f"paths.log_dir={logs}", f"paths.cache_dir={cache}")
    return {"root": root, "logs": logs, "cache": cache, **closing(proc)}


def test_training_records_the_weights_origin_and_preprocessing(trained: dict) -> None:
    metrics = json.loads((Path(trained["Run dir"]) / "metrics.json").read_text())
    assert metrics["init"] == "ImageNet-1k weights (resnet18_random.pth)"  # a 1000-class head: ImageNet's classes
    ckpt = torch.load(trained["best checkpoint"], map_location="cpu", weights_only=False)
    info = ckpt["hyper_parameters"]["data_info"]
    assert info["image_size"] == 32 and info["mean"] == list(timm.create_model("resnet18").pretrained_cfg["mean"])


def test_predict_matches_eval_with_no_dataset_and_names_every_skipped_file(trained: dict, tin30_small: Path,
                                                                        tmp_path: Path) -> None:
    # both with flip test-time augmentation, which the checkpoint was not trained with (tta= overrides it)
    evaluating = start("eval.py", f"ckpt_path={trained['best checkpoint']}", f"data.root={tin30_small}", "task.tta=flip",
                       f"paths.log_dir={trained['logs']}", f"paths.cache_dir={trained['cache']}",
                       "trainer.precision=32-true")
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in (tin30_small / "test_set" / "test_set").iterdir():
        shutil.copy(f.resolve(), photos / f.name)
    (photos / "broken.jpg").write_bytes(b"this is not a JPEG")
    (photos / "notes.txt").write_text("not an image")
    ckpt = tmp_path / "model.ckpt"  # a copy: nothing of the training run or its dataset is needed
    shutil.copy(trained["best checkpoint"], ckpt)

    def predict(name: str, *extra: str) -> subprocess.Popen:
        return start("predict.py", f"ckpt_path={ckpt}", f"images={photos}", "top_k=3", "trainer.precision=32-true",
                     f"paths.log_dir={tmp_path / name}", *extra, cwd=tmp_path,
                     env_extra={"TINCAP_DATA": str(tmp_path / "none")})

    def rows_of(proc: subprocess.CompletedProcess) -> list[dict]:
        return list(csv.DictReader((Path(closing(proc)["Run dir"]) / "predictions.csv").open()))

    flipped, own = predict("flipped", "tta=flip"), predict("own")  # own: the checkpoint's own task.tta, none
    try:
        submission = {r["Id"]: int(r["Category"])
                      for r in csv.DictReader((Path(closing(finish(evaluating))["Run dir"]) / "submission.csv").open())}
        proc = finish(flipped)
        rows, plain = rows_of(proc), rows_of(finish(own))
    finally:
        for started in (evaluating, flipped, own):
            stop(started)
    assert [r["probability"] for r in plain] != [r["probability"] for r in rows]
    classes = [line.split("\t")[1].strip() for line in (tin30_small / "class.txt").read_text().splitlines()]
    top1 = {r["file"]: classes.index(r["class"]) for r in rows if r["rank"] == "1"}
    assert top1 == submission  # the 40 test images, same top-1 as eval.py; broken.jpg skipped
    said = proc.stderr + proc.stdout
    assert f"skipped {photos / 'broken.jpg'}: not a readable image" in said
    assert f"skipped {photos / 'notes.txt'}: not an image file" in said  # every file left out is named
    for name in top1:
        probs = [float(r["probability"]) for r in rows if r["file"] == name]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert f"{sorted(top1)[0]}\t1\t" in proc.stdout  # printed too


def test_explain_works_on_a_timm_checkpoint(trained: dict, tin30_small: Path, tmp_path: Path) -> None:
    proc = run("explain.py", f"ckpt_path={trained['best checkpoint']}", f"images={tin30_small / 'test_set' / 'test_set'}",
               f"paths.log_dir={tmp_path}")
    out = Path(closing(proc)["Run dir"])
    assert len(list((out / "unlabelled").glob("*.png"))) == 40
    assert (out / "gradcam_grid.png").is_file()


def test_predict_points_a_captioner_to_caption_py(tmp_path: Path) -> None:
    ckpt = tmp_path / "captioner.ckpt"
    decoder = {"_target_": "tincap.models.caption_decoders.RNNDecoder", "cell": "lstm"}  # what marks a captioner
    torch.save({"state_dict": {}, "hyper_parameters": {"decoder": decoder, "data_info": {"max_len": 20}},
                "CaptionData": {"vocab": {"itos": ["<pad>", "<bos>", "<eos>", "<unk>"]}}}, ckpt)
    with pytest.raises(ValueError, match=r"captioner.ckpt is a captioner checkpoint, but this command needs a "
                                         r"classifier checkpoint; use it with caption\.py"):
        load_task(ckpt, Classifier)
