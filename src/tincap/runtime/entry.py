"""The one wrapper around every command: the console kept quiet, the config printed and saved, user errors as
messages, the closing line; and `hydra_entry`, which the root scripts call."""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from tincap.runtime.atomic import atomic_write_text
from tincap.runtime.console import closing_line, print_config, quiet_console
from tincap.runtime.errors import UserError, exception_chain
from tincap.runtime.renames import rename_arguments
from tincap.runtime.rundir import save_config

FAILED_MARKER = "FAILED"  # a run directory holding this file is a run that stopped early; it says why
DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}


@dataclass(frozen=True)
class Outcome:
    """What a finished command prints last (its summary lines, where its outputs are) and gives back to Hydra."""

    lines: Sequence[str] = ()
    best_ckpt: str | None = None
    tb_dir: Path | None = None
    value: Any = None  # the swept metric of train.py, what the other scripts computed
    url: str | None = None  # the page demo.py serves


def user_message(exc: BaseException) -> str | None:
    """The message of a failure the user caused, found anywhere in the exception's chain (Hydra wraps constructor
    errors in InstantiationException); None for a bug, which keeps its traceback."""
    for current in exception_chain(exc):
        if isinstance(current, UserError):
            return str(current)
        if isinstance(current, OSError) and current.errno in DISK_ERRNOS:
            return disk_message(current)
        if isinstance(current, (MissingMandatoryValue, InterpolationToMissingValueError)):
            named = re.search(r"Missing mandatory value: ([\w.\[\]]+)", str(current))
            key = named[1] if named else current.full_key
            if key:
                return f"{key} is required but not set (??? in its config); add {key}=... to the command line"
    return None


def disk_message(exc: OSError) -> str:
    """A failed write: which file, why, and where the outputs can go instead."""
    where = exc.filename or "an output file"
    verb = "access" if exc.errno in (errno.EACCES, errno.EPERM) else "write"  # a permission error may be a read
    return (f"could not {verb} {where}: {DISK_ERRNOS[exc.errno]} ({exc.strerror}). Nothing already written was "
            "changed. Free space there, or write elsewhere: paths.log_dir=/other/disk/outputs for run outputs, "
            "paths.cache_dir=/other/disk/cache for the decoded-image caches")


def record_failure(run_dir: Path, text: str) -> None:
    """Leave FAILED in the run directory with the reason (best effort: the disk may be what failed)."""
    try:
        if run_dir.is_dir():
            atomic_write_text(run_dir / FAILED_MARKER, text.rstrip() + "\n")
    except OSError:
        pass


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def task_wrapper(body: Callable[[DictConfig], Outcome]) -> Callable[[DictConfig], Any]:
    """Run an entry script's body the same way for every script.

    A user error prints one paragraph and exits with status 1 (in a sweep, that job is marked FAILED and the sweep
    goes on); any other exception keeps its traceback. HYDRA_FULL_ERROR=1 shows the traceback of both.
    """

    @functools.wraps(body)
    def wrapped(cfg: DictConfig) -> Any:
        quiet_console()
        run_dir = Path(cfg.paths.output_dir)
        try:
            if rank_zero_only.rank == 0:  # DDP children re-run the script; only rank 0 prints and saves the config
                save_config(cfg, run_dir)
                print_config(cfg, run_dir)
            outcome = body(cfg)
        except Exception as exc:
            message = user_message(exc)
            if rank_zero_only.rank == 0:
                record_failure(run_dir, message or f"{type(exc).__name__}: {exc}")
            if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if rank_zero_only.rank == 0:
                print(f"Error: {message}", file=sys.stderr, flush=True)
            if _multirun():
                return float("nan")  # a failed trial for sweepers; the other jobs still run
            raise SystemExit(1) from None
        if rank_zero_only.rank == 0:
            (run_dir / FAILED_MARKER).unlink(missing_ok=True)  # a resumed run that now finished
            for line in outcome.lines:
                print(line)
            print(closing_line(run_dir, outcome.best_ckpt, outcome.tb_dir, outcome.url), flush=True)
        return outcome.value

    return wrapped


def hydra_entry(config_name: str, body: Callable[[DictConfig], Any],
                argv_filter: Callable[[list[str]], list[str]] | None = None) -> Callable[[Path], Any]:
    """The `main(project_root)` of a command whose config is conf/<config_name>.yaml: renamed options and keys on the
    command line are replaced (with a note), then Hydra composes the config and runs `body`."""

    def main(project_root: Path) -> Any:
        os.environ.setdefault("PROJECT_ROOT", str(project_root))
        sys.argv = rename_arguments(config_name, argv_filter(sys.argv) if argv_filter else sys.argv)
        quiet_console()
        return hydra.main(version_base="1.3", config_path=str(project_root / "conf"), config_name=config_name)(body)()

    return main


class CheckOutputDir(HydraCallback):
    """Refuse an output directory that cannot be written, before Hydra creates it and fails with a traceback.

    Raised as SystemExit: Hydra turns a callback's ordinary exceptions into warnings and would go on.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(str(config.hydra.sweep.dir)))


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        exc.filename = exc.filename or str(path)
        reason = DISK_ERRNOS.get(exc.errno, exc.strerror)
        raise SystemExit(f"Error: cannot write the run directory {path}: {reason} ({exc.strerror}). Write elsewhere "
                         "with paths.log_dir=/a/writable/folder (or hydra.run.dir=... for this one run)") from None
