"""train.py and eval.py as a user runs them: run dirs, closing line, metrics.json, submission.csv."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from scripts import closing, run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tin30_run(tin30_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    logs = tmp_path_factory.mktemp("logs")
    cache = tmp_path_factory.mktemp("entry_cache")
    proc = run("train.py", "data=tin30", f"data.root={tin30_small}", "model=cnn", "model.widths=[8,16,32,64]",
               "trainer.max_epochs=1", "data.batch_size=32", f"paths.log_dir={logs}", f"paths.cache_dir={cache}")
    return {"proc": proc, "logs": logs, "cache": cache, **closing(proc)}


def test_train_prints_config_and_closing_line(tin30_run: dict) -> None:
    proc = tin30_run["proc"]
    assert "Config (saved as" in proc.stdout and "  optimizer.lr=" in proc.stdout
    run_dir = Path(tin30_run["Run dir"])
    assert run_dir.parent.parent == tin30_run["logs"] / "train"
    assert "tensorboard --logdir" in proc.stdout.strip().splitlines()[-1]
    assert Path(tin30_run["best checkpoint"]).is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"val/acc", "val/acc_top5", "val/loss"} <= set(metrics)
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents*"))
    rows = (run_dir / "submission.csv").read_text().splitlines()
    assert rows[0] == "Id,Category" and len(rows) == 1 + 40  # every unlabelled test image


def test_eval_writes_submission_with_a_row_per_test_image(tin30_run: dict, tin30_small: Path, tin30_root: Path) -> None:
    proc = run("eval.py", f"ckpt_path={tin30_run['best checkpoint']}", "data=tin30", f"data.root={tin30_small}",
               f"paths.log_dir={tin30_run['logs']}", f"paths.cache_dir={tin30_run['cache']}",
               f"labels_csv={tin30_root / 'test_labels.csv'}")
    out = Path(closing(proc)["Run dir"])
    rows = list(csv.reader((out / "submission.csv").open()))
    test_images = sorted(p.name for p in (tin30_small / "test_set" / "test_set").iterdir())
    assert rows[0] == ["Id", "Category"]
    assert sorted(r[0] for r in rows[1:]) == test_images
    assert all(0 <= int(r[1]) < 30 for r in rows[1:])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "val" and 0 <= metrics["test/acc"] <= 1
    for name in ("confusion_matrix.png", "roc.png", "per_class.csv"):
        assert (out / name).is_file()


def test_eval_refuses_other_label_set(tin30_run: dict, cifar10_small: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "eval.py"), f"ckpt_path={tin30_run['best checkpoint']}",
                           "data=cifar10", f"data.root={cifar10_small}", f"paths.log_dir={tin30_run['logs']}"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0
    assert "was trained on 30 classes" in proc.stderr + proc.stdout


def test_unknown_model_name(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "model=vgg", f"paths.log_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode != 0
    assert "Could not find 'model/vgg'" in proc.stderr and "cnn" in proc.stderr


def test_two_runs_in_the_same_second_get_their_own_dirs(tmp_path: Path) -> None:
    args = [sys.executable, str(REPO / "train.py"), "debug=fdr", "data.n_per_class=4", f"paths.log_dir={tmp_path}",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    runs = list((tmp_path / "debug" / "runs").iterdir())
    assert len(runs) == 2


def test_multirun_sweep_makes_a_run_dir_per_job(tmp_path: Path) -> None:
    proc = run("train.py", "-m", "model=cnn,mlp", "optimizer.lr=0.1", "debug=fdr", "data.n_per_class=4",
               f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}")
    jobs = sorted(p.parent for p in (tmp_path / "debug" / "multiruns").glob("*/*/metrics.json"))
    assert [p.name for p in jobs] == ["0", "1"], proc.stdout[-2000:]
    overrides = {(j / ".hydra" / "overrides.yaml").read_text() for j in jobs}
    assert len(overrides) == 2
