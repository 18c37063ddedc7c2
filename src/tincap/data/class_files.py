"""Labelled images on disk: an 'idx<TAB>name' class list, and <class>/<image> folder trees (any dataset family)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tincap.data.image_files import list_images
from tincap.runtime.errors import InvalidInput, MissingInput


def read_class_file(path: Path) -> list[str]:
    """Class names from 'idx<TAB>name' lines, indexed by idx (0..n-1 each exactly once)."""
    if not path.is_file():
        raise MissingInput(f"{path} not found; expected a class list with lines 'idx<TAB>classname'. "
                           "Create it, or set data.root to the dataset folder that holds it")
    fix = f"fix {path.name}, or set data.root to another dataset folder"
    by_idx: dict[int, str] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc}); expected lines 'idx<TAB>classname'; {fix}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split(maxsplit=1)
        try:
            idx, name = int(parts[0]), parts[1].strip()
        except (ValueError, IndexError):
            raise InvalidInput(f"{path}:{lineno}: expected 'idx<TAB>classname', got {line!r}; {fix}") from None
        if not name:
            raise InvalidInput(f"{path}:{lineno}: class {idx} has an empty name; expected 'idx<TAB>classname'; {fix}")
        if idx in by_idx:
            raise InvalidInput(f"{path}:{lineno}: class index {idx} appears twice; expected each index once; {fix}")
        by_idx[idx] = name
    if sorted(by_idx) != list(range(len(by_idx))) or not by_idx:
        raise InvalidInput(f"{path}: class indices must be 0..n-1 each once, got {sorted(by_idx)[:10]}; {fix}")
    return [by_idx[i] for i in range(len(by_idx))]


def scan_class_folders(
    folder: Path, class_names: list[str] | None, what: str, fix: str = "set data.root=/path/to/dataset"
) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files and labels of a `<class>/<image>` tree; class_names, when given, fixes the order and must match.

    `what` names the set in messages ("TinyImageNet30 train set") and `fix` is the override that points elsewhere.
    """
    layout = f"expected {folder}/<class_name>/<image files>"
    if not folder.is_dir():
        raise MissingInput(f"{what}: folder {folder} does not exist; {layout}. {fix.capitalize()}")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not found:
        raise InvalidInput(f"{what}: {folder} has no class sub-folders; {layout}. {fix.capitalize()}")
    if class_names is None:
        class_names = found
    else:
        missing = [c for c in class_names if c not in found]
        extra = [c for c in found if c not in class_names]
        if missing or extra:
            raise InvalidInput(
                f"{what}: the class list and the folders of {folder} disagree: "
                f"no folder for {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"folders not in the class list {extra[:5]}{'...' if len(extra) > 5 else ''}; "
                f"expected one folder per listed class. Rename the folders or fix the class list, or {fix}"
            )
    files: list[Path] = []
    labels: list[int] = []
    for idx, name in enumerate(class_names):
        members = list_images(folder / name)
        if not members:
            raise InvalidInput(
                f"{what}: class folder {folder / name} is empty; expected image files (.jpg, .jpeg, .png, ...). "
                f"Add images to it, or {fix}"
            )
        files += members
        labels += [idx] * len(members)
    return files, np.asarray(labels, dtype=np.int64), class_names
