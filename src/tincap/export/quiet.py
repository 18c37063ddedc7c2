"""Silence exporters: their Python warnings, and what their C++ side prints straight to file descriptors 1 and 2."""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


@contextmanager
def _redirected(fd: int) -> Iterator[None]:
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            stream.flush()
            os.dup2(saved, fd)
            os.close(saved)


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """While exporting: torch's TorchScript-based ONNX exporter prints its whole IR graph (to stdout) before raising
    an unsupported-operator error, and tracing warns about every shape it records as a constant; the user needs only
    the one-line error tincap raises."""
    with ExitStack() as stack, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack.enter_context(_redirected(1))
        stack.enter_context(_redirected(2))
        yield
