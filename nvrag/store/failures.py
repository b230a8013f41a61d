"""Storage failures as domain errors: a full disk, a read-only file system or missing permissions, however the
storage engine reports them (OSError; LanceDB's Rust errors and SQLite's name the cause in their message),
become one ``StorageError`` naming the data directory and what to do."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator

from nvrag.errors import Hint, NvRagError, StorageError

_OS_ERROR = re.compile(r"os error (\d+)")
_WORDS = {  # storage engines that do not raise OSError (lance's Rust, SQLite) name the cause in their message
    "no space left on device": errno.ENOSPC,
    "database or disk is full": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "attempt to write a readonly database": errno.EROFS,
    "permission denied": errno.EACCES,
}
_WHAT_TO_DO = {
    errno.ENOSPC: "is full",
    errno.EDQUOT: "is over its disk quota",
    errno.EROFS: "is on a read-only file system",
    errno.EACCES: "cannot be written by this user",
    errno.EPERM: "cannot be written by this user",
}


def storage_problem(exc: BaseException) -> int | None:
    """The errno of a storage failure (a full disk, a read-only file system, missing permissions) however the
    storage engine reports it, or None for any other error."""
    if isinstance(exc, OSError) and exc.errno in _WHAT_TO_DO:
        return exc.errno
    text = str(exc).lower()
    found = _OS_ERROR.search(text)
    if found and int(found[1]) in _WHAT_TO_DO:
        return int(found[1])
    return next((code for words, code in _WORDS.items() if words in text), None)


@contextlib.contextmanager
def storage_errors(location: str) -> Iterator[None]:
    """Turn a storage failure inside the block into one StorageError naming the data directory and what to do.
    Writes commit in batches, so what was committed before stays readable and a re-run completes the rest."""
    try:
        yield
    except NvRagError:
        raise
    except Exception as exc:
        code = storage_problem(exc)
        if code is None:
            raise
        raise storage_error(location, code) from exc


def storage_error(location: str, code: int) -> StorageError:
    """The one wording of a storage failure (``storage_problem``'s errno) of the data directory ``location``."""
    fix = "free space there" if code in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
    return StorageError(
        f"the data directory {location} {_WHAT_TO_DO[code]} ({os.strerror(code)})",
        hint=Hint(
            cli=f"{fix} (or choose another --db), then run the same command again; it continues where it stopped",
            api=f"the server's operator must {fix}; then send the request again (what was committed is kept)",
            join=": ",
        ),
    )
