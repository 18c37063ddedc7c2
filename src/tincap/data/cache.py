"""Decode-once image store: JPEGs become one uint8 HDF5 array, read into memory by later runs."""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from tincap.runtime.atomic import atomic_path, remove_dead_temps
from tincap.runtime.errors import InvalidInput
from tincap.runtime.progress import progress

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class DecodedImages:
    """Pixels of the files that decoded, and which of the requested files those were."""

    images: np.ndarray  # (N, H, W, 3) uint8
    kept: np.ndarray  # indices into the requested file list, ascending
    labels: np.ndarray | None = None  # for generated sets, whose labels are not in file names


def fingerprint(files: Sequence[Path], size: int | None, extra: str = "") -> str:
    """Identify a file list's exact contents cheaply, so any added, removed or touched file invalidates a cache."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|size={size}|{extra}\n".encode())
    for f in files:
        st = f.stat()
        digest.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def decode_image(path: Path, size: int | None) -> np.ndarray:
    """Decode to RGB uint8 (grayscale and palette images included), resized to size x size when given."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _try_decode(path: Path, size: int | None) -> np.ndarray | Exception:
    try:
        return decode_image(path, size)
    except Exception as exc:  # noqa: BLE001 - every decoder failure means "unreadable image"
        return exc


def decode_files(
    files: Sequence[Path], size: int | None, threads: int = 4, description: str = "images"
) -> DecodedImages:
    """Decode a file list in threads (Pillow releases the GIL), skipping unreadable files with one warning."""
    if not files:
        raise ValueError("decode_files: no image files were given")
    results: list[np.ndarray | Exception] = []
    with ThreadPoolExecutor(max_workers=threads) as pool, progress(len(files), f"decoding {description}") as advance:
        # map yields in input order as workers finish, so the bar advances here, in the calling thread
        for result in pool.map(lambda p: _try_decode(p, size), files):
            results.append(result)
            advance(1)
    kept = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    failed = [(files[i], r) for i, r in enumerate(results) if not isinstance(r, np.ndarray)]
    if not kept:
        raise InvalidInput(
            f"none of the {len(files)} images could be decoded (first: {files[0]}: {failed[0][1]}); "
            f"expected readable JPEG/PNG/... files under {files[0].parent}. Replace them, or point data.root= "
            "(images= for predict/explain/caption) at readable images"
        )
    if failed:
        examples = "; ".join(f"{p}: {e}" for p, e in failed[:3])
        warnings.warn(f"skipped {len(failed)} unreadable image(s) of {len(files)} ({examples})", stacklevel=2)
    shapes = {results[i].shape for i in kept}
    if len(shapes) > 1:
        raise InvalidInput(
            f"images under {files[0].parent} have different sizes {sorted(shapes)[:4]} (height, width, 3); "
            "expected one size when data.image_size=null. Set e.g. data.image_size=64 to resize them all"
        )
    return DecodedImages(np.stack([results[i] for i in kept]), np.asarray(kept, dtype=np.int64))


def _read_store(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of an HDF5 store, only if it is complete and was built from exactly these inputs."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("fingerprint") != key or not f.attrs.get("complete", False):
                log.info("cache %s is stale; rebuilding", path)
                return None
            return {name: f[name][...] for name in f}
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable cache %s (%s); rebuilding it", path, exc)
        return None


def _write_store(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write via a temp file and rename, so an interrupted build never leaves a cache that looks valid."""
    with atomic_path(path) as tmp:
        # HDF5 crashes the process when a write hits a full disk, so a store that cannot fit is refused first
        need = sum(a.nbytes for a in arrays.values()) * 1.02 + 2**20
        free = shutil.disk_usage(tmp.parent).free
        if need > free:
            raise OSError(errno.ENOSPC, f"No space left on device (the cache needs {need / 2**20:.0f} MB, "
                                        f"{free / 2**20:.0f} MB are free)", str(path))
        with h5py.File(tmp, "w") as f:
            for name, array in arrays.items():
                f.create_dataset(name, data=array, chunks=True if array.ndim > 1 else None)
            f.attrs["fingerprint"] = key
            f.attrs["complete"] = True


def cached_arrays(
    path: Path | None,
    key: str,
    build: Callable[[], dict[str, np.ndarray]],
    valid: Callable[[dict[str, np.ndarray]], bool] = lambda arrays: True,
) -> dict[str, np.ndarray]:
    """Named arrays computed once and kept in one HDF5 file under `key`; rebuilt when the key differs or `valid` fails."""
    if path is None:
        return build()
    path = Path(path)
    remove_dead_temps(path)  # also on a hit: a killed concurrent build may have left one beside a valid cache
    if path.exists():
        hit = _read_store(path, key)
        if hit is not None and valid(hit):
            log.info("reusing cache %s", path)
            return hit
        if hit is not None:
            log.warning("ignoring malformed cache %s; rebuilding it", path)
    arrays = build()
    _write_store(path, key, arrays)
    log.info("cached %s in %s", {k: v.shape for k, v in arrays.items()}, path)
    return arrays


def _decoded_arrays(decoded: DecodedImages) -> dict[str, np.ndarray]:
    arrays = {"images": decoded.images, "kept": decoded.kept}
    return arrays if decoded.labels is None else {**arrays, "labels": decoded.labels}


def _is_decoded(arrays: dict[str, np.ndarray]) -> bool:
    images, kept = arrays.get("images"), arrays.get("kept")
    return (images is not None and kept is not None and images.ndim == 4 and images.shape[-1] == 3
            and images.dtype == np.uint8 and len(kept) == len(images))


def cached_decode(
    files: Sequence[Path],
    cache_path: Path | None,
    size: int | None,
    build: Callable[[], DecodedImages] | None = None,
    extra_key: str = "",
    description: str = "images",
) -> DecodedImages:
    """Decode files once into an HDF5 cache keyed by their fingerprint; later calls read it back."""
    files = list(files)
    build = build or (lambda: decode_files(files, size, description=description))
    key = fingerprint(files, size, extra_key) if cache_path is not None else ""
    arrays = cached_arrays(cache_path, key, lambda: _decoded_arrays(build()), valid=_is_decoded)
    return DecodedImages(arrays["images"], arrays["kept"], arrays.get("labels"))

