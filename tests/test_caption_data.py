"""Caption parsing, validation, image-level splits and the vocabulary, on real Flickr8k and COCO-mini rows."""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tincap.data.caption_datamodule import CaptionData
from tincap.data.caption_files import (
    CaptionRecord,
    images_without_captions,
    read_captions,
    read_coco_json,
    read_flickr_token,
    read_kaggle_captions,
    records_by_split,
    split_by_image,
)
from tincap.data.vocab import Vocabulary, tokenize
from tincap.runtime.errors import InvalidInput, MissingInput, UserError

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 6  # the sample: all rows of the first few images, including CSV-quoted captions with commas


def _data_dir(name: str) -> Path:
    env = os.environ.get("TINCAP_SHARED_DATA")
    root = (Path(env) if env else REPO.parent / "shared" / "data") / name
    if not root.is_dir():
        pytest.skip(f"real dataset '{name}' not found (set TINCAP_SHARED_DATA or place it at ../shared/data/{name})")
    return root


@pytest.fixture(scope="module")
def flickr_root() -> Path:
    return _data_dir("flickr8k")


@pytest.fixture(scope="module")
def coco_root() -> Path:
    return _data_dir("coco_mini")


@pytest.fixture(scope="module")
def sample_lines(flickr_root: Path) -> list[str]:
    """Raw captions.txt lines (header included) of real images whose captions have quoted commas."""
    lines = (flickr_root / "captions.txt").read_text(encoding="utf-8").splitlines()
    quoted = [i for i, line in enumerate(lines) if line.count('"') == 2 and "," in line.split('"')[1]]
    first = lines[quoted[0]].split(",")[0]  # an image with a quoted caption, then the next few images
    start = next(i for i, line in enumerate(lines) if line.startswith(first + ","))
    images: list[str] = []
    out = [lines[0]]
    for line in lines[start:]:
        name = line.split(",")[0]
        if name not in images:
            if len(images) == N_IMAGES:
                break
            images.append(name)
        out.append(line)
    return out


@pytest.fixture(scope="module")
def sample_records(sample_lines: list[str]) -> list[CaptionRecord]:
    rows = list(csv.reader(sample_lines))[1:]
    return [CaptionRecord(image, caption.strip()) for image, caption in rows]


def make_dataset(root: Path, src: Path, images: list[str]) -> Path:
    """A dataset folder with images/ holding symlinks to the given real images."""
    (root / "images").mkdir(parents=True)
    for name in images:
        (root / "images" / name).symlink_to(src / "images" / name)
    return root


def unique(records: list[CaptionRecord]) -> list[str]:
    return list(dict.fromkeys(r.image for r in records))


def write_token(path: Path, records: list[CaptionRecord]) -> None:
    counts: Counter[str] = Counter()
    lines = []
    for r in records:
        lines.append(f"{r.image}#{counts[r.image]}\t{r.caption}")
        counts[r.image] += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_coco(path: Path, records: list[CaptionRecord]) -> None:
    ids = {name: 1000 + i for i, name in enumerate(unique(records))}
    doc = {
        "info": {"description": "test"},
        "images": [{"id": i, "file_name": name, "width": 224, "height": 224} for name, i in ids.items()],
        "annotations": [{"id": 500 + k, "image_id": ids[r.image], "caption": r.caption} for k, r in enumerate(records)],
    }
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")


# ---------------------------------------------------------------- formats


def test_three_formats_give_the_same_records(
    tmp_path: Path, flickr_root: Path, sample_lines: list[str], sample_records: list[CaptionRecord]
) -> None:
    images = unique(sample_records)
    assert any("," in r.caption for r in sample_records)  # the sample exercises CSV quoting
    kaggle = make_dataset(tmp_path / "kaggle", flickr_root, images)
    (kaggle / "captions.txt").write_text("\n".join(sample_lines) + "\n", encoding="utf-8")
    token = make_dataset(tmp_path / "token", flickr_root, images)
    write_token(token / "Flickr8k.token.txt", sample_records)
    coco = make_dataset(tmp_path / "coco", flickr_root, images)
    (coco / "annotations").mkdir()
    write_coco(coco / "annotations" / "captions_train2017.json", sample_records)

    got = {name: read_captions(root) for name, root in [("kaggle", kaggle), ("token", token), ("coco", coco)]}
    assert got["kaggle"] == sample_records
    assert got["token"] == sample_records
    assert got["coco"] == sample_records
    assert read_kaggle_captions(kaggle / "captions.txt") == sample_records
    assert read_flickr_token(token / "Flickr8k.token.txt") == sample_records
    assert read_coco_json(coco / "annotations" / "captions_train2017.json") == sample_records


