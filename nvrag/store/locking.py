"""One writer per index: an advisory lock file beside the data, held for the whole of a write.

``flock`` locks belong to an open file and the kernel drops them when the process that holds them exits, however
it exits (SIGKILL included): a lock left by a killed process is free for the next writer, which takes it over and
writes its own pid. The pid in the file is only for the message that names the current holder. Readers never
take the lock. Object-store URIs have no file to lock; docs/security.md says what that means.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from nvrag.errors import ConfigError, Hint, IndexBusyError


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return "another process"
    return f"another process (pid {pid})" if pid.isdigit() else "another process"


def _open(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symlink planted where the lock goes is not followed to truncate its target
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        from nvrag.store.failures import storage_error, storage_problem

        code = storage_problem(exc)
        if code is not None:  # a full, read-only or unwritable data directory: its own error and exit code
            raise storage_error(str(path.parent), code) from None
        raise ConfigError(
            f"cannot write to the data directory {path.parent} ({exc.strerror or exc})",
            hint=Hint("check it or choose another --db"),  # over HTTP: the message alone (the operator's to fix)
        ) from None


@contextlib.contextmanager
def exclusive(path: Path, name: str) -> Iterator[None]:
    """Hold the write lock at ``path`` for index ``name``, or raise IndexBusyError at once if another open
    file (another process, or another writer in this one) holds it."""
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexBusyError(
                f"index {name} is being written by {_holder(path)}; try again when it finishes"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def shared_section(path: Path) -> Iterator[None]:
    """A short critical section that waits its turn (the manifest table that every index's writer updates)."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
