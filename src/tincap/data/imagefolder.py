"""Any class-folder tree: train/<class>/, optional val/<class>/, optional test/<class>/ or unlabelled test/."""

from __future__ import annotations

from pathlib import Path

from tincap.data.base import ClassificationDataModule, Split, list_images, scan_class_folders
from tincap.data.tin30 import read_class_file


def read_index_file(path: Path) -> list[str] | None:
    """Optional 'idx<TAB>name' class order (CIFAR-10's classes.txt); None when absent."""
    return read_class_file(path) if path.is_file() else None


class ImageFolderData(ClassificationDataModule):
    """The user's own data: folders named after classes; classes.txt fixes the order when present."""

    name = "imagefolder"
    class_file = "classes.txt"

    def discover_classes(self) -> list[str]:
        train = self.root / "train"
        if not train.is_dir():
            raise FileNotFoundError(
                f"{self.name}: {train} does not exist; expected {self.root}/train/<class>/<images> "
                "(and optionally val/<class>/, test/<class>/ or test/<images>)"
            )
        listed = read_index_file(self.root / self.class_file)
        return listed or sorted(p.name for p in train.iterdir() if p.is_dir())

    def load_splits(self) -> dict[str, Split]:
        splits: dict[str, Split] = {}
        for split in ("train", "val", "test"):
            folder = self.root / split
            if split != "train" and not folder.is_dir():
                continue
            if split == "test" and not any(p.is_dir() for p in folder.iterdir()):
                splits[split] = self.decode_split(split, list_images(folder), None)
                continue
            files, labels, _ = scan_class_folders(folder, self.class_names, f"{self.name} {split} set")
            splits[split] = self.decode_split(split, files, labels)
        return splits
