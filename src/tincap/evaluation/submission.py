"""Kaggle-style "Id,Category" submission writing and offline scoring."""

from __future__ import annotations

import csv
import io
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tincap.runtime.atomic import atomic_write_text

__all__ = ["HEADER", "read_id_category_csv", "score_submission", "write_submission"]

HEADER: tuple[str, str] = ("Id", "Category")


def _as_int(value: object, path: str | Path, position: int) -> int:
    """Coerce a prediction to int, refusing silent truncation of floats or bools."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{path}: prediction #{position} is a bool ({value!r}); expected an integer class index")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    raise ValueError(f"{path}: prediction #{position} is {value!r}; expected an integer class index")


def write_submission(path: str | Path, ids: Sequence[str], predictions: Sequence[int] | np.ndarray) -> None:
    """Write predictions in the exact Kaggle format (Id = file basename, Category = int), atomically."""
    ids = list(ids)
    preds = np.asarray(predictions).reshape(-1) if isinstance(predictions, np.ndarray) else list(predictions)
    if len(ids) != len(preds):
        raise ValueError(
            f"{path}: got {len(ids)} ids but {len(preds)} predictions; expected one prediction per image id"
        )
    names = [os.path.basename(str(i)) for i in ids]
    seen: dict[str, int] = {}
    for pos, name in enumerate(names):
        if not name:
            raise ValueError(f"{path}: id #{pos} ({ids[pos]!r}) has an empty file name")
        if name in seen:
            raise ValueError(
                f"{path}: duplicate Id {name!r} at positions {seen[name]} and {pos}; expected unique image ids"
            )
        seen[name] = pos
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for pos, (name, pred) in enumerate(zip(names, preds)):
        writer.writerow((name, _as_int(pred, path, pos)))
    atomic_write_text(path, buf.getvalue())


def read_id_category_csv(path: str | Path) -> dict[str, int]:
    """Parse an "Id,Category" CSV into {id: category}, with errors that name the file and line."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise ValueError(f"{path}: header is {header!r}; expected {list(HEADER)!r}")
        out: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: row {row!r} has {len(row)} fields; expected 2 (Id,Category)")
            key, raw = row[0].strip(), row[1].strip()
            if not key:
                raise ValueError(f"{path}:{line}: empty Id; expected a file name")
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(
                    f"{path}:{line}: Category {raw!r} for Id {key!r} is not an int; expected an integer class index"
                ) from None
            if key in out:
                raise ValueError(f"{path}:{line}: duplicate Id {key!r}; expected each Id once")
            out[key] = value
    return out


def score_submission(
    submission_csv: str | Path, labels_csv: str | Path, allow_missing: bool = False
) -> dict[str, float]:
    """Score a submission against ground-truth labels: accuracy over every labelled Id.

    Missing Ids raise unless ``allow_missing``, in which case they count as wrong and are
    reported in ``missing``; Ids absent from the labels are ignored and reported in ``extra``.
    """
    sub = read_id_category_csv(submission_csv)
    labels = read_id_category_csv(labels_csv)
    missing = [k for k in labels if k not in sub]
    if missing and not allow_missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{submission_csv}: {len(missing)} Id(s) from {labels_csv} are missing "
            f"(e.g. {shown}); expected a prediction for every labelled Id"
        )
    n = len(labels)
    correct = sum(1 for k, y in labels.items() if sub.get(k) == y)
    return {
        "acc": correct / n if n else float("nan"),
        "n": n,
        "correct": correct,
        "missing": len(missing),
        "extra": sum(1 for k in sub if k not in labels),
    }
