"""The web page's receive folder: where Gradio writes the bytes of each upload before nvrag indexes them.

Each UI server has a folder of its own under the temp directory, readable by this user only, removed when the
process exits. A killed server (SIGKILL skips exit hooks) leaves its folder; the next server removes it. Whether
a folder's server still runs is told by a flock on its ``.owner`` file, held until that process ends however it
ends: pids would not do, since another container sharing /tmp counts pids of its own.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "nvrag-received-"
OWNER = ".owner"
_HELD: list[int] = []  # the owner locks, open for the life of the process


def own_folder(temp: Path | None = None) -> Path:
    """A new receive folder under ``temp`` (the temp directory by default), locked as this process's."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=temp))
    pending = folder / f"{OWNER}.new"
    fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.replace(pending, folder / OWNER)  # seen as .owner only once locked: a sweep never takes a new folder
    _HELD.append(fd)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def sweep(temp: Path | None = None) -> list[Path]:
    """Remove this user's receive folders under ``temp`` whose owner lock no process holds; the folders
    removed. One without an owner file (from an older version, or not one of ours) is left alone."""
    removed = []
    for folder in Path(temp or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            fd = os.open(folder / OWNER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its server runs
            continue
        finally:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