def test_real_coco_mini(coco_root: Path) -> None:
    records = read_captions(coco_root)
    assert len(records) == 400
    assert len({r.image for r in records}) == 80
    from_json = read_coco_json(coco_root / "annotations" / "captions_train2017.json", coco_root / "images")
    assert sorted(from_json, key=lambda r: (r.image, r.caption)) == sorted(records, key=lambda r: (r.image, r.caption))


def test_real_flickr8k(flickr_root: Path) -> None:
    records = read_captions(flickr_root)
    assert len(records) == 35_000
    per_image = Counter(r.image for r in records)
    assert len(per_image) == 7_000
    assert set(per_image.values()) == {5}
    assert images_without_captions(flickr_root, records) == []
    assert all(r.caption == r.caption.strip() and r.caption for r in records)


# ---------------------------------------------------------------- vocabulary


def test_tokenize() -> None:
    assert tokenize('A dog\'s "red" T-shirt, isn\'t it ?') == ["a", "dog's", "red", "t", "shirt", "isn't", "it"]
    assert tokenize("  ") == []


def test_vocabulary_round_trip_unk_and_max_len(sample_records: list[CaptionRecord]) -> None:
    captions = [r.caption for r in sample_records]
    vocab = Vocabulary.build(captions, min_freq=2)
    assert vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    counts = Counter(t for c in captions for t in tokenize(c))
    words = vocab.itos[4:]
    assert words == sorted(words, key=lambda w: (-counts[w], w))  # by frequency, then alphabetical
    assert Vocabulary.build(reversed(captions), min_freq=2) == vocab  # order of captions does not matter

    restored = Vocabulary.from_state_dict(json.loads(json.dumps(vocab.state_dict())))
    assert restored == vocab and restored.stoi == vocab.stoi and len(restored) == len(vocab)
    assert [restored.encode(c, 12) for c in captions] == [vocab.encode(c, 12) for c in captions]

    rare = next(w for w, n in sorted(counts.items()) if n == 1)
    assert rare not in vocab.stoi
    common = vocab.itos[4]
    ids = vocab.encode(f"{common} {rare} zzzunseen")
    assert ids == [vocab.bos_id, vocab.stoi[common], vocab.unk_id, vocab.unk_id, vocab.eos_id]
    assert vocab.decode(ids) == f"{common} <unk> <unk>"

    long = captions[0]
    full = vocab.encode(long)
    cut = vocab.encode(long, max_len=5)
    assert len(full) > 5 and len(cut) == 5 and cut[-1] == vocab.eos_id and cut[:4] == full[:4]
    assert vocab.encode(long, max_len=2) == [vocab.bos_id, vocab.eos_id]
    with pytest.raises(ValueError, match="max_len"):
        vocab.encode(long, max_len=1)
    assert vocab.decode([*full, vocab.stoi[common], vocab.pad_id]) == " ".join(
        w if w in vocab.stoi else "<unk>" for w in tokenize(long)
    )
    assert vocab.decode([*cut, vocab.pad_id], strip_specials=False).split()[-1] == "<eos>"


def test_vocabulary_is_restored_from_the_datamodule_state() -> None:
    """A checkpoint keeps the vocabulary as the datamodule's state; a datamodule given it never rebuilds one."""
    trained = CaptionData(shapes_per_class=2, image_size=32, min_freq=1)
    assert trained.state_dict() == {}  # nothing to save before setup
    trained.setup()
    state = json.loads(json.dumps(trained.state_dict()))  # plain containers, as a checkpoint holds them
    assert set(state) == {"vocab"} and state["vocab"]["itos"] == trained.vocab.itos
    rebuilt = CaptionData(shapes_per_class=2, image_size=32, min_freq=50)
    rebuilt.setup()
    assert len(rebuilt.vocab) < len(trained.vocab)  # min_freq=50 would build a smaller vocabulary

    restored = CaptionData(shapes_per_class=2, image_size=32, min_freq=50)
    restored.load_state_dict(state)  # before setup, as Lightning restores a checkpoint
    restored.setup()
    assert restored.vocab.itos == trained.vocab.itos and restored.vocab == trained.vocab
    assert restored.task_inputs() == {"vocab": restored.vocab}
    assert restored.encoded_captions("train") == trained.encoded_captions("train")
    assert restored.state_dict() == state
    rebuilt.load_state_dict(state)  # after setup: the loaded vocabulary replaces the one built
    assert rebuilt.vocab.itos == trained.vocab.itos
    assert restored.training_captions() == trained.training_captions()
    assert "vocab" not in restored.describe() and restored.describe()["num_classes"] == 1


# ---------------------------------------------------------------- splits


