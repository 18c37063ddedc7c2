"""Tests for evaluation outputs: atomic writes, figures, per-class tables and Kaggle submissions."""

from __future__ import annotations

import csv
import json
import math
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from tincap.commands.eval import evaluate
from tincap.commands.train import train
from tincap.evaluation.figures import (
    confusion_matrix_figure,
    per_class_rows,
    roc_auc_summary,
    roc_figure,
    save_figure,
    write_per_class_csv,
)
from tincap.evaluation.submission import score_submission, write_submission
from tincap.runtime.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from tincap.runtime.errors import InvalidInput

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEST_DPI = 60  # keep rendering cheap; the machine is shared with training jobs


def _names(n: int) -> list[str]:
    return [f"class_{i:02d}" for i in range(n)]


def _leftovers(directory: Path) -> list[str]:
    """Files that look like atomic-write temporaries."""
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


def _assert_png(path: Path, min_bytes: int = 5_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} suspiciously small ({len(data)} bytes)"


def _random_cm(n: int, rng: np.random.Generator) -> np.ndarray:
    cm = rng.integers(0, 5, size=(n, n))
    cm[np.arange(n), np.arange(n)] += 20
    return cm


# --------------------------------------------------------------------------- atomic


def test_atomic_write_text_and_bytes_create_parents_and_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(target, "first\n")
    assert target.read_text() == "first\n"
    atomic_write_text(target, "second\n")
    assert target.read_text() == "second\n"
    blob = tmp_path / "blob.bin"
    atomic_write_bytes(blob, b"\x00\x01\x02")
    assert blob.read_bytes() == b"\x00\x01\x02"
    # mkstemp's 0600 must not leak onto the final file: same mode as a normally created file
    reference = tmp_path / "reference.bin"
    reference.write_bytes(b"")
    assert stat.S_IMODE(blob.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)
    assert _leftovers(target.parent) == [] and _leftovers(tmp_path) == []


def test_atomic_path_commits_on_success(tmp_path: Path) -> None:
    target = tmp_path / "cache.h5"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        assert tmp.name.endswith(".h5")  # suffix kept for libraries that infer the format
        assert target.read_text() == "old"  # original untouched while writing
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_atomic_path_keeps_original_and_cleans_up_on_error(tmp_path: Path) -> None:
    target = tmp_path / "model.ckpt"
    target.write_bytes(b"good checkpoint")
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            seen.append(tmp)
            tmp.write_bytes(b"half-written")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"good checkpoint"
    assert not seen[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_atomic_path_error_without_existing_target_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new.txt"
    with pytest.raises(KeyError):
        with atomic_path(target):
            raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- figures


@pytest.mark.parametrize("n_classes", [3, 30])
def test_confusion_matrix_figure_saves_png(tmp_path: Path, n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    cm = _random_cm(n_classes, rng)
    fig = confusion_matrix_figure(cm, _names(n_classes))
    ax = fig.axes[0]
    acc = np.trace(cm) / cm.sum()
    assert f"{100 * acc:.2f}%" in ax.get_title()
    assert len(fig.axes) == 2  # image + colorbar
    assert len(ax.texts) == (n_classes * n_classes if n_classes <= 15 else 0)
    assert [t.get_text() for t in ax.get_xticklabels()] == _names(n_classes)
    out = tmp_path / "figs" / f"cm_{n_classes}.png"
    save_figure(fig, out, dpi=TEST_DPI)
    _assert_png(out)
    assert _leftovers(out.parent) == []


def test_confusion_matrix_figure_scales_and_normalizes() -> None:
    small = confusion_matrix_figure(np.eye(3, dtype=int) * 4, _names(3))
    big = confusion_matrix_figure(np.eye(30, dtype=int), _names(30))
    assert big.get_size_inches()[0] > small.get_size_inches()[0]
    cm = np.array([[3, 1, 0], [0, 0, 0], [0, 2, 2]])  # a class with zero support must not produce NaNs
    fig = confusion_matrix_figure(cm, _names(3), normalize=True)
    img = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(img), [[0.75, 0.25, 0], [0, 0, 0], [0, 0.5, 0.5]])
    raw = confusion_matrix_figure(cm, _names(3), normalize=False)
    assert [t.get_text() for t in raw.axes[0].texts][:3] == ["3", "1", "0"]
    with pytest.raises(ValueError, match="class names"):
        confusion_matrix_figure(cm, _names(4))


def test_roc_auc_summary_hand_computed() -> None:
    # Per-class one-vs-rest AUC = P(score_pos > score_neg) + 0.5 * P(tie), counted by hand:
    #   class 0: pos {.6} vs neg {.5,.2,.1} -> 3/3 = 1.0
    #   class 1: pos {.2} vs neg {.3,.3,.6} -> 0/3 = 0.0
    #   class 2: pos {.5,.3} vs neg {.1,.3} -> (1+1+1+0.5)/4 = 0.875
    #   micro:   pos {.6,.2,.5,.3} vs 8 neg -> (7.5+2.5+6.5+4.5)/32 = 21/32
    probs = np.array(
        [[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]]
    )
    targets = np.array([0, 1, 2, 2])
    s = roc_auc_summary(probs, targets)
    np.testing.assert_allclose(s["per_class"], [1.0, 0.0, 0.875], atol=1e-6)
    assert s["macro"] == pytest.approx((1.0 + 0.0 + 0.875) / 3, abs=1e-6)
    assert s["micro"] == pytest.approx(21 / 32, abs=1e-6)


def test_roc_auc_summary_class_without_positives_is_nan_and_ignored() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.7, 0.3, 0.0], [0.4, 0.6, 0.0]])
    targets = np.array([0, 1, 0, 1])
    s = roc_auc_summary(probs, targets)
    assert math.isnan(s["per_class"][2])
    assert s["n_defined"] == 2
    assert s["macro"] == pytest.approx(1.0)


