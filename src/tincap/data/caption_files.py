"""Caption files (Kaggle CSV, Flickr8k.token.txt, COCO json) read into one record list, checked and split by image."""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tincap.data.image_files import is_image_file
from tincap.runtime.errors import InvalidInput, MissingInput

IMAGES_DIR = "images"
KAGGLE_FILE = "captions.txt"
TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_LISTS = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
_TOKEN_LINE = re.compile(r"^[^\t]+#\d+\t")


@dataclass(frozen=True)
class CaptionRecord:
    """One caption of one image; image is the file name relative to the dataset's images/ folder."""

    image: str
    caption: str


class _ImageChecker:
    """Collect caption entries naming files absent from images/, so one error can give the first and the count."""

    def __init__(self, images_dir: Path | None) -> None:
        self.images_dir = images_dir
        self.names = None if images_dir is None else _file_names(images_dir)
        self.first: tuple[str, str] | None = None
        self.rows = 0
        self.images: set[str] = set()

    def check(self, image: str, where: str) -> None:
        if self.names is None or image in self.names:
            return
        if ("/" in image or os.sep in image) and (self.images_dir / image).is_file():  # type: ignore[operator]
            return
        self.rows += 1
        self.images.add(image)
        if self.first is None:
            self.first = (where, image)

    def raise_if_missing(self) -> None:
        if self.first is not None:
            where, image = self.first
            raise MissingInput(
                f"{where}: image {image!r} is not in {self.images_dir} "
                f"({self.rows} caption(s) name {len(self.images)} missing image file(s)); "
                "expected every captioned image under images/. Add the images, or remove their captions"
            )


def _file_names(images_dir: Path) -> set[str]:
    if not images_dir.is_dir():
        raise MissingInput(f"{images_dir} not found; expected the dataset's image files in an images/ folder. "
                           "Set data.root to the folder that holds images/")
    with os.scandir(images_dir) as it:
        return {e.name for e in it if e.is_file() and not e.name.startswith(".")}


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise MissingInput(f"{path} not found; expected {what}. Set data.captions_file= to an existing file")


def _checked(where: str, image: str, caption: str) -> CaptionRecord:
    """A record, or a ValueError naming where an empty image name or caption came from."""
    if not image:
        raise InvalidInput(f"{where}: empty image name; expected a file name such as 'name.jpg'")
    if not caption:
        raise InvalidInput(f"{where}: empty caption for image {image!r}; expected some words (or remove the line)")
    return CaptionRecord(image, caption)


def read_kaggle_captions(path: Path | str, images_dir: Path | None = None) -> list[CaptionRecord]:
    """Kaggle captions.txt: CSV with header 'image,caption' (quoted or bare commas inside captions are fine)."""
    path = Path(path)
    _require_file(path, "a CSV captions file with header 'image,caption'")
    checker = _ImageChecker(images_dir)
    records: list[CaptionRecord] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
            except csv.Error as exc:
                raise InvalidInput(f"{path}:1: malformed CSV header ({exc}); expected 'image,caption'") from None
            if header is None:
                raise InvalidInput(f"{path}: file is empty; expected header 'image,caption' and one row per caption")
            if [h.strip().lower() for h in header] != ["image", "caption"]:
                hint = ""
                if _TOKEN_LINE.match(",".join(header)):
                    hint = f" (this looks like Flickr8k.token.txt lines; name the file {TOKEN_FILE})"
                raise InvalidInput(f"{path}:1: expected header 'image,caption', got {','.join(header)!r}{hint}")
            end = reader.line_num
            while True:
                start = end + 1
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    raise InvalidInput(f"{path}:{start}: malformed CSV row ({exc})") from None
                end = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                where = f"{path}:{start}"
                if len(row) < 2:
                    raise InvalidInput(f"{where}: expected 'image,caption', got {','.join(row)!r}")
                caption = ",".join(row[1:]).strip()  # an unquoted comma splits the caption; join it back
                if "\n" in caption or "\r" in caption:
                    raise InvalidInput(
                        f"{where}: caption runs over lines {start}-{end}; check for an unbalanced double quote"
                    )
                record = _checked(where, row[0].strip(), caption)
                checker.check(record.image, where)
                records.append(record)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc}); expected UTF-8") from None
    if not records:
        raise InvalidInput(f"{path}: no caption rows after the header 'image,caption'")
    checker.raise_if_missing()
    return records


