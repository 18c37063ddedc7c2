"""Mistakes a user can make (a path, a key, a file of the wrong kind), told apart from bugs.

Entry scripts print a `UserError` as one short paragraph and exit with status 1; any other exception is a bug and
keeps its traceback. Each message names the file or key, what was expected, and the override that fixes it.
"""

from __future__ import annotations

from collections.abc import Iterator


class UserError(Exception):
    """A failure the user can fix by changing a command-line override or a file."""


class InvalidInput(UserError, ValueError):
    """A file, folder or config value that exists but is not what tincap expected."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder named in the config or on the command line does not exist."""


class TrainingDiverged(UserError, ArithmeticError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those behind it (`raise ... from`, or raised while handling), each once: libraries such as
    Hydra and torch.save wrap the error that says what went wrong."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