def test_roc_auc_perfect_and_random() -> None:
    rng = np.random.default_rng(0)
    n, c = 600, 10
    targets = rng.integers(0, c, size=n)
    perfect = np.eye(c)[targets] * 0.9 + rng.uniform(0, 0.05, size=(n, c))
    s = roc_auc_summary(perfect, targets)
    assert s["macro"] == pytest.approx(1.0, abs=1e-6)
    assert s["micro"] == pytest.approx(1.0, abs=1e-6)
    noise = rng.dirichlet(np.ones(c), size=n)
    s = roc_auc_summary(noise, targets)
    assert abs(s["macro"] - 0.5) < 0.05
    assert abs(s["micro"] - 0.5) < 0.05


@pytest.mark.parametrize("n_classes", [3, 30])
def test_roc_figure_saves_png_and_legend_matches_summary(tmp_path: Path, n_classes: int) -> None:
    rng = np.random.default_rng(1)
    n = 40 * n_classes if n_classes <= 10 else 300
    targets = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes)) + 2.0 * np.eye(n_classes)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    summary = roc_auc_summary(probs, targets)
    fig = roc_figure(probs, targets, _names(n_classes))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"macro-average (AUC {summary['macro']:.3f})" in legend
    assert f"micro-average (AUC {summary['micro']:.3f})" in legend
    per_class_entries = [t for t in legend if t.startswith("class_")]
    assert len(per_class_entries) == (n_classes if n_classes <= 10 else 0)
    out = tmp_path / f"roc_{n_classes}.png"
    save_figure(fig, out, dpi=TEST_DPI)
    _assert_png(out)
    assert _leftovers(tmp_path) == []


def test_save_figure_failure_leaves_no_partial_file(tmp_path: Path) -> None:
    fig = confusion_matrix_figure(np.eye(3, dtype=int), _names(3))
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path / "fig.notaformat", dpi=TEST_DPI)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- per-class table


