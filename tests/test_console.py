"""What a user reads: each line once, no tips or advertisements, the config as overrides, the scores, the closing line;
old names replaced with a note; the best checkpoint written once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from scripts import closing, finish, run, start

REPO = Path(__file__).resolve().parents[1]
ADVERTISEMENT = re.compile(r"💡|\bTip\b|litlogger|litmodels|LitLogger|lightning\.ai|`srun` command|"
                           r"(GPU|TPU|HPU) available|Total FLOPs|Trainer already configured", re.IGNORECASE)


def repeated_lines(*outputs: str) -> list[str]:
    """Lines printed more than once (blank lines aside), across stdout and stderr together."""
    counts = Counter(line.rstrip() for text in outputs for line in text.splitlines() if line.strip())
    return [line for line, n in counts.items() if n > 1]


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("console")
    proc = run("train.py", "experiment=shapes_cnn", "data.n_per_class=10", "model.widths=[8,16]",
               "trainer.max_epochs=2", "trainer.precision=32-true", f"paths.log_dir={base / 'logs'}", f"paths.cache_dir={base / 'cache'}")
    return {"proc": proc, "base": base, **closing(proc)}


def test_a_training_run_prints_each_line_once_and_no_advertisement(shapes_run: dict) -> None:
    proc = shapes_run["proc"]
    assert repeated_lines(proc.stdout, proc.stderr) == []
    assert [line for line in (proc.stdout + proc.stderr).splitlines() if ADVERTISEMENT.search(line)] == []
    # the check can fail: what Lightning printed before
    assert repeated_lines("INFO: Seed set to 42\n", "[x][lightning.fabric.utilities.seed][INFO] - Seed set to 42\n"
                          "INFO: Seed set to 42\n")
    assert ADVERTISEMENT.search("INFO: 💡 Tip: For seamless cloud logging and experiment tracking, try installing "
                                "[litlogger](https://pypi.org/project/litlogger/)")


def test_the_config_is_one_override_a_line_and_the_summary_shows_the_scores(shapes_run: dict) -> None:
    lines = shapes_run["proc"].stdout.splitlines()
    assert {"  model.widths=[8,16]", "  trainer.max_epochs=2", "  init.weights_path=null"} <= set(lines)
    run_dir = Path(shapes_run["Run dir"])
    assert (run_dir / "config_tree.log").read_text().startswith("CONFIG")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test_line = next(line for line in lines if line.startswith("test: "))
    assert f"acc {metrics['test/acc']:.4f}" in test_line and f"loss {metrics['test/loss']:.4f}" in test_line
    assert lines[-1].startswith("Run dir: ") and lines[-2] == test_line


def test_eval_and_predict_print_no_hardware_lines(shapes_run: dict, tmp_path: Path) -> None:
    best = shapes_run["best checkpoint"]
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        Image.new("RGB", (64, 64), colour).save(images / f"{i}.png")
    scoring = start("eval.py", f"ckpt_path={best}", f"paths.log_dir={tmp_path / 'logs'}",
                    f"paths.cache_dir={shapes_run['base'] / 'cache'}", "trainer.precision=32-true")
    predicting = start("predict.py", f"ckpt_path={best}", f"images={images}", f"paths.log_dir={tmp_path / 'logs'}",
                       "trainer.precision=32-true")
    scored, predicted = finish(scoring), finish(predicting)
    for proc in (scored, predicted):
        assert not ADVERTISEMENT.search(proc.stdout + proc.stderr)
        assert repeated_lines(proc.stdout, proc.stderr) == []
    assert "0.png\t1\t" in predicted.stdout


def test_the_best_checkpoint_is_written_once_and_last_links_to_it(tmp_path: Path) -> None:
    """When the last epoch is the best, last.ckpt is a link to it (one file on disk); when it is not, a file of its own
    (resume= continues from the last epoch, not from the best)."""
    common = ["data.n_per_class=6", "model.widths=[8,16]", "trainer.max_epochs=2", "trainer.precision=32-true",
              "callbacks.early_stopping=null", "optimized_metric=step", f"paths.cache_dir={tmp_path / 'cache'}"]
    newest, oldest = (start("train.py", *common, f"optimized_mode={mode}", f"paths.log_dir={tmp_path / mode}")
                      for mode in ("max", "min"))
    newest, oldest = closing(finish(newest)), closing(finish(oldest))
    best, last = Path(newest["best checkpoint"]), Path(newest["best checkpoint"]).with_name("last.ckpt")
    assert best.name == "epoch_001.ckpt" and last.is_symlink() and last.resolve() == best.resolve()
    assert len([p for p in best.parent.iterdir() if not p.is_symlink()]) == 1
    best, last = Path(oldest["best checkpoint"]), Path(oldest["best checkpoint"]).with_name("last.ckpt")
    assert best.name == "epoch_000.ckpt" and last.is_file() and not last.is_symlink()


def test_old_names_still_run_and_say_their_new_name(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "experiment=flickr8k_imagenet_scst",
                           "scst_from=x.ckpt", "--cfg", "job"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "note: experiment=flickr8k_imagenet_scst is now experiment=flickr8k_attention_imagenet_scst" in proc.stderr
    assert "note: scst_from=x.ckpt is now task.scst.init_from=x.ckpt" in proc.stderr
    assert "init_from: x.ckpt" in proc.stdout
