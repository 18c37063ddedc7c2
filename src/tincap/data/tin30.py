"""TinyImageNet30 in the coursework layout: class.txt, train_set/train_set/<class>/, unlabelled test_set/test_set/."""

from __future__ import annotations

from pathlib import Path

from tincap.data.base import ClassificationDataModule, Split, list_images, scan_class_folders


def read_class_file(path: Path) -> list[str]:
    """Class names from 'idx<TAB>name' lines, indexed by idx (0..n-1 each exactly once)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected a class list with lines 'idx<TAB>classname'")
    by_idx: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split(maxsplit=1)
        try:
            idx, name = int(parts[0]), parts[1].strip()
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{lineno}: expected 'idx<TAB>classname', got {line!r}") from None
        if idx in by_idx:
            raise ValueError(f"{path}:{lineno}: class index {idx} appears twice")
        by_idx[idx] = name
    if sorted(by_idx) != list(range(len(by_idx))) or not by_idx:
        raise ValueError(f"{path}: class indices must be 0..n-1 each once, got {sorted(by_idx)[:10]}")
    return [by_idx[i] for i in range(len(by_idx))]


def _nested(root: Path, name: str) -> Path:
    """The coursework zips unpack to name/name/; accept the flat name/ too."""
    nested = root / name / name
    return nested if nested.is_dir() else root / name


class TinyImageNet30(ClassificationDataModule):
    """TinyImageNet30: labelled train set split into train/val, unlabelled test set for a Kaggle submission."""

    name = "tin30"

    def discover_classes(self) -> list[str]:
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"TinyImageNet30 folder {self.root} does not exist; expected class.txt, "
                "train_set/train_set/<class>/*.JPEG and test_set/test_set/*.JPEG (set data.root=...)"
            )
        return read_class_file(self.root / "class.txt")

    def load_splits(self) -> dict[str, Split]:
        files, labels, _ = scan_class_folders(_nested(self.root, "train_set"), self.class_names, "TinyImageNet30 train set")
        splits = {"train": self.decode_split("train", files, labels)}
        test_dir = _nested(self.root, "test_set")
        if test_dir.is_dir():
            test_files = list_images(test_dir)
            if test_files:
                splits["test"] = self.decode_split("test", test_files, None)
        return splits
