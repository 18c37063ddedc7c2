"""A cache build killed with a real SIGKILL is rebuilt by the next run, equal to one never killed, with no temp left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

from tincap.data.cache import cached_decode
from tincap.data.caption_datamodule import CaptionData
from tincap.runtime import atomic
from tincap.runtime.atomic import atomic_write_bytes, remove_dead_temps

# Builds an image cache with every HDF5 dataset write followed by a long sleep, so it can be killed mid-write.
SLOW_BUILD = r"""
import sys, time
from pathlib import Path
import h5py
from tincap.data.cache import cached_decode

create = h5py.Group.create_dataset
def slow_create(self, *args, **kwargs):
    dataset = create(self, *args, **kwargs)
    print("writing", flush=True)
    time.sleep(120)
    return dataset
h5py.Group.create_dataset = slow_create
cached_decode(sorted(Path(sys.argv[1]).glob("*.png")), Path(sys.argv[2]), 16)
"""


def make_pngs(folder: Path, n: int = 12) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return sorted(folder.glob("*.png"))


def h5_contents(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in f}, dict(f.attrs)


def temps_of(target: Path) -> list[Path]:
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.") and ".tmp" in p.name)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def planted_temp(target: Path, pid: int, host: str = atomic._HOST) -> Path:
    """A leftover temp file named as atomic_path names them: .<name>.<pid>@<host>.<random>.tmp<suffix>."""
    tmp = target.parent / f".{target.name}.{pid}@{host}.k1ll3d_x.tmp{target.suffix}"
    tmp.write_bytes(b"half-written")
    return tmp


def test_sigkill_during_cache_write_then_rebuild(tmp_path: Path) -> None:
    files = make_pngs(tmp_path / "images")
    reference = tmp_path / "ref" / "images.h5"
    cached_decode(files, reference, 16)

    cache = tmp_path / "cache" / "images.h5"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(tmp_path / "images"), str(cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "writing", proc.stderr.read() if not line else line
        (leftover,) = temps_of(cache)
        assert f".{proc.pid}@" in leftover.name and leftover.stat().st_size > 0
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not cache.exists() and temps_of(cache) == [leftover]  # the kill left its temp file behind

    decoded = cached_decode(files, cache, 16)  # the next run

    assert list(cache.parent.iterdir()) == [cache]
    arrays, attrs = h5_contents(cache)
    expected_arrays, expected_attrs = h5_contents(reference)
    assert attrs == expected_attrs and attrs["complete"]
    assert sorted(arrays) == sorted(expected_arrays) == ["images", "kept"]
    for name, array in expected_arrays.items():
        np.testing.assert_array_equal(arrays[name], array)
    np.testing.assert_array_equal(decoded.images, expected_arrays["images"])
    assert decoded.images.shape == (12, 16, 16, 3)


def test_live_writers_temp_is_kept_dead_writers_removed(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    live = subprocess.Popen(["sleep", "60"])
    zombie = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(zombie.pid, signal.SIGKILL)
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # dead but not reaped: still has a pid
        live_tmp = planted_temp(target, live.pid)
        zombie_tmp = planted_temp(target, zombie.pid)
        dead_tmp = planted_temp(target, dead_pid())
        foreign_tmp = planted_temp(target, dead_pid(), host="x" + atomic._HOST)  # a dead pid, but on another host
        other_target_tmp = planted_temp(tmp_path / "other.ckpt", dead_pid())

        atomic_write_bytes(target, b"new checkpoint")

        assert target.read_bytes() == b"new checkpoint"
        assert live_tmp.exists() and live_tmp.read_bytes() == b"half-written"
        assert foreign_tmp.exists() and other_target_tmp.exists()
        assert not zombie_tmp.exists() and not dead_tmp.exists()
        assert temps_of(target) == sorted([live_tmp, foreign_tmp])
    finally:
        live.kill()
        live.wait()
        zombie.wait()
    assert remove_dead_temps(target) == [live_tmp]  # once its writer has gone


def test_feature_cache_shares_the_sweeping_path(tmp_path: Path) -> None:
    def encode(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 4)

    digest = "f" * 64
    first = CaptionData(shapes_per_class=1, image_size=16, min_freq=1, cache_dir=tmp_path)
    first.use_encoder(encode, digest)
    caches = sorted(tmp_path.glob("features-*.h5"))
    assert [p.name for p in caches] == [f"features-shapes-{s}-16-{'f' * 16}.h5" for s in ("test", "train", "val")]

    for path in caches:  # as if a run had been killed while writing each of them
        path.unlink()
        planted_temp(path, dead_pid())
    second = CaptionData(shapes_per_class=1, image_size=16, min_freq=1, cache_dir=tmp_path)
    second.use_encoder(encode, digest)

    assert sorted(tmp_path.iterdir()) == caches
    for split in ("train", "val", "test"):
        assert second.inputs[split].shape == (len(first.splits[split].names), 3, 4, 4)
        np.testing.assert_array_equal(second.inputs[split], first.inputs[split])
