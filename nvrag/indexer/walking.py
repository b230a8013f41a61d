"""The walk of a folder being indexed: its files in a stable order, symlinked directories not followed (no
loops), unreadable directories reported, and directories left out (a data directory inside the folder)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path


def walk(
    root: Path, exclude: tuple[Path, ...], onerror: Callable[[OSError], None] | None = None
) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` below root in sorted order, symlinked directories not followed (no loops), not entering the
    directories in ``exclude`` (the same directory, however named: a data directory inside the indexed folder)."""
    left_out = {identity for identity in map(directory_identity, exclude) if identity is not None}
    for folder, dirs, files in os.walk(root, onerror=onerror, followlinks=False):
        if left_out:
            dirs[:] = [d for d in dirs if directory_identity(Path(folder) / d) not in left_out]
        dirs.sort()
        yield folder, dirs, files


def directory_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a directory (one stat, symlinks followed), or None if it cannot be read."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def directory_files(
    root: Path,
    suffixes: frozenset[str],
    unreadable: list[tuple[Path, str]] | None = None,
    exclude: tuple[Path, ...] = (),
) -> list[Path]:
    """The files below root whose suffix (lower case) is in ``suffixes``, not below the directories in
    ``exclude``, sorted. Symlinked files are followed: a broken or looping one fails when it is read, with its
    reason. Directories that cannot be listed are added to ``unreadable`` with the reason (their files are not
    indexed)."""
    found: list[Path] = []

    def failed(exc: OSError) -> None:
        if unreadable is not None:
            unreadable.append((Path(exc.filename or root), exc.strerror or str(exc)))

    for folder, _, files in walk(root, exclude, failed):
        found.extend(Path(folder) / f for f in files if Path(f).suffix.lower() in suffixes)
    return sorted(found)
