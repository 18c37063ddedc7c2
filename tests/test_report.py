"""report.py over a real 2x2 multirun, as a user runs it: one row per run, numbers equal to each run's metrics.json."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from scripts import run

from tincap.evaluation.report import load_run, read_curve, write_report
from tincap.models import network_name

REPO = Path(__file__).resolve().parents[1]

# 30 shapes classes x 4 images at 32 px, 2 epochs: a job trains in seconds on a 2-core CPU
TINY = ["data=shapes", "data.n_per_class=4", "data.image_size=32", "data.batch_size=32", "trainer.max_epochs=2",
        "trainer.precision=32", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]
NUMBERS = ["params", "val/acc", "test/acc", "epochs", "fit_s", "train/img_per_s"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("report_logs")
    run("train.py", "-m", "model=cnn,mlp", "optimizer.lr=0.1,0.01", *TINY, f"paths.log_dir={logs}",
        f"paths.cache_dir={logs / 'cache'}")
    (sweep_dir,) = (logs / "train" / "multiruns").iterdir()
    return sweep_dir


@pytest.fixture(scope="module")
def report(sweep: Path) -> dict:
    proc = run("report.py", str(sweep))
    with open(sweep / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"proc": proc, "rows": rows}


def test_multirun_makes_four_run_dirs(sweep: Path) -> None:
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0", "1", "2", "3"]


def test_report_has_a_row_per_run_with_its_logged_numbers(sweep: Path, report: dict) -> None:
    rows = report["rows"]
    assert len(rows) == 4
    assert list(rows[0])[:4] == ["run", "overrides", "tags", "model"]
    for row in rows:
        assert row["tags"] == "dev"  # train.yaml's tags: [dev]
        metrics = json.loads((sweep / row["run"] / "metrics.json").read_text())
        for key in NUMBERS:
            assert float(row[key]) == metrics[key], (row["run"], key)
        config = yaml.safe_load((sweep / row["run"] / "config.yaml").read_text())
        assert row["model"] == network_name(config["model"])
        assert row["init"] == "from scratch"
        typed = yaml.safe_load((sweep / row["run"] / ".hydra" / "overrides.yaml").read_text())
        varied = [o for o in typed if o.startswith(("model=", "optimizer.lr="))]
        assert row["overrides"] == " ".join(varied)  # only what differs: the shared tiny settings are left out
    grid = {f"model={m} optimizer.lr={lr}" for m in ("cnn", "mlp") for lr in ("0.1", "0.01")}
    assert {r["overrides"] for r in rows} == grid
    accs = [float(r["val/acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)


def test_report_markdown_and_figures(sweep: Path, report: dict) -> None:
    md = (sweep / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    assert len(table) == 4
    assert "![curves](curves.png)" in md
    for name in ("curves.png", "accuracy_vs_params.png"):
        with Image.open(sweep / name) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
            img.verify()
    assert "report.md" in report["proc"].stdout


def test_curves_are_read_per_epoch_from_tensorboard(sweep: Path) -> None:
    for job in sorted(sweep.glob("*/metrics.json")):
        r = load_run(job.parent)
        curve = read_curve(r, "val/acc")
        assert [e for e, _ in curve] == [1, 2]  # the re-validation after fitting is not a third epoch
        assert max(v for _, v in curve) == pytest.approx(r.metrics["val/acc"])  # metrics.json: the best epoch


def test_out_and_several_dirs(sweep: Path, tmp_path: Path) -> None:
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    run("report.py", str(jobs[0]), str(jobs[3]), "--out", str(tmp_path / "two"), "--metric", "val/acc_top5")
    with open(tmp_path / "two" / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["run"] for r in rows) == ["0", "3"]
    assert "val/acc_top5" in rows[0] and "test/acc_top5" in rows[0]
    for row in rows:
        metrics = json.loads((sweep / row["run"] / "metrics.json").read_text())
        assert float(row["val/acc_top5"]) == metrics["val/acc_top5"]
    assert not (jobs[0] / "report.csv").exists()


def test_each_run_reports_its_own_tags(sweep: Path, tmp_path: Path) -> None:
    """Tags come from each run's saved config.yaml, comma-joined, in report.csv and report.md."""
    tags = {"a": ["tin30", "cnn", "aug"], "b": ["shapes"], "c": None}
    for (name, run_tags), job in zip(tags.items(), ("0", "1", "2")):
        shutil.copytree(sweep / job, tmp_path / name, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
        config = yaml.safe_load((tmp_path / name / "config.yaml").read_text())
        config["tags"] = run_tags
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(config))
    write_report([tmp_path])
    with open(tmp_path / "report.csv", newline="") as fh:
        assert {r["run"]: r["tags"] for r in csv.DictReader(fh)} == {"a": "tin30, cnn, aug", "b": "shapes", "c": ""}
    md = (tmp_path / "report.md").read_text()
    table = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[2] for line in md.splitlines()
             if line.startswith("| ") and not line.startswith("| run ")}
    assert table == {"a": "tin30, cnn, aug", "b": "shapes", "c": "-"}


def test_run_without_events_is_noted_and_left_out_of_curves(sweep: Path, tmp_path: Path) -> None:
    shutil.copytree(sweep / "0", tmp_path / "with_events", ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(sweep / "1", tmp_path / "no_events", ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    proc = run("report.py", str(tmp_path))
    assert "note: no_events: no TensorBoard events with val/acc; left out of curves.png" in proc.stdout
    with open(tmp_path / "report.csv", newline="") as fh:
        assert sorted(r["run"] for r in csv.DictReader(fh)) == ["no_events", "with_events"]
    assert "left out of curves.png" in (tmp_path / "report.md").read_text()


def test_directory_without_runs_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    proc = subprocess.run([sys.executable, str(REPO / "report.py"), str(tmp_path / "empty")], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    assert f"no runs found under {tmp_path / 'empty'}" in proc.stderr


def test_report_marks_imagenet_pretrained_and_tta_rows(sweep: Path, tmp_path: Path) -> None:
    import timm
    import torch

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", num_classes=1000).state_dict(), tmp_path / "in1k.pth")
    # with flip test-time augmentation too, so the report shows what it bought (val/acc_no_tta)
    run("train.py", "model=timm", "model.arch=resnet18", f"init.weights_path={tmp_path / 'in1k.pth'}", *TINY,
        "task.tta=flip", f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}")
    (pretrained,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    shutil.copytree(pretrained, tmp_path / "runs" / "pretrained", ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(sweep / "0", tmp_path / "runs" / "scratch", ignore=shutil.ignore_patterns("checkpoints"))
    run("report.py", str(tmp_path / "runs"))
    with open(tmp_path / "runs" / "report.csv", newline="") as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert rows["pretrained"]["init"] == "ImageNet-pretrained: ImageNet-1k weights (in1k.pth)"
    assert rows["pretrained"]["model"] == "resnet18"  # a timm network is named by its architecture
    assert rows["scratch"]["init"] == "from scratch"
    metrics = json.loads((pretrained / "metrics.json").read_text())
    assert float(rows["pretrained"]["val/acc_no_tta"]) == metrics["val/acc_no_tta"]
    assert float(rows["pretrained"]["val/acc"]) == metrics["val/acc"]
    assert rows["scratch"]["val/acc_no_tta"] == ""  # a run without TTA has nothing there
    assert "1 run(s) started from ImageNet-pretrained weights" in (tmp_path / "runs" / "report.md").read_text()

