"""Mistakes a user can make (a path, a key, a file of the wrong kind), told apart from bugs.

Entry scripts print a `UserError` as one short paragraph and exit with status 1; any other exception is a bug and
keeps its traceback. Each message names the file or key, what was expected, and the override that fixes it.
"""

from __future__ import annotations


class UserError(Exception):
    """A failure the user can fix by changing a command-line override or a file."""


class InvalidInput(UserError, ValueError):
    """A file, folder or config value that exists but is not what tincap expected."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder named in the config or on the command line does not exist."""


class TrainingDiverged(UserError, ArithmeticError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""
