"""A data directory that cannot be written, met by the real CLI: a full disk (a 2 MiB tmpfs mounted for the
test) and a read-only file system. Each ends in one line naming the data directory and what to do, exit code
5; what was committed stays searchable; the same run, once there is room, completes with no chunk twice.

Mounting needs root (as the development machines and CI run); elsewhere the module is skipped, saying why."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvrag.store import LanceStore
from tests.e2e.test_cli_e2e import nvrag

pytestmark = pytest.mark.slow
FAKE = "nvrag/fake-wordlen"
EXIT_STORAGE = 5


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def corpus(path: Path, n: int) -> Path:
    lines = (json.dumps({"id": f"d{i}", "text": " ".join(f"w{(i * j) % 997}" for j in range(150))}) for i in range(n))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("error:")]
    return line


def test_a_full_disk_is_one_line_and_a_rerun_with_room_completes(small_disk: Path, tmp_path: Path) -> None:
    db = small_disk / "db"
    docs = corpus(tmp_path / "docs.jsonl", 3000)  # about 7 MB of index: three times the disk
    full = nvrag("index", str(docs), "--index", "big", "--model", FAKE, db=db)
    assert full.returncode == EXIT_STORAGE, full.stderr
    line = one_line(full.stderr)
    assert line.startswith(f"error: the data directory {db} is full (No space left on device): free space there")
    assert "run the same command again" in line
    committed = LanceStore(str(db)).open("big").count()
    found = nvrag("search", "w1 w2", "--index", "big", "-k", "2", "--json", db=db)
    assert found.returncode == 0, found.stderr  # the index stays readable
    assert len(json.loads(found.stdout)) == min(2, committed)

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = nvrag("index", str(docs), "--index", "big", "--model", FAKE, "--json", db=db)
    assert again.returncode == 0, again.stderr
    clean = nvrag("index", str(docs), "--index", "clean", "--model", FAKE, "--json", db=tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    table = LanceStore(str(db)).open("big")
    expected = LanceStore(str(tmp_path / "clean")).open("clean").chunk_ids_by_doc()
    assert table.chunk_ids_by_doc() == expected and table.count() == sum(len(v) for v in expected.values())


def test_a_read_only_data_directory_is_one_line(small_disk: Path, tmp_path: Path) -> None:
    db = small_disk / "db"
    first = nvrag("index", str(corpus(tmp_path / "a.jsonl", 5)), "--index", "t", "--model", FAKE, db=db)
    assert first.returncode == 0, first.stderr
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        more = nvrag("index", str(corpus(tmp_path / "b.jsonl", 8)), "--index", "t", "--model", FAKE, db=db)
        assert more.returncode == EXIT_STORAGE, more.stderr
        line = one_line(more.stderr)
        assert f"the data directory {db}" in line and "read-only" in line.lower(), line
        found = nvrag("search", "w1", "--index", "t", "-k", "1", db=db)
        assert found.returncode == 0, found.stderr
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=False)
    assert os.access(db, os.W_OK)
