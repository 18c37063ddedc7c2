"""Atomic file writes so readers (and resumed runs) never see half-written outputs."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_csv", "atomic_write_text"]


def _current_umask() -> int:
    """Read the process umask once so temp files get normal permissions instead of mkstemp's 0600."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # fallback (not thread-safe, but only runs once at import)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def _make_temp(path: Path) -> Path:
    """Create a unique empty temp file next to ``path`` so os.replace stays on one filesystem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last so libraries that infer the format from the name still work.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    mode = _FILE_MODE
    try:
        mode = path.stat().st_mode & 0o7777  # preserve permissions of a file being replaced
    except OSError:
        pass
    os.chmod(tmp_path, mode)
    return tmp_path


def _fsync_file(path: Path) -> None:
    """Flush file contents to disk before the rename so a crash cannot leave an empty target."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    """Remove a leftover temp file without masking the original error."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path`` and move it onto ``path`` only if the body succeeds."""
    target = Path(path)
    tmp = _make_temp(target)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_path: temporary file {tmp} for {target} vanished before commit")
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old or the complete new content."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` atomically (no newline translation, so CSV line endings stay as given)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a CSV table atomically with '\n' line endings."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