def test_split_real_flickr8k(flickr_root: Path) -> None:
    records = read_captions(flickr_root)
    splits = split_by_image(records, flickr_root, seed=0)
    train_list = set((flickr_root / "Flickr_8k.trainImages.txt").read_text().split())
    dev_list = set((flickr_root / "Flickr_8k.devImages.txt").read_text().split())
    assert set(splits["test"]) == dev_list and len(dev_list) == 1_000
    assert set(splits["train"]) | set(splits["val"]) == train_list and len(train_list) == 6_000
    assert len(splits["val"]) == 600 and len(splits["train"]) == 5_400
    sets = {k: set(v) for k, v in splits.items()}
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    assert split_by_image(records, flickr_root, seed=0) == splits

    by_split = records_by_split(records, splits)
    assert {k: len(v) for k, v in by_split.items()} == {"train": 27_000, "val": 3_000, "test": 5_000}
    vocab = Vocabulary.build(r.caption for r in by_split["train"])
    # Replace every test caption: a vocabulary built from the train split must not change.
    altered = [r if r.image not in sets["test"] else CaptionRecord(r.image, "qqtestonly word") for r in records]
    assert Vocabulary.build(r.caption for r in records_by_split(altered, splits)["train"]) == vocab
    train_words = {t for r in by_split["train"] for t in tokenize(r.caption)}
    test_only = Counter(t for r in by_split["test"] for t in tokenize(r.caption) if t not in train_words)
    assert test_only and not any(w in vocab.stoi for w in test_only)


def test_seeded_split_without_lists(tmp_path: Path) -> None:
    records = [CaptionRecord(f"img{i:03d}.jpg", f"caption {i}") for i in range(200) for _ in range(2)]
    a = split_by_image(records, tmp_path, seed=3)
    assert a == split_by_image(list(reversed(records)), tmp_path, seed=3)
    assert {k: len(v) for k, v in a.items()} == {"train": 160, "val": 20, "test": 20}
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == {r.image for r in records}
    assert sum(len(v) for v in a.values()) == 200
    assert split_by_image(records, tmp_path, seed=4) != a
    assert {k: len(v) for k, v in split_by_image(records, tmp_path, ratios=(6, 2, 2)).items()} == {
        "train": 120,
        "val": 40,
        "test": 40,
    }


# ---------------------------------------------------------------- bad inputs


