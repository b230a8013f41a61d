"""The web page's receive folders: a killed server's folder is removed by the next server, a running one's never
(the owner lock is a real flock held by a real process here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from nvrag.app import received

OWNER_SCRIPT = """
import sys, time
from pathlib import Path
from nvrag.app import received
print(received.own_folder(Path(sys.argv[1])), flush=True)
time.sleep(600)
"""


def _owner(temp: Path) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, str(temp)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_a_killed_servers_folder_goes_and_a_running_ones_stays(tmp_path: Path) -> None:
    killed, left = _owner(tmp_path)
    running, live = _owner(tmp_path)
    try:
        (left / "abc").mkdir()
        (left / "abc" / "upload.txt").write_text("bytes as received", encoding="utf-8")
        (live / "abc").mkdir()
        killed.send_signal(signal.SIGKILL)  # no exit hook runs: the folder stays behind
        killed.communicate(timeout=60)
        assert left.is_dir()
        mine = received.own_folder(tmp_path)
        assert received.sweep(tmp_path) == [left]
        assert not left.exists() and live.is_dir() and mine.is_dir()
        assert oct(mine.stat().st_mode & 0o777) == "0o700"
    finally:
        for process in (killed, running):
            process.kill()
            process.communicate(timeout=60)
    assert received.sweep(tmp_path) == [live]


def test_folders_that_are_not_a_servers_are_left_alone(tmp_path: Path) -> None:
    older = tmp_path / f"{received.PREFIX}abc123"  # an older version's folder: no owner file
    older.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / received.OWNER).write_text("", encoding="utf-8")
    (tmp_path / f"{received.PREFIX}link").symlink_to(target)  # a planted link to a folder with an owner file
    (tmp_path / f"{received.PREFIX}file").write_text("", encoding="utf-8")
    assert received.sweep(tmp_path) == []
    assert older.is_dir() and target.is_dir() and (target / received.OWNER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["elsewhere", f"{received.PREFIX}abc123", f"{received.PREFIX}link", f"{received.PREFIX}file"]
    )
    assert os.path.islink(tmp_path / f"{received.PREFIX}link")
