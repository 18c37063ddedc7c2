"""Progress of long data loops (decoding a dataset, drawing the shapes set), shown with rich on stderr."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

SHOW_AFTER_S = 1.0  # loops that finish sooner print nothing


def _is_rank_zero() -> bool:
    """One process of a distributed run reports: Lightning's rank once it is loaded, else the launcher's env vars.

    Lightning is not imported here, so the image cache stays importable without it.
    """
    rank_zero = sys.modules.get("lightning.fabric.utilities.rank_zero")
    if rank_zero is not None:
        return getattr(rank_zero.rank_zero_only, "rank", 0) == 0
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


@contextmanager
def progress(total: int, description: str, console: Console | None = None) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; once the loop has run SHOW_AFTER_S seconds a bar appears on stderr (rank 0 only).

    On a terminal the bar redraws in place; in a log (stderr not a terminal) rich prints only its final line, once.
    Call `advance` from one thread (e.g. while consuming a thread pool's results), not from the workers.
    """
    if total <= 0 or not _is_rank_zero():
        yield lambda n: None
        return
    start = time.monotonic()
    done = 0
    bar: Progress | None = None
    task: TaskID | None = None

    def advance(n: int) -> None:
        nonlocal done, bar, task
        done += n
        if bar is None:
            if time.monotonic() - start < SHOW_AFTER_S:
                return
            bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), console=console or Console(stderr=True),
            )
            task = bar.add_task(description, total=total, completed=done)
            bar.start()
        else:
            bar.update(task, completed=done)

    try:
        yield advance
    finally:
        if bar is not None:
            bar.update(task, completed=done)
            bar.stop()
