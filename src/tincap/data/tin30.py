"""TinyImageNet30 in the coursework layout: class.txt, train_set/train_set/<class>/, unlabelled test_set/test_set/."""

from __future__ import annotations

from pathlib import Path

from tincap.data.class_files import read_class_file, scan_class_folders
from tincap.data.classification import ClassificationDataModule
from tincap.data.image_files import list_images
from tincap.data.splits import Split
from tincap.runtime.errors import MissingInput

LAYOUT = "class.txt ('idx<TAB>name' lines), train_set/train_set/<class>/*.JPEG and optionally test_set/test_set/*.JPEG"
FIX = "set data.root=/path/to/tinyimagenet30"


def _nested(root: Path, name: str) -> Path:
    """The coursework zips unpack to name/name/; accept the flat name/ too."""
    nested = root / name / name
    return nested if nested.is_dir() else root / name


class TinyImageNet30(ClassificationDataModule):
    """TinyImageNet30: labelled train set split into train/val, unlabelled test set for a Kaggle submission."""

    name = "tin30"

    def discover_classes(self) -> list[str]:
        class_file = self.root / "class.txt"
        if not class_file.is_file():
            what = "folder does not exist" if not self.root.is_dir() else f"{class_file} not found"
            raise MissingInput(f"data.root={self.root}: {what}; expected TinyImageNet30 with {LAYOUT}. {FIX.capitalize()}")
        return read_class_file(class_file)

    def load_splits(self) -> dict[str, Split]:
        files, labels, _ = scan_class_folders(
            _nested(self.root, "train_set"), self.class_names, f"data.root={self.root}: TinyImageNet30 train set", FIX
        )
        splits = {"train": self.decode_split("train", files, labels)}
        test_dir = _nested(self.root, "test_set")
        if test_dir.is_dir():
            test_files = list_images(test_dir)
            if test_files:
                splits["test"] = self.decode_split("test", test_files, None)
        return splits
