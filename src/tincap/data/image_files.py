"""Which files are images, and the image files an `images=` argument names (train, explain, predict, caption agree)."""

from __future__ import annotations

import logging
from pathlib import Path

from tincap.runtime.errors import InvalidInput, MissingInput

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
_KINDS = "/".join(IMAGE_EXTENSIONS[:3]) + "/..."


def is_image_file(path: Path) -> bool:
    """Judge by extension only, so listing a folder never opens a file."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """The image files directly in a folder, in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def other_files(path: str | Path) -> list[Path]:
    """The files directly in an `images=` folder that are not images (skipped, and named in the log)."""
    path = Path(path).expanduser()
    return sorted(p for p in path.iterdir() if p.is_file() and not is_image_file(p)) if path.is_dir() else []


def log_skipped(images: str, unreadable: list[Path]) -> int:
    """Name every file of `images=` left out: not an image by its name, or not readable as one; returns how many."""
    others = other_files(images)
    for path in others:
        log.warning("skipped %s: not an image file (expected %s)", path, ", ".join(IMAGE_EXTENSIONS))
    for path in unreadable:
        log.warning("skipped %s: not a readable image", path)
    return len(others) + len(unreadable)


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not (path.is_file() or path.is_dir()):
        raise MissingInput(
            f"images={path}: no such file or folder; expected an image or a folder of images. "
            "Set images=/path/to/image_or_folder"
        )
    return path


def image_paths(path: str | Path) -> list[Path]:
    """The files of an `images=` argument: one image file, or the image files of a folder in name order."""
    path = _existing(path)
    if path.is_file():
        return [path]
    files = list_images(path)
    if not files:
        raise InvalidInput(
            f"images={path}: the folder holds no {_KINDS} images; expected image files directly in it. "
            "Set images= to an image or a folder of images"
        )
    return files


def find_images(path: str | Path, class_names: list[str]) -> tuple[list[Path], list[int] | None]:
    """Image files of `images=`: one file, a folder of files (unlabelled), or `<class>/<image>` sub-folders (labelled)."""
    path = _existing(path)
    if path.is_file():
        return [path], None
    files = list_images(path)
    if files:
        return files, None
    folders = sorted(p for p in path.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in class_names]
    if not folders or unknown:
        what = f"sub-folders {unknown[:5]} are not classes of the checkpoint (e.g. {class_names[:3]})" if unknown \
            else f"holds no {_KINDS} images"
        raise InvalidInput(
            f"images={path}: {what}; expected image files, or <class_name>/<image files> sub-folders. "
            "Set images= to such a folder (or to one image)"
        )
    labels: list[int] = []
    for folder in folders:
        members = list_images(folder)
        files += members
        labels += [class_names.index(folder.name)] * len(members)
    if not files:
        raise InvalidInput(
            f"images={path}: the class sub-folders hold no {_KINDS} images; expected <class_name>/<image files>. "
            "Set images= to a folder with images"
        )
    return files, labels
