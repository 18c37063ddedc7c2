"""Every command of README.md's quick starts runs as written, with the README's placeholders (dataset folders, `<run>`
checkpoints, `my_images`, `new_photos/`) filled in. The own-data commands train one real epoch on a small generated
image folder; a sweep, a fine-tuning from a checkpoint and one from the ImageNet file run under debug=fdr (one batch
through everything); eval, predict, caption, explain, export and report run for real on small real checkpoints. The
rest (demo.py, DDP, SLURM, and recipes that other tests train for real) is composed as `--cfg job` composes it."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image, ImageDraw
from scripts import REPO, closing, finish, start

README = REPO / "README.md"
WEIGHTS = "tf_efficientnet_lite0_imagenet.pth"
# the training commands that run here (the others are composed): what no other test runs as the README writes it
TRAINED = ("experiment=imagefolder", " -m model=", "init.weights_path=", "experiment=tin30_effnet_imagenet data")


def quick_start_commands() -> list[str]:
    """The `python ...` lines of the code blocks of the README's "Quick starts" section, comments dropped."""
    text = README.read_text()
    section = text.split("\n## Quick starts\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines()
            if line.startswith("python ")]


def produces(command: str) -> set[str]:
    """What a quick start leaves for the ones after it: a sweep, the own-data checkpoint, an ONNX export."""
    return ({"sweep"} if " -m " in command and "hparams_search" not in command else set()) | \
        ({"own checkpoint"} if "experiment=imagefolder_effnet_imagenet" in command else set()) | \
        ({"export"} if "format=onnx" in command else set())


def reads(command: str) -> set[str]:
    return ({"sweep"} if "<sweep>" in command else set()) | \
        ({"own checkpoint"} if "outputs/imagefolder_effnet_imagenet/" in command else set()) | \
        ({"export"} if "backend=onnx" in command else set())


def image_folder(root: Path) -> Path:
    """A user's own images: two classes (red circles, blue squares) in train/ and val/, and an unlabelled test/."""
    rng = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 12), ("val", 4), ("test", 3)):
        for name, colour in (("circle", (210, 40, 40)), ("square", (40, 60, 210))):
            folder = root / split / name if split != "test" else root / split
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = Image.new("RGB", (48, 48), tuple(int(v) for v in torch.randint(90, 160, (3,), generator=rng)))
                x, y = (int(v) for v in torch.randint(6, 26, (2,), generator=rng))
                draw = ImageDraw.Draw(image)
                (draw.ellipse if name == "circle" else draw.rectangle)((x, y, x + 16, y + 16), fill=colour)
                image.save(folder / f"{name}_{i}.jpg")
    return root


def test_the_quick_starts_cover_every_job() -> None:
    commands = quick_start_commands()
    scripts = {c.split()[1] for c in commands}
    assert scripts == {"train.py", "eval.py", "predict.py", "caption.py", "explain.py", "export.py", "demo.py",
                       "report.py"}
    joined = "\n".join(commands)
    for job in ("experiment=imagefolder_cnn", "experiment=imagefolder_effnet_imagenet",
                "experiment=tin30_effnet_imagenet", "experiment=shapes_attention", " -m ", "labels_csv=", "format=onnx", "backend=onnx", "trainer=ddp",
                "hydra/launcher=slurm"):
        assert job in joined, job


def composed_only(command: str) -> bool:
    return command.startswith("python demo.py") or (command.startswith("python train.py") and
                                                     not any(marker in command for marker in TRAINED))