def read_flickr_token(path: Path | str, images_dir: Path | None = None) -> list[CaptionRecord]:
    """Flickr8k.token.txt: one 'name.jpg#n<TAB>caption' line per caption."""
    path = Path(path)
    _require_file(path, "a Flickr8k.token.txt file with lines 'name.jpg#n<TAB>caption'")
    checker = _ImageChecker(images_dir)
    records: list[CaptionRecord] = []
    try:
        with path.open(encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                key, tab, caption = line.partition("\t")
                image, hash_, n = key.strip().rpartition("#")
                if not tab or not hash_ or not n.isdigit() or not image:
                    raise InvalidInput(f"{where}: expected 'name.jpg#n<TAB>caption', got {line[:120]!r}")
                record = _checked(where, image, caption.strip())
                checker.check(record.image, where)
                records.append(record)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc}); expected UTF-8") from None
    if not records:
        raise InvalidInput(f"{path}: no captions; expected lines 'name.jpg#n<TAB>caption'")
    checker.raise_if_missing()
    return records


def read_coco_json(path: Path | str, images_dir: Path | None = None) -> list[CaptionRecord]:
    """COCO captions_*.json: annotations in file order, each joined to its image's file_name by image_id."""
    path = Path(path)
    _require_file(path, "a COCO captions json with 'images' and 'annotations'")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc}); expected UTF-8") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise InvalidInput(f"{path}: expected a COCO captions object with 'images' and 'annotations' lists")
    files: dict[int | str, str] = {}
    for k, img in enumerate(data["images"]):
        ok = isinstance(img, dict) and isinstance(img.get("id"), (int, str)) and isinstance(img.get("file_name"), str)
        if not ok or not img["file_name"].strip():
            raise InvalidInput(f"{path}: images[{k}]: expected an object with 'id' and 'file_name', got {str(img)[:120]}")
        if img["id"] in files:
            raise InvalidInput(f"{path}: images[{k}]: image id {img['id']!r} appears twice")
        files[img["id"]] = img["file_name"].strip()
    checker = _ImageChecker(images_dir)
    records: list[CaptionRecord] = []
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise InvalidInput(f"{path}: annotations[{k}]: expected an object, got {str(ann)[:120]}")
        where = f"{path}: annotation id {ann.get('id', '?')} (annotations[{k}])"
        image_id = ann.get("image_id")
        if not isinstance(image_id, (int, str)) or image_id not in files:
            raise InvalidInput(f"{where}: image_id {image_id!r} is not in the file's 'images' list")
        caption = ann.get("caption")
        if not isinstance(caption, str):
            raise InvalidInput(f"{where}: expected a string 'caption', got {caption!r}")
        record = _checked(where, files[image_id], caption.strip())
        checker.check(record.image, where)
        records.append(record)
    if not records:
        raise InvalidInput(f"{path}: no annotations; expected one caption per annotation")
    checker.raise_if_missing()
    return records


def find_captions_file(root: Path | str) -> Path:
    """The captions file of a dataset folder: captions.txt, else Flickr8k.token.txt, else one captions_*.json."""
    root = Path(root)
    for name in (KAGGLE_FILE, TOKEN_FILE):
        if (root / name).is_file():
            return root / name
    for folder in (root / "annotations", root):
        found = sorted(folder.glob("captions_*.json"))
        if len(found) > 1:
            raise InvalidInput(
                f"{folder} has several COCO caption files {[p.name for p in found]}; expected one. "
                f"Keep one, or choose with data.captions_file={found[0]}"
            )
        if found:
            return found[0]
    raise MissingInput(
        f"no captions file in {root}; expected {KAGGLE_FILE} (CSV 'image,caption'), {TOKEN_FILE} "
        "or annotations/captions_*.json. Add one, set data.captions_file=/path/to/captions, "
        "or set data.root to another caption dataset"
    )


def read_captions_file(path: Path | str, images_dir: Path | None = None) -> list[CaptionRecord]:
    """Parse by file name: *.json is COCO, *token.txt is Flickr8k.token, anything else the Kaggle CSV."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_coco_json(path, images_dir)
    if path.name.lower().endswith("token.txt"):
        return read_flickr_token(path, images_dir)
    return read_kaggle_captions(path, images_dir)


def images_without_captions(root: Path | str, records: Iterable[CaptionRecord]) -> list[str]:
    """Image files in root/images/ that no record names, sorted (they would be silently unused)."""
    captioned = {r.image for r in records}
    images_dir = Path(root) / IMAGES_DIR
    return sorted(n for n in _file_names(images_dir) if is_image_file(Path(n)) and n not in captioned)


def read_captions(
    root: Path | str, allow_uncaptioned: bool = False, captions_file: Path | str | None = None
) -> list[CaptionRecord]:
    """All captions of a dataset folder (root/images/ + a captions file), each naming an existing image."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInput(f"data.root={root}: caption dataset folder does not exist; expected images/ and a captions "
                           "file. Set data.root=/path/to/captions")
    images_dir = root / IMAGES_DIR
    if not images_dir.is_dir():
        raise MissingInput(f"data.root={root}: {images_dir} not found; expected the dataset's images in {root}/images/. "
                           "Set data.root to the folder that holds images/")
    path = Path(captions_file) if captions_file is not None else find_captions_file(root)
    records = read_captions_file(path, images_dir)
    uncaptioned = images_without_captions(root, records)
    if uncaptioned:
        msg = f"{len(uncaptioned)} image(s) in {images_dir} have no caption in {path} (e.g. {uncaptioned[:3]})"
        if not allow_uncaptioned:
            raise InvalidInput(f"{msg}; expected a caption for every image. Remove them, or set "
                               "data.allow_uncaptioned=true to leave them out")
        warnings.warn(f"{msg}; they are left out", stacklevel=2)
    return records


