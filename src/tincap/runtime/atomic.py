"""Atomic file writes so readers (and resumed runs) never see half-written outputs."""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tincap.runtime.errors import exception_chain

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_csv", "atomic_write_text", "remove_dead_temps"]


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
# The writer's host in temp names: letters, digits and '-' only, so the name parses back unambiguously.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """Temp names of ``path``: .<name>.<pid>@<host>.<random>.tmp<suffix> (random as tempfile.mkstemp draws it)."""
    name, suffix = re.escape(path.name), re.escape(path.suffix)
    return re.compile(rf"^\.{name}\.(\d+)@([A-Za-z0-9-]+)\.[a-z0-9_]+\.tmp{suffix}$", re.MULTILINE)


def _process_alive(pid: int) -> bool:
    """Whether pid runs on this host; a killed process its parent has not reaped yet (a zombie) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or no pid at all: leave that file alone)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no /proc: trust kill()
    state = stat.rpartition(")")[2].split()[:1]  # the command name in (...) may hold spaces and ')'
    return state not in (["Z"], ["X"])


def remove_dead_temps(path: str | Path) -> list[Path]:
    """Delete the temp files of ``path`` whose writer was killed (SIGKILL, power loss), never a live writer's.

    Only this host's writers can be checked; temp files written from another host are left alone.
    """
    path = Path(path)
    try:
        names = "\n".join(os.listdir(path.parent))  # one regex pass over all names: cheap in folders of thousands
    except OSError:
        return []
    removed: list[Path] = []
    for match in _temp_pattern(path).finditer(names):
        if match[2] != _HOST or _process_alive(int(match[1])):
            continue
        try:
            os.unlink(path.parent / match[0])
        except FileNotFoundError:
            continue  # another process cleaned it first
        removed.append(path.parent / match[0])
    return removed


def _make_temp(path: Path) -> Path:
    """Create a unique empty temp file next to ``path`` so os.replace stays on one filesystem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid and host let a later write tell a killed writer's leftover from a live writer's file.
    # Keep the real suffix last so libraries that infer the format from the name still work.
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=f".tmp{path.suffix}"
    )
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
    """Yield a temp path beside ``path`` and move it onto ``path`` only if the body succeeds.

    Leftover temp files of ``path`` from writers that were killed are removed first.
    """
    target = Path(path)
    remove_dead_temps(target)
    try:
        tmp = _make_temp(target)
    except OSError as exc:
        raise _naming(exc, target) from exc
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_path: temporary file {tmp} for {target} vanished before commit")
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        _unlink_quietly(tmp)
        failed = _os_error(exc)
        if failed is None:
            raise
        raise _naming(failed, target) from exc


def _os_error(exc: BaseException) -> OSError | None:
    """The system error behind a failed write; writers such as torch.save hide it behind their own RuntimeError."""
    return next((e for e in exception_chain(exc) if isinstance(e, OSError) and e.errno is not None), None)


def _naming(exc: OSError, target: Path) -> OSError:
    """The same error, naming the file the user asked for instead of nothing or its temp file (a full disk's
    ENOSPC from a write names no file)."""
    if exc.filename not in (None, "") and not Path(str(exc.filename)).name.startswith("."):
        return exc
    return OSError(exc.errno, exc.strerror, str(target))


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
