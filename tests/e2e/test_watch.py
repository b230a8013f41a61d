"""`nvrag index PATH --watch` as a real process: it follows new, changed and deleted files, one line each, and
Ctrl-C ends it cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.test_cli_e2e import nvrag

pytestmark = pytest.mark.slow
GUARD_S = 180  # a hang guard, not a speed check


def lines_of(stream: object) -> tuple[queue.Queue[str], threading.Thread]:
    found: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            found.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return found, reader


def wait_for(found: queue.Queue[str], text: str) -> str:
    while True:
        line = found.get(timeout=GUARD_S)
        if text in line:
            return line


def ids(db: Path) -> list[str]:
    listed = nvrag("documents", "w", "--json", db=db)
    assert listed.returncode == 0, listed.stderr
    return [d["id"] for d in json.loads(listed.stdout)]


def test_watch_follows_the_folder_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    folder, db = tmp_path / "notes", tmp_path / "db"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha beta", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
    env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(db))
    command = [sys.executable, "-m", "nvrag", "index", str(folder), "--index", "w", "--model", "nvrag/fake-wordlen"]
    process = subprocess.Popen([*command, "--watch"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        found, reader = lines_of(process.stderr)
        wait_for(found, "watching")
        assert ids(db) == ["a.txt"]
        (folder / "b.md").write_text("gamma delta", encoding="utf-8")
        line = wait_for(found, "changed:")
        assert "b.md changed: 1 chunks added" in line
        assert ids(db) == ["a.txt", "b.md"]
        (folder / "a.txt").unlink()
        line = wait_for(found, "changed:")
        assert "a.txt changed: 0 chunks added, 1 chunks removed, 1 documents removed" in line
        assert ids(db) == ["b.md"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=GUARD_S) == 0
        wait_for(found, "stopped watching")
        reader.join(GUARD_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
