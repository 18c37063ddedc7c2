"""Any class-folder tree: train/<class>/, optional val/<class>/, optional test/<class>/ or unlabelled test/."""

from __future__ import annotations

from pathlib import Path

from tincap.data.class_files import read_class_file, scan_class_folders
from tincap.data.classification import ClassificationDataModule
from tincap.data.image_files import list_images
from tincap.data.splits import Split
from tincap.runtime.errors import InvalidInput, MissingInput

LAYOUT = "train/<class>/<images> (and optionally val/<class>/, test/<class>/ or test/<images>)"


def read_index_file(path: Path) -> list[str] | None:
    """Optional 'idx<TAB>name' class order (CIFAR-10's classes.txt); None when absent."""
    return read_class_file(path) if path.is_file() else None


class ImageFolderData(ClassificationDataModule):
    """The user's own data: folders named after classes; classes.txt fixes the order when present."""

    name = "imagefolder"
    class_file = "classes.txt"

    @property
    def fix(self) -> str:
        return f"set data.root=/path/to/{self.name}"

    def discover_classes(self) -> list[str]:
        train = self.root / "train"
        if not train.is_dir():
            what = "folder does not exist" if not self.root.is_dir() else f"{train} does not exist"
            raise MissingInput(f"data.root={self.root}: {what}; expected {self.root}/{LAYOUT}. {self.fix.capitalize()}")
        listed = read_index_file(self.root / self.class_file)
        return listed or sorted(p.name for p in train.iterdir() if p.is_dir())

    def load_splits(self) -> dict[str, Split]:
        splits: dict[str, Split] = {}
        for split in ("train", "val", "test"):
            folder = self.root / split
            if split != "train" and not folder.is_dir():
                continue
            if split == "test" and not any(p.is_dir() for p in folder.iterdir()):
                files = list_images(folder)
                if not files:
                    raise InvalidInput(
                        f"data.root={self.root}: {folder} holds no images and no class folders; expected "
                        f"test/<images> or test/<class>/<images>. Add images, remove the empty folder, or {self.fix}"
                    )
                splits[split] = self.decode_split(split, files, None)
                continue
            files, labels, _ = scan_class_folders(
                folder, self.class_names, f"data.root={self.root}: {self.name} {split} set", self.fix
            )
            splits[split] = self.decode_split(split, files, labels)
        return splits
