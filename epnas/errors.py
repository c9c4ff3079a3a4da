"""Exceptions shared by the whole package.

Every error a user can cause (bad config, bad genome, missing data) derives from
:class:`EpnasError` so the CLI can print one clear line and exit with status 2.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


class EpnasError(Exception):
    """An error caused by user input; the CLI prints its message without a traceback."""


class GenomeError(EpnasError, ValueError):
    """A genome (or genome JSON) is invalid; the message names the offending field."""


class ActionError(GenomeError):
    """An action is illegal for the genome it is applied to."""


class SpaceError(EpnasError, ValueError):
    """A space name, a ``module:Class`` spec or a space option is invalid."""


class StorageError(EpnasError):
    """The run's files cannot be written (disk full, read-only, no permission): the
    search stops and what it interrupted is queued for ``epnas resume``."""


# errno values that say the storage, not the candidate, failed
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                            errno.EPERM, errno.EIO})
_SQLITE_CAUSES = {  # primary result codes (the low byte of an extended one)
    8: "read-only file system or database (SQLite: attempt to write a readonly database)",
    10: "disk I/O error (SQLite)",
    13: "No space left on device (SQLite: database or disk is full)",
    14: "cannot open the database file (SQLite)",
}


def storage_error(exc: BaseException, path: str | Path | None = None) -> StorageError | None:
    """The :class:`StorageError` that ``exc`` stands for (``path``: the file, when the
    exception does not name it), or None when ``exc`` is no storage error."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        cause = exc.strerror or os.strerror(exc.errno)
        where = exc.filename or path
    elif isinstance(exc, sqlite3.Error):
        cause = _SQLITE_CAUSES.get((getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF)
        where = path
    else:
        return None
    if cause is None:
        return None
    # "storage error", not "cannot write": a file the run reads fails the same way
    return StorageError(f"storage error: {where or 'the run directory'}: {cause}")


@contextlib.contextmanager
def storage_errors(path: str | Path | None = None, hint: str | None = None) -> Iterator[None]:
    """Raise a storage error inside (disk full, read-only, no permission) as the one-line
    :class:`StorageError` ``storage error: PATH: CAUSE`` (``; hint`` added); ``path``
    names the file when the error does not. Anything else passes unchanged."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        error = storage_error(exc, path)
        if error is None:
            raise
        raise StorageError(f"{error}; {hint}" if hint else str(error)) from None


def validation_message(owner: str, exc: Exception) -> str:
    """One line for a pydantic ``ValidationError``: ``owner: field: problem; ...``."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return f"{owner}: {exc}"
    parts = []
    for err in errors():
        where = ".".join(str(p) for p in err["loc"])  # empty for a whole-model check
        problem = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {problem}" if where else problem)
    return f"{owner}: " + "; ".join(parts)