def test_every_quick_start_command_runs_as_written(tin30_small: Path, tin30_root: Path, cifar10_small: Path,
                                                  flickr8k_small: Path, tin30_classifier: Path,
                                                  flickr8k_captioner: Path, compose_train, tmp_path: Path) -> None:
    weights = Path(os.environ.get("TINCAP_WEIGHTS", REPO.parent / "shared" / "weights")) / WEIGHTS
    if not weights.is_file():
        pytest.skip(f"the README's fine-tuning commands need the shared ImageNet weights at {weights}")
    photos = tmp_path / "new_photos"
    photos.mkdir()
    for f in sorted((tin30_small / "test_set" / "test_set").iterdir())[:4]:
        (photos / f.name).write_bytes(f.read_bytes())
    my_images = image_folder(tmp_path / "my_images")
    classifier_widths = torch.load(tin30_classifier, map_location="cpu", weights_only=True)[
        "hyper_parameters"]["model_cfg"]["widths"]
    outputs = {"sweep": None, "own_checkpoint": None}
    logs, cache = tmp_path / "logs", tmp_path / "cache"

    def realise(command: str) -> list[str]:
        text = command.replace("/path/to/tinyimagenet30/test_labels.csv", str(tin30_root / "test_labels.csv"))
        text = text.replace("/path/to/tinyimagenet30", str(tin30_small)).replace("/path/to/cifar10", str(cifar10_small))
        text = text.replace("../shared/data/flickr8k", str(flickr8k_small))
        text = re.sub(r"data\.root=my_images\b", f"data.root={my_images}", text)
        text = text.replace("images=new_photos/", f"images={photos}")
        captioner = "caption.py" in text or "task.scst.init_from" in text
        own = "outputs/imagefolder_effnet_imagenet/" in text
        checkpoint = outputs["own_checkpoint"] if own else flickr8k_captioner if captioner else tin30_classifier
        text = re.sub(r"outputs/\S+/checkpoints/<best>\.ckpt", str(checkpoint), text)
        text = re.sub(r"outputs/\S+/runs/<run>/export/onnx", str(Path(tin30_classifier).parents[1] / "export" / "onnx"),
                      text)
        if "outputs/train/multiruns/<sweep>" in text:
            text = text.replace("outputs/train/multiruns/<sweep>", str(outputs["sweep"]))
        args = shlex.split(text)[1:]
        extra = [f"paths.log_dir={logs}", f"paths.cache_dir={cache}"] if args[0] != "report.py" else []
        if args[0] == "train.py":
            if "experiment=imagefolder" in text:
                extra += ["trainer.max_epochs=1", "trainer.precision=32-true"]  # a real epoch: its checkpoint is used
            else:
                extra += ["debug=fdr"]
            if "init.weights_path=" in text and "experiment=cifar10" in text:
                extra += [f"model.widths=[{','.join(map(str, classifier_widths))}]"]  # the precision it was trained at
        elif args[0] != "report.py":
            extra += ["trainer.precision=32-true"] if args[0] in ("eval.py", "predict.py", "demo.py") else []
        return [*args, *extra]

    def compose(command: str) -> None:
        """What `--cfg job` checks: the command's config composes and every value resolves."""
        args = realise(command)
        overrides = [a.split(",")[0] for a in args[1:] if a != "-m"]  # one job of a sweep
        cfg = compose_train(*overrides, config_name=args[0].removesuffix(".py"))
        if "hydra/launcher=slurm" in command:
            assert cfg.hydra.launcher._target_.endswith("ResumingSlurmLauncher")
        job = cfg.copy()
        with open_dict(job):
            del job["hydra"]
        OmegaConf.resolve(job)  # what `--cfg job --resolve` prints
        assert "_target_" in (job.get("model") or job.get("trainer")), command

    def check(command: str, args: list[str], proc: subprocess.CompletedProcess) -> None:
        if args[0] == "report.py":
            assert "Report: " in proc.stdout
            return
        found = closing(proc)
        if " -m " in command:
            outputs["sweep"] = Path(found["Run dir"]).parent  # the last job's directory is in the sweep's
        if "experiment=imagefolder_effnet_imagenet" in command:
            outputs["own_checkpoint"] = found["best checkpoint"]
            metrics = json.loads((Path(found["Run dir"]) / "metrics.json").read_text())
            assert metrics["init"].startswith("ImageNet-1k weights") and "val/acc" in metrics
            assert (Path(found["Run dir"]) / "submission.csv").is_file()  # the unlabelled test/ of my_images
        if "predict.py" in command and "imagefolder" in command:
            rows = list(csv.DictReader((Path(found["Run dir"]) / "predictions.csv").open()))
            assert {r["class"] for r in rows} <= {"circle", "square"} and len(rows) == 4 * 2  # top-2 of 4 photos

    # two at a time (2 cores; most of a command is starting Python), each after the command whose output it reads
    commands = quick_start_commands()
    needs = {i: next((j for j in range(i - 1, -1, -1) if produces(commands[j]) & reads(c)), None)
             for i, c in enumerate(commands)}
    done = {i for i, command in enumerate(commands) if composed_only(command)}
    for i in sorted(done):
        compose(commands[i])
    waiting, running = [i for i in range(len(commands)) if i not in done], {}
    while waiting or running:
        for i in [i for i in waiting if needs[i] is None or needs[i] in done][: 2 - len(running)]:
            args = realise(commands[i])
            running[i] = (args, start(*args))
            waiting.remove(i)
        finished = next(i for i, (_, proc) in running.items() if proc.poll() is not None) \
            if any(proc.poll() is not None for _, proc in running.values()) else None
        if finished is None:
            time.sleep(0.2)
            continue
        args, proc = running.pop(finished)
        check(commands[finished], args, finish(proc))
        done.add(finished)
    assert done == set(range(len(commands)))