def test_per_class_rows_hand_computed(tmp_path: Path) -> None:
    cm = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])  # rows = true, cols = predicted
    rows = per_class_rows(cm, ["cat", "dog", "fox"])
    expected = [  # (support, correct, precision, recall, f1)
        (6, 5, 5 / 7, 5 / 6, 10 / 13),
        (6, 3, 3 / 4, 1 / 2, 0.6),
        (4, 4, 4 / 5, 1.0, 8 / 9),
    ]
    assert [r["class"] for r in rows] == ["cat", "dog", "fox"]
    assert [r["index"] for r in rows] == [0, 1, 2]
    for row, (sup, cor, p, r, f1) in zip(rows, expected):
        assert row["support"] == sup and row["correct"] == cor
        assert row["precision"] == pytest.approx(p)
        assert row["recall"] == pytest.approx(r)
        assert row["f1"] == pytest.approx(f1)
        assert "auroc" not in row

    out = tmp_path / "per_class.csv"
    write_per_class_csv(out, rows)
    with open(out, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert list(read[0].keys()) == ["index", "class", "support", "correct", "precision", "recall", "f1"]
    assert read[1]["class"] == "dog" and float(read[1]["f1"]) == pytest.approx(0.6)
    assert _leftovers(tmp_path) == []


def test_per_class_rows_auroc_and_undefined_values(tmp_path: Path) -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    targets = np.array([0, 1, 2, 2])
    cm = np.zeros((3, 3), dtype=int)
    np.add.at(cm, (targets, probs.argmax(1)), 1)
    rows = per_class_rows(cm, _names(3), probs, targets)
    assert [r["auroc"] for r in rows] == pytest.approx([1.0, 0.0, 0.875])
    # class 1: its only sample is predicted as 0 and the one prediction of 1 is wrong -> P = R = F1 = 0
    assert rows[1]["precision"] == 0.0 and rows[1]["f1"] == 0.0
    cm_empty = np.array([[2, 0], [0, 0]])  # class 1: no support and never predicted
    r1 = per_class_rows(cm_empty, ["a", "b"])[1]
    assert math.isnan(r1["precision"]) and math.isnan(r1["recall"]) and math.isnan(r1["f1"])
    write_per_class_csv(tmp_path / "t.csv", rows)
    assert (tmp_path / "t.csv").read_text().splitlines()[0].endswith(",auroc")
    with pytest.raises(ValueError, match="empty.csv"):
        write_per_class_csv(tmp_path / "empty.csv", [])


# --------------------------------------------------------------------------- submission


def test_submission_round_trip_exact_accuracy(tmp_path: Path) -> None:
    sub = tmp_path / "out" / "submission.csv"
    write_submission(sub, ["test/img_0.jpg", "test/img_1.jpg", "img_2.png", "/abs/img_3.jpg"], np.array([3, 1, 0, 2]))
    assert sub.read_text() == "Id,Category\nimg_0.jpg,3\nimg_1.jpg,1\nimg_2.png,0\nimg_3.jpg,2\n"
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Category\nimg_3.jpg,2\nimg_0.jpg,3\nimg_2.png,1\nimg_1.jpg,1\n")
    result = score_submission(sub, labels)
    assert result["acc"] == 0.75
    assert result["n"] == 4 and result["missing"] == 0
    assert _leftovers(sub.parent) == []


def test_write_submission_rejects_bad_inputs(tmp_path: Path) -> None:
    path = tmp_path / "sub_bad.csv"
    with pytest.raises(ValueError, match="sub_bad.csv.*2 ids but 3 predictions"):
        write_submission(path, ["a.jpg", "b.jpg"], [0, 1, 2])
    with pytest.raises(ValueError, match="sub_bad.csv.*duplicate Id 'a.jpg'"):
        write_submission(path, ["x/a.jpg", "y/a.jpg"], [0, 1])
    with pytest.raises(ValueError, match="sub_bad.csv"):
        write_submission(path, ["a.jpg"], [1.5])
    assert not path.exists()


def test_score_submission_rejects_bad_files(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Category\na.jpg,0\nb.jpg,1\n")

    bad_header = tmp_path / "bad_header.csv"
    bad_header.write_text("image,label\na.jpg,0\nb.jpg,1\n")
    with pytest.raises(ValueError, match=r"bad_header.csv.*expected \['Id', 'Category'\]"):
        score_submission(bad_header, labels)

    missing = tmp_path / "missing_row.csv"
    missing.write_text("Id,Category\na.jpg,0\n")
    with pytest.raises(ValueError, match="missing_row.csv.*'b.jpg'"):
        score_submission(missing, labels)
    assert score_submission(missing, labels, allow_missing=True) == pytest.approx(
        {"acc": 0.5, "n": 2, "correct": 1, "missing": 1, "extra": 0}
    )

    not_int = tmp_path / "not_int.csv"
    not_int.write_text("Id,Category\na.jpg,0\nb.jpg,cat\n")
    with pytest.raises(ValueError, match="not_int.csv:3.*'cat'.*not an int"):
        score_submission(not_int, labels)

    bad_labels = tmp_path / "bad_labels.csv"
    bad_labels.write_text("Id,Category\na.jpg,0.5\n")
    good = tmp_path / "good.csv"
    good.write_text("Id,Category\na.jpg,0\n")
    with pytest.raises(ValueError, match="bad_labels.csv"):
        score_submission(good, bad_labels)


# --------------------------------------------------------------------------- eval.py split=test, test unlabelled


def _tinted_folder(root: Path) -> list[str]:
    """3 faintly tinted noise classes, 6 train and 2 val PNGs each, and 5 unlabelled test PNGs; returns the test ids."""
    rng = np.random.default_rng(0)
    tints = [(128, 112, 112), (112, 128, 112), (112, 112, 128)]
    for split, n in (("train", 6), ("val", 2)):
        for c, tint in enumerate(tints):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                image = np.clip(rng.normal(tint, 60, (16, 16, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(root / split / f"class{c}" / f"{i}.png"), image)
    (root / "test").mkdir()
    ids = [f"t{i}.png" for i in range(5)]
    for i, name in enumerate(ids):
        cv2.imwrite(str(root / "test" / name), np.clip(rng.normal(tints[i % 3], 60, (16, 16, 3)), 0, 255).astype(np.uint8))
    return ids


def test_eval_split_test_on_an_unlabelled_test_split_scores_nothing_else(compose_train, tmp_path: Path) -> None:
    root = tmp_path / "folder"
    test_ids = _tinted_folder(root)
    cfg = compose_train("data=imagefolder", f"data.root={root}", "data.image_size=16", "data.batch_size=4",
                        "model=mlp", "trainer.max_epochs=1", "logger=csv")
    _, objects = train(cfg)
    trained_submission = (Path(cfg.paths.output_dir) / "submission.csv").read_text()

    def evaluate_with(*overrides: str) -> tuple[dict, Path]:
        ev = compose_train(f"ckpt_path={objects['best_ckpt']}", *overrides, config_name="eval")
        return evaluate(ev), Path(ev.paths.output_dir)

    # the test loop would fall back to the val split: no metric at all, only the submission
    metrics, out = evaluate_with("split=test")
    assert metrics == {"split": "test"} and json.loads((out / "metrics.json").read_text()) == metrics
    rows = list(csv.reader((out / "submission.csv").open()))
    assert [r[0] for r in rows[1:]] == test_ids
    assert (out / "submission.csv").read_text() == trained_submission
    assert not (out / "per_class.csv").exists() and not (out / "confusion_matrix.png").exists()

    # with an answer key, test/acc is the submission's accuracy against it: here 3 of 5 rows agree with the key
    predicted = {r[0]: int(r[1]) for r in rows[1:]}
    key = tmp_path / "key.csv"
    key.write_text("Id,Category\n" + "".join(
        f"{name},{predicted[name] if i % 2 == 0 else (predicted[name] + 1) % 3}\n" for i, name in enumerate(test_ids)))
    metrics, _ = evaluate_with("split=test", f"labels_csv={key}")
    assert set(metrics) == {"split", "test/acc", "test/acc_top5"} and metrics["test/acc"] == pytest.approx(3 / 5)

    with pytest.raises(InvalidInput, match=r"^split=train: .*has the splits test, train, val"):
        evaluate_with("split=train")
    no_test = tmp_path / "no_test"
    no_test.mkdir()
    for split in ("train", "val"):
        (no_test / split).symlink_to(root / split)
    with pytest.raises(InvalidInput, match=r"^split=test: .*has no test split, only train, val"):
        evaluate_with("split=test", f"data.root={no_test}")