def _kaggle(lines: list[str]) -> Callable[[Path], str]:
    def write(root: Path) -> str:
        (root / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return "captions.txt"

    return write


def _token(records: list[CaptionRecord], edit: Callable[[list[str]], None]) -> Callable[[Path], str]:
    def write(root: Path) -> str:
        write_token(root / "Flickr8k.token.txt", records)
        lines = (root / "Flickr8k.token.txt").read_text().splitlines()
        edit(lines)
        (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
        return "Flickr8k.token.txt"

    return write


def _coco(records: list[CaptionRecord], edit: Callable[[dict], None] | None, raw_edit=None) -> Callable[[Path], str]:
    def write(root: Path) -> str:
        (root / "annotations").mkdir()
        path = root / "annotations" / "captions_val2017.json"
        write_coco(path, records)
        if edit is not None:
            doc = json.loads(path.read_text())
            edit(doc)
            path.write_text(json.dumps(doc, indent=1))
        if raw_edit is not None:
            path.write_text(raw_edit(path.read_text()))
        return "captions_val2017.json"

    return write


def _set_line(lines: list[str], i: int, text: str) -> None:
    lines[i] = text


def bad_cases(lines: list[str], records: list[CaptionRecord]) -> dict[str, tuple[Callable[[Path], str], str, type]]:
    """name -> (writer returning the file name, expected location after the file name, exception type)."""
    img = records[3].image
    return {
        "csv_missing_image": (_kaggle([*lines[:4], "nothere.jpg,a dog runs", *lines[4:]]), ":5:", FileNotFoundError),
        "csv_empty_caption": (_kaggle([*lines[:6], f"{img},  ", *lines[6:]]), ":7:", ValueError),
        "csv_bad_header": (_kaggle(["img,text", *lines[1:]]), ":1:", ValueError),
        "csv_one_field": (_kaggle([*lines[:3], img, *lines[3:]]), ":4:", ValueError),
        "csv_header_only": (_kaggle(lines[:1]), ": no caption rows", ValueError),
        "csv_unbalanced_quote": (_kaggle([*lines[:8], f'{img},"a dog runs', *lines[8:]]), ":9:", ValueError),
        "token_no_tab": (_token(records, lambda ls: _set_line(ls, 2, ls[2].replace("\t", " "))), ":3:", ValueError),
        "token_no_index": (_token(records, lambda ls: _set_line(ls, 4, f"{img}\tA dog .")), ":5:", ValueError),
        "token_empty_caption": (_token(records, lambda ls: _set_line(ls, 1, f"{img}#7\t ")), ":2:", ValueError),
        "token_missing_image": (
            _token(records, lambda ls: ls.insert(9, "gone.jpg#0\tA dog .")),
            ":10:",
            FileNotFoundError,
        ),
        "token_empty_file": (_token(records, lambda ls: ls.clear()), ": no captions", ValueError),
        "json_syntax": (_coco(records, None, lambda t: t.replace('"caption":', '"caption"', 3)), ":", ValueError),
        "json_unknown_image_id": (
            _coco(records, lambda d: d["annotations"][2].update(image_id=9)),
            "annotation id 502",
            ValueError,
        ),
        "json_empty_caption": (
            _coco(records, lambda d: d["annotations"][4].update(caption=" ")),
            "annotation id 504",
            ValueError,
        ),
        "json_missing_file": (
            _coco(records, lambda d: d["images"][1].update(file_name="gone.jpg")),
            "annotation id 505",
            FileNotFoundError,
        ),
        "json_no_annotations": (_coco(records, lambda d: d["annotations"].clear()), ": no annotations", ValueError),
    }


CASES = [
    "csv_missing_image", "csv_empty_caption", "csv_bad_header", "csv_one_field", "csv_header_only",
    "csv_unbalanced_quote", "token_no_tab", "token_no_index", "token_empty_caption", "token_missing_image",
    "token_empty_file", "json_syntax", "json_unknown_image_id", "json_empty_caption", "json_missing_file",
    "json_no_annotations",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_names_file_and_line(
    case: str, tmp_path: Path, flickr_root: Path, sample_lines: list[str], sample_records: list[CaptionRecord]
) -> None:
    writer, location, exc_type = bad_cases(sample_lines, sample_records)[case]
    root = make_dataset(tmp_path / "ds", flickr_root, unique(sample_records))
    file_name = writer(root)
    with pytest.raises(exc_type) as info:
        read_captions(root)
    message = str(info.value)
    assert isinstance(info.value, UserError), type(info.value)
    assert file_name in message, message
    assert location in message.split(file_name, 1)[1], message
    if case == "json_syntax":
        assert re.search(r"captions_val2017\.json:\d+:\d+: malformed JSON", message), message


def test_uncaptioned_images_raise_unless_allowed(
    tmp_path: Path, flickr_root: Path, sample_lines: list[str], sample_records: list[CaptionRecord]
) -> None:
    images = unique(sample_records)
    root = make_dataset(tmp_path / "ds", flickr_root, images)
    kept = [line for line in sample_lines if not line.startswith(images[-1] + ",")]
    (root / "captions.txt").write_text("\n".join(kept) + "\n")
    with pytest.raises(InvalidInput, match=r"1 image\(s\) in .*images have no caption in .*captions\.txt.*"
                                          r"set data\.allow_uncaptioned=true to leave them out"):
        read_captions(root)
    with pytest.warns(UserWarning, match=r"1 image\(s\)"):
        records = read_captions(root, allow_uncaptioned=True)
    assert images_without_captions(root, records) == [images[-1]]
    assert len(records) == len(sample_records) - 5


def test_missing_folders_and_files(tmp_path: Path, flickr_root: Path, sample_records: list[CaptionRecord]) -> None:
    (tmp_path / "a").mkdir()
    write_token(tmp_path / "a" / "Flickr8k.token.txt", sample_records)
    with pytest.raises(MissingInput, match=r"a/images not found"):
        read_captions(tmp_path / "a")
    root = make_dataset(tmp_path / "b", flickr_root, unique(sample_records))
    with pytest.raises(MissingInput, match=r"no captions file .*captions\.txt.*set data\.captions_file="):
        read_captions(root)


def test_split_list_names_without_captions(
    tmp_path: Path, flickr_root: Path, sample_records: list[CaptionRecord]
) -> None:
    images = unique(sample_records)
    root = make_dataset(tmp_path / "ds", flickr_root, images)
    (root / "Flickr_8k.trainImages.txt").write_text("\n".join(images[:4]) + "\n")
    (root / "Flickr_8k.devImages.txt").write_text(f"{images[4]}\nnot_captioned.jpg\n{images[5]}\n")
    with pytest.raises(InvalidInput, match=r"Flickr_8k\.devImages\.txt:2: image 'not_captioned\.jpg' has no captions"):
        split_by_image(sample_records, root)
    (root / "Flickr_8k.devImages.txt").write_text(f"{images[4]}\n{images[0]}\n")
    with pytest.raises(InvalidInput, match=r"trainImages\.txt and .*devImages\.txt share 1 image"):
        split_by_image(sample_records, root)
    (root / "Flickr_8k.devImages.txt").write_text(f"{images[4]}\n")
    (root / "Flickr_8k.testImages.txt").write_text(f"{images[5]}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = split_by_image(sample_records, root)
    assert splits == {"train": sorted(images[:4]), "val": [images[4]], "test": [images[5]]}