def read_split_list(path: Path, captioned: set[str]) -> list[str]:
    """Image names of a Flickr_8k.*Images.txt list (file order, repeats dropped); each must have captions."""
    names: list[str] = []
    seen: set[str] = set()
    bad: list[tuple[int, str]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if name not in captioned:
            bad.append((lineno, name))
        elif name not in seen:
            seen.add(name)
            names.append(name)
    if bad:
        lineno, name = bad[0]
        raise InvalidInput(
            f"{path}:{lineno}: image {name!r} has no captions ({len(bad)} name(s) in this list have none); "
            "expected every listed image to be captioned. Fix the list, or delete it to split by ratio"
        )
    if not names:
        raise InvalidInput(f"{path}: split list is empty; expected one image name per line (or delete the file)")
    return names


def _normalised(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0 or ratios[0] <= 0:
        raise ValueError(f"ratios must be (train, val, test) shares >= 0 with train > 0, got {tuple(ratios)}")
    total = float(sum(ratios))
    return ratios[0] / total, ratios[1] / total, ratios[2] / total


def split_by_image(
    records: Iterable[CaptionRecord],
    root: Path | str,
    seed: int = 0,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
) -> dict[str, list[str]]:
    """Disjoint train/val/test image names (sorted), so no image's captions leak between splits.

    The Flickr_8k.{train,dev,test}Images.txt lists in root are used when present: test = the test list, else the
    dev list; val = the dev list when it is not the test set, else a seeded slice of train of the val share of
    ratios (10% by default); train = the train list (less that slice), or when there is no train list, every
    captioned image in no list. Without test and dev lists the train pool is split by ratios with `seed`.
    """
    root = Path(root)
    images = sorted({r.image for r in records})
    if not images:
        raise ValueError("split_by_image: no caption records were given")
    _, val_share, test_share = _normalised(ratios)
    captioned = set(images)
    lists = {k: read_split_list(root / f, captioned) for k, f in SPLIT_LISTS.items() if (root / f).is_file()}
    for a, b in itertools.combinations(lists, 2):
        common = set(lists[a]) & set(lists[b])
        if common:
            raise InvalidInput(
                f"{root / SPLIT_LISTS[a]} and {root / SPLIT_LISTS[b]} share {len(common)} image(s) "
                f"(e.g. {sorted(common)[:3]}); expected each image in one split list only. Fix the lists"
            )
    listed = set().union(*(set(v) for v in lists.values()))
    if "train" in lists:
        pool = sorted(lists["train"])
        unused = len(captioned - listed)
        if unused:
            warnings.warn(
                f"{unused} captioned image(s) in {root} are in none of the split lists; they are left out", stacklevel=2
            )
    else:
        pool = [im for im in images if im not in listed]

    shuffled = list(pool)
    random.Random(seed).shuffle(shuffled)
    if "test" in lists or "dev" in lists:
        test = lists.get("test", lists.get("dev", []))
        if "test" in lists and "dev" in lists:
            val, train = lists["dev"], pool
        else:
            n_val = round(len(pool) * val_share)
            val, train = shuffled[:n_val], shuffled[n_val:]
    else:
        n_test = round(len(pool) * test_share)
        n_val = round(len(pool) * val_share)
        test, val, train = shuffled[:n_test], shuffled[n_test : n_test + n_val], shuffled[n_test + n_val :]
    if not train:
        raise InvalidInput(f"{root}: no images left for train ({len(images)} captioned images, all in the dev/test "
                           f"lists); expected {SPLIT_LISTS['train']} or unlisted captioned images. Fix the split lists")
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def records_by_split(
    records: Iterable[CaptionRecord], splits: Mapping[str, Sequence[str]]
) -> dict[str, list[CaptionRecord]]:
    """Each split's caption records (in record order): captions follow their image."""
    owner: dict[str, str] = {}
    for split, names in splits.items():
        for name in names:
            if owner.setdefault(name, split) != split:
                raise ValueError(f"image {name!r} is in both the {owner[name]!r} and {split!r} splits")
    out: dict[str, list[CaptionRecord]] = {split: [] for split in splits}
    for r in records:
        if r.image in owner:
            out[owner[r.image]].append(r)
    return out
